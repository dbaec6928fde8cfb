"""Polyharmonic spline interpolation: sparse control-point offsets to a dense flow.

The warp LSTM (paper §3.2) moves a few control points and lets a polyharmonic spline
spread that motion over the map, as TensorFlow's `sparse_image_warp` does: flows at the
control points are `dest - source`, placed at the `dest` points, with zero-flow border
points (`points.boundary_locations`) when `num_boundary_points > 0`. The spline is solved
in float64 (a 28x28 system at the paper's settings costs nothing). Flows are
`[B, H, W, 2]` (dy, dx) pixels; points `[B, N, 2]` (y, x) pixels.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from stvr_model.warp.errors import WarpError
from stvr_model.warp.points import boundary_locations, grid_locations

# TensorFlow's guard inside log() and sqrt(); part of the reference semantics.
EPSILON = 1e-10


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


def polyharmonic_phi_derivative(squared_distance: Tensor, order: int) -> Tensor:
    """d phi / d(r^2) of `polyharmonic_phi`, with the same clamping (zero below EPSILON).

    It is the derivative autograd takes through `polyharmonic_phi`, written out for the
    hand-made backward pass of the dense flow.
    """
    clamped = squared_distance.clamp_min(EPSILON)
    above = (squared_distance >= EPSILON).to(squared_distance.dtype)
    if order == 1:
        return 0.5 * above / clamped.sqrt()
    if order == 2:
        return 0.5 * (torch.log(clamped) + above)
    half = 0.5 * order
    if order % 2 == 0:
        return 0.5 * above * clamped.pow(half - 1) * (half * torch.log(clamped) + 1)
    return above * half * clamped.pow(half - 1)


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """`[B, M, N]` squared distances between `a [B, M, D]` (or a shared `[M, D]`) and `b [B, N, D]`.

    Direct differences rather than |a|^2 - 2ab + |b|^2 (exact zeros on coincident points),
    one coordinate at a time: a reduction over a last axis of size 2 is slow on CPU.
    """
    total = None
    for d in range(a.shape[-1]):
        diff = a[..., d : d + 1] - b[..., d].unsqueeze(1)
        total = diff * diff if total is None else total + diff * diff
    return total


def _spline_system(centres: Tensor, order: int, regularization_weight: float) -> Tensor:
    """The spline's symmetric system matrix `[B, N + D + 1, N + D + 1]`.

    `[[phi(|c_i - c_j|^2) + lambda I, [c, 1]], [[c, 1]^T, 0]]`, TensorFlow's layout.
    """
    batch, num, dim = centres.shape
    matrix_a = polyharmonic_phi(_squared_distances(centres, centres), order)
    if regularization_weight > 0:
        eye = torch.eye(num, dtype=centres.dtype, device=centres.device)
        matrix_a = matrix_a + regularization_weight * eye
    matrix_b = _affine_design(centres)  # (B, N, D+1)
    zeros = centres.new_zeros(batch, dim + 1, dim + 1)
    return torch.cat(
        [torch.cat([matrix_a, matrix_b], dim=2), torch.cat([matrix_b.transpose(1, 2), zeros], 2)],
        dim=1,
    )


def _check_solved(info: Tensor, order: int) -> None:
    failed = torch.nonzero(info).flatten().tolist()
    if failed:
        raise WarpError(
            f"spline system is singular for batch item(s) {failed}: control points coincide "
            f"or are collinear (order {order}); move them apart or use regularization_weight > 0"
        )


def _solve_spline(
    centres: Tensor, values: Tensor, order: int, regularization_weight: float
) -> Tensor:
    """The spline's coefficients `[B, N + D + 1, K]`: radial weights `w`, then affine `v`."""
    lhs = _spline_system(centres, order, regularization_weight)
    rhs = F.pad(values, (0, 0, 0, centres.shape[2] + 1))
    solution, info = torch.linalg.solve_ex(lhs, rhs)
    _check_solved(info, order)
    return solution


def _affine_design(points: Tensor) -> Tensor:
    """`[..., M, D + 1]`: the points with a column of ones, the affine part of the spline."""
    return torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)


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
    solution = _solve_spline(centres, values, order, regularization_weight)
    queries = query_points.double()
    num = centres.shape[1]
    radial = polyharmonic_phi(_squared_distances(queries, centres), order)
    return radial @ solution[:, :num] + _affine_design(queries) @ solution[:, num:]


@lru_cache(maxsize=64)
def _fixed_design(
    height: int, width: int, num_boundary_points: int, order: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The parts of the dense-flow spline that do not move: `(border, design)`.

    `border [K, 2]` are the zero-flow points and `design [H*W, K + 3]` holds, for every
    pixel, the radial terms of those points followed by the affine terms `(y, x, 1)`: the
    spline read at all pixels is `phi(moving) @ w_moving + design @ [w_border, v]`.
    """
    queries = grid_locations(height, width, device)
    if num_boundary_points > 0:
        border = boundary_locations(height, width, num_boundary_points, device)
    else:
        border = queries.new_zeros(0, 2)
    radial = polyharmonic_phi(_squared_distances(queries, border.unsqueeze(0))[0], order)
    return border, torch.cat([radial, _affine_design(queries)], dim=1)


def check_points(source: Tensor, dest: Tensor, batch: int) -> None:
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
    check_points(source, dest, source.shape[0])
    spline = (height, width, interpolation_order, regularization_weight, num_boundary_points)
    dense = _DenseFlow.apply(source.double(), dest.double(), spline)
    return dense.view(dest.shape[0], height, width, 2)


class _DenseFlow(torch.autograd.Function):
    """`sparse_flow`'s spline, solved and read at every pixel, with a hand-made backward.

    `apply(source, dest, (H, W, order, regularization_weight, num_boundary_points))`, all in
    float64. Forward: centres `c = [dest; border]`, values `[dest - source; 0]`, the system
    `L s = [values; 0]` solved through an LU factorisation, and the flow
    `phi(|q - dest|^2) @ s_dest + design @ s_rest` at all pixels `q` (the border's radial
    terms and the affine terms are fixed: `_fixed_design`). Backward: the same chain rule
    autograd would take through those ~40 small ops, as ~20 batched ones: `L` is symmetric,
    so its gradient solve reuses the factorisation; `dL = -dR s^T` and the flow's own radial
    terms send gradients to `dest` through `phi'(r^2) * 2 (c_i - c_j)`.
    """

    @staticmethod
    def forward(ctx, source: Tensor, dest: Tensor, spline) -> Tensor:
        height, width, order, regularization_weight, num_boundary_points = spline
        batch, num = dest.shape[:2]
        border, design = _fixed_design(height, width, num_boundary_points, order, dest.device)
        centres = torch.cat([dest, border.unsqueeze(0).expand(batch, -1, -1)], dim=1)
        lhs = _spline_system(centres, order, regularization_weight)
        factors, pivots, info = torch.linalg.lu_factor_ex(lhs)
        _check_solved(info, order)
        rhs = F.pad(dest - source, (0, 0, 0, lhs.shape[1] - num))  # zero at border and affine
        solution = torch.linalg.lu_solve(factors, pivots, rhs)
        queries = grid_locations(height, width, dest.device)
        squared = _squared_distances(queries, dest)  # (B, H*W, N)
        radial = polyharmonic_phi(squared, order)
        ctx.save_for_backward(centres, solution, factors, pivots, squared, radial)
        ctx.order, ctx.num, ctx.spline = order, num, spline
        return radial @ solution[:, :num] + design @ solution[:, num:]

    @staticmethod
    def backward(ctx, grad: Tensor):
        centres, solution, factors, pivots, squared, radial = ctx.saved_tensors
        order, num = ctx.order, ctx.num
        height, width, _, _, num_boundary_points = ctx.spline
        _, design = _fixed_design(height, width, num_boundary_points, order, grad.device)
        queries = grid_locations(height, width, grad.device)
        dest = centres[:, :num]
        # The flow read at the pixels: through the solution and the dest radial terms.
        grad_solution = torch.cat([radial.transpose(1, 2) @ grad, design.t() @ grad], dim=1)
        pulls = (grad @ solution[:, :num].transpose(1, 2)) * polyharmonic_phi_derivative(
            squared, order
        )  # (B, H*W, N): d loss / d r^2 at every pixel and dest point
        grad_dest = -2 * (pulls.transpose(1, 2) @ queries - pulls.sum(1).unsqueeze(2) * dest)
        # Through the solve: dR = L^-T dS and dL = -dR S^T.
        grad_rhs = torch.linalg.lu_solve(factors, pivots, grad_solution, adjoint=True)
        grad_values = grad_rhs[:, :num]  # values = dest - source at the moving points
        grad_dest = grad_dest + grad_values
        grad_lhs = -grad_rhs @ solution.transpose(1, 2)
        count = centres.shape[1]
        # L's radial block phi(|c_i - c_j|^2) and its affine blocks [c, 1], [c, 1]^T.
        block = grad_lhs[:, :count, :count]
        pair = (block + block.transpose(1, 2)) * polyharmonic_phi_derivative(
            _squared_distances(centres, centres), order
        )
        grad_centres = 2 * (pair.sum(2).unsqueeze(2) * centres - pair @ centres)
        grad_centres = grad_centres + grad_lhs[:, :count, count : count + 2]
        grad_centres = grad_centres + grad_lhs[:, count : count + 2, :count].transpose(1, 2)
        grad_dest = grad_dest + grad_centres[:, :num]
        return -grad_values, grad_dest, None
