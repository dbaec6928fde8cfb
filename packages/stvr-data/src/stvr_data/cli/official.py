"""`stvr-data import-official` / `export-official`: parse arguments, delegate to `stvr_data.official`."""

from __future__ import annotations

from pathlib import Path

import click

from stvr_data import official


@click.command("import-official")
@click.option("--json", "json_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The authors' stvr_val.json or stvr_test.json.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Benchmark directory to write (the other split, if imported there, is kept).")
@click.option("--split", type=click.Choice(["val", "test"]),
              help="Split of the file; default: from its name.")
def import_official(json_path: Path, out: Path, split: str | None) -> None:
    """Turn the official STVR release's pairs into benchmark manifests."""
    card = official.import_official(json_path, out, split=split)
    split = split or official.split_from_name(json_path)
    counts, inside = card["counts"], card["release"][split]["query_inside_reference"]
    click.echo(f"{out}: {counts[f'pairs_{split}']} {split} pairs, {counts[f'images_{split}']} images, "
               f"{counts[f'boxes_{split}']} boxes, {len(card['labels'][split])} labels; "
               f"{inside['count']} pairs have the query inside its own reference")


@click.command("export-official")
@click.option("--benchmark", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Benchmark directory.")
@click.option("--split", required=True, type=click.Choice(["val", "test"]), help="Split to export.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSON file to write, in the release's format.")
def export_official(benchmark: Path, split: str, out: Path) -> None:
    """Write a benchmark split in the official release's JSON format."""
    path = official.export_official(benchmark, split, out)
    click.echo(f"wrote {path}")
