"""Build a detector from plain settings, and save/load checkpoints safely.

A checkpoint is a dict of tensors and plain Python values only, so it loads with
`torch.load(weights_only=True)` (no code runs on load). It is written to a temporary
file and renamed, so a run killed while saving keeps the previous checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from stvr_data.atomic import atomic_write
from stvr_model.boxes import AUTHORS_BOX_WEIGHTS
from stvr_model.cells import CellConfig
from stvr_model.errors import ModelError

_FROM_CHECKPOINT = "<from checkpoint>"


class CheckpointError(ModelError):
    """A checkpoint that is missing, unreadable or not from this tool."""


# What a checkpoint written before a setting was recorded was built and trained with
# (torchvision's RPN), where that differs from today's default (the authors').
BEFORE_RECORDED = {
    "rpn_box_weights": (1.0, 1.0, 1.0, 1.0),
    "rpn_smooth_l1_beta": 1 / 9,
    "rpn_border_anchors": "keep",
    "rpn_conv_width": None,
    "separable_offset": False,
}


@dataclass(frozen=True)
class ModelSpec:
    """What is needed to rebuild the same network: stored in every checkpoint."""

    cell: str = "warp"
    backbone: str = "i3d"
    image_size: tuple[int, int] = (320, 320)  # (height, width)
    hidden_channels: int = 1024  # backbone output = cell state channels (I3D: 1024; small: any)
    # ResNet units of the second stage (the authors: 3 at 2C channels); one unit at a
    # reduced `box_head_width` (e.g. 256) makes CPU runs practical.
    box_head_blocks: int = 3
    box_head_width: int | None = None
    box_head_fc: int | None = None  # flatten the crop into this many units instead of the mean
    match_product: bool = False  # proposal x attended query beside the two (not the authors')
    # RPN anchor sides in pixels and height/width ratios; the authors' suit a 320 px frame
    anchor_sizes: tuple[float, ...] = (64.0, 128.0, 256.0, 512.0)
    anchor_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    add_gt_to_proposals: bool = False  # the authors did not; speeds up short trainings
    max_offset: float | None = 4.0  # warp cell: offset bound in feature cells (None: unbounded)
    # The warp cell's spline (paper §3.2, `cells.CellConfig`; the authors' by default):
    # control_grid x control_grid control points, the spline's order (the paper: 1 or 2)
    # and TensorFlow's zero-flow border points per edge.
    control_grid: int = CellConfig.control_grid
    interpolation_order: int = CellConfig.interpolation_order
    num_boundary_points: int = CellConfig.num_boundary_points
    # Auxiliary action loss on annotated actors (`heads.ActorActionHead`, not the authors'):
    # its weight (0: none) and its classes, the atomic actions of the benchmark's training
    # labels, which `train` fills in from the benchmark.
    action_loss: float = 0.0
    action_atoms: tuple[str, ...] = ()
    # RPN box coding and box loss (`DetectorConfig.rpn_box_weights`, `rpn_smooth_l1_beta`)
    rpn_box_weights: tuple[float, float, float, float] = AUTHORS_BOX_WEIGHTS
    rpn_smooth_l1_beta: float = 1.0
    # anchors crossing the frame's border (`DetectorConfig.rpn_border_anchors`): the
    # authors remove them in training and clip them at inference
    rpn_border_anchors: str = "remove"
    rpn_conv_width: int | None = 512  # RPN conv width (the authors'); None: the features' width
    separable_offset: bool = True  # warp cell: the authors' offset conv (`cells.CellConfig`)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["image_size"] = list(self.image_size)
        out["anchor_sizes"] = list(self.anchor_sizes)
        out["anchor_aspect_ratios"] = list(self.anchor_aspect_ratios)
        out["action_atoms"] = list(self.action_atoms)
        out["rpn_box_weights"] = list(self.rpn_box_weights)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        """The spec a checkpoint stored; settings it predates get `BEFORE_RECORDED`."""
        data = {**BEFORE_RECORDED, **data}
        data["image_size"] = tuple(data["image_size"])
        for name in ("anchor_sizes", "anchor_aspect_ratios", "action_atoms", "rpn_box_weights"):
            if name in data:
                data[name] = tuple(data[name])
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise CheckpointError(f"model settings {unknown} are unknown to this version of stvr-model")
        return cls(**data)


def build_model(spec: ModelSpec, *, backbone_weights: str | None = None) -> torch.nn.Module:
    """The re-localization detector for `spec` (backbone + recurrent cell + heads)."""
    from stvr_model.backbones import BACKBONES, build_backbone, make_backbone
    from stvr_model.cells import build_cell
    from stvr_model.detector import DetectorConfig, ReLocalizationDetector

    if backbone_weights is _FROM_CHECKPOINT:  # every weight comes from the checkpoint next
        if spec.backbone not in BACKBONES:
            raise CheckpointError(f"unknown backbone {spec.backbone!r} in the checkpoint")
        backbone = make_backbone(spec.backbone, spec.hidden_channels)
    else:
        backbone = build_backbone(spec.backbone, weights=backbone_weights, channels=spec.hidden_channels)
    cell = build_cell(spec.cell, spec.hidden_channels, spec.hidden_channels, max_offset=spec.max_offset,
                      separable_offset=spec.separable_offset,
                      control_grid=spec.control_grid, interpolation_order=spec.interpolation_order,
                      num_boundary_points=spec.num_boundary_points)
    config = DetectorConfig(image_size=spec.image_size, feature_channels=spec.hidden_channels,
                            box_head_blocks=spec.box_head_blocks,
                            box_head_width=spec.box_head_width, box_head_fc=spec.box_head_fc,
                            anchor_sizes=spec.anchor_sizes,
                            anchor_aspect_ratios=spec.anchor_aspect_ratios,
                            add_gt_to_proposals=spec.add_gt_to_proposals,
                            match_product=spec.match_product,
                            rpn_box_weights=spec.rpn_box_weights,
                            rpn_smooth_l1_beta=spec.rpn_smooth_l1_beta,
                            rpn_border_anchors=spec.rpn_border_anchors,
                            rpn_conv_width=spec.rpn_conv_width,
                            action_classes=len(spec.action_atoms) if spec.action_loss else 0,
                            action_weight=spec.action_loss)
    return ReLocalizationDetector(backbone, cell, config)


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    with atomic_write(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def torch_load(path: Path, error: type[Exception], what: str, map_location="cpu"):
    """`torch.load(path, weights_only=True)` whose failures are one `error` line naming
    `path`: a file holding other objects than tensors and plain values is refused (none
    of its code runs), anything else is "not a readable `what`" with torch's first line."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # torch's weights_only loader, with lines of advice
        text = str(err)
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if refused:
            raise error(f"{path}: refused to load, the {what} holds objects other than tensors and plain "
                        f"values ({refused.group(1)}); nothing in it was run") from None
        reason = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
        detail = reason.group(1).strip() if reason else text.strip().splitlines()[0]
        raise error(f"{path}: not a readable {what} ({detail})") from None
    except Exception as err:  # torch raises several unrelated types for a bad file
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise error(f"{path}: not a readable {what} ({type(err).__name__}: {first})") from None


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    state = torch_load(path, CheckpointError, "checkpoint", map_location=map_location)
    if not isinstance(state, dict) or "model" not in state or "spec" not in state:
        raise CheckpointError(f"{path}: not an stvr-model checkpoint (no model/spec entries)")
    return state


def model_from_checkpoint(path: str | os.PathLike, map_location="cpu"):
    """(model in eval mode with the checkpoint's weights, the checkpoint dict)."""
    state = load_checkpoint(path, map_location)
    model = build_model(ModelSpec.from_dict(state["spec"]), backbone_weights=_FROM_CHECKPOINT)
    model.load_state_dict(state["model"])
    return model.eval(), state
