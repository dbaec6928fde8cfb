"""`stvr-data make-sample`: the AVA release layout, the videos, and what they show."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from stvr_data import ava, media, splits
from stvr_data.cli.main import main
from stvr_data.render import pixel_box, render_background, render_frame
from stvr_data.sample import (
    AVA_ONSET,
    RECORD_FILE,
    OutputExistsError,
    SampleConfig,
    make_sample,
    plan_sample,
)
from stvr_data.scene import SceneConfig, SceneConfigError, actions_at, box_at, keyframe_box
from stvr_data.synthetic_actions import ACTIONS, AXES
from stvr_data.synthetic_video import timeline
from stvr_data.tubelets import link_tubelets

ID = r"[A-Za-z0-9_-]{11}"
ROW = re.compile(rf"^({ID}),(\d{{4}}),([01]\.\d{{3}}),([01]\.\d{{3}}),([01]\.\d{{3}}),([01]\.\d{{3}}),(\d+),(\d+)$")
PBTXT = re.compile(r'label \{\n  name: "([^"]+)"\n  label_id: (\d+)\n  label_type: ([A-Z_]+)\n\}\n')
LUMA = np.array([0.299, 0.587, 0.114])
ANNOTATION_FILES = {
    "ava_train_v2.2.csv", "ava_val_v2.2.csv", "ava_action_list_v2.2.pbtxt",
    "ava_train_excluded_timestamps_v2.2.csv", "ava_val_excluded_timestamps_v2.2.csv",
    "ava_file_names_trainval_v2.1.txt",
}
# Small enough to encode in about a second, with one video of each container.
SMALL = SampleConfig(train_videos=1, val_videos=2, scene=SceneConfig(seconds=5),
                     containers=(".mp4", ".mkv", ".webm"), lead_seconds=2, tail_seconds=11,
                     prefix_step=60)


@pytest.fixture(scope="module")
def default_annotations(tmp_path_factory) -> Path:
    """The default sample's annotation files (videos skipped: they do not change them)."""
    out = tmp_path_factory.mktemp("default")
    make_sample(out, seed=0, videos=False)
    return out / "annotations"


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small")
    make_sample(out, seed=7, config=SMALL)
    return out


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def frame_at(path: Path, t: float) -> tuple[float, np.ndarray]:
    """Seek like a media tool would and decode the first frame at or after `t` (s)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        # One decoding thread: frame-threaded decoding right after a seek can depend on
        # thread timing under load, and these tests compare decoded pixels exactly.
        stream.thread_type = "NONE"
        stream.thread_count = 1
        container.seek(int(t * 1_000_000))
        for frame in container.decode(stream):
            if frame.time >= t - 1e-6:
                return frame.time, frame.to_ndarray(format="rgb24")
    raise AssertionError(f"{path}: no frame at {t} s")


# ---------------------------------------------------------------- files and formats


def test_annotation_files_are_exactly_the_ava_release_set(default_annotations):
    assert {p.name for p in default_annotations.iterdir()} == ANNOTATION_FILES


def test_box_rows_have_the_ava_format(default_annotations):
    config = SampleConfig()
    action_ids = {a.action_id for a in ACTIONS}
    for subset in ("train", "val"):
        lines = (default_annotations / f"ava_{subset}_v2.2.csv").read_text().splitlines()
        assert len(lines) > 100
        for line in lines:
            match = ROW.match(line)
            assert match, line
            x1, y1, x2, y2 = (float(v) for v in match.group(3, 4, 5, 6))
            assert 0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0, line
            assert AVA_ONSET <= int(match.group(2)) < AVA_ONSET + config.scene.seconds, line
            assert int(match.group(7)) in action_ids, line


def test_every_actor_is_annotated_at_every_keyframe_but_excluded_ones(default_annotations):
    config = SampleConfig()
    excluded = {tuple(r) for r in read_rows(default_annotations / "ava_val_excluded_timestamps_v2.2.csv")}
    assert excluded and all(re.fullmatch(ID, v) and re.fullmatch(r"\d{4}", t) for v, t in excluded)
    people = defaultdict(set)
    for row in read_rows(default_annotations / "ava_val_v2.2.csv"):
        people[(row[0], row[1])].add(row[7])
    videos = {v for v, _ in people}
    assert len(videos) == config.val_videos
    for video in videos:
        for second in range(AVA_ONSET, AVA_ONSET + config.scene.seconds):
            key = (video, f"{second:04d}")
            expected = 0 if key in excluded else config.scene.actors
            assert len(people.get(key, ())) == expected, key


def test_each_box_has_one_action_per_axis_and_lookalikes_never_share_a_label(default_annotations):
    axis = {a.action_id: a.axis for a in ACTIONS}
    actions = defaultdict(list)
    boxes = defaultdict(set)
    for row in read_rows(default_annotations / "ava_train_v2.2.csv"):
        actions[(row[0], row[1], row[7])].append(int(row[6]))
        boxes[(row[0], row[1], row[7])].add(tuple(row[2:6]))
    for key, ids in actions.items():
        assert sorted(axis[i] for i in ids) == sorted(AXES), key
        assert len(boxes[key]) == 1, key  # one box repeated on each action's row
    # The actors of a video look alike (one look per video) but act differently.
    labels = defaultdict(list)
    for (video, second, _), ids in actions.items():
        labels[(video, second)].append(tuple(sorted(ids)))
    assert all(len(set(held)) == len(held) == SampleConfig().scene.actors for held in labels.values())
    for video in plan_sample(0, SampleConfig()):
        assert len({actor.look for actor in video.scene.actors}) == 1


def test_action_list_is_pbtxt_label_style(default_annotations):
    text = (default_annotations / "ava_action_list_v2.2.pbtxt").read_text()
    labels = PBTXT.findall(text)
    assert "".join(f'label {{\n  name: "{n}"\n  label_id: {i}\n  label_type: {t}\n}}\n'
                   for n, i, t in labels) == text
    assert sorted(int(i) for _, i, _ in labels) == sorted(a.action_id for a in ACTIONS)
    assert {t for _, _, t in labels} <= {"PERSON_MOVEMENT", "OBJECT_MANIPULATION", "PERSON_INTERACTION"}
    assert ("stand", "12") in {(n, i) for n, i, _ in labels}


def test_file_list_names_every_video_with_youtube_like_ids(default_annotations):
    names = (default_annotations / "ava_file_names_trainval_v2.1.txt").read_text().splitlines()
    csv_ids = {r[0] for s in ("train", "val") for r in read_rows(default_annotations / f"ava_{s}_v2.2.csv")}
    assert names == sorted(names)
    assert {n.rsplit(".", 1)[0] for n in names} == csv_ids
    assert all(re.fullmatch(rf"{ID}\.(mp4|mkv|webm)", n) for n in names)
    suffixes = Counter(n.rsplit(".", 1)[1] for n in names)
    assert suffixes["mkv"] >= 1 and suffixes["webm"] >= 1 and suffixes["mp4"] > suffixes["mkv"]
    assert any(n.startswith("-") for n in names)  # as AVA's -5KQ66BBWC4


def test_default_val_labels_are_enough_for_small_thresholds(default_annotations):
    """--min-tubelets 3 --num-val-labels 2 --num-test-labels 2 needs four combined labels
    with more than 3 tubelets in the val videos. Runs are counted straight from the CSV:
    one person, consecutive seconds, identical action set."""
    sets = defaultdict(set)
    for video, second, *_box, action, person in read_rows(default_annotations / "ava_val_v2.2.csv"):
        sets[(video, person, int(second))].add(int(action))
    runs = Counter()
    for (video, person, second), actions in sets.items():
        if sets.get((video, person, second - 1)) != actions:
            runs["+".join(str(a) for a in sorted(actions))] += 1
    frequent = [label for label, n in runs.items() if n > 3]
    assert len(frequent) >= 4, runs


@pytest.mark.parametrize("seed", range(5))
def test_heldout_labels_are_new_combinations_of_actions_seen_in_training(default_annotations, seed):
    """The demo's split (--min-tubelets 3 --num-val-labels 2 --num-test-labels 2), with
    the build seed varied: every action of a val/test label occurs in a training label."""
    release = ava.load_annotations(default_annotations)
    train, val = link_tubelets(release.train), link_tubelets(release.val)
    val_labels, test_labels = splits.choose_heldout_labels(val, min_tubelets=3, num_val=2, num_test=2,
                                                           seed=seed)
    table = splits.assign_splits(train, val, val_labels, test_labels)
    labels = {split: set(table.label[table.split == split]) for split in splits.SPLITS}
    assert labels["val"] and labels["test"] and len(labels["train"]) >= 10
    seen = {action for label in labels["train"] for action in label.split("+")}
    for label in labels["val"] | labels["test"]:
        assert label not in labels["train"] and set(label.split("+")) <= seen, (label, sorted(seen))
    assert Counter(table.split)["train"] >= 50


# ---------------------------------------------------------------- videos


def test_file_list_matches_the_video_files(small):
    names = (small / "annotations" / "ava_file_names_trainval_v2.1.txt").read_text().splitlines()
    assert sorted(p.name for p in (small / "videos").iterdir()) == names
    assert sorted(n.rsplit(".", 1)[1] for n in names) == ["mkv", "mp4", "webm"]


@pytest.mark.parametrize("suffix, codec, fps", [(".mp4", "h264", 30), (".mkv", "h264", 30), (".webm", "vp8", 25)])
def test_videos_decode_with_the_full_timeline(small, suffix, codec, fps):
    path = next((small / "videos").glob(f"*{suffix}"))
    end = AVA_ONSET + SMALL.scene.seconds + SMALL.tail_seconds
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == codec
        assert (stream.width, stream.height) == (SMALL.scene.width, SMALL.scene.height)
        assert stream.guessed_rate == fps
        assert container.duration / 1e6 == pytest.approx(end, abs=0.1)
    for second in (840, 900, AVA_ONSET, AVA_ONSET + SMALL.scene.seconds + 10):
        t, image = frame_at(path, second)
        assert t == pytest.approx(second, abs=1e-3)
        assert image.shape == (SMALL.scene.height, SMALL.scene.width, 3)


def test_annotated_boxes_hold_the_actors_and_nothing_is_outside(small):
    rows = read_rows(small / "annotations" / "ava_val_v2.2.csv")
    for video in plan_sample(7, SMALL)[1:]:
        scene, path = video.scene, small / "videos" / video.file_name
        backdrop = render_background(scene).astype(int)
        annotated = [s for s in scene.keyframes if s not in video.excluded]
        for t in (annotated[0], annotated[-1] + 0.5):
            _, image = frame_at(path, t)
            image = image.astype(int)
            changed = np.abs(image - backdrop).max(axis=2) > 40
            boxes = {tuple(r[2:6]) for r in rows if r[0] == scene.video_id and int(r[1]) == int(t)}
            assert len(boxes) == SMALL.scene.actors
            for box in boxes:
                x1, y1, x2, y2 = (round(float(v) * s) for v, s in zip(box, (320, 240, 320, 240), strict=True))
                assert changed[y1:y2, x1:x2].mean() > 0.4, (video.file_name, t, box)
            # Nothing is drawn outside the actors as they stand at that instant.
            inside = np.zeros(changed.shape, dtype=bool)
            for actor in scene.actors:
                x1, y1, x2, y2 = pixel_box(box_at(actor, t - scene.onset), 320, 240)
                inside[y1:y2, x1:x2] = True
            assert changed[~inside].mean() < 0.01
            # The file shows what the renderer draws, up to lossy coding. Luma only:
            # 4:2:0 chroma smears the edges of saturated stripes by design.
            error = np.abs((image - render_frame(scene, t)) @ LUMA)
            assert error.mean() < 5.0 and np.percentile(error, 99) < 25.0


def test_scene_is_empty_before_and_after_the_annotated_seconds(small):
    video = plan_sample(7, SMALL)[0]
    backdrop = render_background(video.scene).astype(int)
    last = AVA_ONSET + SMALL.scene.seconds
    for t in (AVA_ONSET - 1.5, AVA_ONSET - 0.1, last + 0.1, last + 10.0):
        _, image = frame_at(small / "videos" / video.file_name, t)
        assert np.abs(image.astype(int) - backdrop).max(axis=2).__gt__(40).mean() < 0.01, t


def test_same_seed_same_files_and_frames(small, tmp_path):
    again = tmp_path / "again"
    make_sample(again, seed=7, config=SMALL, workers=2)  # in parallel: same files
    for name in ("ava_train_v2.2.csv", "ava_val_v2.2.csv", "ava_val_excluded_timestamps_v2.2.csv"):
        assert (again / "annotations" / name).read_bytes() == (small / "annotations" / name).read_bytes()
    for path in (small / "videos").iterdir():
        for t in (AVA_ONSET + 1.5, AVA_ONSET + 4.0):
            first, second = frame_at(path, t)[1], frame_at(again / "videos" / path.name, t)[1]
            assert np.array_equal(first, second), (path.name, t, np.abs(first.astype(int) - second).max())
        assert (again / "videos" / path.name).read_bytes() == path.read_bytes(), path.name
    other = tmp_path / "other"
    make_sample(other, seed=8, config=SMALL, videos=False)
    assert (other / "annotations" / "ava_val_v2.2.csv").read_bytes() != \
        (small / "annotations" / "ava_val_v2.2.csv").read_bytes()


# ---------------------------------------------------------------- plan


def test_more_training_videos_leave_the_val_videos_unchanged():
    base = plan_sample(0, SampleConfig())
    more = plan_sample(0, SampleConfig(train_videos=SampleConfig().train_videos + 2))
    trained = SampleConfig().train_videos
    assert [v.scene for v in base if v.subset == "val"] == [v.scene for v in more if v.subset == "val"]
    assert [v.scene for v in base if v.subset == "train"] == [v.scene for v in more[:trained]]


def test_timeline_covers_zero_to_the_tail_and_is_dense_around_the_actors():
    scene = plan_sample(0, SMALL)[0].scene
    pts = timeline(scene, 30, lead=4, tail=11, prefix_step=8)
    assert pts[0] == 0 and np.all(np.diff(pts) > 0)
    assert np.all(np.diff(pts[:30]) == 1)  # the first second at full rate
    dense = pts[pts >= (AVA_ONSET - 4) * 30]
    assert np.array_equal(dense, np.arange((AVA_ONSET - 4) * 30, (AVA_ONSET + 5 + 11) * 30))


def test_actions_restrict_the_vocabulary(tmp_path):
    chosen = (5, 6, 12, 69, 79, 80)  # no badge: the object axis is left out
    make_sample(tmp_path, config=SampleConfig(scene=SceneConfig(actions=chosen)), videos=False)
    used = {int(r[6]) for r in read_rows(tmp_path / "annotations" / "ava_val_v2.2.csv")}
    assert used == set(chosen)


def test_bad_settings_name_the_field():
    with pytest.raises(SceneConfigError, match="actors"):
        SceneConfig(actors=0)
    with pytest.raises(ValueError, match="containers"):
        SampleConfig(containers=(".avi",))
    with pytest.raises(SceneConfigError, match="segment_seconds"):
        SceneConfig(segment_seconds=(1, 3))  # a segment must outlast its first-second cues


# ---------------------------------------------------------------- command line


def test_cli_writes_a_summary_and_refuses_to_overwrite(tmp_path):
    runner = CliRunner()
    args = ["make-sample", "--out", str(tmp_path / "s"), "--train-videos", "1", "--val-videos", "1",
            "--seconds", "5", "--motion", "0", "--no-videos"]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "val  : 1 videos" in first.output
    assert ("actors step 0 feature cells per clip at 320 px; keyframe boxes overlap them by "
            "IoU >= 1.00") in first.output
    rows = read_rows(tmp_path / "s" / "annotations" / "ava_val_v2.2.csv")
    assert {r[1] for r in rows} <= {f"{s:04d}" for s in range(AVA_ONSET, AVA_ONSET + 5)}
    assert len({tuple(r[2:6]) for r in rows if r[7] == "0"}) == 1  # static: one box throughout
    second = runner.invoke(main, args)
    assert second.exit_code == 2 and "not empty" in second.output
    assert runner.invoke(main, [*args, "--force"]).exit_code == 0


def test_cli_leaps_move_each_keyframe_box_sideways_every_second(tmp_path):
    args = ["make-sample", "--out", str(tmp_path / "s"), "--train-videos", "0", "--val-videos", "1",
            "--seconds", "6", "--motion", "0", "--leap", "2.5", "--actors", "2",
            "--feature-resolution", "160", "--no-videos"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "leap 2.5 cells sideways each second at 160 px" in result.output
    rows = read_rows(tmp_path / "s" / "annotations" / "ava_val_v2.2.csv")
    for person in ("0", "1"):
        boxes = {int(r[1]): np.array(r[2:6], float) for r in rows if r[7] == person}
        seconds = sorted(boxes)  # a few seconds are excluded, as in AVA
        assert len(seconds) >= 4
        first = boxes[seconds[0]]
        for second in seconds[1:]:
            dx, dy = (boxes[second] - first)[[0, 1]]
            odd = (second - seconds[0]) % 2
            assert abs(abs(dx) - odd * 2.5 / 10) < 0.002 and abs(dy) < 0.002  # 2.5 of 10 cells
            assert np.allclose(boxes[second][2:] - boxes[second][:2], first[2:] - first[:2], atol=0.002)


def test_cli_refuses_more_motion_than_one_box_per_second_can_follow(tmp_path):
    args = ["make-sample", "--out", str(tmp_path / "s"), "--no-videos", "--motion", "2",
            "--feature-resolution", "160"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "SceneConfig.motion: 2 cells per clip at 160 px" in result.output
    assert not (tmp_path / "s").exists()
    assert CliRunner().invoke(main, [*args, "--max-tilt", "0"]).exit_code == 0


@pytest.mark.slow
def test_benchmark_clips_show_the_requested_steps_and_boxes_that_hold(tmp_path):
    """Through the builder's media step (24-fps clips from 900 s, resized to R x R): the
    actors move `motion` cells between consecutive clips and each keyframe box overlaps
    its actor by IoU > 0.5 in every clip of its second, measured on decoded pixels."""
    resolution, motion = 160, 1.5
    config = SampleConfig(train_videos=0, val_videos=2, containers=(".mp4", ".mkv"), lead_seconds=2,
                          scene=SceneConfig(seconds=6, motion=motion, feature_resolution=resolution))
    make_sample(tmp_path / "s", seed=5, config=config)
    steps, overlaps = [], []
    for video in plan_sample(5, config):
        scene, clip = video.scene, tmp_path / f"{video.scene.video_id}.mp4"
        media.cut_clip(tmp_path / "s" / "videos" / video.file_name, clip, start=900, end=AVA_ONSET + 7,
                       size=(resolution, resolution))
        with av.open(str(clip)) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(int)
        changed = np.abs(frames - frames[24]).max(axis=3) > 40  # frame 24 (901 s): the empty backdrop
        for actor in scene.actors:
            extents = [_extent(changed[(AVA_ONSET - 900) * 24 + 8 * n + 4], actor, n) for n in range(18)]
            overlaps += [_iou(np.array(keyframe_box(actor, n // 3)), e) for n, e in enumerate(extents)]
            for n in range(17):
                if actions_at(actor, n // 3) == actions_at(actor, (n + 1) // 3):  # same step direction
                    delta = (extents[n + 1][:2] + extents[n + 1][2:] - extents[n][:2] - extents[n][2:]) / 2
                    steps.append(np.hypot(*delta) * resolution / 16)
    assert len(steps) > 50 and np.all(np.abs(np.array(steps) - motion) < 0.2), steps
    assert min(overlaps) > 0.5


def _extent(changed: np.ndarray, actor, clip: int) -> np.ndarray:
    """Normalised [x1, y1, x2, y2] of the changed pixels near the actor's two steps."""
    size = changed.shape[0]
    near = np.zeros_like(changed)
    for tau in (clip / 3, clip / 3 + 1 / 3):
        x1, y1, x2, y2 = pixel_box(box_at(actor, tau), size, size)
        near[max(0, y1 - 2):y2 + 2, max(0, x1 - 2):x2 + 2] = True
    ys, xs = np.nonzero(changed & near)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / size


def _iou(a, b) -> float:
    w, h = max(0.0, min(a[2], b[2]) - max(a[0], b[0])), max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def test_force_removes_only_the_files_the_earlier_sample_recorded(tmp_path):
    out = tmp_path / "s"
    tiny = dataclasses.replace(SMALL, train_videos=1, val_videos=1)
    make_sample(out, seed=1, config=tiny)
    first = sorted(p.name for p in (out / "videos").iterdir())
    mine = [out / "videos" / "my_own.mp4", out / "videos" / "holiday.mkv", out / "notes.txt"]
    for path in mine:
        path.write_bytes(b"the user's")
    with pytest.raises(OutputExistsError, match="not empty"):
        make_sample(out, seed=2, config=tiny)
    make_sample(out, seed=2, config=tiny, force=True)
    second = sorted(p.name for p in (out / "videos").iterdir() if p.name not in ("my_own.mp4", "holiday.mkv"))
    assert set(first).isdisjoint(second) and len(second) == 2  # seed 1's videos are gone
    assert all(path.read_bytes() == b"the user's" for path in mine)
    record = json.loads((out / RECORD_FILE).read_text())
    assert sorted(record["files"]) == sorted(
        [f"videos/{name}" for name in second]
        + [f"annotations/{p.name}" for p in (out / "annotations").iterdir()])
    assert not (out / ".stvr.lock").exists()


def test_a_sample_directory_in_use_is_refused(tmp_path):
    from stvr_data.lock import OutputLock, OutputLockedError

    with OutputLock(tmp_path / "s", "make-sample"), pytest.raises(OutputLockedError, match="in use by make-sample"):
        make_sample(tmp_path / "s", seed=1, config=SMALL, videos=False)
