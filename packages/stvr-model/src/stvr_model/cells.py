"""The five recurrent cells the detector chooses between (paper §3 and the baselines of §6.1).

Every cell is an `nn.Module` called `cell(x, state=None, flow=None) -> CellState` with
`x [B, C_in, H, W]`; `state=None` means zeros. The detector reads `state.h`.

- `none`: the Clip baseline. No memory: `h` is `x` itself and `c` is None.
- `convlstm`: the authors' ConvLSTM (`LSTMGates`): gates from a separable 3x3 conv on
  `[x, h]` to a 128-channel bottleneck, then 1x1 to 4 gates; layer norm on each gate and
  on `c`; forget bias 1.0; `h = tanh(c) * sigmoid(o) + x` (the skip needs
  `hidden_channels == in_channels`; pass `skip=False` otherwise).
- `warp`: ConvLSTM whose previous `h` and `c` are first warped by a polyharmonic spline
  through a 3x3 grid of control points ((5, 10, 15)^2 on a 20x20 map) whose displacements
  a separable 1x1 conv (Glorot-initialised) reads from `[x_t, h_{t-1}]` at those points; 4 zero-flow points per border
  edge; spline order 2 (`interpolation_order=1` for the paper's other choice).
- `traj`: TrajGRU-style links (Shi et al. 2017): a small conv net on `[x, h]` predicts L=5
  flow fields; the aligned state mixes the L warped copies per channel (a grouped 1x1 conv;
  a dense one over 5 x 1024 channels would cost more than the cell itself).
- `flow`: ConvLSTM warped by an optical flow the caller passes as `flow=[B, 2, H, W]`.

Only the alignment of the previous state differs between the four LSTM variants. All
flows follow `warp.dense_image_warp`: `(dy, dx)` in feature-map pixels, the motion of the
content since the previous step, so `aligned[p] = previous[p - flow[p]]`. After each call,
the `warp`, `traj` and `flow` cells keep the dense flow they used in `last_flow` (detached;
`[B, 2, H, W]`, and `[B, L, 2, H, W]` for `traj`) for pictures such as the paper's Fig. 7.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache
from typing import NamedTuple

import torch
from torch import Tensor, nn

from stvr_model.errors import ModelError
from stvr_model.warp import dense_image_warp_many, is_channels_last, sparse_flow


class CellError(ModelError):
    """A cell built or called with arguments it cannot use."""


class CellState(NamedTuple):
    """What a cell carries to the next clip: hidden `h [B, C, H, W]` and memory `c` (or None)."""

    h: Tensor
    c: Tensor | None


@dataclass(frozen=True)
class CellConfig:
    """The cell's kind and options (`make_cell`); each kind reads the options it needs
    and ignores the rest."""

    kind: str = "warp"  # a key of CELLS: none, convlstm, warp, traj, flow
    bottleneck: int = 128  # channels between the separable 3x3 conv and the gate 1x1 conv
    forget_bias: float = 1.0
    skip: bool = True  # h = tanh(c) * sigmoid(o) + x
    control_grid: int = 3  # warp: control_grid x control_grid control points
    interpolation_order: int = 2  # warp: polyharmonic spline order (paper: 1 or 2)
    num_boundary_points: int = 4  # warp: TensorFlow's zero-flow border points per edge
    regularization_weight: float = 0.0  # warp: spline smoothing
    # warp: offsets are max_offset * tanh(raw / max_offset) feature cells, so a control
    # point never reads the state from far outside the map; None leaves them unbounded
    # (the authors). Near zero the bound is the identity, so training starts the same.
    max_offset: float | None = 4.0
    # warp: the authors' offset conv, a separable 1x1 conv (per-channel scale, then 1x1 to
    # (dy, dx)) with Glorot-uniform weights; False: one 1x1 conv initialised to zero, so
    # the cell starts as a ConvLSTM (checkpoints that predate the setting)
    separable_offset: bool = True
    num_links: int = 5  # traj: L
    link_channels: int = 32  # traj: width of the flow-predicting conv net

    def __post_init__(self) -> None:
        if self.kind not in CELLS:
            raise CellError(f"unknown cell kind {self.kind!r}; choose one of {sorted(CELLS)}")
        for name in (
            "bottleneck",
            "control_grid",
            "interpolation_order",
            "num_links",
            "link_channels",
        ):
            if getattr(self, name) < 1:
                raise CellError(f"cell option {name} must be >= 1, got {getattr(self, name)}")
        if self.max_offset is not None and not self.max_offset > 0:
            raise CellError(f"cell option max_offset must be > 0 or None, got {self.max_offset}")
        if self.num_boundary_points < 0 or self.regularization_weight < 0:
            raise CellError(
                "cell options num_boundary_points and regularization_weight must be >= 0"
            )


def _control_lines(size: int, grid: int) -> list[int] | None:
    """`grid` evenly spaced interior lines of a `size`-pixel axis, or None if they collide."""
    lines = [round((k + 1) * size / (grid + 1)) for k in range(grid)]
    # Distinct and off the border, where the zero-flow boundary points sit.
    ok = len(set(lines)) == grid and lines[0] >= 1 and lines[-1] <= size - 2
    return lines if ok else None


@lru_cache(maxsize=16)
def control_points(height: int, width: int, grid: int = 3) -> Tensor:
    """The warp cell's control points `[grid*grid, 2]` (y, x), integer-valued, row-major.

    Evenly spaced interior lines, rounded to pixels: (5, 10, 15) on a 20x20 map as in the
    paper (§6.2), scaled with the map size otherwise. Maps too small to hold `grid`
    distinct lines off the border raise CellError (the spline would be singular).
    """
    ys, xs = _control_lines(height, grid), _control_lines(width, grid)
    if ys is None or xs is None:
        smallest = next(n for n in range(grid + 1, 4 * grid + 8) if _control_lines(n, grid))
        raise CellError(
            f"a {grid}x{grid} control grid needs a feature map of at least "
            f"{smallest}x{smallest}, got {height}x{width}"
        )
    return torch.tensor([(y, x) for y in ys for x in xs], dtype=torch.long)


class _PointGather(torch.autograd.Function):
    """`image[:, :, ys, xs]` whose gradient is a sparse COO tensor.

    The dense gradient of an indexing op is an image-sized tensor of zeros with a few
    pixels set, which autograd then adds to the image's other (dense) gradients: two passes
    over a large map for a handful of values. A sparse gradient is added in place instead.
    """

    @staticmethod
    def forward(ctx, image: Tensor, points: Tensor) -> Tensor:
        ctx.save_for_backward(points)
        ctx.shape = image.shape
        return _gather_points(image, points)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (points,) = ctx.saved_tensors
        batch, channels = ctx.shape[:2]
        count = points.shape[0]
        index = torch.stack(
            [
                torch.arange(batch, device=grad.device).view(-1, 1, 1).expand(-1, channels, count),
                torch.arange(channels, device=grad.device).view(1, -1, 1).expand(batch, -1, count),
                points[:, 0].view(1, 1, -1).expand(batch, channels, -1),
                points[:, 1].view(1, 1, -1).expand(batch, channels, -1),
            ]
        ).reshape(4, -1)
        # Distinct points in row-major order: the indices are sorted and unique.
        sparse = torch.sparse_coo_tensor(
            index, grad.reshape(-1), ctx.shape, is_coalesced=True, check_invariants=False
        )
        return sparse, None


def _gather_points(image: Tensor, points: Tensor) -> Tensor:
    if image.is_contiguous():  # a flat index_select reads the planes faster than indexing
        return image.flatten(2).index_select(2, points[:, 0] * image.shape[3] + points[:, 1])
    return image[:, :, points[:, 0], points[:, 1]]


def _at_points(image: Tensor, points: Tensor) -> Tensor:
    """Features `[B, C, P]` of an NCHW map at integer `points [P, 2]` (y, x)."""
    if image.requires_grad:
        return _PointGather.apply(image, points)
    return _gather_points(image, points)


def _check_input(x: Tensor, in_channels: int) -> None:
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise CellError(f"cell input must be [B, {in_channels}, H, W], got {list(x.shape)}")


class ClipCell(nn.Module):
    """The Clip baseline: no recurrence, `state.h` is the input itself."""

    def __init__(self, in_channels: int, hidden_channels: int, config: CellConfig):
        super().__init__()
        if hidden_channels != in_channels:
            raise CellError(
                f"the none cell passes x through: hidden_channels {hidden_channels} "
                f"!= in_channels {in_channels}"
            )
        self.in_channels = in_channels

    def forward(
        self, x: Tensor, state: CellState | None = None, flow: Tensor | None = None
    ) -> CellState:
        _check_input(x, self.in_channels)
        return CellState(x, None)


class LSTMGates(nn.Module):
    """The authors' gate block: new `(h, c)` from the input and the aligned previous state."""

    def __init__(self, in_channels: int, hidden_channels: int, config: CellConfig):
        super().__init__()
        joint = in_channels + hidden_channels
        self.depthwise = nn.Conv2d(joint, joint, 3, padding=1, groups=joint, bias=False)
        self.bottleneck = nn.Conv2d(joint, config.bottleneck, 1)
        self.expand = nn.Conv2d(config.bottleneck, 4 * hidden_channels, 1)
        # GroupNorm(1, C) is layer norm over (C, H, W) with a per-channel affine, as TF's.
        self.gate_norms = nn.ModuleList(nn.GroupNorm(1, hidden_channels) for _ in range(4))
        self.cell_norm = nn.GroupNorm(1, hidden_channels)
        self.forget_bias = config.forget_bias
        self.skip = config.skip

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> CellState:
        z = self.expand(self.bottleneck(self.depthwise(torch.cat([x, h], dim=1))))
        i, g, f, o = (
            norm(part) for norm, part in zip(self.gate_norms, z.chunk(4, dim=1), strict=True)
        )
        c = torch.sigmoid(f + self.forget_bias) * c + torch.sigmoid(i) * torch.tanh(g)
        c = self.cell_norm(c)
        h = torch.tanh(c) * torch.sigmoid(o)
        return CellState(h + x if self.skip else h, c)


class ConvLSTMCell(nn.Module):
    """ConvLSTM; subclasses change only `align`, how the previous state meets the input."""

    def __init__(self, in_channels: int, hidden_channels: int, config: CellConfig):
        super().__init__()
        if config.skip and hidden_channels != in_channels:
            raise CellError(
                f"the skip h = tanh(c)*sigmoid(o) + x needs hidden_channels == in_channels, "
                f"got {hidden_channels} and {in_channels}; pass skip=False"
            )
        self.in_channels, self.hidden_channels = in_channels, hidden_channels
        self.config = config
        self.gates = LSTMGates(in_channels, hidden_channels, config)

    def forward(
        self, x: Tensor, state: CellState | None = None, flow: Tensor | None = None
    ) -> CellState:
        _check_input(x, self.in_channels)
        h, c = self._previous(x, state)
        h, c = self.align(x, h, c, flow, fresh=state is None)
        return self.gates(x, h, c)

    def _previous(self, x: Tensor, state: CellState | None) -> tuple[Tensor, Tensor]:
        expected = (x.shape[0], self.hidden_channels, *x.shape[2:])
        if state is None:
            # One-channel maps count as NCHW (every layout of them is both).
            last = x.shape[1] > 1 and is_channels_last(x)
            layout = torch.channels_last if last else torch.contiguous_format
            zeros = x.new_zeros(expected).contiguous(memory_format=layout)
            return zeros, zeros
        h, c = state
        if c is None or h.shape != expected or c.shape != expected:
            got = [list(h.shape), None if c is None else list(c.shape)]
            raise CellError(f"state (h, c) must both be {list(expected)}, got {got}")
        return h, c

    def align(
        self, x: Tensor, h: Tensor, c: Tensor, flow: Tensor | None, fresh: bool = False
    ) -> tuple[Tensor, Tensor]:
        """The previous state as seen from the current input; plain ConvLSTM leaves it.

        `fresh` says that `h` and `c` are the zeros of a first step: the cells that move
        the state still compute (and keep) their flow, but skip resampling zeros.
        """
        return h, c


def _offset_conv(channels: int, separable: bool) -> nn.Module:
    """The conv that reads (dy, dx) from [x_t, h_{t-1}], evaluated only at the control
    points. The authors' is `separable_conv2d(.., 2, [1, 1], depth_multiplier=1,
    stride=5)` on the 20x20 map, kept at (5, 10, 15)^2, i.e. a 1x1 conv read at the
    control points, factored into a per-channel scale and a 1x1 conv, both with slim's
    Glorot-uniform default (torch's fans of a [C, 1, 1, 1] depthwise weight equal
    TensorFlow's) and a zero bias. Not separable: one 1x1 conv, all zero, so the cell
    starts as a ConvLSTM with an identity warp."""
    if not separable:
        conv = nn.Conv2d(channels, 2, 1)
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
        return conv
    depthwise = nn.Conv2d(channels, channels, 1, groups=channels, bias=False)
    pointwise = nn.Conv2d(channels, 2, 1)
    for layer in (depthwise, pointwise):
        nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(pointwise.bias)
    return nn.Sequential(depthwise, pointwise)


class WarpLSTMCell(ConvLSTMCell):
    """The warp LSTM (paper eq. 3-5): warp `h` and `c` by a spline through control points."""

    def __init__(self, in_channels: int, hidden_channels: int, config: CellConfig):
        super().__init__(in_channels, hidden_channels, config)
        self.offset = _offset_conv(in_channels + hidden_channels, config.separable_offset)
        self.last_offsets: Tensor | None = None  # (B, P, 2) (dy, dx) at the control points
        self.last_flow: Tensor | None = None  # (B, 2, H, W)

    def predict_offsets(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """Control points `[P, 2]` and their predicted displacements `[B, P, 2]` (dy, dx)."""
        points = control_points(x.shape[2], x.shape[3], self.config.control_grid).to(x.device)
        features = torch.cat([_at_points(x, points), _at_points(h, points)], dim=1)  # (B, C', P)
        offsets = self.offset(features.unsqueeze(3)).squeeze(3)  # (B, 2, P)
        if self.config.max_offset is not None:
            bound = self.config.max_offset
            offsets = bound * torch.tanh(offsets / bound)
        return points, offsets.transpose(1, 2)

    def align(
        self, x: Tensor, h: Tensor, c: Tensor, flow: Tensor | None, fresh: bool = False
    ) -> tuple[Tensor, Tensor]:
        points, offsets = self.predict_offsets(x, h)
        source = points.to(offsets.dtype).unsqueeze(0).expand_as(offsets)
        dense = sparse_flow(
            source,
            source + offsets,
            x.shape[2],
            x.shape[3],
            self.config.interpolation_order,
            self.config.regularization_weight,
            self.config.num_boundary_points,
        )
        self.last_offsets = offsets.detach()
        self.last_flow = dense.detach().permute(0, 3, 1, 2).to(x.dtype)
        if fresh:
            return h, c
        h, c = dense_image_warp_many([h, c], dense)
        return h, c


class TrajLSTMCell(ConvLSTMCell):
    """TrajLSTM: ConvLSTM whose state is gathered along L learned links (TrajGRU)."""

    def __init__(self, in_channels: int, hidden_channels: int, config: CellConfig):
        super().__init__(in_channels, hidden_channels, config)
        links = config.num_links
        self.links = nn.Sequential(
            nn.Conv2d(in_channels + hidden_channels, config.link_channels, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(config.link_channels, 2 * links, 5, padding=2),
        )
        # Per-channel mixing weights over the links, starting at their mean.
        self.mix_h = nn.Parameter(torch.full((hidden_channels, links), 1.0 / links))
        self.mix_c = nn.Parameter(torch.full((hidden_channels, links), 1.0 / links))
        self.last_flow: Tensor | None = None  # (B, L, 2, H, W)

    def align(
        self, x: Tensor, h: Tensor, c: Tensor, flow: Tensor | None, fresh: bool = False
    ) -> tuple[Tensor, Tensor]:
        batch, _, height, width = x.shape
        flows = self.links(torch.cat([x, h], dim=1)).view(batch, -1, 2, height, width)
        self.last_flow = flows.detach()
        if fresh:
            return h, c
        # The L flows stacked along y warp h and c in one resampling: [B, C, L*H, W] each.
        stacked = flows.permute(0, 1, 3, 4, 2).reshape(batch, -1, width, 2)
        moved = dense_image_warp_many([h, c], stacked)
        h, c = (
            torch.einsum(
                "bclyx,cl->bcyx", m.view(batch, -1, self.config.num_links, height, width), mix
            )
            for m, mix in zip(moved, (self.mix_h, self.mix_c), strict=True)
        )
        return h, c


class FlowLSTMCell(ConvLSTMCell):
    """The optical-flow baseline: ConvLSTM with its state warped by a given flow.

    `flow [B, 2, H, W]` is (dy, dx) in feature-map pixels, the motion since the previous
    clip (e.g. `stvr_model.flow.clip_flows`). It may be omitted only when `state` is None.
    """

    def __init__(self, in_channels: int, hidden_channels: int, config: CellConfig):
        super().__init__(in_channels, hidden_channels, config)
        self.last_flow: Tensor | None = None  # (B, 2, H, W)

    def forward(
        self, x: Tensor, state: CellState | None = None, flow: Tensor | None = None
    ) -> CellState:
        if flow is None and state is not None:
            raise CellError("the flow cell needs flow=[B, 2, H, W] whenever a state is passed")
        return super().forward(x, state, flow)

    def align(
        self, x: Tensor, h: Tensor, c: Tensor, flow: Tensor | None, fresh: bool = False
    ) -> tuple[Tensor, Tensor]:
        if flow is None:
            return h, c  # first clip: the state is zeros, nothing to align
        expected = (x.shape[0], 2, *x.shape[2:])
        if flow.shape != expected:
            raise CellError(f"flow must be [B, 2, H, W] = {list(expected)}, got {list(flow.shape)}")
        self.last_flow = flow.detach()
        if fresh:
            return h, c
        h, c = dense_image_warp_many([h, c], flow.permute(0, 2, 3, 1))
        return h, c


CELLS: dict[str, type[nn.Module]] = {
    "none": ClipCell,
    "convlstm": ConvLSTMCell,
    "warp": WarpLSTMCell,
    "traj": TrajLSTMCell,
    "flow": FlowLSTMCell,
}


def make_cell(config: CellConfig, in_channels: int, hidden_channels: int) -> nn.Module:
    """The recurrent cell `config.kind` with `config`'s options (see the module doc)."""
    return CELLS[config.kind](in_channels, hidden_channels, config)


def build_cell(kind: str, in_channels: int, hidden_channels: int, **options) -> nn.Module:
    """`make_cell` from keyword options: `build_cell("warp", 8, 8, control_grid=2)`."""
    known = {f.name for f in fields(CellConfig)} - {"kind"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise CellError(f"unknown cell option(s) {unknown}; known: {sorted(known)}")
    return make_cell(CellConfig(kind=kind, **options), in_channels, hidden_channels)
