"""Benchmark: `stvr_data.evaluation.frame_map` against ActivityNet's AVA evaluator.

Input: the real official test pairs (`stvr_test.json`, imported with `import_official`)
and synthetic detections: jittered copies of every ground-truth box (true positives,
duplicates and misses by IoU) plus random false positives spread over all images.

The reference is ActivityNet's evaluator itself (`Evaluation/get_ava_performance.py`
with `ava/object_detection_evaluation.py`), run from a checkout outside this repository
(https://github.com/activitynet/ActivityNet; no TensorFlow needed) and fed the same boxes
through its own CSV reader: the pair is the video, the image index the timestamp, the
combined label the class, and its 50-detections-per-image cap is off. Two names it uses
were removed in numpy 2 (`np.float`, `np.NAN`); they are put back while it runs.

    python benchmarks/scorer.py --activitynet /path/to/ActivityNet [--detections 1000000]
    python benchmarks/scorer.py --smoke    # 20k detections, ours only: a check that it runs

Without `--activitynet` (or $ACTIVITYNET_DIR) only this project's scorer is timed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from machine import describe  # benchmarks/machine.py (the script's folder is on sys.path)

from stvr_data import evaluation, manifest, official

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RELEASE = REPO.parent / "shared" / "data" / "stvr-official" / "stvr_test.json"


# --- the reference evaluator --------------------------------------------------------------

@contextlib.contextmanager
def activitynet_modules(checkout: str | os.PathLike):
    """Import ActivityNet's AVA evaluator from `checkout`; undo every trace on exit."""
    evaluation_dir = Path(checkout) / "Evaluation"
    if not (evaluation_dir / "ava" / "object_detection_evaluation.py").is_file():
        raise FileNotFoundError(f"{checkout}: not an ActivityNet checkout (no Evaluation/ava)")
    saved_path = list(sys.path)
    shims = {"float": float, "NAN": np.nan}
    added = [name for name in shims if not hasattr(np, name)]
    for name in added:
        setattr(np, name, shims[name])
    sys.path[:0] = [str(evaluation_dir), str(evaluation_dir / "ava")]
    try:
        yield (importlib.import_module("get_ava_performance"),
               importlib.import_module("ava.object_detection_evaluation"))
    finally:
        sys.path[:] = saved_path
        for name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", "") or "").startswith(str(evaluation_dir)):
                del sys.modules[name]
        for name in added:
            delattr(np, name)


def write_activitynet_csvs(groundtruth: pd.DataFrame, detections: pd.DataFrame,
                           workdir: Path) -> tuple[Path, Path, dict[str, int]]:
    """AVA-format CSVs: `pair_id, image index, x1, y1, x2, y2, class[, score]`; an image
    without target is a 2-column row. Boxes are written as float64 so both scorers read
    the same numbers."""
    labels = {label: i + 1 for i, label in enumerate(sorted(groundtruth.label.unique()))}
    image = np.rint(groundtruth.timestamp.to_numpy() * 3).astype(np.int64)
    gt = pd.DataFrame({"pair_id": groundtruth.pair_id.astype(str), "image": image})
    for col in ("x1", "y1", "x2", "y2"):
        gt[col] = groundtruth[col].to_numpy(dtype=np.float64)
    gt["class"] = groundtruth.label.map(labels).astype("Int64")
    gt_path = workdir / "groundtruth.csv"
    with open(gt_path, "w") as handle:
        boxes = gt[gt.x1.notna()]
        boxes.to_csv(handle, header=False, index=False, float_format="%.17g")
        gt.loc[gt.x1.isna(), ["pair_id", "image"]].to_csv(handle, header=False, index=False)
    pair_class = dict(zip(gt.pair_id, gt["class"], strict=True))
    det = pd.DataFrame({"pair_id": detections.pair_id.astype(str),
                        "image": np.rint(detections.timestamp.to_numpy(dtype=np.float64) * 3).astype(np.int64)})
    for col in ("x1", "y1", "x2", "y2"):
        det[col] = detections[col].to_numpy(dtype=np.float64)
    det["class"] = det.pair_id.map(pair_class).astype("Int64")
    det["score"] = detections.score.to_numpy(dtype=np.float64)
    det_path = workdir / "detections.csv"
    det.to_csv(det_path, header=False, index=False, float_format="%.17g")
    return gt_path, det_path, labels


def activitynet_frame_map(groundtruth: pd.DataFrame, detections: pd.DataFrame,
                          iou_threshold: float, checkout: str | os.PathLike) -> dict:
    """Frame-mAP by ActivityNet's evaluator; returns mAP, per-label AP and its timings."""
    with tempfile.TemporaryDirectory() as tmp, activitynet_modules(checkout) as (gap, ode):
        gt_path, det_path, labels = write_activitynet_csvs(groundtruth, detections, Path(tmp))
        start = time.perf_counter()
        with open(gt_path) as handle:
            gt_boxes, gt_labels, _, included = gap.read_csv(handle, None, 0)
        with open(det_path) as handle:
            det_boxes, det_labels, det_scores, _ = gap.read_csv(handle, None, 0)  # cap off
        read_s = time.perf_counter() - start
        start, start_cpu = time.perf_counter(), time.process_time()
        categories = [{"id": i, "name": name} for name, i in labels.items()]
        evaluator = ode.PascalDetectionEvaluator(categories, matching_iou_threshold=iou_threshold)
        fields = gap.standard_fields
        for key, boxes in gt_boxes.items():
            evaluator.add_single_ground_truth_image_info(key, {
                fields.InputDataFields.groundtruth_boxes: np.array(boxes, dtype=float),
                fields.InputDataFields.groundtruth_classes: np.array(gt_labels[key], dtype=int),
                fields.InputDataFields.groundtruth_difficult: np.zeros(len(boxes), dtype=bool)})
        for key, boxes in det_boxes.items():
            if key in included:
                evaluator.add_single_detected_image_info(key, {
                    fields.DetectionResultFields.detection_boxes: np.array(boxes, dtype=float),
                    fields.DetectionResultFields.detection_classes: np.array(det_labels[key], dtype=int),
                    fields.DetectionResultFields.detection_scores: np.array(det_scores[key], dtype=float)})
        metrics = evaluator.evaluate()
        eval_s, eval_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    prefix = f"PascalBoxes_PerformanceByCategory/AP@{iou_threshold}IOU/"
    return {"mAP": float(metrics[f"PascalBoxes_Precision/mAP@{iou_threshold}IOU"]),
            "per_label": {name: float(metrics[prefix + name]) for name in labels},
            "seconds_read_csv": read_s, "seconds_evaluate": eval_s, "cpu_seconds_evaluate": eval_cpu}


# --- input --------------------------------------------------------------------------------

def synthetic_detections(groundtruth: pd.DataFrame, total: int, seed: int = 0) -> pd.DataFrame:
    """`total` detections: 8 jittered copies of each ground-truth box (noise ~ 10% of its
    size, so some fall below the IoU threshold and copies compete for one box; clipped to
    the frame), the rest
    random false positives on random images, scored lower on average."""
    rng = np.random.default_rng(seed)
    boxes = groundtruth[groundtruth.x1.notna()]
    copies = boxes.loc[boxes.index.repeat(8), ["pair_id", "timestamp", "x1", "y1", "x2", "y2"]]
    copies = copies.iloc[: total // 2].reset_index(drop=True)
    xyxy = copies[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64)
    size = np.repeat(xyxy[:, 2:] - xyxy[:, :2], 2, axis=0).reshape(-1, 4)
    xyxy = np.clip(xyxy + rng.normal(0.0, 0.1, xyxy.shape) * size, 0.0, 1.0)  # the scorer takes [0, 1]
    copies[["x1", "y1", "x2", "y2"]] = np.c_[np.minimum(xyxy[:, :2], xyxy[:, 2:]),
                                             np.maximum(xyxy[:, :2], xyxy[:, 2:])]
    copies["score"] = rng.uniform(0.2, 1.0, len(copies))
    images = groundtruth[["pair_id", "timestamp"]].drop_duplicates().reset_index(drop=True)
    false = images.iloc[rng.integers(0, len(images), total - len(copies))].reset_index(drop=True)
    corner = rng.uniform(0.0, 0.7, (len(false), 2))
    extent = rng.uniform(0.05, 0.3, (len(false), 2))
    false[["x1", "y1"]] = corner
    false[["x2", "y2"]] = corner + extent
    false["score"] = rng.uniform(0.0, 0.8, len(false))
    return pd.concat([copies, false], ignore_index=True)


def machine() -> str:
    return describe(platform.platform(), f"numpy {np.__version__}", f"pandas {pd.__version__}")


def best_of(repeat: int, fn):
    """(best wall seconds, best CPU seconds of this process, result) over `repeat` runs."""
    wall, cpu, result = [], [], None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", type=Path, default=DEFAULT_RELEASE)
    parser.add_argument("--activitynet", default=os.environ.get("ACTIVITYNET_DIR"),
                        help="ActivityNet checkout (default: $ACTIVITYNET_DIR)")
    parser.add_argument("--detections", type=int, default=1_000_000)
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="20k detections, one run, no reference: a check that it runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.detections, args.repeat, args.activitynet = 20_000, 1, None
    print("machine:", machine())
    with tempfile.TemporaryDirectory() as bench:
        official.import_official(args.release, bench)
        gt = manifest.read_benchmark_table(bench, f"groundtruth_{official.split_from_name(args.release)}")
    dets = synthetic_detections(gt, args.detections, args.seed)
    print(f"input: {gt.pair_id.nunique()} pairs, {len(gt[['pair_id', 'timestamp']].drop_duplicates())} "
          f"images, {int(gt.x1.notna().sum())} ground-truth boxes, {len(dets)} detections")
    ours_s, ours_cpu, ours = best_of(args.repeat, lambda: evaluation.frame_map(gt, dets, args.iou))
    at_s, at_cpu, summary = best_of(args.repeat, lambda: evaluation.frame_map_at(gt, dets))
    print(f"frame_map:      {ours_s:.2f} s wall, {ours_cpu:.2f} s CPU (best of {args.repeat}), "
          f"mAP@{args.iou} = {ours['mAP']:.6f}")
    print(f"frame_map_at:   {at_s:.2f} s wall, {at_cpu:.2f} s CPU for IoU "
          f"{', '.join(str(t) for t in summary)}: " + ", ".join(f"{r['mAP']:.4f}" for r in summary.values()))
    if not args.activitynet:
        print("ActivityNet:    not run (pass --activitynet DIR, a checkout of "
              "github.com/activitynet/ActivityNet, to compare)")
        return 0
    ref = activitynet_frame_map(gt, dets, args.iou, args.activitynet)
    ref_s, ref_cpu = ref["seconds_evaluate"], ref["cpu_seconds_evaluate"]
    diff = max(abs(ref["per_label"][k] - v) for k, v in ours["per_label"].items())
    print(f"ActivityNet:    {ref_s:.2f} s wall, {ref_cpu:.2f} s CPU evaluating "
          f"(+ {ref['seconds_read_csv']:.2f} s reading its CSVs), mAP@{args.iou} = {ref['mAP']:.6f}")
    print(f"speed-up: {ref_s / ours_s:.1f}x wall, {ref_cpu / ours_cpu:.1f}x CPU (evaluation only); "
          f"{(ref_s + ref['seconds_read_csv']) / ours_s:.1f}x wall with its CSV reading")
    print(f"agreement: |mAP difference| = {abs(ref['mAP'] - ours['mAP']):.2e}, "
          f"max per-label |AP difference| = {diff:.2e}")
    return 0 if diff < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
