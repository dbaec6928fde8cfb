"""The chance floor of a split: what a detector that ignores the query scores.

Every frame-mAP this toolkit reports comes with this number. The floor detector boxes
every annotated actor of each reference image exactly (perfect localisation, perfect
actor detection) and gives each box a random score, so it ranks matching and other
actors alike. Its frame-mAP is therefore the share of actors that match, roughly, and
the same at every IoU threshold (its boxes are the annotations). A re-localization
model is only doing the task when it beats this floor; one that localises actors well
but ignores the query lands on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stvr_data import manifest, pairs
from stvr_data.evaluation import frame_map

CHANCE_REPEATS = 10  # random score draws averaged
CHANCE_SEED = 0


def chance_map(groundtruth: pd.DataFrame, actors: pd.DataFrame, *, repeats: int = CHANCE_REPEATS,
               seed: int = CHANCE_SEED) -> dict:
    """Mean and standard deviation of the frame-mAP@0.5 of the floor detector.

    `groundtruth`: the scorer's ground truth; `actors`: every actor box per image
    (`stvr_data.pairs.actor_images`), restricted to the same pairs. Returns
    ``{"mAP", "std", "repeats", "seed"}``.
    """
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(repeats):
        detections = actors.assign(score=rng.random(len(actors)))
        scores.append(frame_map(groundtruth, detections, iou_threshold=0.5)["mAP"])
    return {"mAP": float(np.mean(scores)), "std": float(np.std(scores)), "repeats": repeats, "seed": seed}


def split_chance(benchmark: str | Path, split: str, *, pair_ids=None, **options) -> dict:
    """`chance_map` of a built benchmark's split (optionally only the pairs `pair_ids`)."""
    card = manifest.read_dataset_card(benchmark)
    interval = float(card.get("keyframe_interval", 1.0))
    fixed = manifest.read_benchmark_table(benchmark, f"pairs_{split}")
    truth = manifest.read_benchmark_table(benchmark, f"groundtruth_{split}")
    if pair_ids is not None:
        keep = set(pair_ids)
        fixed = fixed[fixed.pair_id.isin(keep)].reset_index(drop=True)
        truth = truth[truth.pair_id.isin(keep)]
    tubelets = manifest.read_benchmark_table(benchmark, "tubelets")
    return chance_of_tables(fixed, truth, tubelets, interval, **options)


def chance_of_tables(fixed: pd.DataFrame, truth: pd.DataFrame, tubelets: pd.DataFrame,
                     keyframe_interval: float, **options) -> dict:
    """`chance_map` from the tables themselves (the builder calls this before the card exists)."""
    actors = pairs.actor_images(fixed, tubelets, keyframe_interval=keyframe_interval,
                                clips_per_second=manifest.images_per_keyframe(keyframe_interval))
    return chance_map(truth, actors, **options)
