"""The warp's errors."""

from __future__ import annotations

from stvr_model.errors import ModelError, NonFiniteError


class WarpError(ModelError):
    """Inputs the warp cannot accept, or a spline system that cannot be solved."""


class NonFiniteWarpError(WarpError, NonFiniteError):
    """A flow or query holding NaN or inf."""
