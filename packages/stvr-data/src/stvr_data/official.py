"""The official STVR release (Feng et al., CVPR 2019, §5): import it as a benchmark, export one as it.

The authors published their fixed pairs as `stvr_val.json` / `stvr_test.json` (6299 / 6495
pairs from AVA v2.1 val videos). Each file is a JSON list of ``[query, reference]``:

    query      {"id": video, "frames": [consecutive keyframe seconds],
                "label": [sorted AVA action ids], "boxes": [[y1, x1, y2, x2] per frame]}
    reference  {"id": video, "start": s, "end": e, "gt": [[[y1, x1, y2, x2], ...] per second]}

``gt[i]`` lists the target boxes at keyframe second ``start + i`` (``end`` is exclusive) and
may be empty. Boxes are normalised and in ``[y1, x1, y2, x2]`` order: they are converted to
our ``[x1, y1, x2, y2]`` here, at the border, and nowhere else. The official scorer
(`compute_ap.py`) lets each keyframe second's boxes hold for its 3 clips, which is the
ground-truth rule of `stvr_data.manifest`.

The release keeps pairs whose query lies inside its own reference; our pair builder
avoids them, so the imported card counts and names them.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from stvr_data import __version__, atomic, manifest
from stvr_data.card import write_sharing_files
from stvr_data.checked_csv import PLAIN_ID
from stvr_data.errors import AnnotationError, ManifestError
from stvr_data.text import read_json

SOURCE = "official STVR release"
AVA_SEGMENT = (900.0, 1800.0)  # the annotated 15-minute segment of every AVA video
CLIP_SIZE = (320, 320)  # (width, height) `build-ava` cuts clips at, recorded for skipped media
SPLITS = ("val", "test")
BOX_DECIMALS = 6  # float32 boxes written back with 6 decimals read as the release's 3


# --- reading the release ------------------------------------------------------------------

def split_from_name(path: str | os.PathLike) -> str:
    """The split a release file is for, from its name (`stvr_test.json` -> 'test')."""
    words = set(re.split(r"[^a-z]+", Path(path).stem.lower()))
    found = [s for s in SPLITS if s in words]
    if len(found) != 1:
        raise ManifestError(f"{path}: cannot tell the split from the file name; pass --split val|test")
    return found[0]


def read_official(path: str | os.PathLike) -> list:
    """Load a release file and check its structure; `AnnotationError` names the pair index."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such file")
    records = read_json(path)
    if not isinstance(records, list) or not records:
        raise AnnotationError(path, None, "expected a non-empty list of [query, reference] pairs")
    for index, record in enumerate(records):
        problem = _record_problem(record)
        if problem:
            raise AnnotationError(path, None, f"pair {index}: {problem}")
    return records


def _record_problem(record) -> str | None:
    if not (isinstance(record, list) and len(record) == 2 and all(isinstance(r, dict) for r in record)):
        return "expected [query, reference] objects"
    query, ref = record
    for part, obj, keys in (("query", query, ("id", "frames", "label", "boxes")),
                            ("reference", ref, ("id", "start", "end", "gt"))):
        missing = [k for k in keys if k not in obj]
        if missing:
            return f"{part} lacks {missing}"
        if not (isinstance(obj["id"], str) and re.fullmatch(PLAIN_ID, obj["id"])):
            return f"{part} id {str(obj['id'])[:40]!r} is not a plain video id ([A-Za-z0-9_-]+)"
        if not all(isinstance(obj[k], list) for k in keys if k in ("frames", "label", "boxes", "gt")):
            return f"{part} {', '.join(k for k in keys if k in ('frames', 'label', 'boxes', 'gt'))} must be lists"
    frames = query["frames"]
    if (not frames or any(not isinstance(f, int) for f in frames)
            or frames != list(range(frames[0], frames[0] + len(frames)))):
        return "query frames must be consecutive whole seconds"
    if not query["label"] or any(not isinstance(a, int) for a in query["label"]):
        return "query label must be a non-empty list of action ids"
    if len(query["boxes"]) != len(frames):
        return f"query has {len(query['boxes'])} boxes for {len(frames)} frames (one [y1, x1, y2, x2] per frame)"
    for i, box in enumerate(query["boxes"]):
        if problem := _box_problem(box):
            return f"query box {i} {problem}"
    start, end = ref["start"], ref["end"]
    if not (isinstance(start, int) and isinstance(end, int) and start < end):
        return "reference start/end must be whole seconds with start < end"
    if len(ref["gt"]) != end - start:
        return f"reference gt has {len(ref['gt'])} seconds, expected end - start = {end - start}"
    for second, boxes in enumerate(ref["gt"]):
        if not isinstance(boxes, list):
            return f"reference gt second {second} must be a list of [y1, x1, y2, x2] boxes"
        for i, box in enumerate(boxes):
            if problem := _box_problem(box):
                return f"reference gt second {second} box {i} {problem}"
    return None


def _box_problem(box) -> str | None:
    """What is wrong with a release box ``[y1, x1, y2, x2]``, or None."""
    shown = str(box)[:60]
    if not (isinstance(box, list) and len(box) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
        return f"{shown} is not four numbers [y1, x1, y2, x2]"
    if not all(math.isfinite(v) for v in box):
        return f"{shown} holds NaN or infinity"
    if box[0] > box[2] or box[1] > box[3]:
        return f"{shown} is inverted (y2 < y1 or x2 < x1)"
    return None


def _xyxy(box_yx: list) -> list:
    y1, x1, y2, x2 = box_yx
    return [x1, y1, x2, y2]


def official_tables(records: list, split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pairs and ground-truth tables (manifest schemas) of checked release records."""
    queries = [r[0] for r in records]
    refs = [r[1] for r in records]
    n = len(records)
    pairs = pd.DataFrame({
        "pair_id": [f"{split}-{i:05d}" for i in range(n)],
        "split": split,
        "label": ["+".join(str(a) for a in sorted(q["label"])) for q in queries],
        "query_tubelet_id": pd.array([None] * n, dtype="Int64"),
        "query_video_id": [q["id"] for q in queries],
        "query_start": np.array([q["frames"][0] for q in queries], dtype=np.float64),
        "query_end": np.array([q["frames"][-1] + 1 for q in queries], dtype=np.float64),
        "query_boxes": [[_xyxy(b) for b in q["boxes"]] for q in queries],
        "ref_video_id": [r["id"] for r in refs],
        "ref_start": np.array([r["start"] for r in refs], dtype=np.float64),
        "ref_end": np.array([r["end"] for r in refs], dtype=np.float64),
        "target_tubelet_id": pd.array([None] * n, dtype="Int64"),
    })
    return pairs, _groundtruth(pairs, [r["gt"] for r in refs])


def _groundtruth(pairs: pd.DataFrame, gts: list) -> pd.DataFrame:
    """One row per box per image; each second's boxes hold for its 3 clips; a row with a missing
    (NaN; null once written) box if none."""
    pair_idx, second, boxes = [], [], []
    for i, (start, gt) in enumerate(zip(pairs.ref_start.to_numpy(), gts, strict=True)):
        for offset, second_boxes in enumerate(gt):
            entries = [_xyxy(b) for b in second_boxes] or [[np.nan] * 4]
            pair_idx += [i] * len(entries)
            second += [start + offset] * len(entries)
            boxes += entries
    pair_idx, second = np.asarray(pair_idx), np.asarray(second, dtype=np.float64)
    box_array = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    clips = manifest.CLIPS_PER_SECOND
    # Rows of a second are repeated per clip: (second, clip, box order) is the row order.
    rows = np.repeat(np.arange(len(pair_idx)), clips)
    clip = np.tile(np.arange(clips), len(pair_idx))
    order = np.lexsort((rows, clip, second[rows], pair_idx[rows]))
    rows, clip = rows[order], clip[order]
    return pd.DataFrame({
        "pair_id": pairs.pair_id.to_numpy()[pair_idx[rows]],
        "label": pairs.label.to_numpy()[pair_idx[rows]],
        "timestamp": second[rows] + clip / clips,
        "x1": box_array[rows, 0], "y1": box_array[rows, 1],
        "x2": box_array[rows, 2], "y2": box_array[rows, 3],
    })


def queries_inside_reference(pairs: pd.DataFrame) -> list[str]:
    """Pair ids whose query ``[query_start, query_end)`` shares the reference's video and
    overlaps ``[ref_start, ref_end)``."""
    inside = ((pairs.query_video_id == pairs.ref_video_id)
              & (pairs.query_start < pairs.ref_end) & (pairs.query_end > pairs.ref_start))
    return pairs.pair_id[inside].tolist()


def official_videos(pairs: pd.DataFrame) -> pd.DataFrame:
    """The videos table of an import: every video, its AVA segment, media not made."""
    ids = sorted(set(pairs.query_video_id) | set(pairs.ref_video_id))
    width, height = CLIP_SIZE
    return pd.DataFrame({
        "video_id": ids, "subset": "val", "source_file": None, "clip_path": None,
        "clip_start": AVA_SEGMENT[0], "clip_end": AVA_SEGMENT[1], "fps": float(manifest.CLIP_FPS),
        "width": np.int32(width), "height": np.int32(height), "status": "skipped", "sha256": None,
    })


# --- import -------------------------------------------------------------------------------

def import_official(json_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                    split: str | None = None) -> dict:
    """Write the benchmark tables of one release file into `out_dir` and return its card.

    `split` defaults to the one in the file name. The other split's tables, if already
    imported there, are kept: the videos table and the card are merged.
    """
    json_path, out = Path(json_path), Path(out_dir)
    split = split or split_from_name(json_path)
    if split not in SPLITS:
        raise ManifestError(f"split must be one of {SPLITS}, not {split!r}")
    previous = _previous_official_card(out)
    pairs, groundtruth = official_tables(read_official(json_path), split)
    videos = _merged_videos(out, official_videos(pairs))
    out.mkdir(parents=True, exist_ok=True)
    manifest.write_table(pairs, out / manifest.TABLE_FILES[f"pairs_{split}"], manifest.PAIRS_SCHEMA)
    manifest.write_table(groundtruth, out / manifest.TABLE_FILES[f"groundtruth_{split}"],
                         manifest.GROUNDTRUTH_SCHEMA)
    manifest.write_table(videos, out / manifest.TABLE_FILES["videos"], manifest.VIDEOS_SCHEMA)
    tubelets = out / manifest.TABLE_FILES["tubelets"]
    if not tubelets.is_file():  # the release has no tubelets; the table exists for readers
        empty = manifest.TUBELETS_SCHEMA.empty_table().to_pandas()
        manifest.write_table(empty, tubelets, manifest.TUBELETS_SCHEMA)
    card = _card(previous, split, json_path, pairs, groundtruth, videos)
    manifest.write_dataset_card(out, card)
    write_sharing_files(out)
    return manifest.read_dataset_card(out)


def _previous_official_card(out: Path) -> dict:
    if not (out / manifest.DATASET_CARD).is_file():
        return {}
    card = manifest.read_dataset_card(out)
    if card.get("source") != SOURCE:
        raise ManifestError(f"{out}: holds a benchmark from {card.get('source', card.get('name'))!r}, "
                            "not the official release; import into another directory")
    return card


def _merged_videos(out: Path, new: pd.DataFrame) -> pd.DataFrame:
    path = out / manifest.TABLE_FILES["videos"]
    if not path.is_file():
        return new
    old = manifest.read_table(path, manifest.VIDEOS_SCHEMA)
    merged = pd.concat([old, new[~new.video_id.isin(old.video_id)]], ignore_index=True)
    return merged.sort_values("video_id", kind="stable").reset_index(drop=True)


def _card(previous: dict, split: str, json_path: Path, pairs, groundtruth, videos) -> dict:
    inside = queries_inside_reference(pairs)
    release = dict(previous.get("release", {}))
    release[split] = {"file": json_path.name, "sha256": manifest.sha256_file(json_path),
                      "query_inside_reference": {"count": len(inside), "pair_ids": inside}}
    labels = dict(previous.get("labels", {}), **{split: sorted(pairs.label.unique().tolist())})
    counts = dict(previous.get("counts", {}))
    counts.update({
        f"pairs_{split}": len(pairs),
        f"images_{split}": int(groundtruth[["pair_id", "timestamp"]].drop_duplicates().shape[0]),
        f"boxes_{split}": int(groundtruth.x1.notna().sum()),
        f"queries_inside_reference_{split}": len(inside),
        "videos": {status: int(n) for status, n in videos.status.value_counts().sort_index().items()},
    })
    return {
        "name": "STVR (official release)", "source": SOURCE, "version": __version__,
        "seed": None, "options": {}, "keyframe_interval": 1.0,
        "clip": {"fps": manifest.CLIP_FPS, "frames": manifest.CLIP_FRAMES,
                 "clips_per_second": manifest.CLIPS_PER_SECOND, "size": list(CLIP_SIZE)},
        "labels": {s: labels[s] for s in SPLITS if s in labels},
        "counts": counts, "release": {s: release[s] for s in SPLITS if s in release},
    }


# --- export -------------------------------------------------------------------------------

def official_records(pairs: pd.DataFrame, groundtruth: pd.DataFrame) -> list:
    """Release-format records of a benchmark split (inverse of `official_tables`).

    Needs whole-second query and reference times, and a ground-truth image at every
    keyframe second of every reference (its boxes, or a row with a missing box when it has none).
    """
    keyframes = _keyframe_boxes(groundtruth)
    records = []
    for pair in pairs.sort_values("pair_id", kind="stable").itertuples(index=False):
        times = (pair.query_start, pair.query_end, pair.ref_start, pair.ref_end)
        if any(t != int(t) for t in times):
            raise ManifestError(f"pair {pair.pair_id}: times {times} are not whole seconds, "
                                "which the release format needs")
        frames = list(range(int(pair.query_start), int(pair.query_end)))
        if len(pair.query_boxes) != len(frames):
            raise ManifestError(f"pair {pair.pair_id}: {len(pair.query_boxes)} query boxes for "
                                f"{len(frames)} keyframes")
        query = {"id": pair.query_video_id, "frames": frames,
                 "label": [int(a) for a in pair.label.split("+")],
                 "boxes": [_yxyx(b) for b in pair.query_boxes]}
        seconds = range(int(pair.ref_start), int(pair.ref_end))
        missing = [s for s in seconds if (pair.pair_id, s) not in keyframes]
        if missing:
            raise ManifestError(f"pair {pair.pair_id}: no ground-truth image at second {missing[0]}")
        ref = {"id": pair.ref_video_id, "start": seconds.start, "end": seconds.stop,
               "gt": [keyframes[(pair.pair_id, s)] for s in seconds]}
        records.append([query, ref])
    return records


def _yxyx(box_xy) -> list:
    x1, y1, x2, y2 = (round(float(v), BOX_DECIMALS) for v in box_xy)
    return [y1, x1, y2, x2]


def _keyframe_boxes(groundtruth: pd.DataFrame) -> dict:
    """``{(pair_id, second): [[y1, x1, y2, x2], ...]}`` from the images at whole seconds."""
    frame = np.rint(groundtruth.timestamp.to_numpy() * manifest.CLIPS_PER_SECOND).astype(np.int64)
    at_second = frame % manifest.CLIPS_PER_SECOND == 0
    rows = groundtruth[at_second]
    seconds = frame[at_second] // manifest.CLIPS_PER_SECOND
    boxes = rows[["x1", "y1", "x2", "y2"]].to_numpy()
    out: dict = {}
    for pair_id, second, box in zip(rows.pair_id.to_numpy(), seconds.tolist(), boxes, strict=True):
        entry = out.setdefault((pair_id, second), [])
        if not np.isnan(box).any():
            entry.append(_yxyx(box))
    return out


def export_official(benchmark_dir: str | os.PathLike, split: str,
                    out_json: str | os.PathLike) -> Path:
    """Write split `split` of a benchmark as a release file the authors' code reads."""
    if split not in SPLITS:
        raise ManifestError(f"split must be one of {SPLITS}, not {split!r}")
    pairs = manifest.read_benchmark_table(benchmark_dir, f"pairs_{split}")
    groundtruth = manifest.read_benchmark_table(benchmark_dir, f"groundtruth_{split}")
    # Same separators as the release (json.dumps defaults), so re-exports diff cleanly.
    text = json.dumps(official_records(pairs, groundtruth))
    return atomic.write_text(out_json, text)

