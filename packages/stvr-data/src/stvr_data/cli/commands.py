"""Every `stvr-data` sub-command, in the order `--help` lists them."""

from __future__ import annotations

ALL: list = []
