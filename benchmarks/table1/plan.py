"""What the Table-1 experiment runs: the budgets, the synthetic data settings, the runs.

Pure: nothing here touches the disk. The paper's Table 1 (§6.4) compares five ways of
carrying the recurrent state across clips at equal training budget; here the same five
cells are trained on synthetic benchmarks that differ only in how far the actors step
between clips (`SceneConfig.motion`, in feature cells per clip at the budget's
resolution), with the same seeds for data, weights and sampling.

Training is staged (the `stvr_model.train` options `init_from`, `freeze_backbone`,
`feature_cache`): for the small backbone, stage 0 pretrains it to classify the training
actors' actions (`stvr_model.pretrain`, the part Kinetics plays for I3D); stage 1 trains the Clip detector (`none` cell) end to end once per
motion level and seed; stage 2 trains every cell, Clip included, on top of that frozen
backbone, RPN and second stage (the cell starts fresh), with the backbone's features
kept on disk. Every cell thus gets the same backbone and the same stage-2 budget.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
STAGE1_CELL = "none"  # the cell trained end to end in stage 1
SWEEP_CELLS: tuple[str, ...] = ("none", "convlstm", "warp")
# The paper's Table 1: frame-mAP@0.5 (%) on STVR-AVA and STVR-UCF101-24.
PAPER_MAP50: dict[str, tuple[float, float]] = {
    "none": (18.8, 52.9),
    "convlstm": (20.8, 53.5),
    "flow": (20.2, 52.0),
    "traj": (21.0, 54.8),
    "warp": (21.8, 59.4),
}
IOUS: tuple[str, ...] = ("0.3", "0.5", "0.7")
# What a speed measures (`Budget.movement`; `stvr_data.scene`): "sway", the step between
# consecutive clips of actors swaying around one box per segment (`SceneConfig.motion`);
# "leap", the sideways jump at every second boundary of actors that hold still within a
# second (`SceneConfig.leap`). The unit of the tables, and the axis of the sweep.
MOVEMENTS: dict[str, tuple[str, str]] = {
    "sway": ("cells/clip", "actor step between clips (feature cells)"),
    "leap": ("cells/leap", "actor leap at each second boundary (feature cells)"),
}
HEADLINE_IOU = "0.5"
MOTIONS: tuple[str, ...] = ("static", "moving")  # the two levels of the table


@dataclass(frozen=True)
class Training:
    """The training settings of one budget: stage 1 (Clip, end to end) and stage 2
    (each cell on the frozen stage-1 backbone). One lr drop (/10) at two thirds.

    `shared_stage1`: one stage 1 per speed (the first seed's) under every seed's stage 2,
    instead of one per speed and seed; cheaper, but the seed spread then leaves out the
    variation of the backbone, RPN and second stage (benchmarks/README.md)."""

    stage1_iterations: int
    stage2_iterations: int
    batch_size: int
    lr: float
    optimizer: str = "adam"
    shared_stage1: bool = False
    # Stage 0 for a backbone without action pretraining (`stvr-model pretrain`): steps of
    # action classification on the training actors (0: none, e.g. I3D with its Kinetics
    # weights), and the weight of the auxiliary action loss in stages 1 and 2.
    pretrain_iterations: int = 0
    action_loss: float = 0.0

    def milestones(self, iterations: int) -> tuple[int, ...]:
        return (max(1, iterations * 2 // 3),)


@dataclass(frozen=True)
class Budget:
    """Sizes of one version of the experiment (data, model, training, evaluation).

    `resolution` is the benchmark's clip size (width, height) and the model's input;
    `movement` what a speed measures (`MOVEMENTS`); `moving_cells` the speed of the
    table's moving level and `sweep_speeds` those of the sweep (feature cells at
    `resolution`); `actors` per video; `eval_pairs` caps the test pairs scored per run
    (None: every test pair).
    """

    name: str
    seeds: tuple[int, ...]
    sweep_seeds: tuple[int, ...]
    training: Training
    train_videos: int
    val_videos: int
    seconds: int
    resolution: tuple[int, int]
    backbone: str
    hidden_channels: int
    box_head_blocks: int
    box_head_width: int | None
    box_head_fc: int | None
    anchor_sizes: tuple[float, ...]
    anchor_aspect_ratios: tuple[float, ...]
    cpu_options: bool  # match_product and add_gt_to_proposals (README, deviations)
    reference_seconds: float
    max_query_seconds: float
    query_clips_per_second: int
    eval_pairs: int | None
    device: str
    moving_cells: float = 1.5
    # Up to 1.5 cells per clip at 160 px: the scene refuses faster steps there (its
    # keyframe boxes would no longer cover the actors; 2.25 needs 224 px).
    sweep_speeds: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5)
    min_tubelets: int = 3
    num_val_labels: int = 1
    num_test_labels: int = 4
    movement: str = "sway"
    actors: int = 3

    def __post_init__(self) -> None:
        if self.movement not in MOVEMENTS:
            raise ValueError(f"movement must be one of {list(MOVEMENTS)}, not {self.movement!r}")

    @property
    def unit(self) -> str:
        """The unit of a speed in the tables: ``cells/clip`` or ``cells/leap``."""
        return MOVEMENTS[self.movement][0]

    def speed(self, motion: str) -> float:
        """Feature cells per clip of a table level ("static" or "moving")."""
        if motion not in MOTIONS:
            raise ValueError(f"motion must be one of {MOTIONS}, not {motion!r}")
        return self.moving_cells if motion == "moving" else 0.0


# The CPU budget's training, the one line to tune: Adam; stage 0 long enough for the small
# backbone's features to tell the actions apart (without it no cell leaves the chance
# floor), stage 1 for the Clip detector, stage 2 a fraction of it (features cached).
CPU_TRAINING = Training(stage1_iterations=150, stage2_iterations=60, batch_size=2, lr=1e-3,
                        pretrain_iterations=300, action_loss=1.0)

BUDGETS: dict[str, Budget] = {
    # 2 CPU cores, about 60-90 minutes for the whole table (benchmarks/README.md has the
    # estimate): a light head and a small backbone at 160 px (10x10 feature maps).
    "cpu": Budget(
        name="cpu",
        seeds=(0, 1, 2),
        sweep_seeds=(0,),
        training=CPU_TRAINING,
        train_videos=16,
        val_videos=4,  # 27 test pairs (both speeds): scoring every one is a large part of a run
        seconds=30,
        resolution=(160, 160),
        backbone="small",
        hidden_channels=128,
        box_head_blocks=1,
        box_head_width=128,
        box_head_fc=256,
        anchor_sizes=(32.0, 64.0, 128.0),
        anchor_aspect_ratios=(1.0, 2.0, 3.0),
        cpu_options=True,
        reference_seconds=1.0,
        max_query_seconds=2.0,
        query_clips_per_second=1,
        eval_pairs=None,
        device="cpu",
    ),
    # The end-to-end check of the tests: a few iterations on a tiny benchmark.
    "smoke": Budget(
        name="smoke",
        seeds=(0,),
        sweep_seeds=(0,),
        training=Training(stage1_iterations=2, stage2_iterations=2, batch_size=1, lr=1e-3,
                          pretrain_iterations=2, action_loss=1.0),
        train_videos=2,
        val_videos=3,
        seconds=8,
        resolution=(128, 128),
        backbone="small",
        hidden_channels=16,
        box_head_blocks=1,
        box_head_width=16,
        box_head_fc=32,
        anchor_sizes=(32.0, 64.0),
        anchor_aspect_ratios=(1.0, 3.0),
        cpu_options=True,
        reference_seconds=1.0,
        max_query_seconds=1.0,
        query_clips_per_second=1,
        eval_pairs=2,
        device="cpu",
        moving_cells=1.0,  # the most the scene allows at 128 px
        sweep_speeds=(0.0, 1.0),
        min_tubelets=1,
        num_test_labels=2,
    ),
    # One GPU (recorded, not run on the CPU machine): the authors' input size, backbone,
    # heads, optimiser and schedule scaled to the synthetic set, every test pair.
    "full": Budget(
        name="full",
        seeds=(0, 1, 2, 3, 4),
        sweep_seeds=(0, 1, 2),
        training=Training(
            stage1_iterations=20_000,
            stage2_iterations=10_000,
            batch_size=8,
            lr=0.03,
            optimizer="sgd",
        ),
        train_videos=96,
        val_videos=48,
        seconds=60,
        resolution=(320, 320),
        backbone="i3d",
        hidden_channels=1024,
        box_head_blocks=3,
        box_head_width=None,
        box_head_fc=None,
        anchor_sizes=(64.0, 128.0, 256.0, 512.0),
        anchor_aspect_ratios=(0.5, 1.0, 2.0),
        cpu_options=False,
        reference_seconds=2.0,
        max_query_seconds=10.0,
        query_clips_per_second=3,
        eval_pairs=None,
        device="auto",
    ),
}


# The CPU budget on leaping actors (`SceneConfig.leap`): 2 actors per video, so that
# 2.5-cell leaps at 160 px stay in each actor's half of the frame, and training
# references of 2 s (6 clips), so that every training sample spans a leap.
BUDGETS["cpu-leap"] = replace(
    BUDGETS["cpu"],
    name="cpu-leap",
    movement="leap",
    actors=2,
    moving_cells=2.5,
    sweep_speeds=(0.0, 1.0, 2.0, 2.5),
    reference_seconds=2.0,
)


def sample_config(budget: Budget, speed: float) -> SampleConfig:
    """The `make-sample` settings at one speed: identical for every speed but the actors'
    sway (`motion`) or leap."""
    if speed < 0:
        raise ValueError(f"speed must be >= 0 feature cells, not {speed}")
    moves = {"motion": speed} if budget.movement == "sway" else {"motion": 0.0, "leap": speed}
    scene = SceneConfig(
        actors=budget.actors, seconds=budget.seconds, feature_resolution=budget.resolution[0], **moves
    )
    return SampleConfig(train_videos=budget.train_videos, val_videos=budget.val_videos, scene=scene)


def speed_tag(speed: float) -> str:
    """The folder and key prefix of one speed: ``m0``, ``m1.5``."""
    return f"m{speed:g}"


@dataclass(frozen=True)
class Run:
    """One stage-2 train+evaluate run; `key` names its folder and its row in the JSON.
    Runs at the same speed and seed share the stage-1 run `stage1_key`."""

    speed: float
    cell: str
    seed: int
    stage1_seed: int  # the seed of the stage 1 it starts from

    @property
    def key(self) -> str:
        return f"{speed_tag(self.speed)}-{self.cell}-s{self.seed}"

    @property
    def stage1_key(self) -> str:
        return f"{speed_tag(self.speed)}-stage1-s{self.stage1_seed}"

    @property
    def pretrain_key(self) -> str:
        return f"{speed_tag(self.speed)}-pretrain-s{self.stage1_seed}"


def _run(budget: Budget, speed: float, cell: str, seed: int, seeds: tuple[int, ...]) -> Run:
    return Run(speed, cell, seed, seeds[0] if budget.training.shared_stage1 else seed)


def _check_cells(cells: tuple[str, ...]) -> None:
    unknown = set(cells) - set(CELL_NAMES)
    if unknown:
        raise ValueError(f"unknown cells {sorted(unknown)}; choose from {list(CELL_NAMES)}")


def plan_runs(
    budget: Budget, cells: tuple[str, ...] = tuple(CELL_NAMES), motions: tuple[str, ...] = MOTIONS
) -> list[Run]:
    """The table's runs, seed by seed: an interrupted experiment leaves whole seeds of
    every cell and motion level rather than all seeds of a few cells."""
    _check_cells(cells)
    if not set(motions) <= set(MOTIONS):
        raise ValueError(
            f"unknown motion levels {sorted(set(motions) - set(MOTIONS))}; choose from {MOTIONS}"
        )
    speeds = [budget.speed(m) for m in MOTIONS if m in motions]
    return [
        _run(budget, speed, cell, seed, budget.seeds)
        for seed in budget.seeds
        for speed in speeds
        for cell in cells
    ]


def plan_sweep(
    budget: Budget, cells: tuple[str, ...] = SWEEP_CELLS, seeds: tuple[int, ...] | None = None
) -> list[Run]:
    """The sweep's runs: `cells` at every speed of the budget, seed by seed, slowest first."""
    _check_cells(cells)
    seeds = seeds or budget.sweep_seeds
    return [
        _run(budget, speed, cell, seed, seeds)
        for seed in seeds
        for speed in budget.sweep_speeds
        for cell in cells
    ]


def total_iterations(runs: list[Run], budget: Budget) -> tuple[int, int]:
    """(stage-1, stage-2) iterations of `runs`: one stage 1 per speed and seed."""
    stage1 = len({r.stage1_key for r in runs}) * budget.training.stage1_iterations
    return stage1, len(runs) * budget.training.stage2_iterations
