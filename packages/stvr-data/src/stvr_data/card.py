"""The benchmark's sharing files: a Hugging Face dataset card (`README.md`) and a Croissant
description (`croissant.json`, see `stvr_data.croissant`).

Both are generated from the benchmark's `dataset.json` and the schema constants of
`stvr_data.manifest`, after `dataset.json` is written, so they never disagree with the
tables. The card's YAML front matter has one config per table (``pairs`` and
``groundtruth`` with ``validation`` / ``test`` splits, ``tubelets`` and ``videos`` with one
``full`` split) so that ``datasets.load_dataset(DIR, CONFIG)`` reads each table with its
own schema.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from stvr_data import atomic, manifest

HF_SPLITS = {"val": "validation", "test": "test"}
DEFAULT_CONFIG = "pairs"  # what load_dataset(DIR) reads without a config name
WHOLE_TABLE_SPLIT = "full"  # HF split name of a table that holds every benchmark split

PAPER = "Y. Feng, L. Ma, W. Liu, J. Luo. Spatio-temporal Video Re-localization by Warp LSTM. CVPR 2019."
CITATION = """@inproceedings{feng2019stvr,
  title     = {Spatio-temporal Video Re-localization by Warp {LSTM}},
  author    = {Feng, Yang and Ma, Lin and Liu, Wei and Luo, Jiebo},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2019}
}"""
TASK = ("Spatio-temporal video re-localization: given a short query video of an actor "
        "doing something (its clips and one box per keyframe second), find when and where "
        "the same combined action happens in a longer reference video, as boxes over time "
        "(tubelets). Scored by frame-mAP: each 8-frame clip (1/3 s) of a reference is an "
        "image; AP per combined label, mean over the split's labels, at IoU 0.3, 0.5 and 0.7.")

# Per source: (HF licence id, licence sentence, source citation).
_SOURCES = {
    "AVA": ("cc-by-4.0",
            "The AVA annotations are released under CC BY 4.0; the videos are YouTube videos "
            "whose rights stay with their owners and are not covered by this licence.",
            "C. Gu et al. AVA: A Video Dataset of Spatio-temporally Localized Atomic Visual "
            "Actions. CVPR 2018."),
    "UCF101-24": ("unknown",
                  "UCF101 states no licence; the videos keep their owners' rights. Check the "
                  "terms of UCF101 and of the corrected UCF101-24 annotations before sharing.",
                  "K. Soomro, A. R. Zamir, M. Shah. UCF101: A Dataset of 101 Human Actions "
                  "Classes From Videos in The Wild. CRCV-TR-12-01, 2012."),
    "official STVR release": ("unknown",
                              "The authors' release (stvr_val.json / stvr_test.json) states no "
                              "licence; it is derived from AVA v2.1 (annotations CC BY 4.0).",
                              PAPER),
}


def source_name(card: dict) -> str:
    """The source dataset of a card: 'AVA', 'UCF101-24' or 'official STVR release'."""
    source = card.get("source")
    if isinstance(source, dict):
        return str(source.get("dataset"))
    if isinstance(source, str) and source.startswith("UCF101-24"):
        return "UCF101-24"
    return str(source)


def licence(card: dict) -> tuple[str, str, str]:
    """``(HF licence id, licence sentence, source citation)`` of a card's source."""
    return _SOURCES.get(source_name(card), ("unknown", "No licence is recorded.", ""))


def hf_configs(present: set[str] | None = None) -> list[dict]:
    """One HF config per table of `manifest.TABLES` (per-split files become splits).

    `present` (table names) leaves out files a benchmark lacks, e.g. an official import
    of one split only; a config whose files are all absent is left out.
    """
    configs: dict[str, list] = {}
    for name, filename in manifest.TABLE_FILES.items():
        if present is not None and name not in present:
            continue
        table, _, split = name.rpartition("_")
        if split not in HF_SPLITS:
            table, split = name, None
        configs.setdefault(table, []).append(
            {"split": HF_SPLITS.get(split, WHOLE_TABLE_SPLIT), "path": filename})
    return [{"config_name": table, "data_files": files, **({"default": True} if table == DEFAULT_CONFIG else {})}
            for table, files in configs.items()]


def _yaml(value, indent: int = 0) -> list[str]:
    """Block YAML for dicts / lists of JSON scalars (JSON strings are YAML scalars)."""
    pad = " " * indent
    lines = []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        head = f"{pad}{key}:" if isinstance(value, dict) else f"{pad}-"
        if isinstance(item, (dict, list)) and item:
            if isinstance(value, list) and isinstance(item, dict):
                inner = _yaml(item, indent + 2)
                lines.append(f"{head} {inner[0].lstrip()}")
                lines += inner[1:]
            else:
                lines.append(head)
                lines += _yaml(item, indent + 2)
        else:
            lines.append(f"{head} {json.dumps(item, ensure_ascii=False)}")
    return lines


def _size_category(count: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if count < limit:
            return name
    return "100K<n<1M"


def front_matter(card: dict, present: set[str]) -> dict:
    counts = card.get("counts", {})
    pairs = sum(int(counts.get(f"pairs_{s}", 0)) for s in HF_SPLITS)
    return {
        "pretty_name": card.get("name", "STVR benchmark"),
        "license": licence(card)[0],
        "task_categories": ["object-detection", "video-classification"],
        "tags": ["video", "spatio-temporal-localization", "action-localization", "few-shot",
                 "video-re-localization"],
        "size_categories": [_size_category(pairs)],
        "configs": hf_configs(present),
    }


def dataset_card(card: dict, present: set[str]) -> str:
    """The README.md text: YAML front matter, then the prose of the card."""
    source = source_name(card)
    _, licence_text, source_citation = licence(card)
    names = [c["config_name"] for c in hf_configs(present)]
    config = DEFAULT_CONFIG if DEFAULT_CONFIG in names else names[0]
    lines = ["---", *_yaml(front_matter(card, present)), "---", "",
             f"# {card.get('name', 'STVR benchmark')}", "", TASK, "",
             f"Benchmark of {PAPER}", "",
             "## Loading", "", "```python", "from datasets import load_dataset",
             f'pairs = load_dataset("path/to/this/folder", "{config}", split="test")',
             "# configs: " + ", ".join(names),
             "```", "",
             "The scorer and the builder are the `stvr-data` package "
             "(`stvr-data evaluate --benchmark DIR --split test --detections FILE`). "
             "`croissant.json` describes the same files in the Croissant format.", "",
             "## How it was built", "", *_how_built(card, source), "",
             "## Licence", "", licence_text, "",
             "## Known limitations", "", *_limitations(card, source), "",
             "## Format", "", _schema_section(), "",
             "## Citation", "", "```bibtex", CITATION, "```", ""]
    if source_citation and source_citation != PAPER:
        lines += [f"Source data: {source_citation}", ""]
    return "\n".join(lines)


def _how_built(card: dict, source: str) -> list[str]:
    counts = card.get("counts", {})
    version = card.get("source", {}).get("version") if isinstance(card.get("source"), dict) else None
    lines = [f"- Source: {source}" + (f" v{version}" if version else "") + ".",
             f"- Schema version {card.get('schema_version')}; seed {card.get('seed')}; "
             f"keyframe interval {card.get('keyframe_interval')} s; clips at "
             f"{card.get('clip', {}).get('fps')} fps, {card.get('clip', {}).get('size')} pixels."]
    for split in HF_SPLITS:
        if f"pairs_{split}" in counts:
            labels = card.get("labels", {}).get(split, [])
            lines.append(f"- {split}: {counts[f'pairs_{split}']} pairs, {counts.get(f'images_{split}')} "
                         f"images, {counts.get(f'boxes_{split}')} target boxes, {len(labels)} "
                         f"combined labels ({', '.join(labels)}).")
    if "tubelets" in counts:
        lines.append(f"- Tubelets per split: {json.dumps(counts['tubelets'])}; the train, val and "
                     "test combined labels are disjoint.")
    if card.get("options") or card.get("corpus_options"):
        lines.append(f"- Options: {json.dumps({**card.get('options', {}), **card.get('corpus_options', {})})}.")
    tools = card.get("tools", {})
    if tools:
        ffmpeg = tools.get("ffmpeg", {}).get("version")
        lines.append(f"- Tools: stvr-data {tools.get('stvr-data')}, Python {tools.get('python')}, "
                     f"{ffmpeg}, PyAV {tools.get('pyav')}, pyarrow {tools.get('pyarrow')}, "
                     f"pandas {tools.get('pandas')}.")
    lines.append("- `dataset.json` records every option, the input hashes and the SHA-256 of "
                 "every file; `videos.parquet` the SHA-256 of every clip.")
    return lines


def _limitations(card: dict, source: str) -> list[str]:
    counts = card.get("counts", {})
    lines = ["- Ground truth is every tubelet of the query's combined label in the reference; "
             "an actor whose action set merely contains the query's actions is not a target.",
             "- Images without a target count: their detections are false positives."]
    if source == "AVA":
        lines.append("- AVA videos are YouTube videos; some are no longer online, so rebuilds "
                     "from YouTube may lose pairs. Keyframes are annotated at 1 Hz only.")
    dropped = sum(int(counts.get(f"pairs_{s}_dropped_for_media", 0)) for s in HF_SPLITS)
    if dropped:
        lines.append(f"- {dropped} pairs were dropped because a video could not be fetched or "
                     "decoded (see reports/).")
    for split, info in card.get("release", {}).items():
        inside = info.get("query_inside_reference", {}).get("count", 0)
        lines.append(f"- {inside} {split} pairs of the official release have their query inside "
                     "their own reference.")
    if counts.get("videos", {}).get("skipped"):
        lines.append("- Built without media: the clip files are not included.")
    return lines


def _schema_section() -> str:
    """manifests/SCHEMA.md (`manifest.schema_markdown`) with its headings one level down."""
    body = manifest.schema_markdown().split("\n", 1)[1]
    return "\n".join("#" + line if line.startswith("#") else line for line in body.splitlines())


def present_tables(card: dict) -> set[str]:
    """The tables the benchmark of `card` has (those its card lists)."""
    listed = set(card.get("files", {}))
    return {name for name, filename in manifest.TABLE_FILES.items() if filename in listed}


def write_sharing_files(out: str | os.PathLike) -> tuple[Path, Path]:
    """Write `README.md` and `croissant.json` into benchmark `out` from its `dataset.json`.

    Called right after `manifest.write_dataset_card` (a build calls it in its staging
    folder, see `stvr_data.outdir`); both files are written atomically and depend only
    on the card, so they are the same bytes for the same card.
    """
    out = Path(out)
    card = manifest.read_dataset_card(out)
    texts = sharing_texts(card, out)
    return (atomic.write_text(out / manifest.HF_CARD, texts[manifest.HF_CARD]),
            atomic.write_text(out / manifest.CROISSANT, texts[manifest.CROISSANT]))


def sharing_texts(card: dict, out: Path) -> dict[str, str]:
    """File name -> text of the sharing files of `card` (read from `out`, whose
    `dataset.json` croissant.json hashes)."""
    from stvr_data.croissant import croissant

    return {manifest.HF_CARD: dataset_card(card, present_tables(card)),
            manifest.CROISSANT: json.dumps(croissant(card, out), indent=2) + "\n"}
