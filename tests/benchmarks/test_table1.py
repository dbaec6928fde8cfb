"""The pure parts of benchmarks/table1: the plan of runs, mean ± std, the markdown tables."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is run from the repository root, not installed
    sys.path.insert(0, str(REPO))

from benchmarks.table1 import plan, report  # noqa: E402


def record(motion, cell, seed, m30, m50, m70):
    return {
        "motion": motion,
        "cell": cell,
        "seed": seed,
        "map": {"0.3": m30, "0.5": m50, "0.7": m70},
    }


def test_plan_covers_every_motion_cell_and_seed_once_seed_major():
    budget = plan.BUDGETS["cpu"]
    runs = plan.plan_runs(budget)
    assert len(runs) == len(plan.MOTIONS) * len(plan.CELLS) * len(budget.seeds) == 30
    assert len({r.key for r in runs}) == 30
    # The first ten runs are seed 0 of every cell in both motion settings.
    assert {(r.motion, r.cell) for r in runs[:10]} == {
        (m, c) for m in plan.MOTIONS for c, _ in plan.CELLS
    }
    assert {r.seed for r in runs[:10]} == {0}
    assert runs[0].key == "moving-none-s0"


def test_plan_rejects_unknown_cells():
    with pytest.raises(ValueError, match="unknown cells"):
        plan.plan_runs(plan.BUDGETS["cpu"], cells=("none", "gru"))
    with pytest.raises(ValueError, match="unknown motion"):
        plan.plan_runs(plan.BUDGETS["cpu"], motions=("fast",))


def test_plan_subset_keeps_paper_order():
    runs = plan.plan_runs(plan.BUDGETS["cpu4x"], cells=("none", "warp"), motions=("moving",))
    assert [r.key for r in runs[:2]] == ["moving-none-s0", "moving-warp-s0"]
    assert len(runs) == 2 * len(plan.BUDGETS["cpu4x"].seeds)


def test_budgets_use_at_least_three_seeds_and_warp_safe_inputs():
    for budget in plan.BUDGETS.values():
        assert len(budget.seeds) >= 3
        # The warp spline needs feature maps of at least 8x8 (stride 16): input >= 128.
        assert min(budget.resolution) >= 128
        assert budget.milestones[0] < budget.iterations


def test_sample_configs_differ_only_in_motion():
    budget = plan.BUDGETS["cpu"]
    moving, static = plan.sample_config(budget, "moving"), plan.sample_config(budget, "static")
    assert moving.scene.motion == plan.MOVING_CELLS and static.scene.motion == 0.0
    assert moving.scene.feature_resolution == budget.resolution[0]
    assert moving.train_videos > 3 and moving.val_videos > 3  # more than make-sample's default
    # Replacing the one differing field makes them equal.
    assert type(static)(**{**static.__dict__, "scene": moving.scene}) == moving
    with pytest.raises(ValueError, match="motion must be"):
        plan.sample_config(budget, "fast")


def test_mean_std_by_hand():
    stat = report.mean_std([0.1, 0.2, 0.3])
    assert stat.n == 3
    assert stat.mean == pytest.approx(0.2)
    assert stat.std == pytest.approx(0.1)  # sample std: sqrt((0.01 + 0 + 0.01) / 2)
    single = report.mean_std([0.4])
    assert single.mean == 0.4 and math.isnan(single.std)
    assert report.mean_std([]).n == 0


def test_aggregate_groups_by_motion_and_cell_in_percent():
    records = [
        record("moving", "warp", 0, 0.30, 0.20, 0.10),
        record("moving", "warp", 1, 0.50, 0.40, 0.10),
        record("static", "warp", 0, 0.1, 0.1, 0.0),
    ]
    stats = report.aggregate(records)
    assert set(stats) == {("moving", "warp"), ("static", "warp")}
    assert stats[("moving", "warp")]["0.5"].mean == pytest.approx(30.0)
    assert stats[("moving", "warp")]["0.5"].std == pytest.approx(math.sqrt(200.0))
    assert stats[("moving", "warp")]["0.7"].std == pytest.approx(0.0)
    assert stats[("static", "warp")]["0.3"].n == 1


def test_format_stat():
    assert report.format_stat(report.Stat(12.345, 4.56, 3)) == "12.3 ± 4.6"
    assert report.format_stat(report.Stat(12.345, math.nan, 1)) == "12.3"
    assert report.format_stat(None) == "–"


def test_table1_markdown_rows_in_paper_order_with_paper_column():
    records = [
        record("moving", c, s, 0.3, 0.2 + 0.1 * s, 0.1) for c, _ in plan.CELLS for s in (0, 1, 2)
    ]
    text = report.table1_markdown(
        report.aggregate(records), done=15, planned=30, seeds=3, setting="x"
    )
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0][2:] for line in lines[1:]] == [name for _, name in plan.CELLS]
    warp = lines[-1]
    assert "30.0 ± 10.0" in warp and "21.8" in warp and "59.4" in warp
    assert "paper" in lines[0]
    assert "PARTIAL: 15 of 30" in text


def test_motion_markdown_difference_and_missing_cells():
    records = [
        record("moving", "warp", 0, 0.3, 0.25, 0.1),
        record("static", "warp", 0, 0.3, 0.20, 0.1),
        record("static", "none", 0, 0.3, 0.20, 0.1),
    ]
    text = report.motion_markdown(
        report.aggregate(records), done=30, planned=30, seeds=1, setting="x"
    )
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| ")}
    assert "+5.0" in rows["Warp LSTM"]
    assert rows["Clip"].startswith(
        "| Clip | – | 20.0 | – |"
    )  # static only: no moving value, no difference
    assert "Complete: 30 of 30 runs." in text
