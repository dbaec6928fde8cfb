"""Turn the tools' errors into one line on stderr and a non-zero exit."""

from __future__ import annotations

import sys

import click

from stvr_data.errors import StvrError, one_line

EXIT_BAD_INPUT = 2


class StvrGroup(click.Group):
    """A click group that reports `StvrError` (either package's) and operating-system
    errors (missing or unreadable files) as one line. Both `stvr-data` and `stvr-model`
    use it."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (StvrError, OSError) as err:  # OSError: a file that cannot be read, a full disk
            click.echo(f"error: {one_line(err)}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            click.echo("interrupted: finished steps are kept; run the same command again to resume", err=True)
            sys.exit(130)
