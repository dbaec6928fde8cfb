"""The `stvr-model` command line: parses arguments and delegates to the library."""

from __future__ import annotations

import click

from stvr_model import __version__
from stvr_data.cli._errors import StvrGroup


@click.group(cls=StvrGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stvr-model")
def main() -> None:
    """Train and evaluate the warp LSTM detector and its baselines on STVR manifests."""
