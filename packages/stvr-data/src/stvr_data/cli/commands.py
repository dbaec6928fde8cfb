"""Every `stvr-data` sub-command, in the order `--help` lists them."""

from __future__ import annotations

from stvr_data.cli.build import build_ava, download_ava
from stvr_data.cli.ucf import build_ucf

ALL: list = [download_ava, build_ava]
ALL.append(build_ucf)

from stvr_data.cli.evaluate import evaluate  # noqa: E402
from stvr_data.cli.official import export_official, import_official  # noqa: E402

ALL += [import_official, export_official, evaluate]

from stvr_data.cli.sample import make_sample_command  # noqa: E402

ALL.append(make_sample_command)
