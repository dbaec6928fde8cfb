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
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0), help="Same seed and options, same files.")
@click.option("--train-videos", default=_DEFAULT.train_videos, show_default=True, type=click.IntRange(0))
@click.option("--val-videos", default=_DEFAULT.val_videos, show_default=True, type=click.IntRange(0))
@click.option("--actors", default=_DEFAULT.scene.actors, show_default=True, type=click.IntRange(1),
              help="Actors per video.")
@click.option("--seconds", default=_DEFAULT.scene.seconds, show_default=True, type=click.IntRange(3, 896),
              help="Annotated keyframe seconds per video, from 902 s.")
@click.option("--motion", default=_DEFAULT.scene.motion, show_default=True, type=click.FloatRange(0.0),
              help="How far an actor steps between consecutive 8-frame clips (1/3 s), in feature cells "
                   "(16 px) of the benchmark built at --feature-resolution: m cells = m*16/R of the frame "
                   "width or height per clip. Actors step back and forth so that the one-per-second "
                   "keyframe box overlaps them by IoU > 0.5. 0: static actors.")
@click.option("--leap", default=_DEFAULT.scene.leap, show_default=True, type=click.FloatRange(0.0),
              help="How far an actor jumps sideways at every second boundary, in feature cells at "
                   "--feature-resolution; it holds its place within each second, so every keyframe box "
                   "follows it exactly. A leap wider than the actors (about 2 cells at 160 px) needs "
                   "a memory that moves with them. 0: no leaps.")
@click.option("--feature-resolution", default=_DEFAULT.scene.feature_resolution, show_default=True,
              type=click.IntRange(16), metavar="R",
              help="Side in pixels of the square benchmark frame that --motion refers to "
                   "(build-ava --resolution RxR).")
@click.option("--max-tilt", default=_DEFAULT.scene.max_tilt, show_default=True,
              type=click.FloatRange(0.0, 90.0),
              help="Largest angle of a step from vertical, in degrees (lower allows more --motion).")
@click.option("--actions", default="", callback=lambda ctx, param, value: _ids(value),
              help="Comma-separated action ids to use, e.g. 5,6,69,79,80 (temporal ones only); default all.")
@click.option("--no-videos", is_flag=True, help="Write the annotation files only (the file list still names the videos).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Videos encoded in parallel (the files do not depend on it).")
@click.option("--force", is_flag=True,
              help="Write into a non-empty directory, removing only the files of an earlier sample there.")
@click.option("--layout", type=click.Choice(["ava", "ucf24"]), default="ava", show_default=True,
              help="Release layout. ucf24: <Class>/v_*.avi at 25 fps, pyannot.pkl, testlist01.txt, "
                   "class_split.json (only --seed, --no-videos, --workers, --force apply).")
def make_sample_command(out: Path, seed: int, train_videos: int, val_videos: int, actors: int,
                        seconds: int, motion: float, leap: float, feature_resolution: int, max_tilt: float,
                        actions: tuple[int, ...], no_videos: bool, workers: int, force: bool,
                        layout: str) -> None:
    """Write a small synthetic dataset in the exact AVA v2.2 release layout.

    \b
    OUT/annotations/  ava_{train,val}_v2.2.csv, ava_action_list_v2.2.pbtxt,
                      ava_{train,val}_excluded_timestamps_v2.2.csv,
                      ava_file_names_trainval_v2.1.txt
    OUT/videos/       <youtube-like id>.mp4 / .mkv / .webm (H.264 / VP8)

    In each video, lookalike actors (one look per video) act during keyframes
    902..902+SECONDS-1, with pairwise different combined labels at every second that
    change every 2-4 s. A label is one AVA-named action on each of three cue axes:
    texture (12 stand: still, 5 fall down / 6 get up: drifting down / up), head lamp
    (80 watch: steady, 69 hand wave: 1 Hz, 79 talk to: 3 Hz blinking) and chest badge
    (17 carry/hold: red, 59 touch: blue, shown in a segment's first second only), so
    held-out labels combine cues seen in training. Build the benchmark from it with
    `stvr-data build-ava --annotations OUT/annotations --videos OUT/videos ...`.
    """
    if layout == "ucf24":
        from stvr_data.cli.ucf import write_ucf_sample

        return write_ucf_sample(out, seed=seed, force=force, videos=not no_videos, workers=workers)
    scene = dataclasses.replace(_DEFAULT.scene, actors=actors, seconds=seconds, motion=motion, leap=leap,
                                feature_resolution=feature_resolution, max_tilt=max_tilt, actions=actions)
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
    motion = summary["motion"]
    leaps = f", leap {motion['leap_cells']:g} cells sideways each second" if motion["leap_cells"] else ""
    lines.append(f"  actors step {motion['cells_per_clip']:g} feature cells per clip{leaps} at "
                 f"{motion['feature_resolution']} px; keyframe boxes overlap them by IoU >= "
                 f"{motion['worst_keyframe_iou']:.2f}")
    lines.append(f"  {summary['actions']} actions; {summary['files']} files, "
                 f"{summary['bytes'] / 1e6:.1f} MB")
    return "\n".join(lines)
