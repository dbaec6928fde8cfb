"""One configuration per run: the model (backbone, cell, detector), the data and the
training settings, as one frozen tree that the command line fills, the checkpoint
stores whole (`RunConfig.to_dict`, under "run") and `checkpoint.build_model` reads.

Each part is the config of the code it configures, defined once: `cells.CellConfig`
(the cell's kind and options: the warp cell's control grid, spline order, boundary
points and offset bound), `detector.DetectorConfig` (frame size, feature width, anchors,
RPN, second stage, the auxiliary action head's classes), `data.DataConfig` and
`TrainConfig`. The feature width is the detector's `feature_channels`: the backbone is
built to give that many channels (I3D only 1024), and the cell runs at that width.

Checkpoints written before this layout stored a flat `spec` with the training and data
settings beside it; `run_dict_from_flat` reads them as the networks they were trained
as (`BEFORE_RECORDED`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from stvr_model.backbones import BACKBONES
from stvr_model.cells import CellConfig
from stvr_model.data import DataConfig
from stvr_model.detector import DetectorConfig
from stvr_model.errors import CheckpointError, ModelError


@dataclass(frozen=True)
class TrainConfig:
    """The optimiser, its schedule and the run's bookkeeping (`stvr_model.train`)."""

    iterations: int = 30_000
    batch_size: int = 8  # per process
    lr: float = 0.03
    optimizer: str = "sgd"  # the authors'; "adam" learns faster in short CPU runs
    momentum: float = 0.9
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = (10_000, 20_000)
    clip_grad_norm: float = 10.0
    seed: int = 0
    checkpoint_every: int = 500
    keep_every: int = 5_000
    log_every: int = 10
    num_workers: int = 2
    device: str = "auto"
    amp: bool = True  # bf16 autocast, CUDA only
    # The split whose pairs are trained on: "train" (pairs re-drawn every epoch), or a
    # fixed val/test split to check that the model can fit those very pairs.
    split: str = "train"
    max_pairs: int | None = None  # with a val/test split: fit only its first pairs
    # Staged training: start from another run's weights (every tensor whose name and
    # shape fit; a new cell starts fresh), keep the backbone fixed, and keep its
    # features on disk (only with a frozen backbone).
    init_from: str | None = None
    freeze_backbone: bool = False
    feature_cache: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    """What rebuilds the same network: the backbone's name ("i3d" or "small"), the
    recurrent cell and the detector around them."""

    backbone: str = "i3d"
    cell: CellConfig = field(default_factory=CellConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, str) or self.backbone not in BACKBONES:
            raise ModelError(f"unknown backbone {self.backbone!r}; choose one of {sorted(BACKBONES)}")

    def to_dict(self) -> dict:
        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """The config `to_dict` gave; missing settings take today's defaults, unknown ones
        are refused (CheckpointError naming them)."""
        _check_keys(cls, data, "model")
        return cls(backbone=data.get("backbone", cls.backbone),
                   cell=from_plain(CellConfig, data.get("cell", {}), "model.cell"),
                   detector=from_plain(DetectorConfig, data.get("detector", {}), "model.detector"))


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run is: the model, its data and its training settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        """Plain JSON-able values: nested dicts, lists for tuples."""
        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        """The config `to_dict` gave (as `ModelConfig.from_dict`, part by part)."""
        _check_keys(cls, data, "run")
        return cls(model=ModelConfig.from_dict(data.get("model", {})),
                   data=from_plain(DataConfig, data.get("data", {}), "data"),
                   training=from_plain(TrainConfig, data.get("training", {}), "training"))


def plain(value):
    """`value` with every tuple a list, for JSON and for comparing with stored settings."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def _check_keys(cls, data, where: str) -> None:
    if not isinstance(data, dict):
        raise CheckpointError(f"{where} settings are a {type(data).__name__}, not a mapping")
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise CheckpointError(f"{where} settings {unknown} are unknown to this version of stvr-model")


def from_plain(cls, data: dict, where: str):
    """A flat config dataclass `cls` from plain values (lists become tuples)."""
    _check_keys(cls, data, where)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# What a checkpoint written before a setting was recorded was built and trained with
# (torchvision's RPN, the zero-initialised offset conv), where that differs from today's
# default; keys of the flat layout (`FLAT_SPEC`).
BEFORE_RECORDED = {
    "rpn_box_weights": (1.0, 1.0, 1.0, 1.0),
    "rpn_smooth_l1_beta": 1 / 9,
    "rpn_border_anchors": "keep",
    "rpn_conv_width": None,
    "separable_offset": False,
}

# Where each setting of the flat layout lives in `ModelConfig`: (part, field). Settings
# a flat spec lacks take today's defaults, which are the flat layout's own.
FLAT_SPEC = {
    "backbone": ("backbone", None),
    "cell": ("cell", "kind"),
    **{name: ("cell", name) for name in ("max_offset", "separable_offset", "control_grid",
                                         "interpolation_order", "num_boundary_points")},
    "hidden_channels": ("detector", "feature_channels"),
    "action_loss": ("detector", "action_weight"),
    **{name: ("detector", name) for name in (
        "image_size", "box_head_blocks", "box_head_width", "box_head_fc", "match_product",
        "anchor_sizes", "anchor_aspect_ratios", "add_gt_to_proposals", "action_atoms",
        "rpn_box_weights", "rpn_smooth_l1_beta", "rpn_border_anchors", "rpn_conv_width")},
}


def model_dict_from_flat(spec: dict) -> dict:
    """`ModelConfig.to_dict()` layout of a flat `spec`, settings it predates filled from
    `BEFORE_RECORDED`; unknown settings are refused (CheckpointError)."""
    _check_flat(spec)
    nested: dict = {"cell": {}, "detector": {}}
    for key, value in {**BEFORE_RECORDED, **spec}.items():
        part, name = FLAT_SPEC[key]
        if name is None:
            nested[part] = value
        else:
            nested[part][name] = plain(value)
    return nested


def _check_flat(spec) -> None:
    if not isinstance(spec, dict):
        raise CheckpointError(f"model settings are a {type(spec).__name__}, not a mapping")
    unknown = sorted(set(spec) - set(FLAT_SPEC))
    if unknown:
        raise CheckpointError(f"model settings {unknown} are unknown to this version of stvr-model")


def run_dict_from_flat(state: dict) -> dict:
    """`RunConfig.to_dict()` layout of a checkpoint with a flat "spec" (and "config", "data"
    when it recorded them). The model is complete, as the network was built; the training
    and data settings stay as stored: those it lacks take the defaults when read, and are
    not compared when a run is resumed."""
    model = ModelConfig.from_dict(model_dict_from_flat(state["spec"]))
    return {"model": model.to_dict(), "data": state.get("data", {}), "training": state.get("config", {})}
