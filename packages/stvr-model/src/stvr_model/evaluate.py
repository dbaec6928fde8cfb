"""Run a trained detector over the fixed pairs of a split and score it (paper §6.1).

Writes `detections_<split>.parquet` in the scorer's format (normalised boxes), scores
it with `stvr_data.evaluation.frame_map` at IoU 0.3 / 0.5 / 0.7, and draws a few pairs
(Figure 8 style). Each reference is processed whole, clip after clip, so the recurrent
state runs over the full reference as in the authors' evaluation.

Every score comes with the two numbers that say whether the model re-localizes:
`chance_mAP` (a query-blind detector with perfect actor boxes and random scores,
`stvr_data.chance`) and `shuffled_query_mAP` (this model with each pair's query replaced
by the query of a pair with another combined label). A model that uses the query beats
the first and scores clearly lower on the second.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from stvr_data import chance, manifest
from stvr_data.atomic import write_text
from stvr_data.evaluation import frame_map
from stvr_data.tubelets import describe_label
from stvr_model.checkpoint import run_config
from stvr_model.config import ModelConfig
from stvr_model.data import PairDataset, batch_to_model, collate
from stvr_model.distributed import Ranks, gather_to_main, init_distributed, process_device, shard
from stvr_model.inference import (
    DETECTION_COLUMNS,
    detection_rows,
    inference_data,
    load_for_inference,
    model_inputs,
    resolve_device,
)
from stvr_model.visualize import draw_pair

log = logging.getLogger(__name__)

IOU_THRESHOLDS = (0.3, 0.5, 0.7)


def _one(samples: list[dict]) -> dict:
    """The loader's batch of one pair, left uncollated: the pictures need the sample."""
    return samples[0]


@torch.no_grad()
def predict(model, dataset: PairDataset, spec: ModelConfig, device: torch.device, *,
            max_pairs: int | None = None, keep: int = 0, progress: bool = True, workers: int = 0,
            ranks: Ranks | None = None):
    """Detect on the first `max_pairs` pairs: (detections frame, [(pair index, sample,
    clip detections)] of those among the first `keep` pairs that this process ran).

    Under torchrun every rank detects its `shard` of the pairs (`workers` loader processes
    each) and rank 0 gathers the rows: its frame, in pair order, is the one a single
    process gives; the other ranks return None for it. A collective under torchrun."""
    ranks = ranks or Ranks()
    count = len(dataset) if max_pairs is None else min(max_pairs, len(dataset))
    indices = shard(count, ranks)
    loader = DataLoader(Subset(dataset, indices), batch_size=1, collate_fn=_one, num_workers=workers)
    rows, kept = [], []
    height, width = dataset.size
    bar = tqdm(zip(indices, loader, strict=True), total=len(indices), desc=f"evaluate {dataset.split}",
               disable=not progress or not ranks.main, unit="pair")
    for index, sample in bar:
        detections, _ = model(**model_inputs(batch_to_model(collate([sample]), device), spec))
        rows.append((index, detection_rows(sample["pair_id"], sample["times"].numpy(), detections[0],
                                           width, height)))
        if index < keep:
            kept.append((index, sample, [{k: v.cpu() for k, v in d.items()} for d in detections[0]]))
    parts = gather_to_main(rows, ranks)
    if parts is None:
        return None, kept
    ordered = [frame for _, frame in sorted((row for part in parts for row in part), key=lambda r: r[0])]
    frame = pd.concat(ordered, ignore_index=True) if ordered else pd.DataFrame(columns=DETECTION_COLUMNS)
    return frame, kept


def score(groundtruth: pd.DataFrame, detections: pd.DataFrame, thresholds=IOU_THRESHOLDS) -> dict:
    """frame-mAP and per-label AP at each IoU threshold."""
    results = {}
    for iou in thresholds:
        result = frame_map(groundtruth, detections, iou_threshold=iou)
        results[f"{iou:.1f}"] = {"mAP": float(result["mAP"]),
                                 "per_label": {k: float(v) for k, v in result["per_label"].items()}}
    return results


def labels_seen_in_training(state: dict, benchmark: str | Path, split: str) -> list[str]:
    """The labels of `split` in `benchmark` that the checkpoint's training pairs had."""
    record = state.get("benchmark")
    if not record:
        return []
    trained = set(record["labels"].get(record.get("split", "train"), []))
    held_out = manifest.read_dataset_card(benchmark).get("labels", {}).get(split, [])
    return sorted(trained.intersection(held_out))


def evaluate(checkpoint: str | Path, benchmark: str | Path, split: str, out: str | Path, *,
             device: str = "auto", max_pairs: int | None = None, pictures: int = 4,
             progress: bool = True, shuffle_seed: int | None = 0, min_score: float = 0.3,
             feature_cache: str | Path | None = None, workers: int = 0) -> dict | None:
    """Detect, score and draw; returns the metrics written to `metrics_<split>.json`.

    `shuffle_seed` seeds the shuffled-query diagnostic (None skips it: half the time);
    the pictures draw detections scoring at least `min_score`. `feature_cache`: a
    `FeatureCache` folder for the backbone's features, for models that share a frozen
    backbone (staged training): each clip's features are computed once. `workers`:
    DataLoader processes decoding the pairs.

    Under torchrun the pairs are split between the ranks (`distributed.shard`), each on
    its own GPU; rank 0 gathers the detections and writes the same files as one process
    (byte-identical detections) and returns the metrics, the other ranks return None."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    requested = resolve_device(device)
    ranks = init_distributed(requested)
    model, state, spec, torch_device = load_for_inference(checkpoint, str(process_device(requested, ranks)),
                                                          feature_cache=feature_cache)
    seen = labels_seen_in_training(state, benchmark, split)
    if seen and ranks.main:
        log.warning("the model was trained on pairs of %d of the %s labels (%s): this score does not "
                    "measure re-localization of unseen actions", len(seen), split, ", ".join(seen[:5]))
    data = inference_data(run_config(state).data)
    dataset = PairDataset(benchmark, split, data, training=False)
    run = {"max_pairs": max_pairs, "progress": progress, "workers": workers, "ranks": ranks}
    detections, kept = predict(model, dataset, spec, torch_device, keep=pictures, **run)
    wrong = None
    if shuffle_seed is not None and dataset.fixed.label.nunique() > 1:
        shuffled = PairDataset(benchmark, split, data, training=False, shuffle_queries=shuffle_seed)
        wrong, _ = predict(model, shuffled, spec, torch_device, **run)
    _draw(kept, dataset, benchmark, spec, out, min_score)
    if not ranks.main:
        return None
    evaluated = set(dataset.fixed.pair_id.iloc[: len(dataset) if max_pairs is None else max_pairs])
    groundtruth = manifest.read_benchmark_table(benchmark, f"groundtruth_{split}")
    groundtruth = groundtruth[groundtruth.pair_id.isin(evaluated)]
    manifest.write_table(detections, out / f"detections_{split}.parquet", manifest.DETECTIONS_SCHEMA)
    results = {"checkpoint": str(checkpoint), "iteration": int(state["iteration"]), "split": split,
               "cell": spec.cell.kind, "backbone": spec.backbone, "pairs": len(evaluated),
               "frame_map": score(groundtruth, detections),
               "chance_mAP": chance.split_chance(benchmark, split, pair_ids=evaluated),
               "labels_seen_in_training": seen,
               "shuffled_query_mAP": None if wrong is None else {"seed": shuffle_seed,
                                                                 "frame_map": score(groundtruth, wrong)}}
    write_text(out / f"metrics_{split}.json", json.dumps(results, indent=2) + "\n")
    return results


def _draw(kept: list, dataset: PairDataset, benchmark: str | Path, spec: ModelConfig, out: Path,
          min_score: float) -> None:
    """Figure-8 pictures of the kept pairs, named by their index in the split."""
    labels = dict(zip(dataset.fixed.pair_id, dataset.fixed.label, strict=True))
    names = manifest.read_dataset_card(benchmark).get("action_names", {})
    for index, sample, dets in kept:
        draw_pair(sample, dets, out / "pictures" / f"{dataset.split}_{index:02d}_{sample['pair_id']}.png",
                  title=f"{sample['pair_id']} ({spec.cell.kind})", min_score=min_score,
                  label=describe_label(labels[sample["pair_id"]], names))
