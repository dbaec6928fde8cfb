"""Figure 7 pictures: the grid lands where the flow says, and a PNG is written."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from stvr_model.cells import build_cell
from stvr_model.pictures import PictureError, cell_flow, draw_warp_grid, grid_lines, warp_grid


def test_grid_lines_run_through_the_control_points_and_borders():
    rows, cols = grid_lines(20, 20)
    assert rows == [0.0, 5.0, 10.0, 15.0, 19.0] and cols == rows


def test_constant_flow_moves_every_grid_point_by_stride_times_flow():
    flow = torch.zeros(2, 20, 20)
    flow[0], flow[1] = 1.0, -2.0  # feature pixels
    lines = warp_grid(flow, (320, 320))
    assert lines.original.shape == lines.warped.shape == (10, 64, 2)
    assert np.allclose(lines.warped - lines.original, [16.0, -32.0])
    # Feature pixel 5 is centred on frame pixel 5.5 * 16 - 0.5.
    assert np.isclose(lines.original[1, 0, 0], 87.5)


def test_grid_point_displacement_is_the_flow_there():
    torch.manual_seed(0)
    flow = torch.randn(2, 20, 20)
    lines = warp_grid(flow, (320, 160), samples=39)  # samples land on every half pixel
    # Row line y=10 (third line), sample 20 sits at x=10: displacement = flow[:, 10, 10].
    moved = lines.warped[2, 20] - lines.original[2, 20]
    assert np.allclose(moved, flow[:, 10, 10].numpy() * [16, 8], atol=1e-5)
    # Halfway between pixels the flow is the mean of its neighbours (bilinear).
    halfway = lines.warped[2, 21] - lines.original[2, 21]
    assert np.allclose(halfway, flow[:, 10, 10:12].mean(1).numpy() * [16, 8], atol=1e-5)


@pytest.mark.parametrize("kind", ["warp", "traj", "flow"])
def test_draws_a_cells_last_flow(tmp_path, kind):
    torch.manual_seed(1)
    cell = build_cell(kind, 8, 8, bottleneck=4, link_channels=4, separable_offset=False)
    if kind == "warp":
        with torch.no_grad():
            cell.offset.bias.copy_(torch.tensor([1.5, -1.0]))
    x = torch.randn(1, 8, 20, 20)
    cell(x, cell(x, flow=torch.zeros(1, 2, 20, 20)), flow=torch.full((1, 2, 20, 20), 0.5))
    frame = torch.rand(3, 320, 320) * 2 - 1  # the detector's [-1, 1] frames
    path = tmp_path / "pictures" / f"{kind}.png"
    flow = cell_flow(cell, item=0, link=4)
    lines = draw_warp_grid(frame, flow, path, title=kind)
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert imread(path).shape[:2] == (320, 320)
    assert not list(path.parent.glob(".*partial"))
    assert np.allclose(lines.warped, warp_grid(flow, (320, 320)).warped)
    if kind == "warp":  # the centre control point moved by its offset, times the stride
        centre = lines.warped[2, 32] - lines.original[2, 32]
        assert np.abs(centre).max() > 1.0


def test_bad_inputs_are_reported(tmp_path):
    with pytest.raises(PictureError, match="no flow"):
        cell_flow(build_cell("convlstm", 8, 8, bottleneck=4))
    with pytest.raises(PictureError, match="flow must be"):
        warp_grid(torch.zeros(20, 20, 2), (320, 320))
    with pytest.raises(PictureError, match="frame must be"):
        draw_warp_grid(np.zeros((320, 320)), torch.zeros(2, 20, 20), tmp_path / "x.png")


def test_uint8_frames_are_shown_as_bytes_however_dark():
    from stvr_model.pictures import _displayable

    dark = np.ones((4, 4, 3), np.uint8)  # max 1: a float frame in [0, 1] would be white
    assert np.allclose(_displayable(dark), 1 / 255)
    assert np.allclose(_displayable(torch.from_numpy(dark)), 1 / 255)
