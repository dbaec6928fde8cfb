"""Inflated Inception-V1 (I3D), RGB stream, as DeepMind trained it on Kinetics-400.

Carreira & Zisserman, "Quo Vadis, Action Recognition?", CVPR 2017. The re-localization
detector (Feng et al., CVPR 2019, §3 and §6.2) uses it up to `Mixed_4c`: an 8-frame clip
at 320x320 becomes [B, 512, 2, 20, 20], folded into 1024 channels (index t*512 + c).

To reproduce the TensorFlow / Flax network numerically this module keeps three of its
conventions that torch does not share:

- TF "SAME" padding: the output size is ceil(in / stride) and the odd pixel of padding
  goes after the input, not before (`same_padding`).
- Max-pool padding never wins over a real value (TF pads with -inf).
- BatchNorm with eps 1e-3, no scale (gamma), statistics always those of the checkpoint
  (`FrozenBatchNorm3d`): the detector is trained with small batches of one video.

Module and parameter names mirror the checkpoint's scopes (`Mixed_3b.Branch_1.
Conv3d_0b_3x3.conv.weight` for `Mixed_3b/Branch_1/Conv3d_0b_3x3/Conv_0/kernel`) so the
converter in `convert.py` is a mechanical renaming.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

CLIP_FRAMES = 8
"""Frames per clip the backbone contract is defined for (1/3 s at 24 fps)."""

BACKBONE_CHANNELS = 1024
"""Channels of the folded backbone output: 2 temporal slices x 512."""

ENDPOINTS = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
    "Logits",
)

# Output widths of each Inception block: branch 0 (1x1), branch 1 (1x1 -> 3x3x3),
# branch 2 (1x1 -> 3x3x3), branch 3 (max-pool -> 1x1). From the I3D paper's Figure 3.
INCEPTION_WIDTHS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

# (window, stride) of the max-pool endpoints, in (T, H, W).
POOLS = {
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}

BN_EPS = 1e-3


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Padding (before, after) of one axis under TF "SAME": out = ceil(size / stride).

    The total is whatever makes the last window fit; when it is odd the extra element
    goes after the input (TF and XLA), which torch's symmetric `padding=` cannot express.
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def same_pad_3d(
    shape: Sequence[int], kernel: Sequence[int], stride: Sequence[int]
) -> tuple[int, ...]:
    """`F.pad` amounts for a (T, H, W) input: (W_lo, W_hi, H_lo, H_hi, T_lo, T_hi)."""
    pads = [same_padding(n, k, s) for n, k, s in zip(shape, kernel, stride, strict=True)]
    return tuple(p for pair in reversed(pads) for p in pair)


def fold_time(features: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, T*C, H, W] with channel index t*C + c (the authors' layout)."""
    b, c, t, h, w = features.shape
    return features.permute(0, 2, 1, 3, 4).reshape(b, t * c, h, w)


def check_clips(clips: torch.Tensor) -> None:
    """Refuse input that would silently break the [B, 1024, H/16, W/16] contract."""
    if clips.dim() != 5 or clips.shape[1] != 3 or clips.shape[2] != CLIP_FRAMES:
        raise ValueError(
            f"backbone input must be clips [B, 3, {CLIP_FRAMES}, H, W] (RGB in [-1, 1]), "
            f"got shape {tuple(clips.shape)}"
        )


class FrozenBatchNorm3d(nn.Module):
    """BatchNorm without scale that always uses its stored statistics.

    y = (x - running_mean) / sqrt(running_var + eps) + bias, in train mode too: the
    statistics are buffers and never updated. `bias` (beta) stays a parameter, as it
    was a variable in the original graph; freeze it with requires_grad_(False) if wanted.
    """

    def __init__(self, channels: int, eps: float = BN_EPS):
        super().__init__()
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        scale = torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1, 1) + shift.view(1, -1, 1, 1, 1)


class Unit3D(nn.Module):
    """Conv3d with TF "SAME" padding, then frozen BatchNorm and ReLU (Sonnet's Unit3D)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Sequence[int] = (1, 1, 1),
        stride: Sequence[int] = (1, 1, 1),
        *,
        batch_norm: bool = True,
        activation: bool = True,
        bias: bool = False,
    ):
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.conv = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, bias=bias)
        self.bn = FrozenBatchNorm3d(out_channels) if batch_norm else None
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = same_pad_3d(x.shape[2:], self.kernel, self.stride)
        if pad[0::2] == pad[1::2]:
            # Symmetric: let the convolution pad, which avoids a copy of the input.
            x = F.conv3d(x, self.conv.weight, self.conv.bias, self.stride, pad[-2::-2])
        else:
            x = self.conv(F.pad(x, pad))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.Module):
    """Max-pool with TF "SAME" padding; padded cells are -inf so they never win."""

    def __init__(self, kernel: Sequence[int], stride: Sequence[int]):
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = same_pad_3d(x.shape[2:], self.kernel, self.stride)
        x = F.pad(x, pad, value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four parallel branches concatenated along channels (1x1 | 3x3x3 | 3x3x3 | pool)."""

    def __init__(self, in_channels: int, widths: Sequence[int]):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.out_channels = w0 + w1b + w2b + w3
        self.Branch_0 = nn.Sequential(
            OrderedDict(Conv3d_0a_1x1=Unit3D(in_channels, w0))
        )
        self.Branch_1 = nn.Sequential(
            OrderedDict(
                Conv3d_0a_1x1=Unit3D(in_channels, w1a),
                Conv3d_0b_3x3=Unit3D(w1a, w1b, (3, 3, 3)),
            )
        )
        self.Branch_2 = nn.Sequential(
            OrderedDict(
                Conv3d_0a_1x1=Unit3D(in_channels, w2a),
                Conv3d_0b_3x3=Unit3D(w2a, w2b, (3, 3, 3)),
            )
        )
        self.Branch_3 = nn.Sequential(
            OrderedDict(
                MaxPool3d_0a_3x3=MaxPool3dSame((3, 3, 3), (1, 1, 1)),
                Conv3d_0b_1x1=Unit3D(in_channels, w3),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.Branch_0, self.Branch_1, self.Branch_2, self.Branch_3)
        return torch.cat([branch(x) for branch in branches], dim=1)


class Logits(nn.Module):
    """Average pool (2, 7, 7) VALID, 1x1x1 conv with bias, mean over the remaining time."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.Conv3d_0c_1x1 = Unit3D(
            in_channels, num_classes, batch_norm=False, activation=False, bias=True
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1024, T, 7, 7) -> (B, classes)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)
        x = self.Conv3d_0c_1x1(x)
        return x.mean(dim=(2, 3, 4))


class I3D(nn.Module):
    """The I3D RGB network up to `final_endpoint` (one of `ENDPOINTS`).

    Input [B, 3, T, H, W], RGB in [-1, 1] (frames / 127.5 - 1). `forward` returns the
    final endpoint: features [B, C, T', H', W'] or, for "Logits", [B, num_classes].
    `forward_endpoints` returns every endpoint computed, by name.
    """

    def __init__(self, *, final_endpoint: str = "Logits", num_classes: int = 400):
        super().__init__()
        if final_endpoint not in ENDPOINTS:
            raise ValueError(f"unknown I3D endpoint {final_endpoint!r}; choose from {ENDPOINTS}")
        self.final_endpoint = final_endpoint
        self.endpoints = ENDPOINTS[: ENDPOINTS.index(final_endpoint) + 1]
        channels = 3
        for name in self.endpoints:
            layer, channels = _make_layer(name, channels, num_classes)
            self.add_module(name, layer)
        self.out_channels = channels

    def forward_endpoints(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        x = clips
        for name in self.endpoints:
            x = getattr(self, name)(x)
            out[name] = x
        return out

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = clips
        for name in self.endpoints:
            x = getattr(self, name)(x)
        return x


def _make_layer(name: str, channels: int, num_classes: int) -> tuple[nn.Module, int]:
    """The module of one endpoint and its output channel count."""
    if name in POOLS:
        return MaxPool3dSame(*POOLS[name]), channels
    if name in INCEPTION_WIDTHS:
        block = InceptionModule(channels, INCEPTION_WIDTHS[name])
        return block, block.out_channels
    if name == "Conv3d_1a_7x7":
        return Unit3D(channels, 64, (7, 7, 7), (2, 2, 2)), 64
    if name == "Conv3d_2b_1x1":
        return Unit3D(channels, 64), 64
    if name == "Conv3d_2c_3x3":
        return Unit3D(channels, 192, (3, 3, 3)), 192
    if name == "Logits":
        return Logits(channels, num_classes), num_classes
    raise ValueError(f"no layer for I3D endpoint {name!r}")


class I3DBackbone(I3D):
    """I3D to `Mixed_4c` with time folded into channels: [B, 3, 8, H, W] -> [B, 1024, H/16, W/16].

    H/16 rounds up (TF "SAME"). Parameter names equal those of `I3D`, so a converted
    full-network state dict loads after dropping the later endpoints
    (`select_state_for`).
    """

    def __init__(self):
        super().__init__(final_endpoint="Mixed_4c")
        self.out_channels = BACKBONE_CHANNELS  # 2 temporal slices x 512 after folding

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        check_clips(clips)
        return fold_time(super().forward(clips))  # (B, 2*512, H/16, W/16)


def select_state_for(model: I3D, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of a full-network state dict that `model` (maybe truncated) owns.

    Entries of endpoints after `model.final_endpoint` are dropped; an entry that belongs
    to no I3D endpoint at all is kept so that `load_state_dict(strict=True)` reports it.
    """
    unused = set(ENDPOINTS) - set(model.endpoints)
    return {key: value for key, value in state.items() if key.split(".")[0] not in unused}
