"""Every `stvr-data` sub-command, in the order `--help` lists them (click sorts by name)."""

from __future__ import annotations

from stvr_data.cli.build import build_ava, download_ava
from stvr_data.cli.evaluate import evaluate
from stvr_data.cli.official import export_official, import_official
from stvr_data.cli.sample import make_sample_command
from stvr_data.cli.ucf import build_ucf
from stvr_data.cli.verify import verify
from stvr_data.cli.view import view

ALL: list = [make_sample_command, download_ava, build_ava, build_ucf, import_official, export_official,
             evaluate, verify, view]
