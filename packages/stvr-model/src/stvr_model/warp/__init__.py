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

Layouts: images are NCHW (or channels-last); points are `[B, N, 2]` in (y, x) pixel units;
flows are `[B, H, W, 2]` in (dy, dx) pixels. The spline is always solved in float64 (a
28x28 system at the paper's settings costs nothing) and cast back to the dtype of the points.

Modules: `points` (the pixel grid and the border lattice), `spline` (steps 1-3: the dense
flow), `taps` (the bilinear taps of query points and their sparse matrices), `resample`
(step 4: bilinear sampling). This package composes them.
"""

from __future__ import annotations

from torch import Tensor

from stvr_model.warp.errors import NonFiniteWarpError, WarpError
from stvr_model.warp.points import boundary_locations, grid_locations
from stvr_model.warp.resample import (
    dense_image_warp,
    dense_image_warp_many,
    interpolate_bilinear,
    is_channels_last,
)
from stvr_model.warp.spline import (
    EPSILON,
    check_points,
    interpolate_spline,
    polyharmonic_phi,
    polyharmonic_phi_derivative,
    sparse_flow,
)
from stvr_model.warp.taps import (
    _bilinear_taps,  # noqa: F401 (the tap-matrix tests import these four from here)
    _tap_matrix,  # noqa: F401
    _transposed_tap_coo,  # noqa: F401
    _transposed_tap_csr,  # noqa: F401
)

__all__ = [
    "EPSILON",
    "NonFiniteWarpError",
    "WarpError",
    "boundary_locations",
    "dense_image_warp",
    "dense_image_warp_many",
    "grid_locations",
    "interpolate_bilinear",
    "interpolate_spline",
    "is_channels_last",
    "polyharmonic_phi",
    "polyharmonic_phi_derivative",
    "sparse_flow",
    "sparse_image_warp",
]


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
    check_points(source, dest, batch)
    flow = sparse_flow(
        source, dest, height, width, interpolation_order, regularization_weight, num_boundary_points
    )
    warped = dense_image_warp(image, flow)
    return warped, flow.to(dest.dtype)
