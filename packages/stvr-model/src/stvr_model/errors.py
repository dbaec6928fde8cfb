"""The model package's errors: every one derives from `stvr_data.errors.StvrError`, the
base both command lines turn into one line and a non-zero exit."""

from __future__ import annotations

from stvr_data.errors import StvrError


class ModelError(StvrError):
    """Base class of stvr-model's errors (bad inputs to a module, an unusable checkpoint,
    a run that diverged)."""


class NonFiniteError(ModelError):
    """A tensor that must be finite holds NaN or inf; in training this means the run has
    diverged (a too-large learning rate), not that the input was malformed."""


class CheckpointError(ModelError):
    """A checkpoint that is missing, unreadable or not from this tool, or settings that
    this version cannot read."""
