"""`stvr-data verify`: parse arguments, delegate to `stvr_data.outdir.verify`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

EXIT_BAD_FILES = 1


@click.command("verify")
@click.argument("benchmark", type=click.Path(exists=True, file_okay=False, path_type=Path))
def verify(benchmark: Path) -> None:
    """Check BENCHMARK against its dataset.json: every file it lists is there, with its
    recorded size and SHA-256. Names each bad file (missing, size, sha256) and exits 1
    when there is one; files the card does not list are noted, not counted as bad.
    """
    from stvr_data.outdir import verify as check

    result = check(benchmark)
    click.echo(result.report(benchmark))
    if not result.ok:
        sys.exit(EXIT_BAD_FILES)
