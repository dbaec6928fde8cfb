"""benchmarks/reach.py: the jump task holds what its docstring says (the cue only on the
first step, opposite cues, blobs that jump by the asked distance) and a run reports an
accuracy and, for the warp, its flow."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is run from the repository root, not installed
    sys.path.insert(0, str(REPO))

from benchmarks import reach  # noqa: E402


@pytest.mark.parametrize("jump", [0.0, 3.0])
def test_the_cue_shows_once_and_the_blobs_jump_by_the_asked_cells(jump):
    setting = reach.Setting(still=2)
    x, mask, target = reach.episodes(8, jump, setting, torch.Generator().manual_seed(0))
    assert x.shape == (4, 8, setting.channels, reach.SIZE, reach.SIZE)
    assert x[1:, :, 1].abs().max() == 0 and x[0, :, 1].abs().max() > 0.9  # cue on step 0 only
    assert torch.equal(x[0, :, 0], x[2, :, 0])  # still until the jump
    columns = torch.arange(reach.SIZE, dtype=torch.float32)
    for row in (2, 7):  # each blob's centre of mass moves `jump` cells to the right
        before, after = x[-2, :, 0, row], x[-1, :, 0, row]
        shift = (after * columns).sum(1) / after.sum(1) - (before * columns).sum(1) / before.sum(1)
        assert torch.allclose(shift, torch.full_like(shift, jump), atol=0.05)
    # the two blobs carry opposite cues: one is read as all ones, the other as all zeros
    top, bottom = ((target[:, rows] * mask[:, rows]).sum((1, 2)) / mask[:, rows].sum((1, 2))
                   for rows in (slice(0, 5), slice(5, None)))
    assert set(top.tolist()) <= {0.0, 1.0} and torch.equal(top + bottom, torch.ones(8))


def test_a_run_reports_accuracy_and_the_warp_flow():
    setting = reach.Setting(jumps=(1.0,), seeds=(0,), steps=2, batch=2)
    warp, conv = reach.run("warp", 1.0, 0, setting), reach.run("convlstm", 1.0, 0, setting)
    assert 0.0 <= warp["accuracy"] <= 1.0 and isinstance(warp["flow_dx"], float)
    assert conv["flow_dx"] is None
    assert "| 1 |" in reach.table([warp, conv], setting)


def test_the_curriculum_ramps_the_training_jump_up_to_the_evaluated_one():
    plain, ramp = reach.Setting(steps=100), reach.Setting(steps=100, curriculum=True)
    assert [reach.training_jump(6.0, s, plain) for s in (0, 50, 99)] == [6.0, 6.0, 6.0]
    assert reach.training_jump(6.0, 0, ramp) == reach.CURRICULUM_START
    assert reach.training_jump(6.0, 30, ramp) == pytest.approx(2.0 + 4.0 * 30 / 75)
    assert reach.training_jump(6.0, 75, ramp) == 6.0 == reach.training_jump(6.0, 99, ramp)
    assert reach.training_jump(1.0, 0, ramp) == 1.0  # below the start: no ramp
