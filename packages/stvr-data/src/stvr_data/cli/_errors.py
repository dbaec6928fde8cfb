"""Turn the package's input errors into one line on stderr and a non-zero exit."""

from __future__ import annotations

import sys

import click

from stvr_data.errors import StvrDataError

EXIT_BAD_INPUT = 2


class StvrGroup(click.Group):
    """A click group that reports `StvrDataError` (and missing files) as one line."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (StvrDataError, FileNotFoundError) as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            click.echo("interrupted: finished steps are kept; run the same command again to resume", err=True)
            sys.exit(130)
