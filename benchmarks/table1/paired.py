"""Paired comparisons: each cell against another on the same seed.

Every run of one speed and seed starts from the same stage 0 and stage 1 (backbone, RPN,
second stage; `plan.Run.stage1_key`), so the spread of a cell's mAP over seeds is mostly
the spread of that shared start, and it hides differences between cells that every seed
agrees on. The per-seed difference ``A - B`` cancels it: a comparison counts when the
mean difference exceeds the sample std of the differences (and so every seed, with
three, leans the same way), the same "more than the seed spread" rule as the table's
verdicts, applied to what the cells do not share. Pure; values in percent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from benchmarks.table1.plan import CELL_NAMES, IOUS
from benchmarks.table1.report import Stat, format_stat, markdown_table, mean_std

# (A, B): every cell against Clip, then the paper's question, Warp LSTM against ConvLSTM.
COMPARISONS: tuple[tuple[str, str], ...] = (
    ("convlstm", "none"),
    ("flow", "none"),
    ("traj", "none"),
    ("warp", "none"),
    ("warp", "convlstm"),
)
SHOWN_IOUS: tuple[str, ...] = ("0.5", "0.7")


@dataclass(frozen=True)
class Paired:
    """``A - B`` over the seeds where both ran: their mean ± std and how many favour A."""

    difference: Stat
    wins: int  # seeds with A > B


def paired(records: list[dict], speed: float, a: str, b: str, iou: str) -> Paired:
    """mAP@`iou` of cell `a` minus cell `b` at `speed`, seed by seed (in percent)."""
    if iou not in IOUS:
        raise ValueError(f"iou must be one of {IOUS}, not {iou!r}")
    scores: dict[tuple[str, int], float] = {
        (r["cell"], r["seed"]): 100.0 * r["map"][iou]
        for r in records
        if float(r["speed"]) == float(speed) and r["cell"] in (a, b)
    }
    shared = sorted({seed for cell, seed in scores if cell == a} & {seed for cell, seed in scores if cell == b})
    differences = [scores[(a, s)] - scores[(b, s)] for s in shared]
    return Paired(mean_std(differences), sum(d > 0 for d in differences))


def paired_verdict(result: Paired, a: str, b: str) -> str:
    """Whether `a` beats `b` (or loses) by more than the spread of the differences."""
    stat = result.difference
    if stat.n == 0:
        return "not both run"
    if stat.n < 2 or math.isnan(stat.std):
        return "one seed: no spread to judge by"
    if stat.mean > stat.std:
        return f"{CELL_NAMES[a]} higher by more than the spread"
    if stat.mean < -stat.std:
        return f"{CELL_NAMES[a]} lower by more than the spread"
    return "within the spread"


def paired_markdown(records: list[dict], speeds: list[tuple[str, float]], unit: str) -> str:
    """A section with one row per comparison and speed (`speeds`: (label, speed) pairs,
    the label may be empty):
    the mean ± std of the per-seed differences at IoU 0.5 and 0.7, the seeds favouring
    A, and the verdict at each IoU."""
    header = ["A - B", "speed"]
    for iou in SHOWN_IOUS:
        header += [f"difference @{iou}", f"seeds A > B @{iou}", f"verdict @{iou}"]
    rows = []
    for a, b in COMPARISONS:
        for label, speed in speeds:
            results = {iou: paired(records, speed, a, b, iou) for iou in SHOWN_IOUS}
            if results[SHOWN_IOUS[0]].difference.n == 0:
                continue
            where = f"{label} ({speed:g} {unit})" if label else f"{speed:g} {unit}"
            row = [f"{CELL_NAMES[a]} - {CELL_NAMES[b]}", where]
            for iou in SHOWN_IOUS:
                result = results[iou]
                row += [format_stat(result.difference), f"{result.wins}/{result.difference.n}",
                        paired_verdict(result, a, b)]
            rows.append(row)
    if not rows:
        return ""
    return (
        "## Paired on the seed: cell A minus cell B (frame-mAP points)\n\n"
        "Runs of one speed and seed share their backbone and heads (stages 0 and 1), whose "
        "variation makes most of the seed spread above; the per-seed difference cancels it. "
        "Mean ± sample std of the differences over the seeds where both cells ran; a "
        "comparison counts when the mean exceeds that std.\n\n" + markdown_table(header, rows)
    )
