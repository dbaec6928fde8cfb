"""Every `stvr-data` sub-command, in the order `--help` lists them."""

from __future__ import annotations

from stvr_data.cli.build import build_ava
from stvr_data.cli.ucf import build_ucf

ALL: list = [build_ava]
ALL.append(build_ucf)
