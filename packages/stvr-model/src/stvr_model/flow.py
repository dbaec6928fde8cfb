"""Classical dense optical flow for the optical-flow baseline (paper §6.1 and §6.2).

The paper warped the ConvLSTM state by FlowNet2 flow accumulated over the clip and
rescaled by 1/16 to the feature map. FlowNet2's weights are not available offline, so this
module substitutes coarse-to-fine Horn-Schunck with image warping (Horn & Schunck 1981;
the pyramid and warping as in Brox et al. 2004), written in torch so it runs batched on
the same device as the detector. It is less accurate than FlowNet2 on real video; the
baseline it feeds was the weakest recurrent one in the paper anyway (Table 1).

Convention (shared with `stvr_model.warp` and the cells): a flow `[..., 2, H, W]` holds
(dy, dx) in pixels and is the motion of the content, sampled on the later frame's grid:
`later[p] ~= earlier[p - flow[p]]`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from stvr_model.errors import ModelError
from stvr_model.warp import dense_image_warp


class FlowError(ModelError):
    """Frames or flows of a shape the optical flow cannot use."""


@dataclass(frozen=True)
class FlowConfig:
    """Horn-Schunck settings, for grey frames scaled to [0, 1]."""

    smoothness: float = 0.05  # alpha: larger gives smoother, more averaged flow
    levels: int = 3  # pyramid levels, halving each time but never below 16 pixels
    warps: int = 2  # re-linearisations per level
    iterations: int = 30  # Jacobi updates per warp
    work_stride: int = 4  # clip_flows estimates flow on frames downscaled by this


def _pad_edges(image: Tensor, dim: int) -> Tensor:
    """Repeat the first and last row (dim=-2) or column (dim=-1) once.

    Written with cat: F.pad's replicate mode is many times slower on CPU for these shapes.
    """
    first = image.narrow(dim, 0, 1)
    last = image.narrow(dim, image.shape[dim] - 1, 1)
    return torch.cat([first, image, last], dim=dim)


def _neighbour_mean(image: Tensor) -> Tensor:
    """Horn-Schunck's neighbourhood average (1/6 on edges, 1/12 on corners, 0 at the centre).

    That kernel is ([1, 2, 1] x [1, 2, 1] - 4 * centre) / 12, computed with shifted slices.
    """
    padded = _pad_edges(image, -2)
    rows = _pad_edges(padded[..., :-2, :] + 2 * padded[..., 1:-1, :] + padded[..., 2:, :], -1)
    blurred = rows[..., :-2] + 2 * rows[..., 1:-1] + rows[..., 2:]
    return (blurred - 4 * image) / 12


def _gradients(image: Tensor) -> tuple[Tensor, Tensor]:
    """Central differences (d/dy, d/dx) with the edge pixels repeated."""
    rows, cols = _pad_edges(image, -2), _pad_edges(image, -1)
    return 0.5 * (rows[..., 2:, :] - rows[..., :-2, :]), 0.5 * (cols[..., 2:] - cols[..., :-2])


def _sample(image: Tensor, flow: Tensor) -> Tensor:
    """image[p - flow[p]], bilinear, edges clamped; image `[N, 1, H, W]`, flow `[N, 2, H, W]`."""
    return dense_image_warp(image, flow.permute(0, 2, 3, 1)).contiguous()


def _refine(earlier: Tensor, later: Tensor, flow: Tensor, config: FlowConfig) -> Tensor:
    """One level of Horn-Schunck with warping, starting from `flow`."""
    alpha2 = config.smoothness**2
    for _ in range(config.warps):
        moved = _sample(earlier, flow)  # earlier brought onto the later grid
        grad_y, grad_x = _gradients(0.5 * (moved + later))
        # Linearised constancy later(p) = earlier(p - f): (moved - later) - grad . df = 0,
        # solved by Jacobi updates with the smoothness term on the whole flow.
        scale_y = grad_y / (alpha2 + grad_y.square() + grad_x.square())
        scale_x = grad_x / (alpha2 + grad_y.square() + grad_x.square())
        start_y, start_x = flow[:, :1], flow[:, 1:]
        offset = moved - later + grad_y * start_y + grad_x * start_x
        flow_y, flow_x = start_y, start_x
        for _ in range(config.iterations):
            mean_y, mean_x = _neighbour_mean(flow_y), _neighbour_mean(flow_x)
            step = offset - grad_y * mean_y - grad_x * mean_x
            flow_y, flow_x = mean_y + scale_y * step, mean_x + scale_x * step
        flow = torch.cat([flow_y, flow_x], dim=1)
    return flow


def pair_flow(earlier: Tensor, later: Tensor, config: FlowConfig = FlowConfig()) -> Tensor:
    """Flow `[N, 2, H, W]` from grey images `earlier` to `later`, both `[N, 1, H, W]` in [0, 1]."""
    pyramid = [(earlier, later)]
    # Coarser than 16 pixels, textures alias and the coarse flow misleads the finer levels.
    while len(pyramid) < config.levels and min(pyramid[-1][0].shape[-2:]) >= 32:
        pyramid.append(tuple(F.avg_pool2d(image, 2, ceil_mode=True) for image in pyramid[-1]))
    flow = earlier.new_zeros(earlier.shape[0], 2, *pyramid[-1][0].shape[-2:])
    for level_earlier, level_later in reversed(pyramid):
        size = level_earlier.shape[-2:]
        if flow.shape[-2:] != size:
            scale = torch.tensor([size[0] / flow.shape[-2], size[1] / flow.shape[-1]]).to(flow)
            flow = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
            flow = flow * scale.view(1, 2, 1, 1)
        flow = _refine(level_earlier, level_later, flow, config)
    return flow


def _grey(frames: Tensor) -> Tensor:
    """`[B, 3, T, H, W]` in any range -> `[B, T, H, W]` grey scaled to [0, 1] per video."""
    grey = frames.float().mean(dim=1)
    low = grey.amin(dim=(1, 2, 3), keepdim=True)
    high = grey.amax(dim=(1, 2, 3), keepdim=True)
    return (grey - low) / (high - low).clamp_min(1e-6)


def frames_flow(frames: Tensor, config: FlowConfig = FlowConfig()) -> Tensor:
    """Flow between consecutive frames: `[B, 3, T, H, W]` -> `[B, T-1, 2, H, W]` pixels.

    Entry k is the motion from frame k to frame k+1 on frame k+1's grid (module doc). Any
    intensity range is accepted; frames are turned grey and scaled to [0, 1] per video.
    """
    if frames.dim() != 5 or frames.shape[1] != 3 or frames.shape[2] < 2:
        raise FlowError(f"frames must be [B, 3, T>=2, H, W], got {list(frames.shape)}")
    grey = _grey(frames)
    batch, steps, height, width = grey.shape
    earlier = grey[:, :-1].reshape(-1, 1, height, width)
    later = grey[:, 1:].reshape(-1, 1, height, width)
    return pair_flow(earlier, later, config).view(batch, steps - 1, 2, height, width)


def compose_flows(flows: Tensor) -> Tensor:
    """The total motion over consecutive flows `[B, K, 2, H, W]` -> `[B, 2, H, W]`.

    Content at p in the last frame came through p - f_K(p) in the frame before, so the
    total is built as D_k(p) = f_k(p) + D_{k-1}(p - f_k(p)).
    """
    total = flows[:, 0]
    for k in range(1, flows.shape[1]):
        step = flows[:, k]
        total = step + dense_image_warp(total, step.permute(0, 2, 3, 1))
    return total.contiguous()


def to_feature_map(flow: Tensor, stride: float) -> Tensor:
    """Average a pixel flow `[B, 2, H, W]` over `stride` cells and rescale it by 1/stride.

    The map is `ceil(H / stride) x ceil(W / stride)`, the backbone's TF-SAME output size.
    """
    size = (math.ceil(flow.shape[-2] / stride), math.ceil(flow.shape[-1] / stride))
    return F.adaptive_avg_pool2d(flow, size) / stride


def accumulate_flow(flows: Tensor, stride: int = 16) -> Tensor:
    """Consecutive flows `[B, K, 2, H, W]` -> their composition on the feature map.

    Returns `[B, 2, ceil(H/stride), ceil(W/stride)]` in feature-map pixels, the `flow=`
    the optical-flow cell takes.
    """
    if flows.dim() != 5 or flows.shape[2] != 2 or flows.shape[1] < 1:
        raise FlowError(f"flows must be [B, K>=1, 2, H, W], got {list(flows.shape)}")
    return to_feature_map(compose_flows(flows), stride)


def clip_flows(clips: Tensor, config: FlowConfig = FlowConfig(), stride: int = 16) -> Tensor:
    """Per-clip state alignment flows for the optical-flow cell.

    clips `[B, Tr, 3, T, H, W]` (consecutive clips of one reference, the detector's
    `ref_clips`) -> `[B, Tr, 2, ceil(H/stride), ceil(W/stride)]`: for clip t, the motion
    from the middle frame of clip t-1 to the middle frame of clip t (T frame steps),
    in feature-map pixels; zero for the first clip, which has no previous state. Flow is
    estimated on frames downscaled by `config.work_stride` (it is averaged over 16x16
    cells in the end, so full resolution buys little).
    """
    if clips.dim() != 6 or clips.shape[2] != 3:
        raise FlowError(f"clips must be [B, Tr, 3, T, H, W], got {list(clips.shape)}")
    batch, count, _, length, height, width = clips.shape
    frames = clips.permute(0, 2, 1, 3, 4, 5).reshape(batch * 3, count * length, height, width)
    small = F.avg_pool2d(frames, config.work_stride, ceil_mode=True)
    small = small.view(batch, 3, count * length, *small.shape[-2:])
    steps = frames_flow(small, config) * config.work_stride  # (B, Tr*T - 1, 2, h, w)
    result = [steps.new_zeros(batch, 2, *small.shape[-2:])]
    middle = length // 2
    for t in range(1, count):
        start = (t - 1) * length + middle  # flow k goes from frame k to frame k + 1
        result.append(compose_flows(steps[:, start : start + length]))
    per_clip = torch.stack(result, dim=1).flatten(0, 1)  # (B*Tr, 2, h, w) frame pixels
    size = (math.ceil(height / stride), math.ceil(width / stride))
    return F.adaptive_avg_pool2d(per_clip, size).div(stride).view(batch, count, 2, *size)
