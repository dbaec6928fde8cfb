"""Warped-grid pictures like the paper's Figure 7: how a cell moves its state over a frame.

A grid of lines on the feature map (through the warp cell's control rows and columns and
along the borders) is displaced by the flow a cell used in its last step and drawn over
the reference frame. Each point s of a line is drawn at s + flow(s), flow read
bilinearly: where the content at s has moved (exact for locally constant flow, a
first-order picture of the backward field that `dense_image_warp` applies otherwise).
For the `traj` cell, one of its L links is drawn, as in the paper.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

from stvr_data.atomic import atomic_write
from stvr_model.cells import CellError, control_points
from stvr_model.errors import ModelError
from stvr_model.warp import interpolate_bilinear


class PictureError(ModelError):
    """A frame, flow, cell or pair that cannot be drawn (one line from the CLI)."""


class WarpGrid(NamedTuple):
    """Grid lines in frame pixels, `[lines, samples, 2]` (y, x): before and after the flow."""

    original: np.ndarray
    warped: np.ndarray


def cell_flow(cell: nn.Module, item: int = 0, link: int = 0) -> Tensor:
    """The dense flow `[2, h, w]` (dy, dx, feature pixels) a cell used for batch `item`.

    Works for the `warp`, `flow` and `traj` cells after a call (`link` picks the traj link).
    """
    flow = getattr(cell, "last_flow", None)
    if flow is None:
        raise PictureError(
            f"{type(cell).__name__} has no flow to draw (warp, traj or flow cell, after a call)"
        )
    flow = flow[item]
    return flow[link] if flow.dim() == 4 else flow


def grid_lines(height: int, width: int, grid: int = 3) -> tuple[list[float], list[float]]:
    """Feature-map rows and columns of the drawn lines: the control lines and the borders."""
    points = control_points(height, width, grid)
    rows = sorted({0, height - 1, *points[:, 0].tolist()})
    cols = sorted({0, width - 1, *points[:, 1].tolist()})
    return [float(r) for r in rows], [float(c) for c in cols]


def warp_grid(
    flow: Tensor, frame_size: tuple[int, int], grid: int = 3, samples: int = 64
) -> WarpGrid:
    """Grid lines on a `[2, h, w]` feature flow, displaced and mapped to frame pixels.

    Feature pixel centre i maps to frame pixel (i + 0.5) * stride - 0.5 per axis, with
    stride = frame size / map size (16 for the I3D backbone).
    """
    if flow.dim() != 3 or flow.shape[0] != 2:
        raise PictureError(f"flow must be [2, h, w] (dy, dx), got {list(flow.shape)}")
    height, width = flow.shape[1:]
    rows, cols = grid_lines(height, width, grid)
    along_x = torch.linspace(0, width - 1, samples, dtype=torch.float64)
    along_y = torch.linspace(0, height - 1, samples, dtype=torch.float64)
    lines = [torch.stack([torch.full_like(along_x, r), along_x], 1) for r in rows]
    lines += [torch.stack([along_y, torch.full_like(along_y, c)], 1) for c in cols]
    original = torch.stack(lines)  # (lines, samples, 2) feature pixels
    image = flow.detach().to("cpu", torch.float64).unsqueeze(0)
    moved = interpolate_bilinear(image, original.reshape(1, -1, 2)).view_as(original)
    stride = torch.tensor([frame_size[0] / height, frame_size[1] / width], dtype=torch.float64)

    def to_frame(points: Tensor) -> np.ndarray:
        return ((points + 0.5) * stride - 0.5).numpy()

    return WarpGrid(to_frame(original), to_frame(original + moved))


def _displayable(frame: Tensor | np.ndarray) -> np.ndarray:
    """`[3, H, W]` or `[H, W, 3]`, tensor or array: uint8, or float in [-1, 1], [0, 1] or
    0..255 -> float [0, 1]."""
    array = frame.detach().cpu().numpy() if torch.is_tensor(frame) else np.asarray(frame)
    if array.ndim != 3 or 3 not in (array.shape[0], array.shape[-1]):
        raise PictureError(f"frame must be [3, H, W] or [H, W, 3], got {list(array.shape)}")
    if array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    as_bytes = array.dtype == np.uint8
    array = array.astype(np.float64)
    if as_bytes or array.max() > 1.0:
        array = array / 255.0
    elif array.min() < 0.0:
        array = (array + 1.0) / 2.0  # the detector's [-1, 1] clips
    return np.clip(array, 0.0, 1.0)


def draw_warp_grid(
    frame: Tensor | np.ndarray,
    flow: Tensor,
    path: str | os.PathLike,
    *,
    grid: int = 3,
    title: str | None = None,
) -> WarpGrid:
    """Draw the grid displaced by `flow [2, h, w]` over `frame` and write a PNG to `path`.

    Returns the drawn coordinates (frame pixels), so callers and tests can check where
    each grid point went. The file is written under a temporary name and then renamed.
    """
    picture = _displayable(frame)
    lines = warp_grid(flow, picture.shape[:2], grid)
    figure = Figure(figsize=(picture.shape[1] / 80, picture.shape[0] / 80), dpi=80)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(picture)
    for line in lines.original:
        axes.plot(line[:, 1], line[:, 0], color="white", linewidth=0.6, linestyle=":")
    for line in lines.warped:
        axes.plot(line[:, 1], line[:, 0], color="yellow", linewidth=1.5)
    axes.set_xlim(-0.5, picture.shape[1] - 0.5)
    axes.set_ylim(picture.shape[0] - 0.5, -0.5)
    axes.axis("off")
    if title:
        axes.text(4, 12, title, color="white", fontsize=9, backgroundcolor="black")
    with atomic_write(path) as partial:
        figure.savefig(partial, format="png")
    return lines


def pair_flows(model: nn.Module, batch_inputs: dict) -> list[Tensor]:
    """The flow `[2, h, w]` the model's cell used at each reference step, for batch item 0.

    Runs the model once on `batch_inputs` (its forward's keyword arguments) and reads the
    cell's `last_flow` after every step through a forward hook.
    """
    if not hasattr(model.cell, "last_flow"):
        raise PictureError(f"a {type(model.cell).__name__} moves no state: only the warp, traj and "
                           "flow cells have a warped grid to draw")
    flows: list[Tensor] = []
    hook = model.cell.register_forward_hook(lambda cell, args, output: flows.append(cell_flow(cell)))
    try:
        with torch.no_grad():
            model(**batch_inputs)
    finally:
        hook.remove()
    return flows


def draw_pair_warps(checkpoint, benchmark, pair_id: str, out, *, steps: int = 4,
                    device: str = "cpu") -> list[Path]:
    """Figure 7 for one benchmark pair: the grid of the checkpoint's cell warped by the
    flow of `steps` reference steps (evenly spaced), each over its reference clip's middle
    frame, written to ``out/<pair_id>_step<NN>.png``. Returns the paths."""
    from stvr_model.checkpoint import run_config
    from stvr_model.data import PairDataset, batch_to_model, collate
    from stvr_model.inference import inference_data, load_for_inference, model_inputs

    split = pair_id.split("-")[0]
    model, state, spec, torch_device = load_for_inference(checkpoint, device)
    data = inference_data(run_config(state).data)
    dataset = PairDataset(benchmark, split, data, training=False)
    found = dataset.fixed.index[dataset.fixed.pair_id == pair_id]
    if not len(found):
        raise PictureError(f"{benchmark}: no {split} pair {pair_id!r} with media")
    sample = dataset[int(found[0])]
    flows = pair_flows(model, model_inputs(batch_to_model(collate([sample]), torch_device), spec))
    chosen = np.unique(np.linspace(0, len(flows) - 1, min(steps, len(flows))).round().astype(int))
    paths = []
    for step in chosen.tolist():
        clip = sample["reference"][step]  # uint8 (8, H, W, 3)
        path = Path(out) / f"{pair_id}_step{step:02d}.png"
        try:
            draw_warp_grid(clip[clip.shape[0] // 2], flows[step], path,
                           title=f"{pair_id} {spec.cell.kind}: t = {float(sample['times'][step]):.2f} s")
        except CellError as err:  # feature maps too small for the control grid
            raise PictureError(f"{pair_id}: {err}") from None
        paths.append(path)
    return paths
