"""Build a detector from its `ModelConfig`, and save/load checkpoints safely.

A checkpoint is a dict of tensors and plain Python values only, so it loads with
`torch.load(weights_only=True)` (no code runs on load). It is written to a temporary
file and renamed, so a run killed while saving keeps the previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from stvr_data.atomic import atomic_write
from stvr_data.errors import StvrError
from stvr_model.backbones import build_backbone, make_backbone
from stvr_model.cells import make_cell
from stvr_model.config import ModelConfig, RunConfig, run_dict_from_flat
from stvr_model.detector import ReLocalizationDetector
from stvr_model.errors import CheckpointError, ModelError

__all__ = ["CheckpointError", "build_model", "load_checkpoint", "model_from_checkpoint", "run_config",
           "save_checkpoint", "stored_run", "torch_load"]


def build_model(config: ModelConfig, *, backbone_weights: str | os.PathLike | None = None,
                weights_follow: bool = False) -> torch.nn.Module:
    """The re-localization detector of `config`: the backbone `config.backbone` at the
    detector's feature width, the cell `config.cell` at that width, `config.detector`.

    The backbone's weights come from `backbone_weights` (a state dict file), or are random
    (logged as a warning); `weights_follow=True` says that every weight is loaded next (a
    checkpoint, or staged training's `init_from`), so there is nothing to warn about."""
    channels = config.detector.feature_channels
    if weights_follow and backbone_weights is not None:
        raise ModelError("build_model: backbone_weights and weights_follow both set the backbone's weights")
    if weights_follow:
        backbone = make_backbone(config.backbone, channels)
    else:
        backbone = build_backbone(config.backbone, weights=backbone_weights, channels=channels)
    return ReLocalizationDetector(backbone, make_cell(config.cell, channels, channels), config.detector)


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
    if not isinstance(state, dict) or "model" not in state or not ({"run", "spec"} & set(state)):
        raise CheckpointError(f"{path}: not an stvr-model checkpoint (no model/run entries)")
    return state


def stored_run(state: dict) -> dict:
    """The run settings a checkpoint dict stores, as plain values in the `RunConfig.to_dict`
    layout: its "run" entry, or, from a checkpoint of the flat layout, its "spec", "config"
    and "data" entries converted (`config.run_dict_from_flat`)."""
    return state["run"] if "run" in state else run_dict_from_flat(state)


def run_config(state: dict) -> RunConfig:
    """The `RunConfig` a checkpoint dict was trained with."""
    return RunConfig.from_dict(stored_run(state))


def model_from_checkpoint(path: str | os.PathLike, map_location="cpu"):
    """(model in eval mode with the checkpoint's weights, the checkpoint dict)."""
    state = load_checkpoint(path, map_location)
    try:
        config = run_config(state).model
    except StvrError as err:  # unknown or invalid settings
        raise CheckpointError(f"{path}: {err}") from None
    model = build_model(config, weights_follow=True)
    model.load_state_dict(state["model"])
    return model.eval(), state
