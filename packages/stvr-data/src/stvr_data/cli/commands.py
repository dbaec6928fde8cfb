"""Every `stvr-data` sub-command, in the order `--help` lists them."""

from __future__ import annotations

from stvr_data.cli.build import build_ava

ALL: list = [build_ava]
