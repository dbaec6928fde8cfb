"""UCF101-24: reading the real annotation files, converting tubes, splitting, building."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from click.testing import CliRunner

from stvr_data import manifest, ucf24
from stvr_data.build import BuildOptions
from stvr_data.cli.main import main
from stvr_data.errors import AnnotationError, MediaError
from stvr_data.pickles import UnsafePickleError
from stvr_data.tubelets import boxes_arrow, boxes_values

TRAP_VIDEO = "Basketball/v_Basketball_g02_c01"  # uint8 boxes, x + w > 255 from its first frame


@pytest.fixture(scope="module")
def ucf_dir(shared_dir):
    return shared_dir / "data" / "ucf101-24"


@pytest.fixture(scope="module")
def annotations(ucf_dir):
    return ucf24.read_annotations(ucf_dir / "pyannot.pkl")


@pytest.fixture(scope="module")
def test_list(ucf_dir):
    return ucf24.read_split_list(ucf_dir / "testlist01.txt")


@pytest.fixture(scope="module")
def tubelets(annotations):
    return ucf24.tubes_to_tubelets(annotations.videos)


def test_real_file_counts(annotations):
    assert annotations.format == "pyannot"
    assert len(annotations.videos) == 3194
    assert ucf24.count_tubes(annotations.videos) == 4458
    assert len(annotations.classes) == 24
    assert {int(v["label"]) for v in annotations.videos.values()} == set(range(24))
    assert annotations.test_videos is None  # pyannot.pkl carries no video split


def test_class_names_file_matches_and_carries_split_1(ucf_dir, annotations, test_list):
    named = ucf24.read_annotations(ucf_dir / "pyannot_with_class_names.pkl")
    assert named.format == "pyannot_with_class_names"
    assert named.classes == ucf24.CLASSES
    assert sorted(named.videos) == sorted(annotations.videos)
    assert len(test_list) == 910
    assert named.test_videos == test_list & set(named.videos)


def test_uint8_overflow_trap_on_a_real_tube(annotations):
    tube = annotations.videos[TRAP_VIDEO]["annotations"][0]
    assert tube["boxes"].dtype == np.uint8
    first = tube["boxes"][0]
    assert first.tolist() == [197, 73, 109, 165]
    with np.errstate(over="ignore"):
        assert int(first[0] + first[2]) == 50  # what uint8 arithmetic would give
    box = ucf24.normalised_boxes(tube["boxes"][:1], width=320, height=240)[0]
    assert box == pytest.approx([196 / 320, 72 / 240, 305 / 320, 237 / 240])


def test_real_tube_converted_by_hand(annotations, tubelets):
    entry = annotations.videos[TRAP_VIDEO]
    tube = entry["annotations"][0]
    assert (int(entry["numf"]), tube["sf"], tube["ef"]) == (53, 26, 44)
    # 53 frames hold 6 whole clips; clip k's middle frame is floor((2k+1)*200/48):
    # 4, 12, 20, 29, 37, 45. Frames 26..43 are annotated: clips 3 and 4.
    k, frames = ucf24.clip_keyframes(26, 44, 53)
    assert k.tolist() == [3, 4] and frames.tolist() == [29, 37]
    assert tube["boxes"][[3, 11]].tolist() == [[210, 63, 92, 176], [208, 34, 88, 205]]
    row = tubelets[tubelets.video_id == TRAP_VIDEO].iloc[0]
    assert (row.person_id, row.label, row.start) == (0, "Basketball", 1.0)
    assert row.end == pytest.approx(5 / 3)  # two keyframes: [1, 5/3)
    values, lengths = boxes_values(boxes_arrow(tubelets.boxes[tubelets.video_id == TRAP_VIDEO]))
    assert lengths.tolist() == [2]
    expected = [[209 / 320, 62 / 240, 301 / 320, 238 / 240], [207 / 320, 33 / 240, 295 / 320, 238 / 240]]
    assert values == pytest.approx(np.array(expected, dtype=np.float32))


@pytest.mark.parametrize("sf, ef, numf, want", [
    (0, 20, 25, [0, 1]),       # middle frames 4, 12, 20: ef is exclusive
    (0, 21, 25, [0, 1, 2]),
    (0, 25, 24, [0, 1]),       # 24 frames (0.96 s) hold two whole 1/3 s clips only
    (5, 11, 100, []),          # between the middles 4 and 12: no keyframe
])
def test_clip_keyframes_edges(sf, ef, numf, want):
    assert ucf24.clip_keyframes(sf, ef, numf)[0].tolist() == want


def test_boxes_are_clipped_to_the_frame():
    box = ucf24.normalised_boxes(np.array([[300, 1, 40, 250]], dtype=np.uint16), width=320, height=240)
    assert box.tolist() == [[299 / 320, 0.0, 1.0, 1.0]]


def test_every_tubelet_is_valid(annotations, tubelets):
    assert len(tubelets) == 4443  # 15 tubes are shorter than the gap between clip middles
    values, lengths = boxes_values(boxes_arrow(tubelets.boxes))
    steps = np.rint((tubelets.end - tubelets.start).to_numpy() * 3).astype(int)
    assert (lengths == steps).all()
    assert (values >= 0).all() and (values <= 1).all()
    assert (values[:, 2] > values[:, 0]).all() and (values[:, 3] > values[:, 1]).all()
    assert set(tubelets.label) == set(ucf24.CLASSES)


def test_class_split_sizes_disjoint_and_seeded():
    split = ucf24.split_classes(seed=0)
    assert {k: len(v) for k, v in split.items()} == {"train": 14, "val": 5, "test": 5}
    assert set().union(*split.values()) == set(ucf24.CLASSES)
    assert split == ucf24.split_classes(seed=0)
    assert split != ucf24.split_classes(seed=1)


def test_assign_splits_with_testlist(tubelets, test_list):
    split = ucf24.split_classes(seed=3)
    chosen = ucf24.assign_splits(tubelets, split, test_list)
    in_test = chosen.video_id.isin(test_list)
    assert not in_test[chosen.split == "train"].any()
    assert in_test[chosen.split != "train"].all()
    labels = {s: set(chosen.label[chosen.split == s]) for s in ucf24.SPLITS}
    assert labels == {s: set(split[s]) for s in ucf24.SPLITS}
    everything = ucf24.assign_splits(tubelets, split, None)
    assert len(everything) == len(tubelets) > len(chosen)


def test_class_split_file(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": ["Basketball", "Biking"], "val": ["Diving"], "test": ["Fencing"]}))
    assert ucf24.read_class_split(path)["train"] == ("Basketball", "Biking")
    path.write_text(json.dumps({"train": ["Diving"], "val": ["Diving"], "test": ["Fencing"]}))
    with pytest.raises(AnnotationError, match="split.json: class 'Diving' is in both"):
        ucf24.read_class_split(path)
    path.write_text(json.dumps({"train": ["Dancing"], "val": ["Diving"], "test": ["Fencing"]}))
    with pytest.raises(AnnotationError, match="unknown class 'Dancing'"):
        ucf24.read_class_split(path)


def test_split_list_accepts_the_ucf101_spelling(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("Diving/v_Diving_g01_c01.avi 26\nFencing/v_Fencing_g02_c03\n\n")
    assert ucf24.read_split_list(path) == {"Diving/v_Diving_g01_c01", "Fencing/v_Fencing_g02_c03"}
    path.write_text("v_Diving_g01_c01.avi\n")
    with pytest.raises(AnnotationError, match="list.txt:1"):
        ucf24.read_split_list(path)


def _as_act_gt(videos: dict, test: list) -> dict:
    """The ACT/MOC cache layout of pyannot videos: 1-based frames, x1y1x2y2 pixel edges."""
    tubes = {}
    for video_id, entry in videos.items():
        by_label = tubes.setdefault(video_id, {})
        for tube in entry["annotations"]:
            b = tube["boxes"].astype(np.float64)
            frames = np.arange(tube["sf"], tube["ef"]) + 1.0
            rows = np.column_stack([frames, b[:, 0] - 1, b[:, 1] - 1, b[:, 0] - 1 + b[:, 2], b[:, 1] - 1 + b[:, 3]])
            by_label.setdefault(int(tube["label"]), []).append(rows.astype(np.float32))
    return {"labels": list(ucf24.CLASSES), "gttubes": tubes,
            "nframes": {v: int(e["numf"]) for v, e in videos.items()},
            "resolution": {v: (240, 320) for v in videos},
            "train_videos": [[v for v in videos if v not in test]], "test_videos": [test]}


def test_act_gt_format_gives_the_same_tubelets(tmp_path, annotations):
    some = {v: annotations.videos[v] for v in sorted(annotations.videos)[::200]}
    path = tmp_path / "UCF101v2-GT.pkl"
    path.write_bytes(pickle.dumps(_as_act_gt(some, [sorted(some)[0]]), protocol=2))
    read = ucf24.read_annotations(path)
    assert read.format == "act_gt" and read.test_videos == {sorted(some)[0]}
    ours, theirs = ucf24.tubes_to_tubelets(some), ucf24.tubes_to_tubelets(read.videos)
    assert ours[["video_id", "person_id", "label", "start", "end"]].equals(
        theirs[["video_id", "person_id", "label", "start", "end"]])
    mine = boxes_values(boxes_arrow(ours.boxes))[0]
    act = boxes_values(boxes_arrow(theirs.boxes))[0]
    assert np.abs(mine - act).max() < 1e-6


def test_bad_files_are_named(tmp_path):
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"weights": np.zeros(3)}))
    with pytest.raises(AnnotationError, match="other.pkl: not a UCF101-24 annotation file"):
        ucf24.read_annotations(other)
    broken = tmp_path / "broken.pkl"
    boxes = np.ones((3, 4), dtype=np.uint8)
    broken.write_bytes(pickle.dumps({"A/v_A": {"numf": 10, "label": 0, "annotations": [
        {"label": 0, "sf": 0, "ef": 4, "boxes": boxes}]}}))
    with pytest.raises(AnnotationError, match=r"broken.pkl: video 'A/v_A' tube 0: 'boxes' has shape \(3, 4\)"):
        ucf24.read_annotations(broken)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(Vtrue\ntR.")
    with pytest.raises(UnsafePickleError, match="evil.pkl: refused to load, the pickle asks for 'os.system'"):
        ucf24.read_annotations(evil)


def _tube(**change):
    tube = {"label": 0, "sf": 0, "ef": 2, "boxes": np.array([[1, 1, 5, 5], [2, 1, 5, 5]], dtype=np.uint8)}
    return {**tube, **change}


@pytest.mark.parametrize("entry, message", [
    ([1, 2], "video 'A/v_A': a list, expected a dict"),
    ({"numf": 10, "label": 0}, r"video 'A/v_A': missing fields \['annotations'\]"),
    ({"numf": 10, "label": 30, "annotations": []}, "video 'A/v_A': label 30 outside 0..23"),
    ({"numf": 10, "label": 0, "annotations": [_tube(label=24)]}, "video 'A/v_A' tube 0: label 24 outside"),
    ({"numf": 10, "label": 0, "annotations": [_tube(sf=1, ef=12)]},
     "video 'A/v_A' tube 0: frames sf=1 ef=12 outside"),
    ({"numf": 10, "label": 0, "annotations": [_tube(boxes=np.array([[1, 1, 5, 5], [1, 1, 0, 5]]))]},
     "video 'A/v_A' tube 0: 'boxes' at frame 1 is not a finite, non-empty box"),
    ({"numf": "abc", "label": 0, "annotations": []}, "video 'A/v_A': 'numf' is 'abc', expected a whole number"),
    ({"numf": 10, "label": 0, "annotations": None}, "video 'A/v_A': 'annotations' is a NoneType, expected a list"),
    ({"numf": 10, "label": 0, "annotations": [_tube(sf="x")]}, "video 'A/v_A' tube 0: 'sf' is 'x'"),
    ({"numf": 10, "label": 0, "annotations": [_tube(boxes=np.array([[900, 1, 5, 5], [1, 1, 5, 5]]))]},
     r"video 'A/v_A' tube 0: box x,y,w,h \[900.0, 1.0, 5.0, 5.0\] at frame 0 lies outside the 320x240 frame"),
    ({"numf": 10, "label": 0, "annotations": [_tube(boxes=np.array([[1, 1, 5, 5], [-200, -90, 50, 50]]))]},
     r"video 'A/v_A' tube 0: box x,y,w,h \[-200.0, -90.0, 50.0, 50.0\] at frame 1 lies outside the 320x240"),
    ({"numf": 10, "label": 0, "annotations": [{"label": 0, "sf": 0, "ef": 1, "boxes": None}]},
     r"video 'A/v_A' tube 0: 'boxes' has shape \(\) \(object\)"),
])
def test_malformed_entries_name_video_tube_and_field(tmp_path, entry, message):
    good = {"numf": 10, "label": 0, "annotations": [_tube()]}
    path = tmp_path / "bad.pkl"
    for layout in ({"B/v_B": good, "A/v_A": entry},
                   {"db": {"B/v_B": good, "A/v_A": entry}, "classes": list(ucf24.CLASSES)}):
        path.write_bytes(pickle.dumps(layout))
        with pytest.raises(AnnotationError, match=f"bad.pkl: {message}"):
            ucf24.read_annotations(path)


def test_act_gt_without_frame_count_is_named(tmp_path):
    gt = _as_act_gt({}, [])
    gt["gttubes"] = {"A/v_A": {0: [np.array([[1, 0, 0, 5, 5]], dtype=np.float32)]}}
    path = tmp_path / "UCF101v2-GT.pkl"
    path.write_bytes(pickle.dumps(gt))
    with pytest.raises(AnnotationError, match="UCF101v2-GT.pkl: video 'A/v_A': has tubes but no 'nframes'"):
        ucf24.read_annotations(path)


def test_rar_archive_is_refused_with_advice(tmp_path, ucf_dir):
    with pytest.raises(MediaError, match="extract it first"):
        ucf24.check_videos_source("/data/UCF101.rar")
    result = CliRunner().invoke(main, ["build-ucf", "--annotations", str(ucf_dir / "pyannot.pkl"),
                                       "--videos", "https://example.org/UCF101.rar", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "RAR archive" in result.output


@pytest.fixture(scope="module")
def built(tmp_path_factory, ucf_dir):
    out = tmp_path_factory.mktemp("ucf") / "bench"
    result = CliRunner().invoke(main, ["build-ucf", "--annotations", str(ucf_dir / "pyannot.pkl"),
                                       "--split-list", str(ucf_dir / "testlist01.txt"),
                                       "--skip-media", "--seed", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_build_skip_media_end_to_end(built, test_list):
    card = manifest.read_dataset_card(built)
    assert card["keyframe_interval"] == pytest.approx(1 / 3)
    assert card["counts"]["labels"] == {"train": 14, "val": 5, "test": 5}
    assert card["annotations"]["tubes"] == 4458
    tubelets = manifest.read_benchmark_table(built, "tubelets")
    videos = manifest.read_benchmark_table(built, "videos")
    assert set(videos.video_id) == set(tubelets.video_id)
    assert (videos.subset == np.where(videos.video_id.isin(test_list), "test", "train")).all()
    labels = {s: set(tubelets.label[tubelets.split == s]) for s in ucf24.SPLITS}
    assert not (labels["train"] & labels["val"]) and not (labels["train"] & labels["test"])
    assert not (labels["val"] & labels["test"])
    for split in ("val", "test"):
        pairs = manifest.read_benchmark_table(built, f"pairs_{split}")
        assert len(pairs) > 100 and set(pairs.label) <= labels[split]
        assert (pairs.ref_start >= 0).all()
        ends = videos.set_index("video_id").clip_end[pairs.ref_video_id].to_numpy()
        assert (pairs.ref_end.to_numpy() <= ends + 1e-9).all()


def test_groundtruth_holds_the_target_box_at_each_of_its_clips(built):
    tubelets = manifest.read_benchmark_table(built, "tubelets").set_index("tubelet_id")
    pairs = manifest.read_benchmark_table(built, "pairs_test")
    gt = manifest.read_benchmark_table(built, "groundtruth_test")
    for pair in pairs.iloc[::40].itertuples():
        target = tubelets.loc[pair.target_tubelet_id]
        rows = gt[gt.pair_id == pair.pair_id]
        for step, box in enumerate(target.boxes):
            at = rows[np.isclose(rows.timestamp, target.start + step / 3)]
            found = at[["x1", "y1", "x2", "y2"]].to_numpy()
            assert np.isclose(found, np.asarray(box, dtype=np.float32)).all(axis=1).any()
        # The target spans [start, end): its last keyframe covers [end - 1/3, end).
        outside = rows[(rows.timestamp < target.start - 1e-6) | (rows.timestamp > target.end - 1e-6)]
        # Only other tubes of the same class can be ground truth outside the target.
        others = tubelets[(tubelets.video_id == pair.ref_video_id) & (tubelets.label == pair.label)]
        assert outside.x1.isna().all() or len(others) > 1


def test_groundtruth_has_one_image_per_clip(built):
    pairs = manifest.read_benchmark_table(built, "pairs_val")
    gt = manifest.read_benchmark_table(built, "groundtruth_val")
    images = gt.groupby("pair_id").timestamp.nunique()
    expected = np.rint((pairs.ref_end - pairs.ref_start) * 3).astype(int)
    assert (images[pairs.pair_id].to_numpy() == expected.to_numpy()).all()
    steps = np.rint(gt.timestamp.to_numpy() * 3)
    assert np.abs(gt.timestamp.to_numpy() * 3 - steps).max() < 1e-6


def test_prepare_is_deterministic_and_resumable(built, ucf_dir, tmp_path):
    card = ucf24.prepare_ucf(ucf_dir / "pyannot.pkl", None, built,
                             options=BuildOptions(seed=5, skip_media=True),
                             split_list=ucf_dir / "testlist01.txt")
    assert card == manifest.read_dataset_card(built)  # same inputs: left as it is
    split = tmp_path / "classes.json"
    split.write_text(json.dumps({"train": list(ucf24.CLASSES[:14]), "val": list(ucf24.CLASSES[14:19]),
                                 "test": list(ucf24.CLASSES[19:])}))
    other = ucf24.prepare_ucf(ucf_dir / "pyannot.pkl", None, tmp_path / "b", class_split=split,
                              options=BuildOptions(seed=5, skip_media=True))
    assert other["labels"]["test"] == sorted(ucf24.CLASSES[19:])
    assert other["video_split"]["used"] is False


@pytest.mark.parametrize("video_id", ["../../../../tmp/x/v_Diving_g01_c01", "/abs/v_Diving_g01_c01",
                                      "Diving/../v_x", "Diving/sub/v_Diving_g01_c01", "Diving\\v_x", 7])
def test_video_ids_that_are_not_plain_class_and_name_are_refused(tmp_path, video_id):
    path = tmp_path / "pyannot.pkl"
    path.write_bytes(pickle.dumps({video_id: {"numf": 10, "label": 0, "annotations": [_tube()]}}))
    with pytest.raises(AnnotationError, match=r"pyannot\.pkl: video id .* is not of the form Class/v_Name"):
        ucf24.read_annotations(path)
    listing = tmp_path / "testlist01.txt"
    listing.write_text(f"Diving/v_Diving_g01_c01.avi\n{video_id}.avi\n")
    with pytest.raises(AnnotationError, match=r"testlist01\.txt:2: video id"):
        ucf24.read_split_list(listing)


def test_a_wrong_structure_deep_inside_is_one_annotation_error(tmp_path):
    path = tmp_path / "UCF101v2-GT.pkl"
    path.write_bytes(pickle.dumps({"gttubes": 5, "nframes": {}, "labels": list(ucf24.CLASSES)}))
    with pytest.raises(AnnotationError, match=r"UCF101v2-GT\.pkl: unexpected structure \(AttributeError"):
        ucf24.read_annotations(path)


def test_build_ucf_with_a_hostile_id_is_one_line_and_writes_nothing(tmp_path):
    path = tmp_path / "pyannot.pkl"
    path.write_bytes(pickle.dumps({"../../x/v_Diving_g01_c01": {"numf": 10, "label": 5, "annotations": [_tube()]}}))
    result = CliRunner().invoke(main, ["build-ucf", "--annotations", str(path), "--out", str(tmp_path / "out"),
                                       "--skip-media"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "is not of the form Class/v_Name" in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "x").exists()
