"""`stvr-data make-sample`: parse arguments, delegate to `stvr_data.sample.make_sample`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from stvr_data.sample import SampleConfig, make_sample

_DEFAULT = SampleConfig()


@click.command("make-sample")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory to write (annotations/ and videos/ are created in it).")
@click.option("--seed", default=0, show_default=True, help="Same seed and options, same files.")
@click.option("--train-videos", default=_DEFAULT.train_videos, show_default=True, type=click.IntRange(0))
@click.option("--val-videos", default=_DEFAULT.val_videos, show_default=True, type=click.IntRange(0))
@click.option("--actors", default=_DEFAULT.scene.actors, show_default=True, type=click.IntRange(1),
              help="Actors per video.")
@click.option("--seconds", default=_DEFAULT.scene.seconds, show_default=True, type=click.IntRange(3, 896),
              help="Annotated keyframe seconds per video, from 902 s.")
@click.option("--speed", default=_DEFAULT.scene.speed, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Actor speed in frame widths per second.")
@click.option("--actions", default="", callback=lambda ctx, param, value: _ids(value),
              help="Comma-separated action ids to use, e.g. 5,6,69,79,80 (temporal ones only); default all.")
@click.option("--static", is_flag=True, help="Actors do not move (same actions and looks as with motion).")
@click.option("--no-videos", is_flag=True, help="Write the annotation files only (the file list still names the videos).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Videos encoded in parallel (the files do not depend on it).")
@click.option("--force", is_flag=True,
              help="Write into a non-empty directory, removing only the files of an earlier sample there.")
@click.option("--layout", type=click.Choice(["ava", "ucf24"]), default="ava", show_default=True,
              help="Release layout. ucf24: <Class>/v_*.avi at 25 fps, pyannot.pkl, testlist01.txt, "
                   "class_split.json (only --seed, --no-videos, --workers, --force apply).")
def make_sample_command(out: Path, seed: int, train_videos: int, val_videos: int, actors: int,
                        seconds: int, speed: float, actions: tuple[int, ...], static: bool,
                        no_videos: bool, workers: int, force: bool, layout: str) -> None:
    """Write a small synthetic dataset in the exact AVA v2.2 release layout.

    \b
    OUT/annotations/  ava_{train,val}_v2.2.csv, ava_action_list_v2.2.pbtxt,
                      ava_{train,val}_excluded_timestamps_v2.2.csv,
                      ava_file_names_trainval_v2.1.txt
    OUT/videos/       <youtube-like id>.mp4 / .mkv / .webm (H.264 / VP8)

    Textured actors move over a textured backdrop during keyframes 902..902+SECONDS-1
    and do AVA-named atomic actions that change every few seconds, one or two at a
    time. Some actions can only be told apart over more than one 8-frame clip
    (5 fall down / 6 get up: texture drifting down / up; 69 hand wave: blinking
    badge; 79 talk to: pulsing disc; 80 watch: colour-cycling badge); the others
    are appearance-only (12 stand, 11 sit: darker lower half, 17 carry/hold: badge).
    Build the benchmark from it with
    `stvr-data build-ava --annotations OUT/annotations --videos OUT/videos ...`.
    """
    if layout == "ucf24":
        from stvr_data.cli.ucf import write_ucf_sample

        return write_ucf_sample(out, seed=seed, force=force, videos=not no_videos, workers=workers)
    scene = dataclasses.replace(_DEFAULT.scene, actors=actors, seconds=seconds, speed=speed,
                                moving=not static, actions=actions)
    config = dataclasses.replace(_DEFAULT, train_videos=train_videos, val_videos=val_videos, scene=scene)
    summary = make_sample(out, seed=seed, config=config, force=force, videos=not no_videos,
                          workers=workers)
    click.echo(format_summary(summary))


def _ids(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a comma-separated list of action ids") from None


def format_summary(summary: dict) -> str:
    """A few lines for the terminal: what was written, and how big it is."""
    containers = ", ".join(f"{n} {suffix}" for suffix, n in summary["containers"].items())
    lines = [f"sample written to {summary['out']} (seed {summary['seed']})"]
    for subset in ("train", "val"):
        s = summary[subset]
        lines.append(f"  {subset:5s}: {s['videos']} videos, {s['rows']} rows, {s['boxes']} boxes, "
                     f"{s['combined_labels']} combined labels, {s['excluded']} excluded keyframes")
    if summary["frames"]:
        lines.append(f"  videos: {containers}; {summary['frames']} frames encoded")
    else:
        lines.append(f"  videos: not written ({containers} named in the file list)")
    lines.append(f"  {summary['actions']} actions; {summary['files']} files, "
                 f"{summary['bytes'] / 1e6:.1f} MB")
    return "\n".join(lines)
