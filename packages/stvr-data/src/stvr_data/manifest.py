"""The benchmark's on-disk format: Parquet tables with versioned schemas, and `dataset.json`.

A benchmark directory holds (stable names, see `TABLE_FILES`):

    videos.parquet              one row per source video and its 24-fps clip file
    tubelets.parquet            linked tubelets of the train/val/test labels
    pairs_val.parquet           fixed query/reference pairs (likewise pairs_test)
    groundtruth_val.parquet     scorer ground truth, one row per box or empty image
    dataset.json                the dataset card: source, options, labels, counts, hashes
    clips/<video_id>.mp4        the media the model reads (absent with --skip-media)

Conventions, named once here and used everywhere:
- Boxes are normalised ``[x1, y1, x2, y2]`` in ``[0, 1]`` (AVA's order). Other
  conventions (UCF101-24 1-based pixel xywh, the official STVR json's ``[y1, x1, y2, x2]``)
  are converted at the border, where they are read.
- Times are seconds on the *source* video's timeline (AVA keyframes 902..1798).
- Every span is half-open, ``[start, end)``: every start/end pair of every table
  (``start``/``end``, ``query_start``/``query_end``, ``ref_start``/``ref_end``,
  ``clip_start``/``clip_end``) and of every command-line option (``stvr-model predict
  --query-start/--query-end``, ``--reference-start/--reference-end``). ``start`` is the
  first keyframe (or frame) time and ``end`` the time just after the last one, so a span
  of ``n`` keyframes has ``end - start == n * keyframe_interval``.
- A keyframe second ``t`` covers ``[t, t + keyframe_interval)``; at 24 fps an 8-frame clip
  lasts 1/3 s, so a reference spanning ``[ref_start, ref_end)`` has images at
  ``ref_start + k/3``. A keyframe's boxes hold for every clip it covers (the official
  ``compute_ap.py`` rule).
- An image with no target is one ground-truth row whose box coordinates are null
  (missing values, not NaN) in the file; pandas reads them as NaN, Arrow, Polars,
  DuckDB and Hugging Face ``datasets`` as null/None.
- Every table carries its schema version and per-field descriptions in the Parquet
  metadata; files are validated on write and on read. Version 1 tables (inclusive
  ``end`` and ``query_end``, no ``videos.sha256``) are upgraded when read.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from stvr_data import atomic, schema_v1
from stvr_data.atomic import (
    atomic_path as atomic_path,  # re-exported: callers name it from here too
)
from stvr_data.atomic import atomic_write
from stvr_data.errors import ManifestError
from stvr_data.lock import LOCK_FILE

SCHEMA_VERSION = "2.0"
CLIPS_PER_SECOND = 3
CLIP_FPS = 24
CLIP_FRAMES = 8

BOX = pa.list_(pa.float32(), 4)


def images_per_keyframe(keyframe_interval: float) -> int:
    """8-frame clips (1/3 s images) covered by one keyframe: 3 for AVA's 1 s, 1 for 1/3 s."""
    count = round(keyframe_interval * CLIPS_PER_SECOND)
    if count < 1 or abs(count - keyframe_interval * CLIPS_PER_SECOND) > 1e-6:
        raise ManifestError(f"keyframe interval {keyframe_interval} s is not a multiple of 1/3 s")
    return count


def _field(name: str, type_: pa.DataType, doc: str, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"description": doc})


def _schema(name: str, doc: str, *fields: pa.Field) -> pa.Schema:
    return pa.schema(
        fields,
        metadata={"stvr.table": name, "stvr.schema_version": SCHEMA_VERSION, "description": doc},
    )


VIDEOS_SCHEMA = _schema(
    "videos",
    "Source videos of the benchmark and the clip files cut from them.",
    _field("video_id", pa.string(), "Dataset video id (AVA: YouTube id; UCF101-24: Class/v_name)."),
    _field("subset", pa.string(), "Subset of the source dataset the video belongs to (train/val/test)."),
    _field("source_file", pa.string(), "File name of the source video in the dataset release.", True),
    _field("clip_path", pa.string(), "Clip file relative to the benchmark directory; null without media.", True),
    _field("clip_start", pa.float64(), "Source-video time (s) of the clip file's first frame; it spans [clip_start, clip_end)."),
    _field("clip_end", pa.float64(), "Source-video time (s) where the clip file ends (exclusive)."),
    _field("fps", pa.float64(), "Frame rate of the clip file."),
    _field("width", pa.int32(), "Frame width of the clip file in pixels."),
    _field("height", pa.int32(), "Frame height of the clip file in pixels."),
    _field("status", pa.string(), "ok | missing | corrupt | retryable (may pass: the same command retries it) | tool_unusable (the download tool could not be used: the same command retries it) | skipped (no media step)."),
    _field("sha256", pa.string(), "SHA-256 of the clip file (hex); null without media.", True),
)

TUBELETS_SCHEMA = _schema(
    "tubelets",
    "Per-person runs of consecutive keyframes with one identical action-label set.",
    _field("tubelet_id", pa.int64(), "Row id, stable for the same inputs (sorted by video, person, start)."),
    _field("video_id", pa.string(), "Video the tubelet lies in."),
    _field("person_id", pa.int32(), "Actor id within the video (AVA person_id; UCF101-24 tube index)."),
    _field("label", pa.string(), "Combined label: sorted action ids joined by '+', e.g. '11+17+74'."),
    _field("start", pa.float64(), "First keyframe time (s); the tubelet spans [start, end)."),
    _field("end", pa.float64(), "Last keyframe time + keyframe interval (s), exclusive."),
    _field("split", pa.string(), "Benchmark split of the tubelet's label: train | val | test, or "
           "context: an actor of a validation video whose label is not held out (never a query or "
           "target; listed so that every annotated actor of a reference is known)."),
    _field("boxes", pa.list_(BOX), "One normalised [x1, y1, x2, y2] box per keyframe in [start, end)."),
)

PAIRS_SCHEMA = _schema(
    "pairs",
    "Fixed query/reference pairs of one split.",
    _field("pair_id", pa.string(), "'<split>-<index:05d>'."),
    _field("split", pa.string(), "val | test (train pairs are re-drawn each epoch)."),
    _field("label", pa.string(), "Combined label shared by the query and its targets."),
    _field("query_tubelet_id", pa.int64(), "Tubelet used as the query; null when imported.", True),
    _field("query_video_id", pa.string(), "Video of the query."),
    _field("query_start", pa.float64(), "First keyframe time (s) of the query; it spans [query_start, query_end)."),
    _field("query_end", pa.float64(), "Last query keyframe time + keyframe interval (s), exclusive."),
    _field("query_boxes", pa.list_(BOX), "Query box per keyframe, normalised [x1, y1, x2, y2]."),
    _field("ref_video_id", pa.string(), "Video of the reference."),
    _field("ref_start", pa.float64(), "Reference start time (s); it spans [ref_start, ref_end)."),
    _field("ref_end", pa.float64(), "Reference end time (s), exclusive."),
    _field("target_tubelet_id", pa.int64(), "Tubelet the reference was padded around; null when imported.", True),
)

GROUNDTRUTH_SCHEMA = _schema(
    "groundtruth",
    "Scorer ground truth: one row per target box per image; a row with a null box marks an image with no target.",
    _field("pair_id", pa.string(), "Pair the image belongs to."),
    _field("label", pa.string(), "Combined label of the pair (the AP class)."),
    _field("timestamp", pa.float64(), "Image (8-frame clip) start time (s), at 1/3 s steps."),
    _field("x1", pa.float32(), "Normalised left edge; null for an image with no target.", True),
    _field("y1", pa.float32(), "Normalised top edge; null for an image with no target.", True),
    _field("x2", pa.float32(), "Normalised right edge; null for an image with no target.", True),
    _field("y2", pa.float32(), "Normalised bottom edge; null for an image with no target.", True),
)

DETECTIONS_SCHEMA = _schema(
    "detections",
    "Detections in the scorer's format: one row per box per image.",
    _field("pair_id", pa.string(), "Pair the detection belongs to."),
    _field("timestamp", pa.float64(), "Image (8-frame clip) start time (s); matched to images by round(3*t)."),
    _field("x1", pa.float32(), "Normalised left edge."),
    _field("y1", pa.float32(), "Normalised top edge."),
    _field("x2", pa.float32(), "Normalised right edge."),
    _field("y2", pa.float32(), "Normalised bottom edge."),
    _field("score", pa.float32(), "Confidence that the box is the matching actor (higher first)."),
)

TABLES = {
    "videos": VIDEOS_SCHEMA,
    "tubelets": TUBELETS_SCHEMA,
    "pairs_val": PAIRS_SCHEMA,
    "pairs_test": PAIRS_SCHEMA,
    "groundtruth_val": GROUNDTRUTH_SCHEMA,
    "groundtruth_test": GROUNDTRUTH_SCHEMA,
}
TABLE_FILES = {name: f"{name}.parquet" for name in TABLES}
DATASET_CARD = "dataset.json"
CARD_FORMAT = "stvr-benchmark"  # the card's "format": marks a directory stvr-data wrote
STAGING_DIR = ".stvr-staging"  # a build's files before its commit (see `stvr_data.outdir`)
SHARDS_DIR = ".stvr-shards"  # clips and statuses of media shards before their merge (`stvr_data.shards`)
# Generated from dataset.json after it is written (`stvr_data.card`), so not hashed in it;
# the card lists them under "generated".
HF_CARD = "README.md"
CROISSANT = "croissant.json"
GENERATED_FILES = (HF_CARD, CROISSANT)


def write_table(frame: pd.DataFrame, path: str | os.PathLike, schema: pa.Schema) -> Path:
    """Validate `frame` against `schema` and write it atomically (temp file + rename).

    Output is byte-identical for identical frames: no pandas index, fixed row-group
    size, and no creation timestamps in the metadata.
    """
    path = Path(path)
    missing = [name for name in schema.names if name not in frame.columns]
    if missing:
        raise ManifestError(f"{path}: cannot write, missing columns {missing}")
    for field in schema:
        if not field.nullable and frame[field.name].isna().any():
            raise ManifestError(f"{path}: column '{field.name}' has null values")
    try:
        table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError) as err:
        raise ManifestError(f"{path}: cannot write, {err}") from None
    table = table.replace_schema_metadata(schema.metadata)
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp, row_group_size=1 << 20, compression="zstd", write_statistics=True)
    return path


def read_table(path: str | os.PathLike, schema: pa.Schema) -> pd.DataFrame:
    """Read a manifest table, checking that it is the table and version `schema` describes."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest table")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise ManifestError(f"{path}: not a readable Parquet file ({err})") from None
    meta = table.schema.metadata or {}
    want_name = schema.metadata[b"stvr.table"]
    if meta.get(b"stvr.table") != want_name:
        raise ManifestError(f"{path}: not a '{want_name.decode()}' table")
    version = meta.get(b"stvr.schema_version", b"?").decode()
    if version.split(".")[0] == "1":
        table = schema_v1.upgrade(table, want_name.decode(), path)
    elif version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise ManifestError(f"{path}: schema version {version}, this tool reads {SCHEMA_VERSION} and 1.x")
    missing = [name for name in schema.names if name not in table.schema.names]
    if missing:
        raise ManifestError(f"{path}: missing columns {missing}")
    return table.select(schema.names).to_pandas()


def read_benchmark_table(benchmark: str | os.PathLike, name: str) -> pd.DataFrame:
    """Read table `name` (a key of `TABLES`) from a benchmark directory."""
    return read_table(Path(benchmark) / TABLE_FILES[name], TABLES[name])


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_dataset_card(out: str | os.PathLike, card: dict, files: dict | None = None) -> Path:
    """Write `dataset.json` into `out`, with the tool versions (`stvr_data.provenance`) and
    the SHA-256 and size of every file it lists.

    `files` maps each path relative to the benchmark to where it is read now (a build
    reads staged files, see `stvr_data.outdir`). By default: every regular file below
    `out` except the card, the files generated from it (`GENERATED_FILES`, named under
    ``generated``), in-progress ``.partial`` files, the lock and the staging folder.
    Keys are sorted; ``format`` marks the card as stvr-data's.
    """
    from stvr_data.provenance import tool_versions

    out = Path(out)
    if files is None:
        derived = {DATASET_CARD, *GENERATED_FILES}
        files = {p.relative_to(out).as_posix(): p for p in out.rglob("*")
                 if p.is_file() and p.relative_to(out).as_posix() not in derived
                 and not p.name.endswith(".partial")
                 and p.relative_to(out).parts[0] not in (STAGING_DIR, SHARDS_DIR, LOCK_FILE)}
    ordered = sorted(files.items())
    card = dict(card, format=CARD_FORMAT, schema_version=SCHEMA_VERSION, tools=tool_versions(),
                files={rel: sha256_file(path) for rel, path in ordered},
                file_sizes={rel: Path(path).stat().st_size for rel, path in ordered},
                generated=list(GENERATED_FILES))
    return atomic.write_text(out / DATASET_CARD, json.dumps(card, indent=2, sort_keys=False) + "\n")


def generated_files(card: dict) -> list[str]:
    """The files generated from `card` after it is written (not hashed in it)."""
    return [str(name) for name in card.get("generated", [])]


def read_dataset_card(benchmark: str | os.PathLike) -> dict:
    path = Path(benchmark) / DATASET_CARD
    if not path.is_file():
        raise ManifestError(f"{path}: no dataset card (is this a benchmark directory?)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def schema_markdown() -> str:
    """The schema documentation (manifests/SCHEMA.md is generated from this)."""
    lines = [f"# STVR manifest schema, version {SCHEMA_VERSION}", "", __doc__.split("\n\n", 1)[1], ""]
    for name, schema in [*TABLES.items(), ("detections", DETECTIONS_SCHEMA)]:
        if name.endswith("_test"):
            continue
        title = name.replace("_val", "_{val,test}")
        lines += [f"## `{title}.parquet`", "", schema.metadata[b"description"].decode(), "",
                  "| field | type | nullable | description |", "|---|---|---|---|"]
        for field in schema:
            doc = field.metadata[b"description"].decode()
            lines.append(f"| `{field.name}` | `{field.type}` | {'yes' if field.nullable else 'no'} | {doc} |")
        lines.append("")
    return "\n".join(lines)
