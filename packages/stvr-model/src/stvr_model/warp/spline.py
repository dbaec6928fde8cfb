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
from typing import NamedTuple

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


class _Fixed(NamedTuple):
    """The parts of the dense-flow spline that do not move with the control points.

    For `num` moving centres (the dest points) followed by the `K` border points and the
    affine terms, `n = num + K + 3` unknowns:
    - `grid [3, P]`, `border [3, K]`: pixel centres and border points as `(y, x, 1)`,
      coordinate-major;
    - `design [P, K + 3]`: every pixel's radial terms of the border points, then `(y, x, 1)`:
      the spline read at all pixels is `phi(|q - dest|^2) @ s[:num] + design @ s[num:]`;
    - `system [n, n]`: the system matrix with its border-border block (regulariser
      included), the border's affine rows and columns and the moving points' ones filled in;
      the moving points' radial terms and coordinates are written over it per call.
    """

    grid: Tensor
    border: Tensor
    design: Tensor
    system: Tensor


@lru_cache(maxsize=64)
def _fixed_parts(
    height: int,
    width: int,
    num_boundary_points: int,
    order: int,
    regularization_weight: float,
    num: int,
    device: torch.device,
) -> _Fixed:
    queries = grid_locations(height, width, device)
    if num_boundary_points > 0:
        border = boundary_locations(height, width, num_boundary_points, device)
    else:
        border = queries.new_zeros(0, 2)
    radial = polyharmonic_phi(_squared_distances(queries, border.unsqueeze(0))[0], order)
    design = torch.cat([radial, _affine_design(queries)], dim=1)
    count = num + border.shape[0]
    system = queries.new_zeros(count + 3, count + 3)
    system[num:count, num:count] = polyharmonic_phi(
        _squared_distances(border, border.unsqueeze(0))[0], order
    )
    system[:count, :count].diagonal().add_(regularization_weight)
    system[num:count, count:] = _affine_design(border)
    system[count:, num:count] = _affine_design(border).t()
    system[:num, count + 2] = 1.0
    system[count + 2, :num] = 1.0
    return _Fixed(_affine_design(queries).t(), _affine_design(border).t(), design, system)


def _phi_and_derivative(squared: Tensor, order: int, derivative: bool):
    """`polyharmonic_phi` of squared distances and, if asked, its derivative (else None)."""
    if order != 2:
        slope = polyharmonic_phi_derivative(squared, order) if derivative else None
        return polyharmonic_phi(squared, order), slope
    log = squared.clamp_min(EPSILON).log_()
    phi = (0.5 * squared).mul_(log)  # the same rounding as polyharmonic_phi
    if not derivative:
        return phi, None
    return phi, log.add_(squared >= EPSILON).mul_(0.5)


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
    float64. Centres `c = [dest; border]`, values `[dest - source; 0]`, the system
    `L s = [values; 0]` solved through an LU factorisation, and the flow
    `phi(|q - dest|^2) @ s[:num] + design @ s[num:]` at all pixels `q`.

    Every radial term that moves is a distance to a dest point: from the pixels (the flow)
    and from the centres (the dest columns of `L`, and by symmetry its dest rows). So the
    forward pass measures one set of targets `t = [pixels; dest; border]` against the dest
    points, once, and writes the centres' part into the fixed system (`_fixed_parts`).
    Backward: `L` is symmetric, so its gradient solve reuses the factorisation; with
    `dL = -dR s^T`, each radial term `phi(|t - d_i|^2)` has one gradient weight `A[t, i]`
    (from the flow at a pixel, or `dL[j, i] + dL[i, j]` at a centre) and sends
    `2 A[t, i] phi'(|t - d_i|^2) (d_i - t)` to `d_i`: one product with `[t, 1]` gives
    those sums for all targets at once.
    """

    @staticmethod
    def forward(ctx, source: Tensor, dest: Tensor, spline) -> Tensor:
        height, width, order, regularization_weight, num_boundary_points = spline
        batch, num = dest.shape[:2]
        fixed = _fixed_parts(
            height, width, num_boundary_points, order, regularization_weight, num, dest.device
        )
        pixels, count = fixed.grid.shape[1], num + fixed.border.shape[1]
        targets = torch.cat(
            [
                fixed.grid.expand(batch, -1, -1),
                F.pad(dest, (0, 1), value=1.0).transpose(1, 2),
                fixed.border.expand(batch, -1, -1),
            ],
            dim=2,
        )  # (B, 3, P + count): (y, x, 1) of every target, coordinate-major
        # (B, num, P + count): a row per dest point, laid out so that every op runs along
        # the long axis (an inner axis of 2 coordinates is slow on CPU).
        dy = targets[:, 0:1] - dest[:, :, 0:1]
        dx = targets[:, 1:2] - dest[:, :, 1:2]
        squared = dy.mul_(dy).addcmul_(dx, dx)
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        phi, slope = _phi_and_derivative(squared, order, need_grad)
        lhs = fixed.system.repeat(batch, 1, 1)
        lhs[:, :num, :count] = phi[:, :, pixels:]
        lhs[:, :count, :num] = phi[:, :, pixels:].transpose(1, 2)
        lhs[:, :num, count : count + 2] = dest
        lhs[:, count : count + 2, :num] = dest.transpose(1, 2)
        if regularization_weight > 0:
            lhs.diagonal(dim1=1, dim2=2)[:, :num] += regularization_weight
        factors, pivots, info = torch.linalg.lu_factor_ex(lhs)
        if bool(info.any()):
            _check_solved(info, order)
        rhs = dest.new_zeros(batch, lhs.shape[1], 2)
        torch.sub(dest, source, out=rhs[:, :num])
        solution = torch.linalg.lu_solve(factors, pivots, rhs)
        radial = phi[:, :, :pixels]
        # design @ solution[:, num:] for all batch items as one product: (P, B, 2).
        rest = solution[:, num:].transpose(0, 1).reshape(solution.shape[1] - num, 2 * batch)
        fixed_part = (fixed.design @ rest).view(pixels, batch, 2).transpose(0, 1)
        flow = torch.bmm(radial.transpose(1, 2), solution[:, :num]).add_(fixed_part)
        if need_grad:
            ctx.save_for_backward(dest, targets, radial, slope, solution, factors, pivots)
            ctx.design, ctx.count = fixed.design, count
        return flow

    @staticmethod
    def backward(ctx, grad: Tensor):
        dest, targets, radial, slope, solution, factors, pivots = ctx.saved_tensors
        num, count = dest.shape[1], ctx.count
        moving = solution[:, :num]
        # The flow read at the pixels: through the solution and the pixels' radial terms.
        grad_solution = torch.cat([radial @ grad, ctx.design.t() @ grad], dim=1)
        grad_rhs = torch.linalg.lu_solve(factors, pivots, grad_solution, adjoint=True)
        grad_values = grad_rhs[:, :num]  # values = dest - source at the moving points
        # dL[j, i] + dL[i, j] for the dest points i and the rows j of the centres and of the
        # affine (y, x) terms, with dL = -grad_rhs @ solution^T.
        pairs = torch.baddbmm(
            moving @ grad_rhs[:, : count + 2].transpose(1, 2),
            grad_values,
            solution[:, : count + 2].transpose(1, 2),
            beta=-1,
            alpha=-1,
        )
        weights = torch.cat([moving @ grad.transpose(1, 2), pairs[:, :, :count]], dim=2)
        sums = weights.mul_(slope) @ targets.transpose(1, 2)  # (B, num, 3)
        grad_dest = torch.addcmul(sums[..., :2], dest, sums[..., 2:], value=-1).mul_(-2)
        grad_dest += grad_values
        grad_dest += pairs[:, :, count:]  # dest's own affine entries
        return -grad_values, grad_dest, None
