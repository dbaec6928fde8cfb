"""`stvr-data make-sample`: a small synthetic dataset in the exact AVA v2.2 release layout.

Every demo and test of the project runs on it, and the synthetic Table-1 experiment
(`benchmarks/table1`) scales it up. What it writes under ``DIR``, file for file as AVA publishes it:

    annotations/ava_train_v2.2.csv                  no header; video_id, keyframe second
    annotations/ava_val_v2.2.csv                    (written 0902), x1, y1, x2, y2 (3
                                                    decimals), action_id, person_id; one
                                                    row per box *and* action
    annotations/ava_action_list_v2.2.pbtxt          label { name label_id label_type }
    annotations/ava_{train,val}_excluded_timestamps_v2.2.csv   video_id,second
    annotations/ava_file_names_trainval_v2.1.txt    one file name per line
    videos/<video_id>.{mp4,mkv,webm}                H.264 / VP8, 30 fps (the .webm 25)

As in AVA, keyframes are 902, 903, ... of the 900-1800 s segment, every actor on screen
is annotated at every keyframe except the excluded ones (whose rows are left out), and
video ids look like YouTube ids (one starts with '-', as several of AVA's do). The
actors exist only during the annotated seconds ``[902, 902 + seconds)``: before and
after, the video shows the empty backdrop, so the background padding around a
reference (up to 10 s each side) never shows an unannotated action. Each file's
timeline runs from 0 s to ``tail_seconds`` past the last annotated second (see
`synthetic_video.py` for how that stays small).

What the videos show (`scene.py` has the details, `render.py` the drawing): in each
video three lookalike actors (one look per video) with pairwise different combined
labels at every second; every label is one value on each of three cue axes (body
texture drift, head-lamp blinking, a chest badge whose colour shows only in a segment's
first second), so held-out labels are new combinations of values seen in training;
and the actors step `SceneConfig.motion` feature cells between consecutive clips while
the one-per-second keyframe box, centred between their two steps, overlaps them by
IoU > 0.5 in all three clips it labels.

The content is seeded: the same seed and config give byte-identical annotation files
and identical decoded frames.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stvr_data import atomic
from stvr_data.errors import StvrDataError
from stvr_data.lock import LOCK_FILE, OutputLock
from stvr_data.outdir import within
from stvr_data.scene import (
    Scene,
    SceneConfig,
    SceneConfigError,
    actions_at,
    keyframe_box,
    make_scene,
    worst_keyframe_iou,
)
from stvr_data.synthetic_actions import ACTIONS, Action, combined_label
from stvr_data.synthetic_video import encode_scene

AVA_ONSET = 902  # first AVA keyframe: the 1.5 s around a keyframe lie inside 900-1800 s
VERSION = "2.2"
SUBSETS = ("train", "val")
ANNOTATIONS_DIR = "annotations"
VIDEOS_DIR = "videos"
FILE_NAMES = "ava_file_names_trainval_v2.1.txt"
ACTION_LIST = f"ava_action_list_v{VERSION}.pbtxt"
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm")
RECORD_FILE = ".stvr-sample.json"  # the files a sample writes: all that --force may remove
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def boxes_file(subset: str) -> str:
    """Name of a subset's box CSV, e.g. ``ava_val_v2.2.csv``."""
    return f"ava_{subset}_v{VERSION}.csv"


def excluded_file(subset: str) -> str:
    """Name of a subset's excluded-keyframes CSV."""
    return f"ava_{subset}_excluded_timestamps_v{VERSION}.csv"


class OutputExistsError(StvrDataError):
    """The output directory already holds files and overwriting was not asked for."""


@dataclass(frozen=True)
class SampleConfig:
    """Size and make-up of the synthetic AVA sample; `scene` sets the content.

    `containers` is cycled over the videos (train first, then val); `webm_fps` is the
    frame rate of .webm files (AVA mixes rates; everything else uses `fps`).
    `excluded_per_video` keyframes per video are listed as excluded and get no rows.
    `tail_seconds` of empty backdrop follow the last annotated second (references are
    padded by up to 10 s); `lead_seconds` of it at full rate precede the onset.
    """

    train_videos: int = 4
    val_videos: int = 3
    scene: SceneConfig = SceneConfig()
    fps: int = 30
    webm_fps: int = 25
    containers: tuple[str, ...] = (".mp4", ".mkv", ".mp4", ".webm", ".mp4", ".mp4")
    excluded_per_video: int = 1
    lead_seconds: int = 4
    tail_seconds: int = 12
    prefix_step: int = 8

    def __post_init__(self) -> None:
        checks = {
            "train_videos": self.train_videos >= 0,
            "val_videos": self.val_videos >= 0,
            "fps": 1 <= self.fps <= 120,
            "webm_fps": 1 <= self.webm_fps <= 120,
            "containers": len(self.containers) > 0 and set(self.containers) <= set(VIDEO_SUFFIXES),
            "excluded_per_video": 0 <= self.excluded_per_video <= max(0, self.scene.seconds - 2),
            "lead_seconds": 0 <= self.lead_seconds <= AVA_ONSET - 2,
            "tail_seconds": self.tail_seconds >= 1,
            "prefix_step": self.prefix_step >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise SceneConfigError(f"SampleConfig.{name}: invalid value {getattr(self, name)!r}")


@dataclass(frozen=True)
class SampleVideo:
    """One planned video: its subset, file, frame rate, content and excluded seconds."""

    subset: str
    file_name: str
    fps: int
    scene: Scene
    excluded: tuple[int, ...]


def youtube_like_id(rng: np.random.Generator, *, leading_dash: bool = False) -> str:
    """An 11-character id from YouTube's alphabet ``[A-Za-z0-9_-]``."""
    chars = [_ID_ALPHABET[i] for i in rng.integers(0, len(_ID_ALPHABET), 11)]
    if leading_dash:
        chars[0] = "-"
    return "".join(chars)


def plan_sample(seed: int, config: SampleConfig) -> list[SampleVideo]:
    """Every video of the sample, train first; pure and deterministic in `seed`.

    The ``i``-th video of a subset draws from its own stream ``default_rng([seed,
    subset, i])``: more videos of one subset leave the others' content unchanged
    (only the container cycle follows the overall order), and `SceneConfig.motion`
    changes only where the actors stand and how far they step.
    """
    order = [("train", i) for i in range(config.train_videos)] + [("val", i) for i in range(config.val_videos)]
    videos, seen = [], set()
    for index, (subset, number) in enumerate(order):
        rng = np.random.default_rng([seed, SUBSETS.index(subset), number])
        video_id = youtube_like_id(rng, leading_dash=index == 0)
        while video_id in seen:
            video_id = youtube_like_id(rng)
        seen.add(video_id)
        scene = make_scene(rng, video_id, config.scene, AVA_ONSET)
        inner = np.arange(AVA_ONSET + 1, AVA_ONSET + config.scene.seconds - 1)
        excluded = sorted(int(s) for s in rng.choice(inner, config.excluded_per_video, replace=False))
        suffix = config.containers[index % len(config.containers)]
        fps = config.webm_fps if suffix == ".webm" else config.fps
        videos.append(SampleVideo(subset, video_id + suffix, fps, scene, tuple(excluded)))
    return videos


def box_rows(video: SampleVideo) -> list[tuple]:
    """AVA rows ``(video_id, second, x1, y1, x2, y2, action_id, person_id)`` of one
    video, sorted by second, person and action; excluded seconds have none."""
    scene, rows = video.scene, []
    for second in scene.keyframes:
        if second in video.excluded:
            continue
        elapsed = second - scene.onset
        for actor in scene.actors:
            box = tuple(min(max(c, 0.0), 1.0) for c in keyframe_box(actor, elapsed))
            for action in actions_at(actor, elapsed):
                rows.append((scene.video_id, second, *box, action, actor.person_id))
    return rows


def format_box_row(row: tuple) -> str:
    """One CSV line as AVA writes it: ``-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,80,1``."""
    video_id, second, x1, y1, x2, y2, action, person = row
    return f"{video_id},{second:04d},{x1:.3f},{y1:.3f},{x2:.3f},{y2:.3f},{action},{person}"


def boxes_csv(videos: list[SampleVideo]) -> str:
    """The box CSV of some videos, ordered by video id as AVA's files are."""
    lines = []
    for video in sorted(videos, key=lambda v: v.scene.video_id):
        lines.extend(format_box_row(row) for row in box_rows(video))
    return "".join(line + "\n" for line in lines)


def excluded_csv(videos: list[SampleVideo]) -> str:
    """``video_id,second`` lines of the excluded keyframes."""
    lines = [f"{v.scene.video_id},{s:04d}" for v in sorted(videos, key=lambda v: v.scene.video_id)
             for s in v.excluded]
    return "".join(line + "\n" for line in lines)


def action_list_pbtxt(actions: tuple[Action, ...] = ACTIONS) -> str:
    """The label map in AVA v2.2's ``label { name label_id label_type }`` style."""
    blocks = [f'label {{\n  name: "{a.name}"\n  label_id: {a.action_id}\n  label_type: {a.label_type}\n}}\n'
              for a in sorted(actions, key=lambda a: a.action_id)]
    return "".join(blocks)


def annotation_files(videos: list[SampleVideo]) -> dict[str, str]:
    """File name -> text of every file under ``annotations/``."""
    files = {ACTION_LIST: action_list_pbtxt(),
             FILE_NAMES: "".join(f"{n}\n" for n in sorted(v.file_name for v in videos))}
    for subset in SUBSETS:
        chosen = [v for v in videos if v.subset == subset]
        files[boxes_file(subset)] = boxes_csv(chosen)
        files[excluded_file(subset)] = excluded_csv(chosen)
    return files


def make_sample(out, *, seed: int = 0, config: SampleConfig = SampleConfig(), force: bool = False,
                videos: bool = True, workers: int = 1) -> dict:
    """Write the synthetic AVA sample under `out`; returns a summary (see `summarize`).

    Refuses a non-empty `out` unless `force`; then the files the earlier sample recorded
    (`RECORD_FILE`) are removed and nothing else is touched. `videos=False` writes
    the annotations only (fast, for annotation tests); the file list still names the
    videos. `workers` > 1 encodes videos in that many processes; the files are the same.
    """
    out = Path(out)
    planned = plan_sample(seed, config)
    texts = annotation_files(planned)
    files = [f"{ANNOTATIONS_DIR}/{name}" for name in texts]
    files += [f"{VIDEOS_DIR}/{v.file_name}" for v in planned] if videos else []
    with sample_output(out, force, files):
        annotations = out / ANNOTATIONS_DIR
        annotations.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            atomic.write_text(annotations / name, text)
        frames = _encode_all(out / VIDEOS_DIR, planned, config, workers) if videos else 0
    return summarize(out, seed, planned, frames, config)


@contextmanager
def sample_output(out: Path, force: bool, files: list[str]):
    """Hold `out` (locked, created) for writing a sample of `files` (relative paths).

    Refuses a non-empty `out` unless `force`; then removes the files the earlier sample
    recorded, and only those. The new list is recorded before any file is written, so
    that a later `force` also clears what an interrupted run left.
    """
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a directory")
    with OutputLock(out, "make-sample"):
        if any(p.name != LOCK_FILE for p in out.iterdir()):
            if not force:
                raise OutputExistsError(f"{out}: directory is not empty (use --force to replace "
                                        "an earlier sample there; other files are kept)")
            remove_recorded(out)
        atomic.write_text(out / RECORD_FILE, json.dumps({"files": sorted(files)}, indent=1) + "\n")
        yield


def remove_recorded(out: Path) -> list[str]:
    """Delete the files `out`'s sample record lists (and their partial copies); returns them."""
    record = out / RECORD_FILE
    if not record.is_file():
        return []
    try:
        files = json.loads(record.read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise OutputExistsError(f"{record}: not a sample record; remove it to go on") from None
    for relative in files:
        path = within(out, relative)
        for victim in (path, atomic.atomic_path(path)):
            victim.unlink(missing_ok=True)
    record.unlink()
    return files


def _encode_all(folder: Path, planned: list[SampleVideo], config: SampleConfig, workers: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder / v.file_name, v.scene, v.fps, config) for v in planned]
    if workers <= 1 or len(jobs) <= 1:
        return sum(_encode_one(job) for job in jobs)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(_encode_one, jobs))


def _encode_one(job: tuple) -> int:
    path, scene, fps, config = job
    return encode_scene(path, scene, fps, lead=config.lead_seconds, tail=config.tail_seconds,
                        prefix_step=config.prefix_step)


def motion_summary(scene: SceneConfig) -> dict:
    """The motion setting and what it guarantees: cells per clip at which benchmark
    resolution, and the lowest overlap of a keyframe box with its drawn actor."""
    return {"cells_per_clip": scene.motion, "leap_cells": scene.leap,
            "feature_resolution": scene.feature_resolution,
            "worst_keyframe_iou": round(worst_keyframe_iou(scene), 3)}


def summarize(out: Path, seed: int, planned: list[SampleVideo], frames: int, config: SampleConfig) -> dict:
    """Counts for the CLI and for callers: videos, rows, labels, files and bytes."""
    summary = {"out": str(out), "seed": seed, "frames": frames,
               "containers": dict(sorted(Counter(Path(v.file_name).suffix for v in planned).items())),
               "actions": len(ACTIONS), "motion": motion_summary(config.scene)}
    for subset in SUBSETS:
        chosen = [v for v in planned if v.subset == subset]
        rows = [row for v in chosen for row in box_rows(v)]
        summary[subset] = {
            "videos": len(chosen),
            "rows": len(rows),
            "boxes": len({(r[0], r[1], r[7]) for r in rows}),
            "excluded": sum(len(v.excluded) for v in chosen),
            "combined_labels": len(_combined_labels(chosen)),
        }
    files = [p for p in out.rglob("*") if p.is_file()]
    summary["files"] = len(files)
    summary["bytes"] = sum(p.stat().st_size for p in files)
    return summary


def _combined_labels(videos: list[SampleVideo]) -> set[str]:
    return {combined_label(segment.actions) for v in videos for a in v.scene.actors
            for segment in a.segments}

