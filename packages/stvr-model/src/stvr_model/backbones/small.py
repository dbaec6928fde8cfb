"""A light 3D-conv backbone with the I3D backbone's output contract, for CPU work.

Maps clips [B, 3, 8, H, W] (RGB in [-1, 1]) to [B, 1024, ceil(H/16), ceil(W/16)] like
`I3DBackbone`, with the same time-in-channels layout: the network ends on 2 temporal
slices of 512 channels, folded as channel t*512 + c. It is what the CPU demo, the tests
and the synthetic Table-1 experiment train from scratch, so it is small (about 0.8 M
parameters with the default widths) and uses GroupNorm, which does not depend on the
tiny batches those runs use.

It sees motion inside a clip: every stage but the last spatial one convolves over time
(kernels of 3 frames), time is strided 8 -> 4 -> 2 as in I3D (stride 4 overall), and a
final temporal conv mixes the two slices before the projection to 512 channels.

    stage     kernel   stride    out (T, H, W) for 8 x 320 x 320
    stem      3x3x3    1,2,2     8 x 160 x 160   widths[0]
    conv2     3x3x3    2,2,2     4 x  80 x  80   widths[1]
    conv3     3x3x3    2,2,2     2 x  40 x  40   widths[2]
    conv4     1x3x3    1,2,2     2 x  20 x  20   widths[3]
    temporal  3x1x1    1,1,1     2 x  20 x  20   widths[3]
    project   1x1x1    1,1,1     2 x  20 x  20   512  -> fold -> 1024 x 20 x 20
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stvr_model.backbones.i3d import check_clips, fold_time


@dataclass(frozen=True)
class SmallBackboneConfig:
    """Widths of the four strided stages and GroupNorm's group count."""

    widths: tuple[int, int, int, int] = (24, 48, 128, 256)
    slice_channels: int = 512  # x 2 temporal slices = 1024 output channels
    groups: int = 8

    def __post_init__(self):
        for width in (*self.widths, self.slice_channels):
            if width % self.groups:
                raise ValueError(f"width {width} is not divisible by groups={self.groups}")


def _conv_block(cin: int, cout: int, kernel: tuple, stride: tuple, groups: int) -> nn.Sequential:
    """Conv3d ('same' for odd kernels: out = ceil(in / stride)) + GroupNorm + ReLU."""
    padding = tuple(k // 2 for k in kernel)
    return nn.Sequential(
        nn.Conv3d(cin, cout, kernel, stride, padding, bias=False),
        nn.GroupNorm(groups, cout),
        nn.ReLU(inplace=True),
    )


class SmallBackbone(nn.Module):
    """[B, 3, 8, H, W] -> [B, 2 * slice_channels, ceil(H/16), ceil(W/16)], channel t*512 + c."""

    def __init__(self, config: SmallBackboneConfig | None = None):
        super().__init__()
        self.config = config or SmallBackboneConfig()
        w0, w1, w2, w3 = self.config.widths
        g = self.config.groups
        self.stem = _conv_block(3, w0, (3, 3, 3), (1, 2, 2), g)
        self.conv2 = _conv_block(w0, w1, (3, 3, 3), (2, 2, 2), g)
        self.conv3 = _conv_block(w1, w2, (3, 3, 3), (2, 2, 2), g)
        self.conv4 = _conv_block(w2, w3, (1, 3, 3), (1, 2, 2), g)
        self.temporal = _conv_block(w3, w3, (3, 1, 1), (1, 1, 1), g)
        self.project = _conv_block(w3, self.config.slice_channels, (1, 1, 1), (1, 1, 1), g)
        self.out_channels = 2 * self.config.slice_channels

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        check_clips(clips)
        x = self.stem(clips)  # (B, w0, 8, H/2, W/2)
        x = self.conv2(x)  # (B, w1, 4, H/4, W/4)
        x = self.conv3(x)  # (B, w2, 2, H/8, W/8)
        x = self.conv4(x)  # (B, w3, 2, H/16, W/16)
        x = self.temporal(x)
        x = self.project(x)  # (B, 512, 2, H/16, W/16)
        return fold_time(x)  # (B, 1024, H/16, W/16)
