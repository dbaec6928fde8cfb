"""What the Table-1 experiment runs: the budgets, the two synthetic data settings, the runs.

Pure: nothing here touches the disk. The paper's Table 1 (§6.4) compares five ways of
carrying the recurrent state across clips at equal training budget; here the same five
cells are trained on two synthetic benchmarks that differ only in whether the actors
move (`SceneConfig.motion`: `MOVING_CELLS` or 0), with the same seeds for data, weights
and sampling.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from stvr_data.sample import SampleConfig
from stvr_data.scene import SceneConfig

# Cell ids of `stvr_model.cells` in the paper's row order, with the paper's row names.
CELLS: tuple[tuple[str, str], ...] = (
    ("none", "Clip"),
    ("convlstm", "ConvLSTM"),
    ("flow", "Optical Flow"),
    ("traj", "TrajLSTM"),
    ("warp", "Warp LSTM"),
)
CELL_NAMES: dict[str, str] = dict(CELLS)
# The paper's Table 1: frame-mAP@0.5 (%) on STVR-AVA and STVR-UCF101-24.
PAPER_MAP50: dict[str, tuple[float, float]] = {
    "none": (18.8, 52.9),
    "convlstm": (20.8, 53.5),
    "flow": (20.2, 52.0),
    "traj": (21.0, 54.8),
    "warp": (21.8, 59.4),
}
MOTIONS: tuple[str, ...] = ("moving", "static")
IOUS: tuple[str, ...] = ("0.3", "0.5", "0.7")
HEADLINE_IOU = "0.5"
# Feature cells an actor steps between consecutive clips in the moving setting, at the
# budget's resolution (make-sample --motion, --feature-resolution).
MOVING_CELLS = 1.5


@dataclass(frozen=True)
class Budget:
    """Sizes of one version of the experiment (data, training, evaluation).

    `resolution` is the benchmark's clip size (width, height) and the model's input;
    `eval_pairs` caps the test pairs scored per run (None: all of them).
    """

    name: str
    seeds: tuple[int, ...]
    train_videos: int
    val_videos: int
    seconds: int
    resolution: tuple[int, int]
    backbone: str
    box_head_blocks: int
    iterations: int
    batch_size: int
    lr: float
    reference_seconds: float
    max_query_seconds: float
    query_clips_per_second: int
    eval_pairs: int | None
    device: str
    min_tubelets: int = 3
    num_val_labels: int = 1
    num_test_labels: int = 4

    @property
    def milestones(self) -> tuple[int, ...]:
        """One tenfold learning-rate drop at two thirds, as `scripts/demo.sh` does."""
        return (max(1, self.iterations * 2 // 3),)


BUDGETS: dict[str, Budget] = {
    # 2 shared CPU cores, 60 minutes for 30 train+eval runs: a few minutes of training
    # each, so this shows whether the pipeline separates the cells at all, not the
    # converged ranking (see benchmarks/README.md).
    "cpu": Budget(
        name="cpu",
        seeds=(0, 1, 2),
        train_videos=16,
        val_videos=8,
        seconds=30,
        resolution=(160, 160),
        backbone="small",
        box_head_blocks=0,
        iterations=15,
        batch_size=2,
        lr=0.01,
        reference_seconds=1.0,
        max_query_seconds=2.0,
        query_clips_per_second=1,
        eval_pairs=6,
        device="cpu",
    ),
    # One GPU (not runnable on the CPU machine): the authors' input size, heads and
    # schedule scaled to the synthetic set, every query clip, every test pair.
    "full": Budget(
        name="full",
        seeds=(0, 1, 2, 3, 4),
        train_videos=96,
        val_videos=48,
        seconds=60,
        resolution=(320, 320),
        backbone="i3d",
        box_head_blocks=3,
        iterations=20_000,
        batch_size=8,
        lr=0.03,
        reference_seconds=2.0,
        max_query_seconds=10.0,
        query_clips_per_second=3,
        eval_pairs=None,
        device="auto",
    ),
}
# The cpu budget with four times the training (run for three of the cells): how the
# comparison moves with the budget (about 30 minutes here).
BUDGETS["cpu4x"] = dataclasses.replace(BUDGETS["cpu"], name="cpu4x", iterations=60)


def sample_config(budget: Budget, motion: str) -> SampleConfig:
    """The `make-sample` settings of one motion setting: identical but for `motion`."""
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {MOTIONS}, not {motion!r}")
    scene = SceneConfig(
        actors=3,
        seconds=budget.seconds,
        motion=MOVING_CELLS if motion == "moving" else 0.0,
        feature_resolution=budget.resolution[0],
    )
    return SampleConfig(train_videos=budget.train_videos, val_videos=budget.val_videos, scene=scene)


@dataclass(frozen=True)
class Run:
    """One train+evaluate run; `key` names its folder and its row in table1.json."""

    motion: str
    cell: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.motion}-{self.cell}-s{self.seed}"


def plan_runs(
    budget: Budget, cells: tuple[str, ...] = tuple(CELL_NAMES), motions: tuple[str, ...] = MOTIONS
) -> list[Run]:
    """Every run, seed by seed: an interrupted experiment leaves whole seeds of every
    cell and motion setting rather than all seeds of a few cells."""
    unknown = set(cells) - set(CELL_NAMES)
    if unknown:
        raise ValueError(f"unknown cells {sorted(unknown)}; choose from {list(CELL_NAMES)}")
    if not set(motions) <= set(MOTIONS):
        raise ValueError(
            f"unknown motion settings {sorted(set(motions) - set(MOTIONS))}; choose from {MOTIONS}"
        )
    return [
        Run(motion, cell, seed) for seed in budget.seeds for motion in motions for cell in cells
    ]
