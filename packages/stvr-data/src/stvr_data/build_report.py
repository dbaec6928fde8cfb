"""What a build says about the benchmark it made: the counts and chance floors recorded in
`dataset.json`, the tubelets-per-label chart, and the lines the CLI prints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from stvr_data import chance, shards
from stvr_data.atomic import atomic_write


def counts(tubelets, videos, tables, dropped) -> dict:
    counts = {
        "videos": {status: int(n) for status, n in videos.status.value_counts().sort_index().items()},
        "tubelets": {s: int((tubelets.split == s).sum()) for s in ("train", "val", "test", "context")},
        "labels": {s: int(tubelets.loc[tubelets.split == s, "label"].nunique())
                   for s in ("train", "val", "test")},
    }
    for split in ("val", "test"):
        gt = tables[f"groundtruth_{split}"]
        counts[f"pairs_{split}"] = len(tables[f"pairs_{split}"])
        counts[f"pairs_{split}_dropped_for_media"] = dropped[split]
        counts[f"images_{split}"] = int(gt[["pair_id", "timestamp"]].drop_duplicates().shape[0])
        counts[f"boxes_{split}"] = int(gt.x1.notna().sum())
    return counts


def chance_floors(tables, tubelets, keyframe_interval: float) -> dict:
    """Per val/test split with pairs, the frame-mAP@0.5 of a query-blind detector with
    perfect boxes (`stvr_data.chance`): the floor every score is read against."""
    return {split: chance.chance_of_tables(tables[f"pairs_{split}"], tables[f"groundtruth_{split}"],
                                           tubelets, keyframe_interval)
            for split in ("val", "test") if len(tables[f"pairs_{split}"])}


def draw_samples_per_label(tubelets: pd.DataFrame, path: Path, *, title: str) -> None:
    """Bar chart of tubelets per combined label coloured by split (the paper's Figure 6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tubelets = tubelets[tubelets.split.isin(["train", "val", "test"])]  # not the context actors
    counts = (tubelets.groupby(["split", "label"]).size().rename("n").reset_index()
              .sort_values(["split", "n", "label"], ascending=[True, False, True]))
    order = {"train": 0, "val": 1, "test": 2}
    counts = counts.sort_values(by="split", key=lambda s: s.map(order), kind="stable")
    colours = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}
    width = min(max(6.0, 0.18 * len(counts)), 60.0)
    fig, ax = plt.subplots(figsize=(width, 4.5))
    ax.bar(np.arange(len(counts)), counts.n, color=counts.split.map(colours), width=0.85)
    if len(counts) and counts.n.max() > 50 * counts.n.min():  # AVA's long tail needs a log axis
        ax.set_yscale("log")
    ax.set_ylabel("tubelets")
    ax.set_xticks(np.arange(len(counts)), counts.label, rotation=90, fontsize=6)
    ax.set_xlim(-1, len(counts))
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    ax.legend(handles, [f"{s} ({(counts.split == s).sum()} labels)" for s in colours],
              loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    ax.set_title(title, pad=24)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png", metadata={"Software": None})
    plt.close(fig)


def summary(card: dict) -> str:
    """A few human lines about a built benchmark, or a shard's one line (printed by the CLI)."""
    if "shard" in card:
        return shards.summary(card)
    counts = card.get("counts", {})
    lines = [f"{card.get('name')}: {json.dumps(counts.get('tubelets'))} tubelets, "
             f"labels {json.dumps(counts.get('labels'))}",
             f"pairs: val {counts.get('pairs_val')} ({counts.get('images_val')} images), "
             f"test {counts.get('pairs_test')} ({counts.get('images_test')} images)",
             f"videos: {json.dumps(counts.get('videos'))}"]
    floors = card.get("chance_mAP") or {}
    if floors:
        lines.append("chance frame-mAP@0.5 (query-blind, perfect boxes): " + ", ".join(
            f"{split} {floor['mAP']:.3f}" for split, floor in floors.items()))
    return "\n".join(lines)
