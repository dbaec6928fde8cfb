"""What running a trained detector needs, shared by evaluation, prediction and the
pictures: the device, the forward's inputs from a collated batch, and the scorer's rows.

Nothing here trains: `evaluate.py` and `predict.py` import this module, not `train.py`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stvr_data.errors import StvrDataError
from stvr_model import boxes
from stvr_model.checkpoint import model_from_checkpoint, run_config
from stvr_model.config import ModelConfig
from stvr_model.data import DataConfig
from stvr_model.feature_cache import FeatureCache

BACKBONE_CHUNK = 24  # clips per backbone call at evaluation (8 s of video)
DETECTION_COLUMNS = ["pair_id", "timestamp", "x1", "y1", "x2", "y2", "score"]


def detection_rows(pair_id: str, times, clip_detections: list[dict], width: int, height: int) -> pd.DataFrame:
    """Scorer rows for one pair: the pixel boxes of each reference clip, normalised."""
    rows = boxes.detection_rows([clip_detections], [pair_id], [list(np.asarray(times, np.float64))],
                                (height, width))
    return pd.DataFrame(rows, columns=DETECTION_COLUMNS)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise StvrDataError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)


def model_inputs(batch: dict, spec: ModelConfig) -> dict:
    """Keyword arguments of the detector's forward for one collated batch on the model's
    device (`stvr_model.data.batch_to_model`: float clips)."""
    flows = None
    if spec.cell.kind == "flow":
        from stvr_model.flow import clip_flows

        flows = clip_flows(batch["reference"])
    return {"query_clips": batch["query"], "query_boxes": batch["query_boxes"],
            "ref_clips": batch["reference"], "query_valid": batch["query_valid"],
            "ref_valid": batch["ref_valid"], "flows": flows}


def load_for_inference(checkpoint: str | Path, device: str = "auto", *,
                       feature_cache: str | Path | None = None):
    """(model in eval mode on the device, checkpoint dict, its ModelConfig, the device).

    References run whole (up to minutes of clips), so the backbone takes them in chunks
    of `BACKBONE_CHUNK` clips; with `feature_cache` (a `FeatureCache` folder) the frozen
    backbone's features are read from, and added to, that cache."""
    torch_device = resolve_device(device)
    model, state = model_from_checkpoint(checkpoint, map_location=torch_device)
    model.config = dataclasses.replace(model.config, backbone_chunk_size=BACKBONE_CHUNK)
    model.to(torch_device)
    if feature_cache is not None:
        model.feature_cache = FeatureCache(feature_cache, model.backbone)
    return model, state, run_config(state).model, torch_device


def inference_data(data: DataConfig) -> DataConfig:
    """A run's data settings (e.g. `run_config(state).data`) for inference: whole
    references, no flips."""
    return dataclasses.replace(data, reference_seconds=None, hflip=False)
