"""`make-sample --layout ucf24`: a small synthetic dataset in the UCF101-24 release layout.

What it writes into ``out`` (the formats `ucf24` reads, see its docstring):

    videos/<Class>/v_<Class>_gXX_cYY.avi   320x240, 25 fps, MPEG-4 part 2 in AVI
    pyannot.pkl                            the corrected-annotations dict, real dtypes
    testlist01.txt                         the test videos, ``Class/v_Class_gXX_cYY.avi``
    class_split.json                       train / val / test classes for ``--class-split``

Scenes and their drawing are the AVA sample's (`scene.py`, `render.py`,
`synthetic_video.py`); only the layout differs. Each sample class shows one fixed
synthetic action set, one value on each cue axis of the AVA sample (``SAMPLE_CLASSES``,
e.g. "Diving" = texture drifting down, red badge in the first second, steady lamp), and
the val and test classes are new combinations of the values the train classes show. A
video has a background lead-in, one to `max_actors` lookalike actors doing its class's
action for a few seconds (one tube each, all over the same frames), and a background
tail. Groups ``g01 .. g<test_groups>`` are test videos, as
UCF101's split 1 puts whole groups in the test list.

The boxes are the drawn sprites' pixel extents written as 1-based ``[x, y, w, h]``, in
uint8 when every value fits and uint16 otherwise, like the published file, so the
sample carries the same ``x + w`` overflow trap.
"""

from __future__ import annotations

import json
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stvr_data import atomic
from stvr_data.render import pixel_box
from stvr_data.sample import VIDEOS_DIR, sample_output
from stvr_data.scene import (
    Scene,
    SceneConfig,
    SceneConfigError,
    Segment,
    box_at,
    random_actor,
    random_hop,
    random_look,
)
from stvr_data.synthetic_video import encode_scene
from stvr_data.ucf24 import CLASSES, FRAME_SIZE, SOURCE_FPS

# Sample class -> the synthetic action ids (`synthetic_actions.ACTIONS`) its actors show: a texture
# drift (12, 5, 6), a badge colour (17, 59) and a lamp rhythm (80, 69, 79) each.
SAMPLE_CLASSES: dict[str, tuple[int, ...]] = {
    "Biking": (12, 17, 80), "GolfSwing": (5, 59, 69), "Basketball": (6, 17, 79), "Fencing": (12, 59, 79),
    "Diving": (5, 17, 80), "RopeClimbing": (12, 17, 69), "Skiing": (6, 59, 69), "Surfing": (6, 59, 80),
}
SAMPLE_SPLIT = {"train": ("Basketball", "Biking", "Fencing", "GolfSwing"),
                "val": ("Diving", "Skiing"), "test": ("RopeClimbing", "Surfing")}


@dataclass(frozen=True)
class UcfSampleConfig:
    """Size of the UCF-layout sample; seconds are whole seconds of the 25-fps videos."""

    classes: tuple[str, ...] = tuple(SAMPLE_CLASSES)
    groups: int = 4  # groups per class, one clip each
    test_groups: int = 2  # groups g01..gNN are test videos
    max_actors: int = 2
    action_seconds: tuple[int, int] = (3, 5)
    background_seconds: tuple[int, int] = (0, 2)  # lead-in and tail, each

    def __post_init__(self) -> None:
        checks = {
            # every split needs a class, or class_split.json could not be read back
            "classes": set(self.classes) <= set(SAMPLE_CLASSES)
            and all(set(self.classes) & set(members) for members in SAMPLE_SPLIT.values()),
            # two test groups give every val/test class two tubes to pair
            "test_groups": 2 <= self.test_groups < self.groups,
            "max_actors": self.max_actors >= 1,
            "action_seconds": 1 <= self.action_seconds[0] <= self.action_seconds[1],
            "background_seconds": 0 <= self.background_seconds[0] <= self.background_seconds[1],
        }
        for name, ok in checks.items():
            if not ok:
                raise SceneConfigError(f"UcfSampleConfig.{name}: invalid value {getattr(self, name)!r}")


def sample_video_ids(config: UcfSampleConfig) -> list[str]:
    """``Class/v_Class_gXX_c01`` of every sample video, in class then group order."""
    return [f"{cls}/v_{cls}_g{group:02d}_c01" for cls in config.classes
            for group in range(1, config.groups + 1)]


def ucf_scene(rng: np.random.Generator, video_id: str, actions: tuple[int, ...],
              config: UcfSampleConfig) -> tuple[Scene, int]:
    """A scene whose actors all hold `actions` throughout; returns it and its tail (s)."""
    lead, tail = (int(rng.integers(config.background_seconds[0], config.background_seconds[1] + 1))
                  for _ in range(2))
    seconds = int(rng.integers(config.action_seconds[0], config.action_seconds[1] + 1))
    width, height = FRAME_SIZE
    scene_config = SceneConfig(width=width, height=height, actors=int(rng.integers(1, config.max_actors + 1)),
                               seconds=seconds)
    look = random_look(rng, scene_config)
    actors = tuple(random_actor(rng, pid, scene_config, look, pid,
                                (Segment(0, seconds, tuple(sorted(actions)), random_hop(rng, scene_config)),))
                   for pid in range(scene_config.actors))
    scene = Scene(video_id=video_id, width=width, height=height, onset=lead, seconds=seconds,
                  actors=actors, background_seed=int(rng.integers(2**31)))
    return scene, tail


def scene_tubes(scene: Scene, label: int, *, fps: int = SOURCE_FPS) -> list[dict]:
    """One pyannot tube per actor: frames ``[sf, ef)`` of its presence, 1-based pixel
    ``[x, y, w, h]`` of its drawn sprite per frame, in the smallest published dtype."""
    sf, ef = scene.onset * fps, (scene.onset + scene.seconds) * fps
    tubes = []
    for actor in scene.actors:
        rows = []
        for frame in range(sf, ef):
            x1, y1, x2, y2 = pixel_box(box_at(actor, frame / fps - scene.onset), scene.width, scene.height)
            rows.append((x1 + 1, y1 + 1, x2 - x1, y2 - y1))
        boxes = np.array(rows, dtype=np.int64)
        dtype = np.uint8 if boxes.max() <= np.iinfo(np.uint8).max else np.uint16
        tubes.append({"label": label, "sf": sf, "ef": ef, "boxes": boxes.astype(dtype)})
    return tubes


def sample_scenes(seed: int, config: UcfSampleConfig) -> list[tuple[str, Scene, int]]:
    """``(video_id, scene, tail seconds)`` of every sample video; pure, seeded."""
    rng = np.random.default_rng(seed)
    return [(video_id, *ucf_scene(rng, video_id, SAMPLE_CLASSES[video_id.split("/")[0]], config))
            for video_id in sample_video_ids(config)]


def sample_annotations(scenes, config: UcfSampleConfig) -> tuple[dict, list[str]]:
    """The ``pyannot.pkl`` dict of `scenes` and the test video ids."""
    db, test = {}, []
    for video_id, scene, tail in scenes:
        label = CLASSES.index(video_id.split("/")[0])
        numf = (scene.onset + scene.seconds + tail) * SOURCE_FPS
        db[video_id] = {"numf": (np.uint8 if numf <= 255 else np.uint16)(numf), "label": label,
                        "annotations": scene_tubes(scene, label)}
        if int(video_id.rsplit("_g", 1)[1][:2]) <= config.test_groups:
            test.append(video_id)
    return db, test


def make_ucf_sample(out: str | os.PathLike, *, seed: int = 0, config: UcfSampleConfig = UcfSampleConfig(),
                    force: bool = False, videos: bool = True, workers: int = 1) -> dict:
    """Write the UCF-layout sample into `out`; returns a summary for the CLI.

    Same contract as the AVA sample's `make_sample`: refuses a non-empty `out` unless
    `force` (then the earlier sample's recorded files are removed, nothing else);
    `videos=False` writes the annotation files only; `workers` > 1 encodes in that many
    processes. Deterministic for a seed.
    """
    out = Path(out)
    scenes = sample_scenes(seed, config)
    db, test = sample_annotations(scenes, config)
    files = ["pyannot.pkl", "testlist01.txt", "class_split.json"]
    files += [f"{VIDEOS_DIR}/{video_id}.avi" for video_id, _, _ in scenes] if videos else []
    with sample_output(out, force, files):
        atomic.write_bytes(out / "pyannot.pkl", pickle.dumps(db, protocol=2))
        atomic.write_bytes(out / "testlist01.txt", "".join(f"{v}.avi\n" for v in test).encode())
        split = {name: [c for c in members if c in config.classes] for name, members in SAMPLE_SPLIT.items()}
        atomic.write_bytes(out / "class_split.json", (json.dumps(split, indent=2) + "\n").encode())
        frames = _encode_all(out / VIDEOS_DIR, scenes, workers) if videos else 0
    files = [p for p in out.rglob("*") if p.is_file()]
    return {"out": str(out), "seed": seed, "layout": "ucf24", "videos": len(db), "test_videos": len(test),
            "tubes": sum(len(e["annotations"]) for e in db.values()), "classes": len(config.classes),
            "frames": frames, "files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def _encode_all(folder: Path, scenes, workers: int) -> int:
    jobs = [(folder / f"{video_id}.avi", scene, tail) for video_id, scene, tail in scenes]
    for path, _, _ in jobs:
        path.parent.mkdir(parents=True, exist_ok=True)
    if workers <= 1 or len(jobs) <= 1:
        return sum(_encode_one(job) for job in jobs)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(_encode_one, jobs))


def _encode_one(job: tuple) -> int:
    path, scene, tail = job
    # Background from 0 s at full rate: lead-in = onset, no sparse prefix (UCF clips are short).
    return encode_scene(path, scene, SOURCE_FPS, lead=scene.onset, tail=tail, prefix_step=0)


