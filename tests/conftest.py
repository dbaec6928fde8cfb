"""Shared fixtures: paths to the real reference data beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# STVR_SHARED points elsewhere when the checkout does not sit beside it.
SHARED = Path(os.environ.get("STVR_SHARED") or REPO.parent / "shared")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only folder of real annotation data and reference outputs."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present")
    return SHARED
