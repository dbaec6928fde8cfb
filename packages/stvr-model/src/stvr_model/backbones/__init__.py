"""Clip backbones: [B, 3, 8, H, W] (RGB in [-1, 1]) -> [B, 1024, H/16, W/16].

Both fold two temporal slices of 512 channels into 1024 with channel index t*512 + c,
the layout of the authors' code (Feng et al., CVPR 2019, §6.2). `i3d` is the
Kinetics-400 I3D to `Mixed_4c` (`i3d.py`, weights from `stvr-model convert-i3d`);
`small` is a light 3D-conv network for CPU demos and tests (`small.py`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from torch import nn

from stvr_model.backbones.convert import WeightsError, convert_i3d
from stvr_model.backbones.i3d import I3D, I3DBackbone, fold_time, select_state_for
from stvr_model.backbones.small import SmallBackbone, SmallBackboneConfig

log = logging.getLogger(__name__)

BACKBONES: dict[str, Callable[[], nn.Module]] = {
    "i3d": I3DBackbone,
    "small": SmallBackbone,
}

__all__ = [
    "BACKBONES",
    "I3D",
    "I3DBackbone",
    "SmallBackbone",
    "SmallBackboneConfig",
    "WeightsError",
    "build_backbone",
    "convert_i3d",
    "fold_time",
    "load_weights",
    "make_backbone",
]


I3D_CHANNELS = 1024


def make_backbone(name: str, channels: int = I3D_CHANNELS) -> nn.Module:
    """An untrained backbone `name` giving `channels` output channels: I3D has exactly
    1024; the small network any even multiple of its group count x 2 (fewer channels make
    every later part of the detector cheaper on a CPU)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    if name == "small":
        return SmallBackbone(SmallBackboneConfig(slice_channels=channels // 2))
    if channels != I3D_CHANNELS:
        raise ValueError(f"backbone {name!r} has {I3D_CHANNELS} output channels, not {channels}")
    return BACKBONES[name]()


def build_backbone(name: str, weights: str | os.PathLike | None = None,
                   channels: int = I3D_CHANNELS) -> nn.Module:
    """The backbone `name` ("i3d" or "small"), with weights from a torch state dict file.

    `weights=None` leaves the random initialisation (logged as a warning: an I3D
    without its Kinetics weights is a much weaker feature extractor).
    """
    model = make_backbone(name, channels)
    if weights is None:
        log.warning("backbone %r uses random initialisation (no weights file given)", name)
        return model
    load_weights(model, weights)
    log.info("backbone %r loaded weights from %s", name, weights)
    return model


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a state dict saved with torch.save into `model` (weights_only, strict).

    For an `I3D`, entries of endpoints it does not build (after its final endpoint)
    are ignored, so the full converted network loads into the `Mixed_4c` backbone.
    """
    from stvr_model.checkpoint import torch_load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    state = torch_load(path, WeightsError, "torch state dict")
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    if isinstance(model, I3D):
        state = select_state_for(model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise WeightsError(f"{path}: does not fit {type(model).__name__}: {' '.join(first[:3])}") from err
