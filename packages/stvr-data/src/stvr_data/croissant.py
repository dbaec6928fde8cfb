"""The benchmark described in Croissant 1.1 (MLCommons' JSON-LD format for ML datasets).

Generated from `dataset.json` and the schema constants of `stvr_data.manifest`: one
``cr:FileObject`` per file of the benchmark with its SHA-256, one ``cr:RecordSet`` per table
of `manifest.TABLES` whose fields are the table's columns (box lists as arrays), and the
responsible-AI (``rai:``) properties that dataset tracks ask for.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from stvr_data import manifest
from stvr_data.card import CITATION, PAPER, TASK, licence, present_tables, source_name

CONFORMS_TO = "http://mlcommons.org/croissant/1.1"
# The standard Croissant 1.1 @context (as published with the specification).
CONTEXT = {
    "@language": "en", "@vocab": "https://schema.org/",
    "arrayShape": "cr:arrayShape", "citeAs": "cr:citeAs", "column": "cr:column",
    "conformsTo": "dct:conformsTo", "containedIn": "cr:containedIn",
    "cr": "http://mlcommons.org/croissant/", "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/", "description": {"@container": "@language"},
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract", "field": "cr:field", "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject", "fileSet": "cr:fileSet", "format": "cr:format",
    "includes": "cr:includes", "isArray": "cr:isArray", "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath", "key": "cr:key", "md5": "cr:md5",
    "name": {"@container": "@language"}, "parentField": "cr:parentField", "path": "cr:path",
    "recordSet": "cr:recordSet", "references": "cr:references", "regex": "cr:regex",
    "repeated": "cr:repeated", "replace": "cr:replace", "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/", "separator": "cr:separator", "source": "cr:source",
    "subField": "cr:subField", "transform": "cr:transform",
}
LICENSE_URLS = {"cc-by-4.0": "https://creativecommons.org/licenses/by/4.0/"}
ENCODINGS = {".parquet": "application/x-parquet", ".json": "application/json",
             ".mp4": "video/mp4", ".png": "image/png", ".csv": "text/csv", ".txt": "text/plain"}


def data_type(arrow_type: pa.DataType) -> tuple[str, str | None]:
    """``(Croissant dataType, arrayShape or None)`` of an Arrow column type.

    Nested lists become arrays of their innermost type: a box ``fixed_size_list<float>[4]``
    is shape ``4``, a list of boxes ``-1,4``.
    """
    shape = []
    while pa.types.is_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        shape.append(arrow_type.list_size if pa.types.is_fixed_size_list(arrow_type) else -1)
        arrow_type = arrow_type.value_type
    if pa.types.is_floating(arrow_type):
        scalar = "sc:Float"
    elif pa.types.is_integer(arrow_type):
        scalar = "sc:Integer"
    elif pa.types.is_boolean(arrow_type):
        scalar = "sc:Boolean"
    elif pa.types.is_string(arrow_type):
        scalar = "sc:Text"
    else:
        raise ValueError(f"no Croissant data type for Arrow type {arrow_type}")
    return scalar, ",".join(str(s) for s in shape) if shape else None


def record_set(name: str, schema: pa.Schema) -> dict:
    """The RecordSet of table `name` (a key of `manifest.TABLES`) read from its file."""
    file_id = manifest.TABLE_FILES[name]
    fields = []
    for column in schema:
        scalar, shape = data_type(column.type)
        field = {"@type": "cr:Field", "@id": f"{name}/{column.name}", "name": column.name,
                 "description": column.metadata[b"description"].decode(), "dataType": scalar,
                 "source": {"fileObject": {"@id": file_id}, "extract": {"column": column.name}}}
        if shape is not None:
            field.update(isArray=True, arrayShape=shape)
        fields.append(field)
    return {"@type": "cr:RecordSet", "@id": name, "name": name,
            "description": schema.metadata[b"description"].decode(), "field": fields}


def file_objects(card: dict, out: Path) -> list[dict]:
    """One FileObject per file hashed in the card, and one for `dataset.json` itself."""
    files = dict(card.get("files", {}))
    files[manifest.DATASET_CARD] = manifest.sha256_file(out / manifest.DATASET_CARD)
    return [{"@type": "cr:FileObject", "@id": path, "name": path, "contentUrl": path,
             "encodingFormat": ENCODINGS.get(Path(path).suffix, "application/octet-stream"),
             "sha256": digest}
            for path, digest in sorted(files.items())]


def responsible_ai(card: dict) -> dict:
    """The Croissant RAI properties of a benchmark built from `card`'s source."""
    source = source_name(card)
    return {
        "rai:dataCollection": (f"Re-organised from {source}: per-second person boxes linked into "
                               "tubelets, held-out combined labels, fixed query/reference pairs "
                               "(see the README's 'How it was built'). No new data was collected."),
        "rai:dataCollectionType": "Secondary data analysis",
        "rai:dataAnnotationProtocol": (f"No new annotation; boxes and action labels are {source}'s. "
                                       "A combined label is the sorted set of an actor's actions."),
        "rai:dataPreprocessingProtocol": ("Clips cut from the source videos, resampled to "
                                          f"{manifest.CLIP_FPS} fps and resized; boxes normalised "
                                          "[x1, y1, x2, y2]; tool versions in dataset.json."),
        "rai:dataUseCases": ("Evaluating spatio-temporal video re-localization (query-by-example "
                             "action localization) by frame-mAP; not for identifying people."),
        "rai:dataLimitations": ("Only combined labels with enough tubelets are held out; the "
                                "label distribution is long-tailed; only 1 Hz keyframes are "
                                "annotated; some source videos may become unavailable."),
        "rai:dataBiases": ("Inherits the source's biases: AVA draws on films, with their "
                           "over-representation of some regions, ages and genders and of staged "
                           "actions; UCF101 on amateur YouTube sports videos."),
        "rai:personalSensitiveInformation": ("The videos show identifiable people (actors and "
                                             "members of the public); no names or identities "
                                             "are annotated."),
        "rai:dataSocialImpact": ("Finding a person's action in video can aid video search and "
                                 "also surveillance; use it for research on localization, not to "
                                 "track individuals."),
        "rai:hasSyntheticData": False,
    }


def croissant(card: dict, out: Path) -> dict:
    """The Croissant JSON-LD document of the benchmark in `out` with card `card`."""
    licence_id = licence(card)[0]
    present = present_tables(card)
    name = str(card.get("name", "STVR benchmark"))
    return {
        "@context": CONTEXT, "@type": "sc:Dataset",
        "name": name, "description": f"{name}. {TASK} Benchmark of {PAPER}",
        "conformsTo": CONFORMS_TO, "citeAs": CITATION,
        "license": LICENSE_URLS.get(licence_id, licence_id),
        "version": f"{manifest.SCHEMA_VERSION}.0",
        "keywords": ["video", "spatio-temporal localization", "action localization", "re-localization"],
        "isAccessibleForFree": True,
        **responsible_ai(card),
        "distribution": file_objects(card, out),
        "recordSet": [record_set(table, manifest.TABLES[table]) for table in manifest.TABLES
                      if table in present],
    }
