"""The four bilinear taps of query points on a map, and the sparse matrices they make.

A query `(y, x)` reads the map at its top-left pixel `t` and at `t + 1`, `t + W`,
`t + W + 1` with weights `(1 - a_y)(1 - a_x)`, ... (TensorFlow's `interpolate_bilinear`,
edge clamped). Over a batch, the taps of all queries form a sparse matrix `M [B*M, B*H*W]`
whose product with the map's pixel rows resamples it (`resample`); its transpose carries
the gradient back to the map.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from stvr_model.warp.errors import NonFiniteWarpError, WarpError

# Up to this many channels, one image's gradient multiplies by the COO transpose rather
# than the CSR one. Measured at batch 8, 20x20 (12,800 taps) on a 2-core Xeon: building
# the CSR transpose takes 0.42 ms, and a product with it 0.14 ms at 128 channels, 0.52 ms
# at 512; with the COO transpose (no build) 0.38 and 1.04 ms. Two or more images share one
# CSR build, which then pays off at any channel count.
COO_MAX_CHANNELS = 256


class _TapMatrices:
    """The tap matrix and its transpose, built on first use for each image dtype.

    `coo`: the transpose is `_transposed_tap_coo` (for a single image with few channels,
    on CPU) rather than `_transposed_tap_csr`.
    """

    def __init__(self, columns: Tensor, weights: Tensor, image_shape, coo: bool = False) -> None:
        batch, _, height, width = image_shape
        self.columns, self.weights, self.coo = columns, weights, coo
        self.num_sources, self.width = batch * height * width, width
        self.built: dict[tuple[torch.dtype, bool], Tensor] = {}

    def get(self, dtype: torch.dtype, transposed: bool = False) -> Tensor:
        key = (dtype, transposed)
        if key not in self.built:
            weights = self.weights.to(dtype)
            if not transposed:
                matrix = _tap_matrix(self.columns, weights, self.num_sources)
            elif self.coo:
                matrix = _transposed_tap_coo(self.columns, weights, self.num_sources)
            else:
                matrix = _transposed_tap_csr(self.columns, weights, self.num_sources, self.width)
            self.built[key] = matrix
        return self.built[key]


def transposed_as_coo(columns: Tensor, channels: list[int]) -> bool:
    """Whether the gradients of maps with these channel counts should use the COO transpose."""
    return columns.device.type == "cpu" and len(channels) == 1 and channels[0] <= COO_MAX_CHANNELS


def _tap_matrix(columns: Tensor, weights: Tensor, num_sources: int) -> Tensor:
    """CSR matrix with `columns [N, 4]` (sorted per row) holding `weights [N, 4]`."""
    num_rows = columns.shape[0]
    crow = torch.arange(0, 4 * num_rows + 1, 4, device=columns.device)
    # Built from indices computed here, so the (costly) invariant checks are skipped.
    return torch.sparse_csr_tensor(
        crow,
        columns.reshape(-1),
        weights.reshape(-1),
        (num_rows, num_sources),
        check_invariants=False,
    )


def _transposed_tap_csr(columns: Tensor, weights: Tensor, num_sources: int, width: int) -> Tensor:
    """The transpose of `_tap_matrix(columns, weights, num_sources)`, as CSR.

    On CPU it is built from the taps' structure (`columns = t + (0, 1, W, W + 1)` for a
    top-left pixel t) with one sort of the N top-left pixels instead of torch's generic
    conversion, which sorts all 4N entries. Source pixel s collects, tap by tap, the
    queries whose top-left pixel is `s - delta_k`; within a row the column indices are
    grouped by tap, not sorted, which MKL's product accepts. Elsewhere (cuSPARSE) the
    generic conversion is used.
    """
    if columns.device.type != "cpu":
        return _tap_matrix(columns, weights, num_sources).t().to_sparse_csr()
    top_left = columns[:, 0]
    count = top_left.shape[0]
    order = torch.argsort(top_left, stable=True)  # reproducible sums in the product
    sorted_top_left = top_left[order]
    per_pixel = torch.bincount(top_left, minlength=num_sources)
    deltas = (0, 1, width, width + 1)
    padded = F.pad(per_pixel, (width + 1, 0))
    # per_tap[k, s]: entries that row s receives from tap k, i.e. per_pixel[s - delta_k].
    per_tap = torch.stack([padded[width + 1 - d : width + 1 - d + num_sources] for d in deltas])
    before = per_tap.cumsum(0) - per_tap  # entries of earlier taps in the same row
    crow = F.pad(per_tap.sum(0).cumsum(0), (1, 0))
    # Rank of each sorted query among those sharing its top-left pixel.
    rank = (
        torch.arange(count, device=columns.device)
        - (per_pixel.cumsum(0) - per_pixel)[sorted_top_left]
    )
    rows = sorted_top_left + columns.new_tensor(deltas).unsqueeze(1)  # (4, N)
    position = (crow[rows] + before.gather(1, rows) + rank).reshape(-1)
    queries = torch.empty_like(position)
    queries[position] = order.repeat(len(deltas))
    values = weights.new_empty(position.shape[0])
    values[position] = weights[order].t().reshape(-1)
    return torch.sparse_csr_tensor(
        crow, queries, values, (num_sources, count), check_invariants=False
    )


def _transposed_tap_coo(columns: Tensor, weights: Tensor, num_sources: int) -> Tensor:
    """The transpose of `_tap_matrix(columns, weights, num_sources)` as an uncoalesced COO
    matrix (CPU): entry `(columns[q, k], q)` holds `weights[q, k]`, in the taps' own order,
    so nothing is sorted. torch's CPU product with it adds `weight * row` for each entry in
    turn (in that fixed order: reproducible sums): no build cost, but a cost per entry
    that a CSR product does not have (see `COO_MAX_CHANNELS`).
    """
    count = columns.shape[0]
    indices = torch.stack([columns.reshape(-1), _query_index(count, columns.shape[1])])
    return torch.sparse_coo_tensor(
        indices,
        weights.reshape(-1),
        (num_sources, count),
        check_invariants=False,
        is_coalesced=False,
    )


@lru_cache(maxsize=16)
def _query_index(count: int, taps: int) -> Tensor:
    """`[0, 0, 0, 0, 1, 1, ...]`: the query of each of `count * taps` tap entries."""
    return torch.arange(count).repeat_interleave(taps)


@lru_cache(maxsize=64)
def _tap_constants(
    batch: int, height: int, width: int, count: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """`(upper, offsets, deltas)` for `count` queries: the floor's upper bounds `[[H - 2],
    [W - 2]]` (in the queries' dtype), each query's first pixel row of its batch item
    `[count]`, and the four taps' offsets from the top-left pixel `[4]`."""
    upper = torch.tensor([[height - 2], [width - 2]], dtype=dtype, device=device)
    first = torch.arange(batch, device=device).unsqueeze(1) * (height * width)
    offsets = first.expand(batch, count // batch).reshape(-1)
    deltas = torch.tensor([0, 1, width, width + 1], device=device)
    return upper, offsets, deltas


def _bilinear_taps(
    queries: Tensor, image_shape, dtype: torch.dtype
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
    """Taps of `[B, M, 2]` (y, x) queries on an NCHW map, as rows of its pixel-row matrix.

    Returns `columns [B*M, 4]` (top-left, top-right, bottom-left, bottom-right: ascending,
    as CSR wants), `weights [B*M, 4]` in `dtype`, and for the gradient the per-axis
    factors `[2, 2, B*M]` (axis y then x; `1 - a` then `a`) and where the gradient passes
    (`[2, B*M]`, bool). TensorFlow's rule: the floor is clamped to `[0, size - 2]` and
    `a = q - floor` to `[0, 1]`, so outside the map the edge pixel repeats with a zero
    gradient; at `a` = 0 or 1 exactly (integer queries) the gradient still passes, as
    through TF's min/max, so a zero-initialised offset predictor can learn. The work runs
    coordinate-major (`[2, B*M]`): elementwise ops along an inner axis of 2 are slow on CPU.
    """
    batch, _, height, width = image_shape
    if height < 2 or width < 2:
        raise WarpError(f"image must be at least 2x2 to interpolate, got {height}x{width}")
    if queries.numel():  # min and max are NaN or infinite when any query is
        bounds = torch.aminmax(queries)
        if not (math.isfinite(bounds.min.item()) and math.isfinite(bounds.max.item())):
            raise NonFiniteWarpError("query points must be finite (the flow holds NaN or inf)")
    points = queries.reshape(-1, 2).t()
    upper, offsets, deltas = _tap_constants(
        batch, height, width, points.shape[1], queries.dtype, queries.device
    )
    floor = torch.minimum(points.floor().clamp_(min=0), upper)
    alpha = points - floor
    clamped = alpha.clamp(0, 1)
    inside = clamped == alpha
    index = floor.long()
    top_left = torch.add(index[1], index[0], alpha=width).add_(offsets)
    columns = top_left.unsqueeze(1) + deltas
    # (1 - a) * p + a * q rather than TF's a * (q - p) + p: equal to rounding, but exact
    # at a in {0, 1}, so a zero flow returns the image bit for bit.
    alpha = clamped.to(dtype)
    factors = torch.stack([1 - alpha, alpha], 1)  # (axis y/x, 1 - a / a, query)
    weights = (factors[0].unsqueeze(1) * factors[1].unsqueeze(0)).view(4, -1).t()
    return columns, weights.contiguous(), (factors, inside)


def _query_gradient(taps: Tensor, factors: Tensor, inside: Tensor) -> Tensor:
    """`[N, 2]` (y, x) gradient of the queries from their taps' weights' gradient `[N * 4]`.

    A tap's weight is the product of a y and an x factor, `(1 - a)` or `a`: d/da_y is the
    bottom taps minus the top ones, each times its x factor, and alike for x.
    """
    taps = taps.view(-1, 4).t()  # (top-left, top-right, bottom-left, bottom-right; query)
    grad_y = (taps[2:] - taps[:2]).mul_(factors[1]).sum(0)
    grad_x = (taps[1::2] - taps[0::2]).mul_(factors[0]).sum(0)
    return torch.stack([grad_y, grad_x], 1).mul_(inside.t())
