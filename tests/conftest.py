"""Shared fixtures: paths to the real reference data beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only folder of real annotation data and reference outputs."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present")
    return SHARED
