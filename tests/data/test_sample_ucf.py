"""The UCF-layout sample (`make-sample --layout ucf24`): release formats, drawing, building."""

from __future__ import annotations

import av
import numpy as np
import pytest
from click.testing import CliRunner

from stvr_data import manifest, media, render, sample_ucf, ucf24
from stvr_data.cli.main import main
from stvr_data.sample import OutputExistsError
from stvr_data.scene import SceneConfigError, box_at
from stvr_data.synthetic_actions import ACTIONS, AXES

SMALL = sample_ucf.UcfSampleConfig(classes=("Basketball", "Biking", "Diving", "Surfing"), groups=3,
                                   test_groups=2, action_seconds=(2, 3), background_seconds=(0, 1))


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("ucf_sample")
    sample_ucf.make_ucf_sample(out, seed=2, config=SMALL)
    return out


def test_sample_has_the_release_layout(sample):
    ann = ucf24.read_annotations(sample / "pyannot.pkl")
    assert ann.format == "pyannot" and len(ann.videos) == 12
    assert ucf24.read_split_list(sample / "testlist01.txt") == {
        v for v in ann.videos if v.split("_g")[1][:2] in ("01", "02")}
    assert ucf24.read_class_split(sample / "class_split.json")["test"] == ("Surfing",)
    for video_id, entry in ann.videos.items():
        info = media.probe_video(sample / "videos" / f"{video_id}.avi")
        assert (info.fps, info.width, info.height, info.num_frames) == (25.0, 320, 240, int(entry["numf"]))
        assert entry["numf"].dtype in (np.uint8, np.uint16)
        for tube in entry["annotations"]:
            assert tube["boxes"].dtype in (np.uint8, np.uint16)
            assert tube["boxes"].shape == (tube["ef"] - tube["sf"], 4)


def test_sample_boxes_frame_the_drawn_actors(sample):
    video_id, scene, _ = sample_ucf.sample_scenes(2, SMALL)[4]
    tube = ucf24.read_pyannot(sample / "pyannot.pkl")[video_id]["annotations"][0]
    frame = tube["sf"] + 10
    with av.open(str(sample / "videos" / f"{video_id}.avi")) as container:
        decoded = next(f for i, f in enumerate(container.decode(video=0)) if i == frame).to_ndarray(format="rgb24")
    # The file shows the scene at frame / 25 s: closer to that instant than to half a
    # second earlier or later (neighbouring frames differ by under a pixel of motion).
    decoded = decoded.astype(int)
    error = {offset: np.abs(decoded - render.render_frame(scene, (frame + offset) / 25)).mean()
             for offset in (-12, 0, 12)}
    assert error[0] < min(error[-12], error[12])
    # The annotated box frames what differs from the empty backdrop.
    x, y, w, h = tube["boxes"][10].astype(int)
    change = np.abs(decoded - render.render_background(scene)).mean(axis=2)
    inside = np.zeros(change.shape, bool)
    inside[y - 1:y - 1 + h, x - 1:x - 1 + w] = True
    assert change[inside].mean() > 4 * change[~inside].mean()
    actor = render.pixel_box(box_at(scene.actors[0], frame / 25 - scene.onset), 320, 240)
    assert (x - 1, y - 1, x - 1 + w, y - 1 + h) == actor


def test_full_sample_carries_the_uint8_trap():
    db, test = sample_ucf.sample_annotations(sample_ucf.sample_scenes(0, sample_ucf.UcfSampleConfig()),
                                             sample_ucf.UcfSampleConfig())
    assert len(db) == 32 and len(test) == 16
    trap = [t for e in db.values() for t in e["annotations"]
            if t["boxes"].dtype == np.uint8 and (t["boxes"][:, 0].astype(int) + t["boxes"][:, 2] > 255).any()]
    assert trap


def test_sample_refuses_a_used_directory_and_bad_configs(sample, tmp_path):
    with pytest.raises(OutputExistsError, match="not empty"):
        sample_ucf.make_ucf_sample(sample, seed=2, config=SMALL)
    summary = sample_ucf.make_ucf_sample(tmp_path / "annotations_only", seed=2, config=SMALL, videos=False)
    assert (summary["videos"], summary["test_videos"], summary["frames"]) == (12, 8, 0)
    assert (tmp_path / "annotations_only" / "pyannot.pkl").read_bytes() == (sample / "pyannot.pkl").read_bytes()
    assert not (tmp_path / "annotations_only" / "videos").exists()
    with pytest.raises(SceneConfigError, match="UcfSampleConfig.classes"):
        sample_ucf.UcfSampleConfig(classes=("Biking", "Diving"))  # no test class
    with pytest.raises(SceneConfigError, match="UcfSampleConfig.test_groups"):
        sample_ucf.UcfSampleConfig(groups=2, test_groups=2)


@pytest.mark.slow
def test_sample_builds_with_media(sample, tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(main, [
        "build-ucf", "--annotations", str(sample / "pyannot.pkl"), "--videos", str(sample / "videos"),
        "--split-list", str(sample / "testlist01.txt"), "--class-split", str(sample / "class_split.json"),
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    videos = manifest.read_benchmark_table(out, "videos")
    assert (videos.status == "ok").all()
    for row in videos.itertuples():
        info = media.probe_video(out / row.clip_path)
        assert (info.fps, info.width, info.height) == (24.0, 320, 320)
        assert info.num_frames >= round(row.clip_end * 24) - 1
    assert len(manifest.read_benchmark_table(out, "pairs_val")) >= 2


def test_make_sample_command_writes_the_ucf_layout(tmp_path):
    out = tmp_path / "s"
    result = CliRunner().invoke(main, ["make-sample", "--layout", "ucf24", "--no-videos", "--seed", "4",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "32 videos (16 in testlist01.txt)" in result.output and "build-ucf" in result.output
    db, _ = sample_ucf.sample_annotations(sample_ucf.sample_scenes(4, sample_ucf.UcfSampleConfig()),
                                          sample_ucf.UcfSampleConfig())
    assert sorted(ucf24.read_pyannot(out / "pyannot.pkl")) == sorted(db)
    again = CliRunner().invoke(main, ["make-sample", "--layout", "ucf24", "--out", str(out)])
    assert again.exit_code == 2 and "not empty" in again.output


def test_heldout_classes_combine_cue_values_of_the_train_classes():
    seen = {a for cls in sample_ucf.SAMPLE_SPLIT["train"] for a in sample_ucf.SAMPLE_CLASSES[cls]}
    axis = {a.action_id: a.axis for a in ACTIONS}
    for cls, actions in sample_ucf.SAMPLE_CLASSES.items():
        assert sorted(axis[a] for a in actions) == sorted(AXES), cls  # one value per axis
    trained = {frozenset(sample_ucf.SAMPLE_CLASSES[c]) for c in sample_ucf.SAMPLE_SPLIT["train"]}
    for cls in sample_ucf.SAMPLE_SPLIT["val"] + sample_ucf.SAMPLE_SPLIT["test"]:
        actions = sample_ucf.SAMPLE_CLASSES[cls]
        assert set(actions) <= seen and frozenset(actions) not in trained, cls
