"""`stvr-data evaluate`: parse arguments, delegate to `stvr_data.evaluation`, print the table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from stvr_data import atomic, evaluation, manifest


def _format_table(result: dict, summary: dict[float, dict], num_gt: dict[str, int]) -> str:
    iou = result["iou_threshold"]
    width = max([len("label")] + [len(label) for label in result["per_label"]])
    lines = [f"{'label':<{width}}  {'boxes':>7}  {'AP@' + format(iou, 'g'):>8}"]
    for label, ap in result["per_label"].items():
        lines.append(f"{label:<{width}}  {num_gt[label]:>7}  {ap:>8.4f}")
    lines.append(f"frame-mAP@{iou:g}: {result['mAP']:.4f} over {len(result['per_label'])} labels, "
                 f"{result['num_images']} images, {result['num_detections']} detections")
    lines.append("summary: " + "  ".join(f"mAP@{t:g} {summary[t]['mAP']:.4f}"
                                         for t in evaluation.SUMMARY_THRESHOLDS))
    return "\n".join(lines)


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else value


@click.command("evaluate")
@click.option("--benchmark", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Benchmark directory (holds groundtruth_<split>.parquet).")
@click.option("--split", required=True, type=click.Choice(["val", "test"]), help="Split to score.")
@click.option("--detections", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV (with header) or Parquet: pair_id, timestamp, x1, y1, x2, y2, score.")
@click.option("--iou", default=0.5, show_default=True, type=click.FloatRange(0.0, 1.0, min_open=True),
              help="IoU threshold of the headline frame-mAP.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write {iou_threshold, mAP, per_label, summary, ...} here.")
@click.option("--plot-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Draw one precision-recall PNG per label here.")
def evaluate(benchmark: Path, split: str, detections: Path, iou: float, json_out: Path | None,
             plot_dir: Path | None) -> None:
    """Score detections with frame-mAP (the official compute_ap.py protocol)."""
    groundtruth = manifest.read_benchmark_table(benchmark, f"groundtruth_{split}")
    frame = evaluation.read_detections(detections)
    frame = evaluation.validate_detections(frame, source=str(detections), split=split,
                                           pair_ids=groundtruth.pair_id.unique())
    thresholds = sorted({iou, *evaluation.SUMMARY_THRESHOLDS})
    results = evaluation.frame_map_at(groundtruth, frame, thresholds, source=str(detections))
    result = results[iou]
    num_gt = groundtruth[groundtruth.x1.notna()].groupby("label").size()
    click.echo(_format_table(result, results, {k: int(num_gt.get(k, 0)) for k in result["per_label"]}))
    if json_out is not None:
        out = dict(result, mAP=_json_number(result["mAP"]), split=split, detections=str(detections),
                   per_label={k: _json_number(v) for k, v in result["per_label"].items()},
                   summary={format(t, "g"): _json_number(results[t]["mAP"])
                            for t in evaluation.SUMMARY_THRESHOLDS})
        atomic.write_text(json_out, json.dumps(out, indent=2) + "\n")
        click.echo(f"wrote {json_out}")
    if plot_dir is not None:
        curves = evaluation.precision_recall(groundtruth, frame, iou, source=str(detections))
        paths = evaluation.plot_precision_recall(curves, plot_dir)
        click.echo(f"wrote {len(paths)} precision-recall plots to {plot_dir}")
