"""`stvr-data view`: parse arguments, delegate to `stvr_data.viewer.write_site`."""

from __future__ import annotations

from pathlib import Path

import click

from stvr_data.viewer import write_site


@click.command("view")
@click.argument("benchmark", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", default="test", show_default=True, type=click.Choice(["val", "test"]),
              help="Split to show.")
@click.option("--detections", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Detections (CSV or Parquet, the scorer's format) to draw with a score threshold.")
@click.option("--per-label", default=10, show_default=True, type=click.IntRange(min=1),
              help="Pairs shown per combined label (each gets two short previews).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the site into; open its index.html in a browser.")
def view(benchmark: Path, split: str, detections: Path | None, per_label: int, out: Path) -> None:
    """Write a static HTML site to look at BENCHMARK: summary, Figure 6, pairs by label, and
    each pair's query beside its reference with the boxes drawn (no server needed)."""
    index = write_site(benchmark, out, split=split, detections=detections, per_label=per_label)
    click.echo(f"wrote {index}")
