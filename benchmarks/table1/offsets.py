"""How far the warp cell moves its state where the actors are, against how far they move.

During a pass over the test references, a forward hook on the model's cell reads the
warp cell's `last_offsets` (dy, dx in feature cells at its control points) after every
step; the offsets of a step that warps (every step but a reference's first) are kept at
the control points that fall inside a ground-truth actor box of that clip. Their mean
length is set beside how far the actors moved at those steps: a cell that has learnt to
follow the actors moves its state by about that much there. Swaying actors
(`SceneConfig.motion`) step at every clip; leaping ones (`SceneConfig.leap`) only from
the last clip of a second to the first of the next, so with `at_leaps` only those steps
count.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch


def lengths_inside_boxes(
    offsets: torch.Tensor, points: torch.Tensor, boxes: torch.Tensor, stride: tuple[float, float]
) -> torch.Tensor:
    """|offset| (feature cells) at the control points inside any of `boxes`.

    `offsets` [P, 2] (dy, dx); `points` [P, 2] (y, x) feature-cell indices, whose pixel
    centre is ``(index + 0.5) * stride``; `boxes` [K, 4] pixel x1, y1, x2, y2;
    `stride` (y, x) pixels per feature cell."""
    if not len(boxes):
        return offsets.new_zeros(0)
    y = (points[:, 0].to(boxes.dtype) + 0.5) * stride[0]
    x = (points[:, 1].to(boxes.dtype) + 0.5) * stride[1]
    inside = (
        (x[:, None] >= boxes[None, :, 0])
        & (x[:, None] <= boxes[None, :, 2])
        & (y[:, None] >= boxes[None, :, 1])
        & (y[:, None] <= boxes[None, :, 3])
    ).any(dim=1)
    return offsets[inside].norm(dim=1)


def summarize(lengths: list[float], motion: float) -> dict:
    """The record's `offsets` entry: mean |offset| inside actor boxes and the true step."""
    mean = sum(lengths) / len(lengths) if lengths else math.nan
    return {
        "mean_abs": None if math.isnan(mean) else round(mean, 4),
        "points": len(lengths),
        "true_displacement": motion,
    }


def leap_steps(times: torch.Tensor) -> torch.Tensor:
    """bool [T]: whether step t starts a new video second (the clip before it lies in
    another second), for clip start `times` in seconds; a reference's first step is not."""
    seconds = torch.floor(times.double() + 1e-6)
    return torch.cat([torch.zeros(1, dtype=torch.bool), seconds[1:] != seconds[:-1]])


class _OffsetRecorder:
    """Forward hook on a warp cell: the (map size, offsets) of each step, in order."""

    def __init__(self) -> None:
        self.steps: list[tuple[tuple[int, int], torch.Tensor]] = []

    def __call__(self, module, args, output) -> None:
        self.steps.append((tuple(args[0].shape[-2:]), module.last_offsets[0].float().cpu()))


@torch.no_grad()
def measure_offsets(
    checkpoint: str | Path,
    benchmark: str | Path,
    motion: float,
    *,
    split: str = "test",
    max_pairs: int | None = None,
    device: str = "cpu",
    feature_cache: str | Path | None = None,
    at_leaps: bool = False,
) -> dict:
    """Run the warp checkpoint over the pairs of `split` (as `evaluate` does, through the
    same `feature_cache`) and summarise its offsets inside the actors' boxes against `motion`
    (cells the actors move at the steps that count: every step, or with `at_leaps` the
    steps into a new second)."""
    from stvr_model.cells import control_points
    from stvr_model.checkpoint import run_config
    from stvr_model.data import PairDataset, batch_to_model, collate
    from stvr_model.inference import inference_data, load_for_inference, model_inputs

    model, state, spec, torch_device = load_for_inference(checkpoint, device, feature_cache=feature_cache)
    if spec.cell.kind != "warp":
        raise ValueError(f"{checkpoint}: offsets are measured for the warp cell, not {spec.cell.kind!r}")
    data = inference_data(run_config(state).data)
    dataset = PairDataset(benchmark, split, data, training=False)
    recorder = _OffsetRecorder()
    handle = model.cell.register_forward_hook(recorder)
    lengths: list[float] = []
    height, width = spec.detector.image_size
    try:
        for index in range(len(dataset) if max_pairs is None else min(max_pairs, len(dataset))):
            sample = dataset[index]
            recorder.steps.clear()
            model(**model_inputs(batch_to_model(collate([sample]), torch_device), spec))
            steps = len(recorder.steps)
            counted = leap_steps(sample["times"]) if at_leaps else torch.ones(steps, dtype=torch.bool)
            for t, (size, offsets) in enumerate(recorder.steps):
                if t == 0 or not counted[t]:  # a reference's first step has no state to warp
                    continue
                points = control_points(size[0], size[1], model.cell.config.control_grid)
                stride = (height / size[0], width / size[1])
                boxes = sample["targets"][t]["boxes"]
                lengths += lengths_inside_boxes(offsets, points, boxes, stride).tolist()
    finally:
        handle.remove()
    return summarize(lengths, motion)
