"""Sparse image warping by polyharmonic splines: TensorFlow's `sparse_image_warp` in torch.

The warp LSTM (paper §3.2) aligns its previous state with the current input by moving a
few control points and letting a polyharmonic spline spread that motion into a dense flow
field. The paper used `tf.contrib.image.sparse_image_warp`; this module reproduces its
semantics (the same as TensorFlow Addons' `tfa.image.sparse_image_warp`) so that the
fixtures in `shared/fixtures/warp/` agree to about 1e-9 in float64:

1. flows at the control points are `dest - source`, placed at the `dest` points;
2. `num_boundary_points = n > 0` adds zero-flow points on the border: an `(n+1) x (n+1)`
   lattice spanning the image, border nodes only (corners included; 4n points);
3. a polyharmonic spline of the given order interpolates those flows to every pixel;
4. `dense_image_warp` resamples the image at `grid - flow` (bilinear, edge clamped), so the
   pixel at `source` lands on `dest`.

Layouts: images are NCHW; points are `[B, N, 2]` in (y, x) pixel units; flows are
`[B, H, W, 2]` in (dy, dx) pixels. The spline is always solved in float64 (a 28x28 system
at the paper's settings costs nothing) and cast back to the dtype of the points.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import torch
from torch import Tensor

# The sparse CSR products used below are stable for our use; torch flags the whole CSR
# layout as beta on first use, which would only be noise in every caller's log.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

# TensorFlow's guard inside log() and sqrt(); part of the reference semantics.
EPSILON = 1e-10


class WarpError(ValueError):
    """Inputs the warp cannot accept, or a spline system that cannot be solved."""


# ----------------------------------------------------------------------------- points


@lru_cache(maxsize=64)
def grid_locations(height: int, width: int, device: torch.device) -> Tensor:
    """All pixel centres of an `height x width` map as `[H*W, 2]` (y, x), float64, row-major."""
    ys = torch.arange(height, dtype=torch.float64, device=device)
    xs = torch.arange(width, dtype=torch.float64, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_y.reshape(-1), grid_x.reshape(-1)], dim=1)


def _float32_linspace(stop: int, num: int) -> Tensor:
    # TensorFlow builds the boundary lattice in float32 as start + i * delta with the last
    # point set to `stop`; emulate that rounding so that non-integer boundary points match.
    delta = torch.tensor(float(stop), dtype=torch.float32) / max(num - 1, 1)
    values = torch.arange(num, dtype=torch.float32) * delta
    values[-1] = float(stop)
    return values


@lru_cache(maxsize=64)
def boundary_locations(
    height: int, width: int, num_boundary_points: int, device: torch.device
) -> Tensor:
    """The zero-flow border points TensorFlow adds: `[4 * n, 2]` (y, x), float64.

    `n = num_boundary_points`: 1 gives the 4 corners, 2 adds the middle of each edge, and
    in general each edge holds `n + 1` evenly spaced points, corners shared.
    """
    ys = _float32_linspace(height - 1, num_boundary_points + 1)
    xs = _float32_linspace(width - 1, num_boundary_points + 1)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    on_border = (grid_x == 0) | (grid_x == width - 1) | (grid_y == 0) | (grid_y == height - 1)
    points = torch.stack([grid_y[on_border], grid_x[on_border]], dim=1)
    return points.to(device=device, dtype=torch.float64)


# ----------------------------------------------------------------------------- spline


def polyharmonic_phi(squared_distance: Tensor, order: int) -> Tensor:
    """The radial basis function of a polyharmonic spline, given squared distances r^2.

    order 1: r; even k: r^k log r; odd k: r^k. As in TensorFlow, r^2 is clamped to
    EPSILON before sqrt/log so that values and gradients stay finite at r = 0.
    """
    if order == 1:
        return torch.sqrt(squared_distance.clamp_min(EPSILON))
    if order == 2:
        return 0.5 * squared_distance * torch.log(squared_distance.clamp_min(EPSILON))
    clamped = squared_distance.clamp_min(EPSILON)
    if order % 2 == 0:
        return 0.5 * clamped.pow(0.5 * order) * torch.log(clamped)
    return clamped.pow(0.5 * order)


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """`[B, M, N]` squared distances between `a [B, M, D]` and `b [B, N, D]`.

    Direct differences rather than |a|^2 - 2ab + |b|^2 (exact zeros on coincident points),
    one coordinate at a time: a reduction over a last axis of size 2 is slow on CPU.
    """
    total = None
    for d in range(a.shape[-1]):
        diff = a[..., d : d + 1] - b[..., d].unsqueeze(1)
        total = diff * diff if total is None else total + diff * diff
    return total


def _solve_spline(
    centres: Tensor, values: Tensor, order: int, regularization_weight: float
) -> tuple[Tensor, Tensor]:
    """Weights `w [B, N, K]` on the radial terms and `v [B, D+1, K]` on the affine term."""
    batch, num, dim = centres.shape
    matrix_a = polyharmonic_phi(_squared_distances(centres, centres), order)
    if regularization_weight > 0:
        eye = torch.eye(num, dtype=centres.dtype, device=centres.device)
        matrix_a = matrix_a + regularization_weight * eye
    matrix_b = torch.cat([centres, torch.ones_like(centres[..., :1])], dim=2)  # (B, N, D+1)
    zeros = centres.new_zeros(batch, dim + 1, dim + 1)
    lhs = torch.cat(
        [torch.cat([matrix_a, matrix_b], dim=2), torch.cat([matrix_b.transpose(1, 2), zeros], 2)],
        dim=1,
    )
    rhs = torch.cat([values, values.new_zeros(batch, dim + 1, values.shape[-1])], dim=1)
    solution, info = torch.linalg.solve_ex(lhs, rhs)
    failed = torch.nonzero(info).flatten().tolist()
    if failed:
        raise WarpError(
            f"spline system is singular for batch item(s) {failed}: control points coincide "
            f"or are collinear (order {order}); move them apart or use regularization_weight > 0"
        )
    return solution[:, :num], solution[:, num:]


def interpolate_spline(
    train_points: Tensor,
    train_values: Tensor,
    query_points: Tensor,
    order: int,
    regularization_weight: float = 0.0,
) -> Tensor:
    """Polyharmonic spline through `(train_points, train_values)`, read at `query_points`.

    train_points `[B, N, D]`, train_values `[B, N, K]`, query_points `[B, M, D]` ->
    `[B, M, K]` in float64. The interpolant is `sum_i w_i phi(|x - c_i|) + v^T [x, 1]` with
    `sum w = 0` and `sum w c = 0` (TensorFlow's `interpolate_spline`, same regulariser).
    """
    centres, values = train_points.double(), train_values.double()
    weights, affine = _solve_spline(centres, values, order, regularization_weight)
    queries = query_points.double()
    radial = polyharmonic_phi(_squared_distances(queries, centres), order) @ weights
    padded = torch.cat([queries, torch.ones_like(queries[..., :1])], dim=2)
    return radial + padded @ affine


# ----------------------------------------------------------------------------- bilinear


class _SparseRows(torch.autograd.Function):
    """out = M @ rows for a sparse `M [N_out, N_src]` with four taps (bilinear) per row.

    M is built as CSR from the tap indices and weights. Sparse-dense products and, for the
    weights, a sampled dense-dense product are several times faster than gathering and
    scattering rows (or grid_sample's CPU backward) on the warp LSTM's shapes.
    """

    @staticmethod
    def forward(ctx, rows: Tensor, columns: Tensor, weights: Tensor) -> Tensor:
        matrix = _tap_matrix(columns, weights, rows.shape[0])
        ctx.save_for_backward(rows, columns, weights)
        return matrix @ rows

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        rows, columns, weights = ctx.saved_tensors
        matrix = _tap_matrix(columns, weights, rows.shape[0])
        grad_rows = grad_weights = None
        if ctx.needs_input_grad[0]:
            grad_rows = matrix.to_sparse_coo().t().to_sparse_csr() @ grad_out.contiguous()
        if ctx.needs_input_grad[2]:
            # <grad_out[n], rows[column]> at every tap: M's pattern, values in M's order.
            sampled = torch.sparse.sampled_addmm(matrix, grad_out.contiguous(), rows.t(), beta=0.0)
            grad_weights = sampled.values().view_as(weights)
        return grad_rows, None, grad_weights


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


def _taps(queries: Tensor, size: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    # TensorFlow's rule: floor clamped to [0, size-2], alpha = q - floor clamped to [0, 1];
    # outside the map this repeats the edge pixel and the gradient w.r.t. q is zero.
    floor = queries.floor().clamp(0, size - 2)
    alpha = (queries - floor).to(dtype)
    # Not torch.clamp: its gradient is zero at alpha = 0 exactly, i.e. on integer queries,
    # which would freeze a zero-initialised offset predictor. TF's min/max pass it there.
    alpha = torch.where(alpha < 0, 0.0, torch.where(alpha > 1, 1.0, alpha))
    return floor.long(), alpha


def interpolate_bilinear(image: Tensor, query_points: Tensor) -> Tensor:
    """Bilinear samples of an NCHW image at `[B, M, 2]` (y, x) pixel points -> `[B, M, C]`.

    Points outside the map take the nearest edge value (TensorFlow's clamping). The result
    is differentiable w.r.t. the image and the points.
    """
    batch, channels, height, width = image.shape
    if height < 2 or width < 2:
        raise WarpError(f"image must be at least 2x2 to interpolate, got {height}x{width}")
    floor_y, alpha_y = _taps(query_points[..., 0], height, image.dtype)
    floor_x, alpha_x = _taps(query_points[..., 1], width, image.dtype)
    offsets = torch.arange(batch, device=image.device).unsqueeze(1) * (height * width)
    top_left = (offsets + floor_y * width + floor_x).reshape(-1)
    # Column order top-left, top-right, bottom-left, bottom-right is ascending, as CSR needs.
    columns = torch.stack([top_left, top_left + 1, top_left + width, top_left + width + 1], 1)
    alpha_y, alpha_x = alpha_y.reshape(-1), alpha_x.reshape(-1)
    # (1 - a) * p + a * q rather than TF's a * (q - p) + p: equal to rounding, but exact
    # at a in {0, 1}, so a zero flow returns the image bit for bit.
    weights = torch.stack(
        [
            (1 - alpha_y) * (1 - alpha_x),
            (1 - alpha_y) * alpha_x,
            alpha_y * (1 - alpha_x),
            alpha_y * alpha_x,
        ],
        dim=1,
    )
    rows = image.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
    return _SparseRows.apply(rows, columns, weights).view(batch, -1, channels)


def dense_image_warp(image: Tensor, flow: Tensor) -> Tensor:
    """Warp an NCHW image by a dense `[B, H, W, 2]` (dy, dx) flow: out[p] = image[p - flow[p]].

    This is TensorFlow's `dense_image_warp` (bilinear, edge clamped). The flow is the motion
    of content: a feature at q moves to q + flow where flow is smooth. The output has NCHW
    shape (its memory is channels-last, which every torch op accepts).
    """
    batch, channels, height, width = image.shape
    if flow.shape != (batch, height, width, 2):
        raise WarpError(
            f"flow must be [B, H, W, 2] = {[batch, height, width, 2]}, got {list(flow.shape)}"
        )
    grid = grid_locations(height, width, flow.device).to(flow.dtype)
    queries = grid.unsqueeze(0) - flow.reshape(batch, height * width, 2)
    sampled = interpolate_bilinear(image, queries)  # (B, H*W, C)
    return sampled.view(batch, height, width, channels).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------- sparse warp


def _check_points(source: Tensor, dest: Tensor, batch: int) -> None:
    for name, points in (("source", source), ("dest", dest)):
        if points.dim() != 3 or points.shape[0] != batch or points.shape[2] != 2:
            raise WarpError(
                f"{name} points must be [B={batch}, N, 2] (y, x), got {list(points.shape)}"
            )
    if source.shape != dest.shape:
        raise WarpError(f"source {list(source.shape)} and dest {list(dest.shape)} differ in shape")


def sparse_flow(
    source: Tensor,
    dest: Tensor,
    height: int,
    width: int,
    interpolation_order: int = 2,
    regularization_weight: float = 0.0,
    num_boundary_points: int = 0,
) -> Tensor:
    """The dense flow `[B, H, W, 2]` (dy, dx) that `sparse_image_warp` applies, in float64.

    Exposed separately so a caller warping several maps by the same points (the warp LSTM
    warps h and c) solves the spline once.
    """
    if interpolation_order < 1:
        raise WarpError(f"interpolation_order must be >= 1, got {interpolation_order}")
    _check_points(source, dest, source.shape[0])
    centres, flows = dest.double(), dest.double() - source.double()
    if num_boundary_points > 0:
        border = boundary_locations(height, width, num_boundary_points, dest.device)
        border = border.unsqueeze(0).expand(dest.shape[0], -1, -1)
        centres = torch.cat([centres, border], dim=1)
        flows = torch.cat([flows, torch.zeros_like(border)], dim=1)
    queries = grid_locations(height, width, dest.device).unsqueeze(0).expand(dest.shape[0], -1, -1)
    dense = interpolate_spline(centres, flows, queries, interpolation_order, regularization_weight)
    return dense.view(dest.shape[0], height, width, 2)


def sparse_image_warp(
    image: Tensor,
    source: Tensor,
    dest: Tensor,
    interpolation_order: int = 2,
    regularization_weight: float = 0.0,
    num_boundary_points: int = 0,
) -> tuple[Tensor, Tensor]:
    """Warp an image so that the content at `source` points lands on `dest` points.

    image `[B, C, H, W]`; source, dest `[B, N, 2]` (y, x) pixels. Returns `(warped, flow)`:
    warped `[B, C, H, W]` in image's dtype and the dense flow `[B, H, W, 2]` (dy, dx) in the
    points' dtype, with TensorFlow's `sparse_image_warp` semantics (see the module doc).
    Raises WarpError on bad shapes or a singular spline system (coincident control points
    without regularisation). Differentiable w.r.t. the image and both point sets.
    """
    if image.dim() != 4:
        raise WarpError(f"image must be [B, C, H, W], got {list(image.shape)}")
    batch, _, height, width = image.shape
    _check_points(source, dest, batch)
    flow = sparse_flow(
        source, dest, height, width, interpolation_order, regularization_weight, num_boundary_points
    )
    warped = dense_image_warp(image, flow)
    return warped, flow.to(dest.dtype)
