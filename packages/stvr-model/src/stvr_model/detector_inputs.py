"""What the detector's forward accepts: the shapes, dtypes and contents of its inputs
and training targets, each refused in one line naming the argument (`DetectorInputError`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from stvr_data.errors import StvrDataError
from stvr_model.heads import MATCHING_ACTOR, OTHER_ACTOR

if TYPE_CHECKING:
    from stvr_model.detector import DetectorConfig


class DetectorInputError(StvrDataError):
    """A detector setting or input that does not fit: names the field or argument."""


def check_ref_valid(ref_valid: Tensor | None, batch: int, steps: int, device) -> Tensor:
    if ref_valid is None:
        return torch.ones((batch, steps), dtype=torch.bool, device=device)
    if tuple(ref_valid.shape) != (batch, steps) or ref_valid.dtype != torch.bool:
        raise DetectorInputError(
            f"ref_valid must be bool [{batch}, {steps}], got {ref_valid.dtype} "
            f"{tuple(ref_valid.shape)}"
        )
    if not bool(ref_valid.any()):
        raise DetectorInputError("ref_valid marks every reference clip as padding")
    return ref_valid


def check_inputs(
    config: DetectorConfig,
    query_clips: Tensor,
    query_boxes: Tensor,
    ref_clips: Tensor,
    query_valid: Tensor,
    flows: Tensor | None,
) -> None:
    """Raise DetectorInputError naming the argument whose shape or content does not fit."""
    frame = (3, 8, *config.image_size)
    for name, clips in (("query_clips", query_clips), ("ref_clips", ref_clips)):
        if not clips.is_floating_point():
            raise DetectorInputError(f"{name} must be float in [-1, 1], got {clips.dtype} "
                                     "(stvr_model.data.batch_to_model converts the dataset's uint8 clips)")
        if clips.dim() != 6 or tuple(clips.shape[2:]) != frame:
            raise DetectorInputError(
                f"{name} must be [B, T, {', '.join(map(str, frame))}], got {tuple(clips.shape)}"
            )
    batch, q_steps = query_clips.shape[:2]
    if ref_clips.shape[0] != batch:
        raise DetectorInputError(f"ref_clips batch {ref_clips.shape[0]} != query batch {batch}")
    if tuple(query_boxes.shape) != (batch, q_steps, 4):
        raise DetectorInputError(
            f"query_boxes must be [{batch}, {q_steps}, 4], got {tuple(query_boxes.shape)}"
        )
    if tuple(query_valid.shape) != (batch, q_steps) or query_valid.dtype != torch.bool:
        raise DetectorInputError(
            f"query_valid must be bool [{batch}, {q_steps}], got {query_valid.dtype} "
            f"{tuple(query_valid.shape)}"
        )
    empty = torch.where(~query_valid.any(dim=1))[0].tolist()
    if empty:
        raise DetectorInputError(f"query_valid: batch rows {empty} have no valid query clip")
    if flows is not None:
        h, w = config.feature_size
        expected = (batch, ref_clips.shape[1], 2, h, w)
        if tuple(flows.shape) != expected:
            raise DetectorInputError(f"flows must be {list(expected)}, got {tuple(flows.shape)}")


def check_targets(targets: list[list[dict[str, Tensor]]], batch: int, steps: int) -> None:
    """Raise DetectorInputError naming targets[b][t] and the field that does not fit."""
    if len(targets) != batch:
        raise DetectorInputError(f"targets has {len(targets)} rows for a batch of {batch}")
    for b, row in enumerate(targets):
        if len(row) != steps:
            raise DetectorInputError(f"targets[{b}] has {len(row)} clips, expected {steps}")
        for t, target in enumerate(row):
            boxes, labels = target.get("boxes"), target.get("labels")
            where = f"targets[{b}][{t}]"
            if boxes is None or boxes.dim() != 2 or boxes.shape[1] != 4:
                raise DetectorInputError(f"{where}['boxes'] must be a [K, 4] tensor")
            if labels is None or tuple(labels.shape) != (len(boxes),):
                raise DetectorInputError(f"{where}['labels'] must be a [{len(boxes)}] tensor")
            allowed = (labels == OTHER_ACTOR) | (labels == MATCHING_ACTOR)
            if not bool(allowed.all()):
                raise DetectorInputError(
                    f"{where}['labels'] holds {labels[~allowed].tolist()}: only "
                    f"{OTHER_ACTOR} (other actor) and {MATCHING_ACTOR} (matching actor)"
                )
