"""`stvr-data build-ava`: parse arguments, delegate to `stvr_data.ava.prepare_ava`."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from stvr_data.build import BuildOptions
from stvr_data.build_report import summary

EXIT_INCOMPLETE = 1  # some videos could not be had (bad input exits with 2)


def parse_resolution(ctx, param, value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"'{value}' is not WIDTHxHEIGHT, e.g. 320x320") from None
    if width <= 0 or height <= 0 or width % 16 or height % 16:
        raise click.BadParameter(f"'{value}': both sides must be positive multiples of 16 (feature stride)")
    return width, height


def parse_shard_option(ctx, param, value):
    from stvr_data.shards import parse_shard

    return None if value is None else parse_shard(value)


def common_build_options(func):
    """Flags shared by every corpus build command."""
    options = [
        click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help="Benchmark directory to write (created; re-running resumes)."),
        click.option("--seed", default=0, show_default=True, type=click.IntRange(0), help="Seed of the label split and the fixed pairs."),
        click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
                     help="Videos processed in parallel by the media step (the result does not depend on it)."),
        click.option("--skip-media", is_flag=True, help="Build the manifests only; no video is fetched or cut."),
        click.option("--resolution", default="320x320", show_default=True, callback=parse_resolution,
                     help="WIDTHxHEIGHT of the 24-fps clip files."),
        click.option("--force", is_flag=True,
                     help="Rebuild even if the directory holds this exact build; re-cut clips. "
                          "Replaces only files its dataset.json lists."),
        click.option("--youtube-fallback", is_flag=True,
                     help="Try YouTube (yt-dlp) for videos the source does not have. Needs a "
                          "JavaScript runtime yt-dlp supports (deno, node >= 22, quickjs or bun): "
                          "checked before any video."),
        click.option("--shard", default=None, metavar="K/N", callback=parse_shard_option,
                     help="Do the media of shard K of N only (1-based: K = 1..N): every N-th video "
                          "by sorted id, from the K-th. Shards run at once into one --out; "
                          "then --merge."),
        click.option("--merge", is_flag=True,
                     help="Assemble the benchmark from the N finished --shard runs (cuts nothing)."),
        click.option("-v", "--verbose", is_flag=True, help="Log each step."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_options(seed, workers, skip_media, resolution, force, youtube_fallback, shard=None,
                  merge=False) -> BuildOptions:
    return BuildOptions(seed=seed, workers=workers, skip_media=skip_media, resolution=resolution,
                        force=force, youtube_fallback=youtube_fallback, shard=shard, merge=merge)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@click.command("build-ava")
@click.option("--annotations", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder with the AVA release files (ava_{train,val}_v2.x.csv, action list, exclusions, file names).")
@click.option("--videos", default=None,
              help="Folder or http(s) base URL holding the AVA videos (<base>/<file name>). Needed unless --skip-media.")
@common_build_options
@click.option("--min-tubelets", default=100, show_default=True, type=click.IntRange(0),
              help="A held-out label needs more than this many tubelets in the validation videos (paper: 100).")
@click.option("--num-val-labels", default=27, show_default=True, type=click.IntRange(1), help="Combined labels held out for validation.")
@click.option("--num-test-labels", default=27, show_default=True, type=click.IntRange(1), help="Combined labels held out for test.")
@click.option("--split-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Take the val/test labels from an official val_test.json instead of choosing them.")
@click.option("--skip-bad-rows", is_flag=True,
              help="Drop malformed annotation rows and list them in reports/bad_rows.csv instead of stopping.")
@click.option("--ava-version", default=None, metavar="X.Y",
              help="AVA release to read (2.1 or 2.2) when the folder holds several; default: the newest found.")
def build_ava(annotations, videos, out, seed, workers, skip_media, resolution, force, youtube_fallback,
              shard, merge, verbose, min_tubelets, num_val_labels, num_test_labels, split_file, skip_bad_rows,
              ava_version):
    """Build the STVR benchmark from AVA (paper §5).

    Links per-second person boxes into combined-label tubelets, holds out val/test
    labels (never seen in training), makes the fixed query/reference pairs and their
    frame-level ground truth, cuts 900-1800 s of every video to 24-fps clips, and writes
    Parquet manifests, dataset.json and samples_per_label.png into OUT.
    """
    from stvr_data.ava_recipe import prepare_ava

    setup_logging(verbose)
    if videos is None and not skip_media:
        raise click.UsageError("--videos is required unless --skip-media")
    card = prepare_ava(annotations, videos, out,
                       options=build_options(seed, workers, skip_media, resolution, force, youtube_fallback,
                                             shard, merge),
                       min_tubelets=min_tubelets, num_val_labels=num_val_labels,
                       num_test_labels=num_test_labels, split_file=split_file,
                       skip_bad_rows=skip_bad_rows, ava_version=ava_version)
    click.echo(summary(card))
    if shard is None:
        click.echo(f"wrote {out}")


@click.command("download-ava")
@click.option("--annotations", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder with the AVA release files (the file list names the videos).")
@click.option("--source", required=True, help="http(s) base URL of the videos (e.g. the AVA mirror's .../trainval) or a folder.")
@click.option("--dest", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to download into; partial transfers there are resumed.")
@click.option("--workers", default=4, show_default=True, type=click.IntRange(1), help="Parallel transfers.")
def download_ava(annotations, source, dest, workers):
    """Download the AVA videos named by the release's file list (resumable).

    Optional: `build-ava --videos URL` fetches on the fly; this command is for keeping a
    local copy. Videos that cannot be had are listed at the end and in DEST/failed.csv
    (removed once every video is there); the exit status is then 1.
    """
    from stvr_data.ava_recipe import download_ava as run

    result = run(annotations, source, dest, workers=workers)
    failed = result[result.path.isna()]
    for row in failed.itertuples():
        click.echo(f"missing {row.file_name}: {row.error}", err=True)
    click.echo(f"{len(result) - len(failed)} of {len(result)} videos in {dest}")
    if len(failed):
        raise click.exceptions.Exit(EXIT_INCOMPLETE)
