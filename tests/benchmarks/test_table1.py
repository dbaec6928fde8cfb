"""benchmarks/table1: the plan of runs, the verdicts and tables on hand-made records, the
warp-offset measure, and one end-to-end run of the `smoke` budget through the runner."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is run from the repository root, not installed
    sys.path.insert(0, str(REPO))

from benchmarks.table1 import offsets, paired, plan, report  # noqa: E402

LEVELS = [("static", 0.0), ("moving", 1.5)]


def record(speed, cell, seed, m50, *, chance=0.2, shuffled=None, m30=None, mean_abs=None):
    return {
        "speed": speed,
        "cell": cell,
        "seed": seed,
        "map": {"0.3": m50 if m30 is None else m30, "0.5": m50, "0.7": 0.0},
        "chance": {"mAP": chance, "std": 0.01},
        "shuffled": None if shuffled is None else {"0.3": shuffled, "0.5": shuffled, "0.7": 0.0},
        "offsets": None
        if mean_abs is None
        else {"mean_abs": mean_abs, "points": 9, "true_displacement": speed},
    }


def seeds(speed, cell, values, **kwargs):
    return [record(speed, cell, s, v, **kwargs) for s, v in enumerate(values)]


def test_plan_covers_every_level_cell_and_seed_once_seed_major():
    budget = plan.BUDGETS["cpu"]
    runs = plan.plan_runs(budget)
    assert len(runs) == len(plan.MOTIONS) * len(plan.CELLS) * len(budget.seeds) == 30
    assert len({r.key for r in runs}) == 30
    assert {(r.speed, r.cell) for r in runs[:10]} == {
        (s, c) for s in (0.0, budget.moving_cells) for c, _ in plan.CELLS
    }
    assert {r.seed for r in runs[:10]} == {0}
    assert runs[0].key == "m0-none-s0" and runs[0].stage1_key == "m0-stage1-s0"
    # One stage 1 per speed and seed; every cell of that speed and seed shares it.
    assert len({r.stage1_key for r in runs}) == 2 * len(budget.seeds)
    stage1, stage2 = plan.total_iterations(runs, budget)
    assert stage1 == 6 * budget.training.stage1_iterations
    assert stage2 == 30 * budget.training.stage2_iterations


def test_shared_stage1_puts_every_seed_on_the_first_seeds_stage1():
    import dataclasses

    budget = plan.BUDGETS["cpu"]
    shared = dataclasses.replace(
        budget, training=dataclasses.replace(budget.training, shared_stage1=True)
    )
    runs = plan.plan_runs(shared)
    assert {r.stage1_key for r in runs} == {"m0-stage1-s0", "m1.5-stage1-s0"}
    assert {r.key for r in runs} == {r.key for r in plan.plan_runs(budget)}
    stage1, _ = plan.total_iterations(runs, shared)
    assert stage1 == 2 * budget.training.stage1_iterations


def test_plan_rejects_unknown_cells_and_levels():
    with pytest.raises(ValueError, match="unknown cells"):
        plan.plan_runs(plan.BUDGETS["cpu"], cells=("none", "gru"))
    with pytest.raises(ValueError, match="unknown motion"):
        plan.plan_runs(plan.BUDGETS["cpu"], motions=("fast",))
    with pytest.raises(ValueError, match="unknown cells"):
        plan.plan_sweep(plan.BUDGETS["cpu"], cells=("gru",))


def test_sweep_shares_the_tables_runs_at_its_speeds():
    budget = plan.BUDGETS["cpu"]
    sweep = plan.plan_sweep(budget)
    assert len(sweep) == len(budget.sweep_speeds) * len(plan.SWEEP_CELLS) * len(budget.sweep_seeds)
    assert [r.speed for r in sweep[:3]] == [0.0] * 3  # slowest first
    table = {r.key for r in plan.plan_runs(budget)}
    shared = {r.key for r in sweep} & table
    assert shared == {f"m{s:g}-{c}-s0" for s in (0.0, 1.5) for c in plan.SWEEP_CELLS}
    assert len(plan.plan_sweep(budget, seeds=(0, 1))) == 2 * len(sweep)


def test_budgets_fit_the_scene_and_the_cpu_budget_has_the_required_sizes():
    for budget in plan.BUDGETS.values():
        # Every speed must give a valid scene (the scene refuses steps its keyframe boxes
        # cannot follow) and a warp-safe input (feature maps of at least 8x8).
        for speed in {*budget.sweep_speeds, budget.moving_cells, 0.0}:
            scene = plan.sample_config(budget, speed).scene
            assert (scene.motion if budget.movement == "sway" else scene.leap) == speed
        assert min(budget.resolution) >= 128
        for iterations in (budget.training.stage1_iterations, budget.training.stage2_iterations):
            assert budget.training.milestones(iterations)[0] < iterations
    cpu = plan.BUDGETS["cpu"]
    assert cpu.moving_cells >= 1.5 and len(cpu.seeds) >= 3 and cpu.eval_pairs is None
    assert cpu.training is plan.CPU_TRAINING  # its training settings live in one place
    assert len(plan.BUDGETS["full"].seeds) >= 3


def test_sample_configs_differ_only_in_motion():
    budget = plan.BUDGETS["cpu"]
    moving, static = plan.sample_config(budget, 1.5), plan.sample_config(budget, 0.0)
    assert moving.scene.motion == 1.5 and static.scene.motion == 0.0
    assert moving.scene.feature_resolution == budget.resolution[0]
    assert type(static)(**{**static.__dict__, "scene": moving.scene}) == moving
    with pytest.raises(ValueError, match="speed must be"):
        plan.sample_config(budget, -1.0)
    with pytest.raises(ValueError, match="motion must be"):
        budget.speed("fast")


def test_a_leap_budget_moves_the_actors_by_leaps_only():
    import dataclasses

    budget = dataclasses.replace(plan.BUDGETS["smoke"], movement="leap", actors=2)
    scene = plan.sample_config(budget, 2.0).scene
    assert (scene.leap, scene.motion, scene.actors) == (2.0, 0.0, 2) and budget.unit == "cells/leap"
    assert plan.sample_config(budget, 0.0).scene.leap == 0.0
    with pytest.raises(ValueError, match="movement must be one of"):
        dataclasses.replace(budget, movement="drift")


def test_mean_std_by_hand():
    stat = report.mean_std([0.1, 0.2, 0.3])
    assert stat.n == 3 and stat.mean == pytest.approx(0.2) and stat.std == pytest.approx(0.1)
    single = report.mean_std([0.4])
    assert single.mean == 0.4 and math.isnan(single.std)
    assert report.mean_std([]).n == 0


def test_summary_in_percent_with_floor_shuffled_and_offsets():
    rows = seeds(1.5, "warp", [0.30, 0.40, 0.50], chance=0.2, shuffled=0.1, mean_abs=1.2)
    rows[2]["offsets"]["mean_abs"] = 1.8
    got = report.aggregate(rows)[(1.5, "warp")]
    assert got.map["0.5"].mean == pytest.approx(40.0) and got.map["0.5"].std == pytest.approx(10.0)
    assert got.chance.mean == pytest.approx(20.0) and got.chance.std == pytest.approx(1.0)
    assert got.shuffled.mean == pytest.approx(10.0) and got.shuffled.n == 3
    assert got.offsets.mean == pytest.approx(1.4) and got.offsets.n == 3


@pytest.mark.parametrize(
    ("values", "shuffled", "chance_words", "shuffled_words"),
    [
        ([0.38, 0.40, 0.42], 0.10, "above chance by more", "lower by more"),
        ([0.38, 0.40, 0.42], 0.39, "above chance by more", "not clearly lower"),
        ([0.15, 0.22, 0.29], 0.05, "not clearly above chance", "lower by more"),
        ([0.09, 0.10, 0.11], 0.10, "below chance by more", "not clearly lower"),
        # seeds that agree by luck: the floor's own noise (2 x 1 %) still counts
        ([0.211, 0.212, 0.213], 0.20, "not clearly above chance", "not clearly lower"),
    ],
)
def test_verdicts_against_the_seed_spread(values, shuffled, chance_words, shuffled_words):
    got = report.aggregate(seeds(0.0, "none", values, chance=0.2, shuffled=shuffled))[(0.0, "none")]
    assert chance_words in report.chance_verdict(got)
    assert shuffled_words in report.shuffled_verdict(got)


def test_verdicts_without_spread_or_shuffled_score():
    one = report.aggregate([record(0.0, "none", 0, 0.9, shuffled=0.1)])[(0.0, "none")]
    assert report.verdict(one) == "one seed: no spread to judge by"
    no_shuffle = report.aggregate(seeds(0.0, "none", [0.4, 0.5]))[(0.0, "none")]
    assert "one test label" in report.shuffled_verdict(no_shuffle)


def _rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_table1_markdown_has_floor_shuffled_verdicts_and_offsets():
    records = seeds(1.5, "warp", [0.38, 0.40, 0.42], chance=0.2, shuffled=0.1, mean_abs=1.3)
    records += seeds(0.0, "warp", [0.30, 0.32], chance=0.25, shuffled=0.3, mean_abs=0.2)
    text = report.table1_markdown(records, LEVELS, done=5, planned=30, setting="x")
    rows = _rows(text)
    assert rows[0][:6] == [
        "Method",
        "actors",
        "mAP@0.5",
        "chance floor",
        "shuffled query @0.5",
        "verdict",
    ]
    table = {(r[0], r[1]): r for r in rows if r[0] in dict(plan.CELLS).values()}
    moving = table[("Warp LSTM", "moving (1.5 cells/clip)")]
    assert moving[2:5] == ["40.0 ± 2.0", "20.0 ± 1.0", "10.0 ± 0.0"]
    assert "above chance by more" in moving[5] and "lower by more" in moving[5]
    static = table[("Warp LSTM", "static (0 cells/clip)")]
    assert "not clearly lower" in static[5] and static[-1] == "21.8"
    assert table[("Clip", "moving (1.5 cells/clip)")][2] == "–"
    offsets_rows = {r[0]: r for r in rows if r[1] in ("0", "1.5")}
    assert offsets_rows["moving (1.5 cells/clip)"][2] == "1.30 ± 0.00"
    assert offsets_rows["static (0 cells/clip)"][2] == "0.20 ± 0.00"
    assert "PARTIAL: 5 of 30" in text


def test_motion_markdown_difference_against_the_spread():
    records = seeds(0.0, "warp", [0.20, 0.22, 0.24]) + seeds(1.5, "warp", [0.40, 0.42, 0.44])
    records += seeds(0.0, "none", [0.20, 0.30, 0.40]) + seeds(1.5, "none", [0.25, 0.35, 0.45])
    records += [record(0.0, "convlstm", 0, 0.2)]
    text = report.motion_markdown(records, LEVELS, done=30, planned=30, setting="x")
    rows = {r[0]: r for r in _rows(text)}
    assert rows["Warp LSTM"][3:5] == ["+20.0", "larger than the seed spread"]
    assert rows["Clip"][3:5] == ["+5.0", "within the seed spread"]
    assert rows["ConvLSTM"][1:5] == ["20.0", "–", "–", "–"]
    assert "Complete: 30 of 30 runs." in text


def test_paired_differences_seed_by_seed():
    """The shared seed's level cancels: Warp beats Clip on every seed although both
    cells' own spreads (10 points) are far larger than the differences."""
    records = seeds(1.5, "none", [0.30, 0.40, 0.50]) + seeds(1.5, "warp", [0.35, 0.46, 0.52])
    records += seeds(1.5, "convlstm", [0.20, 0.60])  # seed 2 did not run
    warp = paired.paired(records, 1.5, "warp", "none", "0.5")
    assert (warp.difference.mean, warp.difference.n, warp.wins) == (pytest.approx(13 / 3), 3, 3)
    assert warp.difference.std == pytest.approx(math.sqrt(13 / 3))
    assert paired.paired_verdict(warp, "warp", "none") == "Warp LSTM higher by more than the spread"
    lower = paired.paired(records, 1.5, "none", "warp", "0.5")
    assert paired.paired_verdict(lower, "none", "warp") == "Clip lower by more than the spread"
    conv = paired.paired(records, 1.5, "convlstm", "none", "0.5")
    assert (conv.difference.mean, conv.difference.n, conv.wins) == (pytest.approx(5.0), 2, 1)
    assert paired.paired_verdict(conv, "convlstm", "none") == "within the spread"
    one = paired.paired(records[:1] + records[3:4], 1.5, "warp", "none", "0.5")
    assert paired.paired_verdict(one, "warp", "none") == "one seed: no spread to judge by"
    absent = paired.paired(records, 0.0, "warp", "none", "0.5")
    assert paired.paired_verdict(absent, "warp", "none") == "not both run"
    with pytest.raises(ValueError, match="iou"):
        paired.paired(records, 1.5, "warp", "none", "0.9")


def test_paired_markdown_lists_only_comparisons_that_ran():
    records = seeds(1.5, "none", [0.30, 0.40, 0.50]) + seeds(1.5, "warp", [0.35, 0.46, 0.52])
    text = paired.paired_markdown(records, LEVELS, "cells/leap")
    rows = _rows(text)
    assert rows[0][:5] == ["A - B", "speed", "difference @0.5", "seeds A > B @0.5", "verdict @0.5"]
    assert [r[:2] for r in rows[1:]] == [["Warp LSTM - Clip", "moving (1.5 cells/leap)"]]
    assert rows[1][2:5] == ["4.3 ± 2.1", "3/3", "Warp LSTM higher by more than the spread"]
    assert rows[1][5:] == ["0.0 ± 0.0", "0/3", "within the spread"]  # mAP@0.7 is 0 in both
    assert paired.paired_markdown(records, [("", 1.5)], "cells/clip").count("| 1.5 cells/clip |") == 1
    assert paired.paired_markdown(seeds(1.5, "none", [0.3]), LEVELS, "cells/clip") == ""


def test_report_only_rewrites_the_tables_from_the_raw_json(tmp_path):
    from benchmarks.table1 import files
    from benchmarks.table1.__main__ import main

    budget = plan.BUDGETS["smoke"]
    records = [dict(r, train_seconds=1.0, eval_seconds=1.0)
               for r in seeds(1.0, "none", [0.30, 0.40]) + seeds(1.0, "warp", [0.35, 0.46])]
    files.write_results(tmp_path, budget, records, 4, {"cpu": "x"}, 1.0)
    written = (tmp_path / "table1.md").read_text()
    assert "Paired on the seed" in written
    (tmp_path / "table1.md").unlink()
    main(["--report-only", "--results", str(tmp_path), "--budget", "smoke"])
    assert (tmp_path / "table1.md").read_text() == written
    with pytest.raises(SystemExit, match="differs from 'cpu' in .*resolution"):
        main(["--report-only", "--results", str(tmp_path), "--budget", "cpu"])
    with pytest.raises(SystemExit, match="motion_sweep.json: no results to rewrite"):
        main(["--report-only", "--sweep", "--results", str(tmp_path), "--budget", "smoke"])
    (tmp_path / "table1.json").write_text('{"runs": []')  # cut short
    with pytest.raises(SystemExit, match="table1.json: not a Table-1 result file"):
        main(["--report-only", "--results", str(tmp_path), "--budget", "smoke"])
    (tmp_path / "table1.json").write_text('{"runs": [], "planned_runs": 0, "machine": {}, '
                                          '"wall_seconds_this_invocation": 0, "budget": 5}')
    with pytest.raises(SystemExit, match="table1.json: not a Table-1 result file"):
        main(["--report-only", "--results", str(tmp_path), "--budget", "smoke"])
    assert (tmp_path / "table1.md").read_text() == written  # nothing rewritten from either


def _chance_lines(ax) -> dict[str, float]:
    return {
        line.get_label(): line.get_ydata()[0]
        for line in ax.get_lines()
        if line.get_label().startswith("chance")
    }


def test_chart_draws_each_levels_chance_floor():
    records = seeds(0.0, "none", [0.3, 0.4], chance=0.25) + seeds(1.5, "warp", [0.5], chance=0.1)
    fig = report.chart_figure(records, LEVELS, title="t")
    assert _chance_lines(fig.axes[0]) == {
        "chance floor, static": pytest.approx(25.0),
        "chance floor, moving": pytest.approx(10.0),
    }
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches if p.get_height())
    assert heights == [35.0, 50.0]
    report._save(fig, Path("/dev/null"))


def test_sweep_table_and_plot():
    records = []
    for speed, chance in ((0.0, 0.3), (0.5, 0.25), (1.5, 0.2)):
        records += [record(speed, "none", 0, 0.4 - speed / 10, chance=chance)]
        records += [record(speed, "warp", 0, 0.4, chance=chance, mean_abs=speed)]
    text = report.sweep_markdown(records, done=6, planned=9, setting="x")
    rows = {r[0]: r for r in _rows(text)}
    assert rows["Method"][1:] == ["0 cells/clip", "0.5 cells/clip", "1.5 cells/clip"]
    assert rows["Clip"][1:] == ["40.0", "35.0", "25.0"]
    assert rows["chance floor"][1:] == ["30.0 ± 1.0", "25.0 ± 1.0", "20.0 ± 1.0"]
    assert rows["Warp LSTM mean \\|offset\\| in actor boxes (cells)"][1:] == [
        "0.00",
        "0.50",
        "1.50",
    ]
    assert "ConvLSTM" not in rows  # only the cells that ran
    fig = report.sweep_figure(records, title="t")
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "chance floor"]
    assert list(line.get_xdata()) == [0.0, 0.5, 1.5]
    assert list(line.get_ydata()) == pytest.approx([30.0, 25.0, 20.0])
    assert line.get_linestyle() == "--"
    report._save(fig, Path("/dev/null"))


def test_offset_lengths_only_inside_actor_boxes():
    import torch

    points = torch.tensor([[2, 2], [2, 5], [7, 7]])  # (y, x) feature cells, stride 16
    moves = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    box = torch.tensor([[30.0, 30.0, 60.0, 100.0]])  # holds (40, 40) and not (40, 88), (120, 120)
    got = offsets.lengths_inside_boxes(moves, points, box, (16.0, 16.0))
    assert got.tolist() == [5.0]
    two = torch.cat([box, torch.tensor([[100.0, 100.0, 130.0, 130.0]])])
    assert sorted(offsets.lengths_inside_boxes(moves, points, two, (16.0, 16.0)).tolist()) == [
        2.0,
        5.0,
    ]
    assert offsets.lengths_inside_boxes(moves, points, box[:0], (16.0, 16.0)).numel() == 0
    assert offsets.summarize([], 1.5) == {"mean_abs": None, "points": 0, "true_displacement": 1.5}


def test_leap_steps_are_the_first_clips_of_each_new_second():
    """Clips start every 1/3 s; computed as start + n/3 they land a hair under the
    integer second, which must still count as that second."""
    import torch

    times = torch.tensor([902.0 + n / 3 for n in range(7)], dtype=torch.float64)
    assert offsets.leap_steps(times).tolist() == [False, False, False, True, False, False, True]
    assert offsets.leap_steps(torch.tensor([903.6666666, 904.0])).tolist() == [False, True]


@pytest.fixture
def one_thread():
    """The machine's cores are shared: one thread is faster than contending for them."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_smoke_budget_end_to_end(tmp_path, one_thread):
    """Both stages, evaluation with its floor and shuffled queries, the warp offsets and
    every result file, on a tiny benchmark; a second call trains nothing."""
    from benchmarks.table1 import runner

    budget = plan.BUDGETS["smoke"]
    work, results = tmp_path / "work", tmp_path / "results"
    records = runner.run_experiment(
        budget, work, results, cells=("none", "warp"), motions=("moving",)
    )
    assert [(r["cell"], r["speed"]) for r in records] == [("none", 1.0), ("warp", 1.0)]
    for got in records:
        assert set(got["map"]) == {"0.3", "0.5", "0.7"}
        assert 0.0 < got["chance"]["mAP"] < 1.0
        assert set(got["shuffled"]) == {"0.3", "0.5", "0.7"}  # two test labels: measured
        assert got["iterations"] == budget.training.stage2_iterations
    assert records[0]["offsets"] is None
    warp = records[1]["offsets"]
    assert warp["points"] > 0 and warp["mean_abs"] >= 0.0 and warp["true_displacement"] == 1.0
    # Stage 2 started from stage 1: the stage-1 run exists once and was trained in full.
    assert (work / "runs" / "m1-stage1-s0" / "stage1.json").exists()
    # Stage 2 and evaluation share one feature folder: stage 1's frozen backbone.
    (backbone,) = (work / "features").iterdir()
    assert any(backbone.rglob("*.npy"))
    raw = json.loads((results / "table1.json").read_text())
    assert raw["completed_runs"] == raw["planned_runs"] == 2
    table = (results / "table1.md").read_text()
    chance = f"{100 * records[0]['chance']['mAP']:.1f}"
    warp_row = next(line for line in table.splitlines() if line.startswith("| Warp LSTM | moving"))
    assert chance in warp_row and "one seed" in warp_row
    assert f"{warp['mean_abs']:.2f}" in table
    assert "Warp LSTM" in (results / "table1_motion.md").read_text()
    assert (results / "table1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = {p: p.stat().st_mtime_ns for p in work.rglob("record.json")}
    again = runner.run_experiment(
        budget, work, results, cells=("none", "warp"), motions=("moving",)
    )
    assert again == records
    assert {p: p.stat().st_mtime_ns for p in work.rglob("record.json")} == before


def test_iteration_overrides_reach_the_budget_the_results_record(tmp_path):
    import dataclasses

    from benchmarks.table1 import files
    from benchmarks.table1.__main__ import main

    smoke = plan.BUDGETS["smoke"]
    longer = dataclasses.replace(
        smoke, training=dataclasses.replace(smoke.training, stage1_iterations=7, stage2_iterations=5))
    records = [dict(r, train_seconds=1.0, eval_seconds=1.0) for r in seeds(1.0, "none", [0.3])]
    files.write_results(tmp_path, longer, records, 1, {"cpu": "x"}, 1.0)
    assert "stage 1 (Clip, end to end) 7 and stage 2 (each cell, frozen backbone) 5 iterations" in (
        tmp_path / "table1.md").read_text()
    base = ["--report-only", "--results", str(tmp_path), "--budget", "smoke"]
    main([*base, "--stage1-iterations", "7", "--stage2-iterations", "5"])  # the same budget: rewritten
    with pytest.raises(SystemExit, match="in training"):
        main(base)
    with pytest.raises(SystemExit):
        main([*base, "--stage2-iterations", "-3"])
