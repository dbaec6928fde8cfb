"""Turn per-run records into the Table-1 files: mean ± std tables with their floors and
plain-words verdicts, markdown, a bar chart and the motion-sweep plot.

Pure except `draw_chart` and `draw_sweep` (write PNGs). A record is one finished run as
stored in `table1.json`: ``{"speed", "cell", "seed", "map": {"0.3": f, "0.5": f, "0.7": f},
"chance": {"mAP": f, "std": f}, "shuffled": {"0.5": f, ...} | None, "offsets": {...} |
None}`` with frame-mAP as a fraction; the tables show percent, as the paper does.
A *level* is a named speed, ``("static", 0.0)``.

The verdicts compare with the noise (`noise`): the sample standard deviation over seeds
of the cell's mAP@0.5, or twice the chance floor's spread over its random draws when that
is larger. A cell is "above chance" when its mean beats the floor by more than that, and
"uses the query" when its shuffled-query mean is lower than its mean by more than that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from benchmarks.table1.plan import CELLS, HEADLINE_IOU, MOVEMENTS, PAPER_MAP50


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


@dataclass(frozen=True)
class Summary:
    """One cell at one speed over its seeds, in percent (offsets in feature cells)."""

    map: dict[str, Stat]
    chance: Stat  # the floor: mean over runs of chance_mAP, std its random-score spread
    shuffled: Stat  # mAP@0.5 with shuffled queries, over seeds (n = 0 when not measured)
    offsets: Stat  # warp: mean |offset| inside actor boxes, over seeds (n = 0 otherwise)


def summarize(rows: list[dict]) -> Summary:
    pct = [{iou: 100.0 * v for iou, v in r["map"].items()} for r in rows]
    chance = [100.0 * r["chance"]["mAP"] for r in rows]
    chance_std = [100.0 * r["chance"]["std"] for r in rows]
    floor = Stat(sum(chance) / len(chance), sum(chance_std) / len(chance_std), len(chance))
    return Summary(
        map={iou: mean_std([p[iou] for p in pct]) for iou in pct[0]},
        chance=floor,
        shuffled=mean_std([100.0 * r["shuffled"][HEADLINE_IOU] for r in rows if r.get("shuffled")]),
        offsets=mean_std(
            [
                r["offsets"]["mean_abs"]
                for r in rows
                if r.get("offsets") and r["offsets"].get("mean_abs") is not None
            ]
        ),
    )


def aggregate(records: list[dict]) -> dict[tuple[float, str], Summary]:
    """(speed, cell) -> Summary over seeds."""
    groups: dict[tuple[float, str], list[dict]] = {}
    for record in records:
        groups.setdefault((float(record["speed"]), record["cell"]), []).append(record)
    return {key: summarize(rows) for key, rows in groups.items()}


def noise(summary: Summary) -> float:
    """The smallest difference a verdict counts: the cell's seed spread of mAP@0.5, or
    twice the chance floor's spread over its random draws when that is larger (two
    seeds can agree closely by luck; the floor's own noise is always there)."""
    spread = summary.map[HEADLINE_IOU].std
    floor_noise = 2.0 * summary.chance.std if not math.isnan(summary.chance.std) else 0.0
    return max(spread, floor_noise)


def chance_verdict(summary: Summary) -> str:
    """Whether the cell beats the chance floor by more than the noise."""
    got = summary.map[HEADLINE_IOU]
    if got.n < 2:
        return "one seed: no spread to judge by"
    gap = got.mean - summary.chance.mean
    if gap > noise(summary):
        return "above chance by more than the noise (seed spread, or twice the floor's)"
    if gap < -noise(summary):
        return "below chance by more than the noise"
    return "not clearly above chance (within the noise)"


def shuffled_verdict(summary: Summary) -> str:
    """Whether a wrong query lowers the score by more than the noise."""
    got = summary.map[HEADLINE_IOU]
    if summary.shuffled.n == 0:
        return "no shuffled-query score (one test label)"
    if got.n < 2:
        return "one seed: no spread to judge by"
    if got.mean - summary.shuffled.mean > noise(summary):
        return "shuffled query lower by more than the noise"
    return "shuffled query not clearly lower (within the noise)"


def verdict(summary: Summary) -> str:
    """Both verdicts in plain words (once "one seed" when there is no spread)."""
    if summary.map[HEADLINE_IOU].n < 2:
        return "one seed: no spread to judge by"
    return f"{chance_verdict(summary)}; {shuffled_verdict(summary)}"


def format_stat(stat: Stat | None, digits: int = 1) -> str:
    """``12.3 ± 4.5``; ``12.3`` for a single value; ``–`` when nothing ran."""
    if stat is None or stat.n == 0:
        return "–"
    if math.isnan(stat.std):
        return f"{stat.mean:.{digits}f}"
    return f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
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


UNIT = MOVEMENTS["sway"][0]  # the unit of the speeds when a report is not told another


def _level_label(name: str, speed: float, unit: str = UNIT) -> str:
    return f"{name} ({speed:g} {unit})"


def table1_markdown(
    records: list[dict],
    levels: list[tuple[str, float]],
    *,
    done: int,
    planned: int,
    setting: str,
    unit: str = UNIT,
) -> str:
    """One row per cell and motion level: mAP@0.5 (mean ± std over seeds) beside its
    chance floor and its shuffled-query score, the verdicts, and the paper's AVA number."""
    stats = aggregate(records)
    header = [
        "Method",
        "actors",
        "mAP@0.5",
        "chance floor",
        "shuffled query @0.5",
        "verdict",
        "mAP@0.3",
        "mAP@0.7",
        "paper: AVA @0.5",
    ]
    rows = []
    for cell, name in CELLS:
        for level, speed in levels:
            got = stats.get((float(speed), cell))
            if got is None:
                rows.append(
                    [name, _level_label(level, speed, unit), *["–"] * 6, f"{PAPER_MAP50[cell][0]:.1f}"]
                )
                continue
            rows.append(
                [
                    name,
                    _level_label(level, speed, unit),
                    format_stat(got.map[HEADLINE_IOU]),
                    format_stat(got.chance),
                    format_stat(got.shuffled),
                    verdict(got),
                    format_stat(got.map.get("0.3")),
                    format_stat(got.map.get("0.7")),
                    f"{PAPER_MAP50[cell][0]:.1f}",
                ]
            )
    return (
        "# Table 1 on the synthetic benchmark (frame-mAP, %)\n\n"
        f"{completion_line(done, planned)} Mean ± sample std over seeds; {setting}. "
        "Chance floor: a query-blind detector boxing every annotated actor exactly with "
        "random scores (± its spread over random draws). Shuffled query: the same model "
        "with each pair's query taken from a pair of another label. A verdict counts a "
        "difference above the noise: the seed spread of the cell's mAP@0.5, or twice the "
        "floor's spread if larger. The last column is the paper's number "
        "on AVA, copied for reference, not measured here.\n\n"
        + markdown_table(header, rows)
        + "\n"
        + offsets_markdown(stats, levels, unit)
    )


def offsets_markdown(stats: dict, levels: list[tuple[str, float]], unit: str = UNIT) -> str:
    """The warp cell's mean |offset| inside actor boxes against the true displacement
    (with leaps, at the steps into a new second only)."""
    header = [
        "actors",
        f"true displacement ({unit})",
        "Warp LSTM mean \\|offset\\| in actor boxes",
    ]
    rows = [
        [_level_label(level, speed, unit), f"{speed:g}", _offsets_text(stats.get((float(speed), "warp")))]
        for level, speed in levels
    ]
    return (
        "Warp LSTM's learned offsets at the control points inside an actor's box over the test "
        "references (feature cells, mean ± std over seeds):\n\n" + markdown_table(header, rows)
    )


def _offsets_text(summary: Summary | None) -> str:
    if summary is None or summary.offsets.n == 0:
        return "–"
    stat = summary.offsets
    return f"{stat.mean:.2f}" if math.isnan(stat.std) else f"{stat.mean:.2f} ± {stat.std:.2f}"


def motion_markdown(
    records: list[dict],
    levels: list[tuple[str, float]],
    *,
    done: int,
    planned: int,
    setting: str,
    unit: str = UNIT,
) -> str:
    """The ablation: each cell on static vs moving actors, the difference and whether it
    exceeds the larger of the two seed spreads."""
    stats = aggregate(records)
    (low, low_speed), (high, high_speed) = levels
    header = [
        "Method",
        _level_label(low, low_speed, unit),
        _level_label(high, high_speed, unit),
        f"{high} − {low}",
        "verdict",
        f"chance {low}",
        f"chance {high}",
    ]
    rows = []
    for cell, name in CELLS:
        a, b = stats.get((float(low_speed), cell)), stats.get((float(high_speed), cell))
        row = [name, format_stat(a and a.map[HEADLINE_IOU]), format_stat(b and b.map[HEADLINE_IOU])]
        row += [*difference(a, b), format_stat(a and a.chance), format_stat(b and b.chance)]
        rows.append(row)
    return (
        f"# Motion ablation: {low} vs {high} actors (frame-mAP@0.5, %)\n\n"
        f"{completion_line(done, planned)} Mean ± sample std over seeds; {setting}. "
        "Each speed has its own benchmark (identical but for the actors' step) and its own "
        "stage 1.\n\n" + markdown_table(header, rows) + "\n" + offsets_markdown(stats, levels, unit)
    )


def difference(a: Summary | None, b: Summary | None) -> list[str]:
    """[b − a, verdict]: larger than the larger seed spread of the two, or not."""
    if a is None or b is None:
        return ["–", "–"]
    first, second = a.map[HEADLINE_IOU], b.map[HEADLINE_IOU]
    diff = second.mean - first.mean
    spread = max(first.std, second.std)
    if math.isnan(spread):
        return [f"{diff:+.1f}", "one seed: no spread to judge by"]
    word = "larger than the seed spread" if abs(diff) > spread else "within the seed spread"
    return [f"{diff:+.1f}", word]


def sweep_markdown(
    records: list[dict], *, done: int, planned: int, setting: str, unit: str = UNIT
) -> str:
    """mAP@0.5 per cell (rows) and speed (columns), the chance floor and the warp offsets."""
    stats = aggregate(records)
    speeds = sorted({float(r["speed"]) for r in records})
    cells = [(c, n) for c, n in CELLS if any(r["cell"] == c for r in records)]
    header = ["Method"] + [f"{s:g} {unit}" for s in speeds]
    rows = [
        [name]
        + [format_stat(stats[(s, c)].map[HEADLINE_IOU]) if (s, c) in stats else "–" for s in speeds]
        for c, name in cells
    ]
    rows.append(["chance floor"] + [format_stat(chance_floor(records, s)) for s in speeds])
    rows.append(
        ["Warp LSTM mean \\|offset\\| in actor boxes (cells)"]
        + [_offsets_text(stats.get((s, "warp"))) for s in speeds]
    )
    return (
        "# Motion sweep: frame-mAP@0.5 (%) against the actors' speed\n\n"
        f"{completion_line(done, planned)} Mean (± sample std with several seeds); {setting}. "
        "Each speed is its own benchmark with its own stage 1.\n\n" + markdown_table(header, rows)
    )


def chance_floor(records: list[dict], speed: float) -> Stat:
    """The chance floor of the benchmark at `speed` (one split: the same in every run)."""
    rows = [r for r in records if float(r["speed"]) == float(speed)]
    if not rows:
        return Stat(math.nan, math.nan, 0)
    return summarize(rows).chance


def chart_figure(records: list[dict], levels: list[tuple[str, float]], *, title: str, unit: str = UNIT):
    """Grouped bars of mAP@0.5 per cell (one bar per level, ±1 std whiskers, each seed a
    dot) and each level's chance floor as a dashed (dotted) line in its colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = aggregate(records)
    fig, ax = plt.subplots(figsize=(7.5, 4.0), dpi=120)
    width = 0.8 / len(levels)
    column = {cell: i for i, (cell, _) in enumerate(CELLS)}
    for k, (level, speed) in enumerate(levels):
        offset = (k - (len(levels) - 1) / 2) * width
        got = [stats.get((float(speed), cell)) for cell, _ in CELLS]
        means = [g.map[HEADLINE_IOU].mean if g else 0.0 for g in got]
        errs = [g.map[HEADLINE_IOU].std if g and g.map[HEADLINE_IOU].n > 1 else 0.0 for g in got]
        xs = [i + offset for i in range(len(CELLS))]
        bars = ax.bar(
            xs, means, width, yerr=errs, capsize=3, alpha=0.8, label=_level_label(level, speed, unit)
        )
        dots = [
            (column[r["cell"]] + offset, 100.0 * r["map"][HEADLINE_IOU])
            for r in records
            if float(r["speed"]) == float(speed)
        ]
        if dots:
            ax.scatter(*zip(*dots, strict=True), s=10, color="black", zorder=3)
        floor = chance_floor(records, speed)
        if floor.n:
            ax.axhline(
                floor.mean,
                linestyle=("--", ":")[k % 2],  # both stay visible when the floors coincide
                color=bars.patches[0].get_facecolor(),
                label=f"chance floor, {level}",
            )
    ax.set_xticks(range(len(CELLS)), [name for _, name in CELLS])
    ax.set_ylabel("frame-mAP@0.5 (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def draw_chart(
    records: list[dict], levels: list[tuple[str, float]], path, *, title: str, unit: str = UNIT
) -> None:
    _save(chart_figure(records, levels, title=title, unit=unit), path)


def sweep_figure(records: list[dict], *, title: str, axis: str = MOVEMENTS["sway"][1]):
    """mAP@0.5 against speed, one line per cell (±1 std whiskers), chance floor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = aggregate(records)
    speeds = sorted({float(r["speed"]) for r in records})
    fig, ax = plt.subplots(figsize=(6.5, 4.0), dpi=120)
    for cell, name in CELLS:
        points = [(s, stats[(s, cell)].map[HEADLINE_IOU]) for s in speeds if (s, cell) in stats]
        if not points:
            continue
        xs = [s for s, _ in points]
        ys = [stat.mean for _, stat in points]
        errs = [0.0 if math.isnan(stat.std) else stat.std for _, stat in points]
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=name)
    floors = [chance_floor(records, s).mean for s in speeds]
    ax.plot(speeds, floors, linestyle="--", color="gray", marker="_", label="chance floor")
    ax.set_xlabel(axis)
    ax.set_ylabel("frame-mAP@0.5 (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def draw_sweep(records: list[dict], path, *, title: str, axis: str = MOVEMENTS["sway"][1]) -> None:
    _save(sweep_figure(records, title=title, axis=axis), path)


def _save(fig, path) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path)
    plt.close(fig)
