"""The `stvr-data` command line. Each sub-module parses one command's arguments and
delegates to the library; nothing here computes anything."""

from __future__ import annotations

import click

from stvr_data import __version__
from stvr_data.cli._errors import StvrGroup


@click.group(cls=StvrGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stvr-data")
def main() -> None:
    """Build the spatio-temporal video re-localization (STVR) benchmark and score it.

    \b
    Typical use:
      stvr-data make-sample --out sample/
      stvr-data build-ava --annotations sample/annotations --videos sample/videos --out bench/
      stvr-data verify bench/
      stvr-data evaluate --benchmark bench/ --split test --detections dets.parquet
    """


def _register() -> None:
    # Imported here so that each command module stays independent of the others.
    from stvr_data.cli import commands

    for command in commands.ALL:
        main.add_command(command)


_register()
