"""Turn per-run metrics into the Table-1 files: mean ± std tables, markdown, a bar chart.

Pure except `draw_chart` (writes a PNG). A record is one finished run as stored in
`table1.json`: ``{"motion", "cell", "seed", "map": {"0.3": f, "0.5": f, "0.7": f}, ...}``
with frame-mAP as a fraction; the tables show percent, as the paper does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from benchmarks.table1.plan import CELLS, HEADLINE_IOU, IOUS, MOTIONS, PAPER_MAP50


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof=1; NaN below 2 values) of n values."""

    mean: float
    std: float
    n: int


def mean_std(values: list[float]) -> Stat:
    if not values:
        return Stat(math.nan, math.nan, 0)
    mean = sum(values) / len(values)
    if len(values) < 2:
        return Stat(mean, math.nan, len(values))
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return Stat(mean, math.sqrt(var), len(values))


def aggregate(records: list[dict]) -> dict[tuple[str, str], dict[str, Stat]]:
    """(motion, cell) -> IoU threshold -> Stat over seeds, in percent."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        groups.setdefault((record["motion"], record["cell"]), []).append(record)
    return {
        key: {iou: mean_std([100.0 * r["map"][iou] for r in rows]) for iou in IOUS}
        for key, rows in groups.items()
    }


def format_stat(stat: Stat | None) -> str:
    """``12.3 ± 4.5``; ``12.3`` for a single value; ``–`` when nothing ran."""
    if stat is None or stat.n == 0:
        return "–"
    if math.isnan(stat.std):
        return f"{stat.mean:.1f}"
    return f"{stat.mean:.1f} ± {stat.std:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def completion_line(done: int, planned: int) -> str:
    """Says whether the tables are complete; a partial experiment says so first."""
    if done >= planned:
        return f"Complete: {done} of {planned} runs."
    return (
        f"**PARTIAL: {done} of {planned} runs finished**; missing cells/seeds are not in the means."
    )


def table1_markdown(stats: dict, *, done: int, planned: int, seeds: int, setting: str) -> str:
    """The paper-shaped table: one row per cell, our synthetic-moving column(s) first,
    the paper's frame-mAP@0.5 beside them for reference."""
    header = [
        "Method",
        "synthetic moving, mAP@0.5 (ours)",
        "mAP@0.3 (ours)",
        "mAP@0.7 (ours)",
        "paper: AVA @0.5",
        "paper: UCF101-24 @0.5",
    ]
    rows = []
    for cell, name in CELLS:
        got = stats.get(("moving", cell), {})
        ava, ucf = PAPER_MAP50[cell]
        rows.append(
            [
                name,
                format_stat(got.get(HEADLINE_IOU)),
                format_stat(got.get("0.3")),
                format_stat(got.get("0.7")),
                f"{ava:.1f}",
                f"{ucf:.1f}",
            ]
        )
    return (
        "# Table 1 on the synthetic benchmark (frame-mAP, %)\n\n"
        f"{completion_line(done, planned)} Mean ± sample std over {seeds} seeds; {setting}. "
        "The two right-hand columns are the paper's numbers on the real datasets, copied for "
        "reference, not measured here.\n\n" + _table(header, rows)
    )


def motion_markdown(stats: dict, *, done: int, planned: int, seeds: int, setting: str) -> str:
    """The ablation: each cell on static vs moving actors, and the difference."""
    header = (
        ["Method"]
        + [f"{m} @{iou}" for iou in (HEADLINE_IOU,) for m in MOTIONS]
        + ["moving − static @0.5", "static @0.3", "moving @0.3", "static @0.7", "moving @0.7"]
    )
    rows = []
    for cell, name in CELLS:
        by = {m: stats.get((m, cell), {}) for m in MOTIONS}
        head = [by[m].get(HEADLINE_IOU) for m in MOTIONS]
        diff = "–"
        if all(s is not None and s.n for s in head):
            diff = f"{head[0].mean - head[1].mean:+.1f}"
        rows.append(
            [
                name,
                *(format_stat(s) for s in head),
                diff,
                format_stat(by["static"].get("0.3")),
                format_stat(by["moving"].get("0.3")),
                format_stat(by["static"].get("0.7")),
                format_stat(by["moving"].get("0.7")),
            ]
        )
    return (
        "# Motion ablation: static vs moving actors (frame-mAP, %)\n\n"
        f"{completion_line(done, planned)} Mean ± sample std over {seeds} seeds; {setting}. "
        "The two benchmarks share every seed and setting except `SceneConfig.motion`.\n\n"
        + _table(header, rows)
    )


def draw_chart(stats: dict, records: list[dict], path, *, title: str) -> None:
    """Grouped bars of frame-mAP@0.5 per cell (one bar per motion setting): the mean,
    ±1 std whiskers, and each seed's value as a dot, so the spread is visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.0), dpi=120)
    width = 0.38
    for k, motion in enumerate(MOTIONS):
        offset = (k - 0.5) * width
        means, errs = [], []
        for cell, _ in CELLS:
            stat = stats.get((motion, cell), {}).get(HEADLINE_IOU)
            means.append(stat.mean if stat and stat.n else 0.0)
            errs.append(stat.std if stat and stat.n > 1 else 0.0)
        xs = [i + offset for i in range(len(CELLS))]
        ax.bar(xs, means, width, yerr=errs, capsize=3, alpha=0.8, label=f"{motion} actors")
        column = {cell: i for i, (cell, _) in enumerate(CELLS)}
        dots = [
            (column[r["cell"]] + offset, 100.0 * r["map"][HEADLINE_IOU])
            for r in records
            if r["motion"] == motion
        ]
        if dots:
            ax.scatter(*zip(*dots, strict=True), s=10, color="black", zorder=3)
    ax.set_xticks(range(len(CELLS)), [name for _, name in CELLS])
    ax.set_ylabel("frame-mAP@0.5 (%)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
