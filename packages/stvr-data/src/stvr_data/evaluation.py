"""Frame-mAP, the benchmark's score (paper §6.3; the authors' `compute_ap.py` protocol).

An *image* is one 8-frame clip of a reference, keyed by ``(pair_id, round(3 * timestamp))``;
its ground truth is the target boxes of the keyframe second it falls in. Images without a
target count: their detections are false positives. Per image, detections are taken in
descending score; each is matched to the ground-truth box of highest IoU and is a true
positive when that IoU >= the threshold and the box is not yet taken, else a false
positive (PASCAL VOC rule as in ActivityNet's AVA evaluator: no fallback to the second-best
box). AP per combined label over all its images is the all-point interpolated area under
the precision-recall curve with precision made monotone; frame-mAP is the mean over the
labels that have ground truth.

Where the reference evaluators leave the outcome to their implementation, this module
fixes it so that the score never depends on the order of the rows:
- Equal scores form one threshold: tied detections are ranked false positives first
  (ActivityNet ranks them with an unstable `np.argsort`). Without ties the two agree.
- Equal IoU with two ground-truth boxes: the box listed first in the ground truth wins.
- Zero-area detections (x2 == x1 or y2 == y1) are dropped, as ActivityNet's evaluator does.

Everything below is vectorised over detections; the only Python loop is over labels.
Boxes are normalised ``[x1, y1, x2, y2]`` (see `stvr_data.manifest`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stvr_data.atomic import atomic_write
from stvr_data.errors import DetectionsError, ManifestError, one_line
from stvr_data.manifest import CLIPS_PER_SECOND

DETECTION_COLUMNS = ("pair_id", "timestamp", "x1", "y1", "x2", "y2", "score")
BOX_COORDS = ("x1", "y1", "x2", "y2")
BOX_SLACK = 1e-6  # float rounding of a box computed as pixels / size
GROUNDTRUTH_COLUMNS = ("pair_id", "label", "timestamp", "x1", "y1", "x2", "y2")
SUMMARY_THRESHOLDS = (0.3, 0.5, 0.7)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PRCurve:
    """One label's precision-recall curve, one point per distinct detection score (descending)."""

    label: str
    scores: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    num_groundtruth: int
    average_precision: float


# --- validation ---------------------------------------------------------------------------

def _bad_row(source: str, frame: pd.DataFrame, mask: np.ndarray, problem: str) -> DetectionsError:
    """An error naming the first row where `mask` holds (rows counted from 1, header excluded)."""
    pos = int(np.flatnonzero(mask)[0])
    row = frame.iloc[pos]
    where = f"pair_id={str(row['pair_id'])!r}, timestamp={row['timestamp']}"
    more = int(np.count_nonzero(mask)) - 1
    tail = f" ({more} more rows like it)" if more else ""
    return DetectionsError(f"{source}: row {pos + 1} ({where}): {problem}{tail}")


def validate_detections(frame: pd.DataFrame, *, source: str = "detections",
                        pair_ids: Iterable[str] | None = None,
                        split: str | None = None) -> pd.DataFrame:
    """Check a detections table; return it with float64 numbers and categorical pair ids.

    Raises `DetectionsError` naming `source`, the first offending row (counted from 1,
    header excluded) and the problem: missing columns, values that are not numbers, NaN or
    infinite values, box coordinates outside [0, 1] (with a hint when they look like
    pixels), x2 < x1 or y2 < y1, pair ids of another split (when `split` is given;
    ids are ``<split>-<index>``) and pair ids not in `pair_ids` (when given).
    """
    missing = [c for c in DETECTION_COLUMNS if c not in frame.columns]
    if missing:
        raise DetectionsError(f"{source}: missing columns {missing} (need {list(DETECTION_COLUMNS)})")
    if frame["pair_id"].isna().any():
        raise _bad_row(source, frame, frame["pair_id"].isna().to_numpy(), "pair_id is missing")
    out = pd.DataFrame({"pair_id": _pair_categorical(frame["pair_id"])}, index=frame.index)
    for column in DETECTION_COLUMNS[1:]:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
        not_number = np.isnan(values) & frame[column].notna().to_numpy()
        if not_number.any():
            bad = frame[column].to_numpy()[np.flatnonzero(not_number)[0]]
            raise _bad_row(source, frame, not_number, f"{column} {bad!r} is not a number")
        if not np.isfinite(values).all():
            raise _bad_row(source, frame, ~np.isfinite(values), f"{column} is NaN or infinite")
        out[column] = values
    for low, high in (("x1", "x2"), ("y1", "y2")):
        inverted = out[high].to_numpy() < out[low].to_numpy()
        if inverted.any():
            raise _bad_row(source, frame, inverted, f"{high} < {low}")
    _check_normalised(out, frame, source)
    _check_pair_ids(out["pair_id"].array, frame, source, pair_ids, split)
    return out.reset_index(drop=True)


def _check_normalised(out: pd.DataFrame, frame: pd.DataFrame, source: str) -> None:
    """Box coordinates must be normalised to [0, 1]; pixel coordinates (the likeliest
    mistake) would otherwise score 0 without a word."""
    coords = out[list(BOX_COORDS)].to_numpy()
    outside = ((coords < -BOX_SLACK) | (coords > 1 + BOX_SLACK)).any(axis=1)
    if outside.any():
        row = coords[np.flatnonzero(outside)[0]]
        hint = ("; they look like pixel coordinates: divide x by the frame width and y by its height"
                if np.abs(coords).max() > 2 else "")
        raise _bad_row(source, frame, outside, f"box {[round(float(v), 4) for v in row]} outside [0, 1] "
                       f"(boxes are normalised x1, y1, x2, y2){hint}")


def _pair_categorical(ids: pd.Series) -> pd.Categorical:
    # Hashing a million ids is the slow part of validation: do it once, keep the codes.
    codes, uniques = pd.factorize(ids)
    names = pd.Index(uniques).astype(str)
    if not names.is_unique:  # e.g. 1 and "1" in one column
        codes, names = pd.factorize(ids.astype(str))
    return pd.Categorical.from_codes(codes, categories=pd.Index(names))


def _check_pair_ids(ids: pd.Categorical, frame, source, pair_ids, split) -> None:
    names = pd.Series(ids.categories)
    if split is not None:
        prefix = names.str.split("-", n=1).str[0]
        foreign = (prefix.isin(SPLITS) & (prefix != split)).to_numpy()[ids.codes]
        if foreign.any():
            other = prefix.to_numpy()[ids.codes[np.flatnonzero(foreign)[0]]]
            raise _bad_row(source, frame, foreign,
                           f"pair belongs to the {other} split, not {split}")
    if pair_ids is not None:
        unknown = (~names.isin(pd.Index(pair_ids))).to_numpy()[ids.codes]
        if unknown.any():
            raise _bad_row(source, frame, unknown, "unknown pair_id (not in the ground truth)")


def read_detections(path: str | Path) -> pd.DataFrame:
    """Read a detections file: CSV (with a header row) or Parquet, by its suffix."""
    path = Path(path)
    if not path.is_file():
        raise DetectionsError(f"{path}: no such detections file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype={"pair_id": str}, low_memory=False)
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise DetectionsError(f"{path}: cannot read detections ({one_line(err)})") from None


# --- images and overlaps ------------------------------------------------------------------

@dataclass(frozen=True)
class _Groundtruth:
    """Ground truth indexed by image: image keys sorted, each image's boxes contiguous."""

    pair_ids: pd.Index  # pair code -> pair id
    pair_label: np.ndarray  # pair code -> label code
    labels: list[str]  # label code -> combined label
    image_keys: np.ndarray  # sorted unique image keys
    box_first: np.ndarray  # per image: index of its first box in `boxes`
    box_count: np.ndarray  # per image: number of boxes (0 for an image without target)
    boxes: np.ndarray  # (M, 4) float64 [x1, y1, x2, y2], grouped by image in table order
    num_groundtruth: np.ndarray  # per label code
    stride: int  # frames per pair in the key space


@dataclass(frozen=True)
class _Overlaps:
    """Per kept detection: label, score, best ground-truth box and its IoU (-1 if the image
    has no box); `order` ranks them by descending score (stable)."""

    label_code: np.ndarray
    score: np.ndarray
    best_gt: np.ndarray
    best_iou: np.ndarray
    order: np.ndarray
    gt: _Groundtruth


def _frames(timestamps: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(timestamps, dtype=np.float64) * CLIPS_PER_SECOND).astype(np.int64)


def _image_keys(codes: np.ndarray, frames: np.ndarray, stride: int) -> np.ndarray:
    # Frames out of range are clipped to a value no image has, so keys never collide.
    return codes.astype(np.int64) * stride + np.clip(frames, -1, stride - 2) + 1


def _check_groundtruth(groundtruth: pd.DataFrame) -> None:
    """Ground truth from another tool than `read_benchmark_table`: columns, one label per
    pair, timestamps on the 1/3 s clip grid (an image is one 8-frame clip at 24 fps)."""
    missing = [c for c in GROUNDTRUTH_COLUMNS if c not in groundtruth.columns]
    if missing:
        raise ManifestError(f"groundtruth: missing columns {missing}")
    if len(groundtruth) == 0:
        raise ManifestError("groundtruth: no rows")
    labels_per_pair = groundtruth.groupby("pair_id", sort=False)["label"].nunique()
    if (labels_per_pair > 1).any():
        raise ManifestError(f"groundtruth: pair {labels_per_pair.index[labels_per_pair > 1][0]!r} "
                            "has more than one label")
    scaled = groundtruth["timestamp"].to_numpy(dtype=np.float64) * CLIPS_PER_SECOND
    off_grid = ~(np.abs(scaled - np.rint(scaled)) < 1e-3) | (scaled < 0)
    if off_grid.any():
        row = int(np.flatnonzero(off_grid)[0])
        raise ManifestError(f"groundtruth: row {row + 1} (pair_id={groundtruth['pair_id'].iloc[row]!r}): "
                            f"timestamp {groundtruth['timestamp'].iloc[row]} is not a clip start "
                            f"(a non-negative multiple of 1/{CLIPS_PER_SECOND} s)")


def _index_groundtruth(groundtruth: pd.DataFrame) -> _Groundtruth:
    _check_groundtruth(groundtruth)
    pairs = pd.Categorical(groundtruth["pair_id"].astype(str))
    label_codes, labels = pd.factorize(groundtruth["label"].astype(str), sort=True)
    frames = _frames(groundtruth["timestamp"].to_numpy())
    stride = int(frames.max()) + 3
    keys = _image_keys(pairs.codes, frames, stride)
    boxes = groundtruth[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64)
    is_box = ~np.isnan(boxes).any(axis=1)
    order = np.argsort(keys[is_box], kind="stable")  # stable: keeps each image's box order
    box_keys = keys[is_box][order]
    image_keys = np.unique(keys)
    first = np.searchsorted(box_keys, image_keys, side="left")
    pair_label = np.zeros(len(pairs.categories), dtype=np.int16)
    pair_label[pairs.codes] = label_codes
    return _Groundtruth(
        pair_ids=pairs.categories, pair_label=pair_label, labels=list(labels),
        image_keys=image_keys, box_first=first,
        box_count=np.searchsorted(box_keys, image_keys, side="right") - first,
        boxes=boxes[is_box][order], stride=stride,
        num_groundtruth=np.bincount(label_codes[is_box], minlength=len(labels)))


def _overlaps(groundtruth: pd.DataFrame, detections: pd.DataFrame, source: str) -> _Overlaps:
    gt = _index_groundtruth(groundtruth)
    det = validate_detections(detections, source=source, pair_ids=gt.pair_ids)
    pair = pd.Categorical(det["pair_id"], categories=gt.pair_ids).codes
    keys = _image_keys(pair, _frames(det["timestamp"].to_numpy()), gt.stride)
    image = np.minimum(np.searchsorted(gt.image_keys, keys), len(gt.image_keys) - 1)
    outside = gt.image_keys[image] != keys
    if outside.any():
        raise _bad_row(source, det, outside, "timestamp is not an image of the pair's "
                       "reference (images are at ref_start + k/3 s, ref_end exclusive)")
    boxes = det[["x1", "y1", "x2", "y2"]].to_numpy()
    keep = np.flatnonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
    image = image[keep]
    best_gt, best_iou = _best_match(boxes[keep], gt.boxes, gt.box_first[image], gt.box_count[image])
    score = det["score"].to_numpy()[keep]
    return _Overlaps(label_code=gt.pair_label[pair[keep]], score=score, best_gt=best_gt,
                     best_iou=best_iou, order=np.argsort(-score, kind="stable"), gt=gt)


def _best_match(det_boxes: np.ndarray, gt_boxes: np.ndarray, first: np.ndarray,
                count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Highest-IoU ground-truth box of each detection among the `count` boxes at `first`.

    Returns ``(best_gt, best_iou)``; ``best_gt`` is -1 and ``best_iou`` -1.0 for a detection
    whose image has no box. Ties go to the lower box index (`np.argmax` semantics).
    """
    n_det = len(det_boxes)
    det_of = np.repeat(np.arange(n_det), count)  # one entry per (detection, box of its image)
    starts = np.cumsum(count) - count
    gt_of = np.repeat(first - starts, count) + np.arange(len(det_of))
    iou = _iou(det_boxes[det_of], gt_boxes[gt_of])
    best_gt = np.full(n_det, -1, dtype=np.int64)
    best_iou = np.full(n_det, -1.0)
    has = count > 0
    if not has.any():
        return best_gt, best_iou
    group_max = np.maximum.reduceat(iou, starts[has])
    is_max = np.flatnonzero(iou == np.repeat(group_max, count[has]))
    first_max = is_max[np.r_[True, det_of[is_max][1:] != det_of[is_max][:-1]]]
    best_gt[det_of[first_max]] = gt_of[first_max]
    best_iou[has] = group_max
    return best_gt, best_iou


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of two (N, 4) arrays of [x1, y1, x2, y2] boxes, in ActivityNet's operation order."""
    heights = np.maximum(0.0, np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]))
    widths = np.maximum(0.0, np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]))
    inter = heights * widths
    area_a = (a[:, 3] - a[:, 1]) * (a[:, 2] - a[:, 0])
    area_b = (b[:, 3] - b[:, 1]) * (b[:, 2] - b[:, 0])
    return inter / (area_a + area_b - inter)


# --- matching and average precision -------------------------------------------------------

def _true_positives(ov: _Overlaps, iou_threshold: float) -> np.ndarray:
    """VOC matching: a box goes to the highest-scored detection that has it as best match;
    every other detection is a false positive (no fallback to its second-best box)."""
    candidate = np.flatnonzero(ov.best_iou[ov.order] >= iou_threshold)
    _, first = np.unique(ov.best_gt[ov.order][candidate], return_index=True)
    tp = np.zeros(len(ov.order), dtype=bool)
    tp[ov.order[candidate[first]]] = True
    return tp


def _curves(ov: _Overlaps, iou_threshold: float) -> list[PRCurve]:
    # Score order, then a stable (radix) sort by the int16 label: (label, -score) order.
    by_label = ov.order[np.argsort(ov.label_code[ov.order], kind="stable")]
    tp = _true_positives(ov, iou_threshold)[by_label]
    label, score = ov.label_code[by_label], ov.score[by_label]
    bounds = np.searchsorted(label, np.arange(len(ov.gt.labels) + 1))
    return [_curve(name, score[bounds[code]:bounds[code + 1]], tp[bounds[code]:bounds[code + 1]],
                   int(ov.gt.num_groundtruth[code]))
            for code, name in enumerate(ov.gt.labels)]


def _curve(label: str, score: np.ndarray, tp: np.ndarray, num_gt: int) -> PRCurve:
    """Precision/recall at each distinct score of one label's detections (sorted descending)."""
    if num_gt == 0:
        empty = np.zeros(0)
        return PRCurve(label, empty, empty, empty, 0, math.nan)
    # The end of each run of equal scores is one threshold: counting the whole run there is
    # the same as ranking its false positives first.
    run_end = np.flatnonzero(np.r_[score[1:] != score[:-1], True]) if len(score) else np.zeros(0, int)
    true_pos = np.cumsum(tp)[run_end]
    precision = true_pos / (run_end + 1.0)
    recall = true_pos / num_gt
    monotone = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.r_[0.0, recall])
    ap = float(np.sum(steps[steps != 0] * monotone[steps != 0]))
    return PRCurve(label, score[run_end], precision, recall, num_gt, ap)


def _result(curves: list[PRCurve], ov: _Overlaps, iou_threshold: float) -> dict:
    aps = [c.average_precision for c in curves if not math.isnan(c.average_precision)]
    return {
        "iou_threshold": float(iou_threshold),
        "mAP": float(np.mean(aps)) if aps else math.nan,
        "per_label": {c.label: c.average_precision for c in curves},
        "num_images": len(ov.gt.image_keys),
        "num_groundtruth": int(ov.gt.num_groundtruth.sum()),
        "num_detections": int(len(ov.score)),
    }


def frame_map(groundtruth: pd.DataFrame, detections: pd.DataFrame,
              iou_threshold: float = 0.5) -> dict:
    """Frame-mAP of `detections` against `groundtruth` (columns in `GROUNDTRUTH_COLUMNS`,
    `DETECTION_COLUMNS`; a ground-truth row with a missing box, NaN in pandas and null in
    the file, is an image without target).

    Returns ``{"iou_threshold", "mAP", "per_label": {label: AP}, "num_images",
    "num_groundtruth", "num_detections"}``; a label without ground truth has AP NaN and is
    left out of the mean. Raises `DetectionsError` for invalid detections or detections
    outside the ground truth's images, `ManifestError` for malformed ground truth.
    """
    return frame_map_at(groundtruth, detections, (iou_threshold,))[float(iou_threshold)]


def frame_map_at(groundtruth: pd.DataFrame, detections: pd.DataFrame,
                 thresholds: Iterable[float] = SUMMARY_THRESHOLDS, *,
                 source: str = "detections") -> dict[float, dict]:
    """`frame_map` at several IoU thresholds, sharing the overlap computation; `source`
    names the detections in error messages."""
    ov = _overlaps(groundtruth, detections, source)
    return {float(t): _result(_curves(ov, t), ov, t) for t in thresholds}


def precision_recall(groundtruth: pd.DataFrame, detections: pd.DataFrame,
                     iou_threshold: float = 0.5, *, source: str = "detections") -> dict[str, PRCurve]:
    """Each label's precision-recall curve (the points the AP is computed from)."""
    ov = _overlaps(groundtruth, detections, source)
    return {c.label: c for c in _curves(ov, iou_threshold)}


def plot_precision_recall(curves: dict[str, PRCurve], out_dir: str | Path) -> list[Path]:
    """Draw one PNG per label, ``pr_<label>.png``, into `out_dir`; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for label, curve in curves.items():
        fig, ax = plt.subplots(figsize=(4.5, 4.0))
        # "pre": the precision reached at recall r holds on (previous recall, r], as in the AP sum.
        first = curve.precision[:1] if len(curve.precision) else np.zeros(1)
        ax.step(np.r_[0.0, curve.recall], np.r_[first, curve.precision], where="pre")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
               title=f"{label}: AP {curve.average_precision:.3f} ({curve.num_groundtruth} boxes)")
        fig.tight_layout()
        path = out_dir / f"pr_{label}.png"
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png", metadata={"Software": None})
        plt.close(fig)
        paths.append(path)
    return paths
