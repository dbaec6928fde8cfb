"""Classical optical flow on synthetic frames moved by known amounts."""

from __future__ import annotations

import pytest
import torch

from stvr_model.flow import (
    FlowConfig,
    FlowError,
    accumulate_flow,
    clip_flows,
    compose_flows,
    frames_flow,
)


def texture(y: torch.Tensor, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """A smooth pattern with structure in every direction, defined at any real point."""
    y, x = y / scale, x / scale
    return (
        torch.sin(0.31 * x + 0.5 * torch.sin(0.13 * y))
        + torch.cos(0.23 * y - 0.17 * x)
        + 0.5 * torch.sin(0.41 * y + 0.29 * x)
        + torch.exp(-((y - 30) ** 2 + (x - 20) ** 2) / 60.0)
    )


def moving_video(frames: int, size: int, velocity: tuple[float, float], scale: float = 1.0):
    """`[1, 3, T, size, size]` frames of the texture moving `velocity` (dy, dx) per frame."""
    ys = torch.arange(size, dtype=torch.float64).view(size, 1)
    xs = torch.arange(size, dtype=torch.float64).view(1, size)
    vy, vx = velocity
    grey = torch.stack([texture(ys - k * vy, xs - k * vx, scale) for k in range(frames)])
    return grey.float().expand(3, frames, size, size).unsqueeze(0)


@pytest.mark.parametrize("velocity", [(0.7, -1.3), (2.5, 1.0)])
def test_recovers_a_known_shift(velocity):
    flow = frames_flow(moving_video(3, 64, velocity))
    assert flow.shape == (1, 2, 2, 64, 64)
    inner = flow[0, :, :, 8:-8, 8:-8]  # content entering at the borders has no match
    for axis, expected in enumerate(velocity):
        error = (inner[:, axis] - expected).abs()
        assert error.mean() < 0.1
        assert torch.quantile(error.flatten(), 0.95) < 0.35


def test_still_frames_have_zero_flow():
    flow = frames_flow(moving_video(2, 32, (0.0, 0.0)))
    assert not flow.any()


def test_compose_constant_flows_by_hand():
    flows = torch.zeros(1, 3, 2, 32, 48)
    flows[:, :, 0], flows[:, :, 1] = 1.0, -2.0
    out = accumulate_flow(flows, stride=16)
    assert out.shape == (1, 2, 2, 3)
    assert torch.allclose(out[:, 0], torch.full((1, 2, 3), 3 / 16))
    assert torch.allclose(out[:, 1], torch.full((1, 2, 3), -6 / 16))


def test_compose_follows_the_content():
    # Step 1 stretches (dx grows with x); step 2 moves everything 2 pixels right. The
    # content now at x came from x - 2 before step 2, where step 1 had moved it (x - 2)/10.
    xs = torch.arange(16, dtype=torch.float64)
    first = torch.zeros(1, 2, 8, 16, dtype=torch.float64)
    first[:, 1] = xs / 10
    second = torch.zeros(1, 2, 8, 16, dtype=torch.float64)
    second[:, 1] = 2.0
    total = compose_flows(torch.stack([first, second], dim=1))
    expected = 2.0 + (xs - 2).clamp(min=0) / 10
    assert torch.allclose(total[0, 1], expected.expand(8, 16))
    assert not total[:, 0].any()


def test_clip_flows_align_consecutive_clips():
    velocity = (1.0, -0.6)  # pixels per frame at full resolution
    video = moving_video(12, 128, velocity, scale=2.0)  # 3 clips of 4 frames
    clips = video.view(1, 3, 3, 4, 128, 128).permute(0, 2, 1, 3, 4, 5)  # (B, Tr, 3, T, H, W)
    flows = clip_flows(clips, FlowConfig(work_stride=2), stride=16)
    assert flows.shape == (1, 3, 2, 8, 8)
    assert not flows[:, 0].any()  # the first clip has no previous state
    inner = flows[0, 1:, :, 1:-1, 1:-1]
    for axis, per_frame in enumerate(velocity):
        expected = 4 * per_frame / 16  # middle to middle: 4 frames, in feature pixels
        assert (inner[:, axis] - expected).abs().mean() < 0.03


def test_bad_shapes_are_reported():
    with pytest.raises(FlowError, match="frames must be"):
        frames_flow(torch.zeros(1, 3, 1, 8, 8))
    with pytest.raises(FlowError, match="flows must be"):
        accumulate_flow(torch.zeros(1, 2, 8, 8))
    with pytest.raises(FlowError, match="clips must be"):
        clip_flows(torch.zeros(1, 3, 4, 8, 8))
