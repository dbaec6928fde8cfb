"""`stvr-data build-ucf`: parse arguments, delegate to `stvr_data.ucf24.prepare_ucf`."""

from __future__ import annotations

from pathlib import Path

import click

from stvr_data.build_report import summary
from stvr_data.cli.build import build_options, common_build_options, setup_logging


@click.command("build-ucf")
@click.option("--annotations", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="pyannot.pkl (corrected UCF101-24 annotations), pyannot_with_class_names.pkl "
                   "or the ACT/MOC UCF101v2-GT.pkl.")
@click.option("--videos", default=None,
              help="Extracted UCF-101 folder or http(s) base URL holding <Class>/v_<Class>_gXX_cYY.avi "
                   "(UCF101.rar itself is RAR and must be extracted first). Needed unless --skip-media.")
@common_build_options
@click.option("--split-list", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="testlist01.txt: the test videos; val/test-class tubes come from them, "
                   "training-class tubes from the others.")
@click.option("--class-split", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help='JSON {"train": [...], "val": [...], "test": [...]} of class names, instead of '
                   "the seeded 14/5/5 split.")
@click.option("--all-videos", is_flag=True,
              help="Use every tube of a class whatever its video's subset (ignore the video split).")
def build_ucf(annotations, videos, out, seed, workers, skip_media, resolution, force, youtube_fallback,
              shard, merge, verbose, split_list, class_split, all_videos):
    """Build the STVR benchmark from UCF101-24 (paper §5, 14/5/5 classes).

    Every annotated tube becomes a tubelet labelled with its class, resampled to one
    keyframe per 24-fps 8-frame clip; classes are split into disjoint train/val/test
    sets, val/test pairs and their per-clip ground truth are fixed, each video is
    resampled to a 24-fps clip file, and Parquet manifests, dataset.json and
    samples_per_label.png are written into OUT.
    """
    from stvr_data.ucf24 import check_videos_source, prepare_ucf

    setup_logging(verbose)
    if videos is None and not skip_media:
        raise click.UsageError("--videos is required unless --skip-media")
    if youtube_fallback:
        raise click.UsageError("--youtube-fallback does not apply: UCF101 videos are not YouTube ids")
    check_videos_source(videos)
    card = prepare_ucf(annotations, videos, out,
                       options=build_options(seed, workers, skip_media, resolution, force, youtube_fallback,
                                             shard, merge),
                       split_list=split_list, class_split=class_split, use_video_split=not all_videos)
    click.echo(summary(card))
    if shard is None:
        click.echo(f"wrote {out}")


def write_ucf_sample(out: Path, *, seed: int, force: bool, videos: bool, workers: int) -> None:
    """`make-sample --layout ucf24`: delegate to `stvr_data.sample_ucf` and report."""
    from stvr_data.sample_ucf import make_ucf_sample

    s = make_ucf_sample(out, seed=seed, force=force, videos=videos, workers=workers)
    click.echo(f"UCF101-24-layout sample written to {s['out']} (seed {s['seed']})\n"
               f"  {s['videos']} videos ({s['test_videos']} in testlist01.txt), {s['tubes']} tubes, "
               f"{s['classes']} classes; {s['frames']} frames encoded; {s['files']} files, "
               f"{s['bytes'] / 1e6:.1f} MB\n"
               f"  build it with: stvr-data build-ucf --annotations {out}/pyannot.pkl "
               f"--videos {out}/videos --split-list {out}/testlist01.txt "
               f"--class-split {out}/class_split.json --out BENCH")
