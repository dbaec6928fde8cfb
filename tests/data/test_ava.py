"""AVA readers: formats, validation messages (file:line: problem), skip mode, release loading."""

from __future__ import annotations

import re

import numpy as np
import pytest

from stvr_data.ava import (
    AVA_SEGMENT,
    drop_excluded,
    find_version,
    load_annotations,
    read_action_list,
    read_boxes,
    read_excluded_timestamps,
    read_file_names,
)
from stvr_data.errors import AnnotationError, StvrDataError

GOOD = "vidA,0902,0.100,0.200,0.300,0.400,12,0\nvidA,0902,0.100,0.200,0.300,0.400,80,0\n"

LABEL_STYLE = """label {
  name: "bend/bow (at the waist)"
  label_id: 1
  label_type: PERSON_MOVEMENT
}
label {
  name: "stand"
  label_id: 12
  label_type: PERSON_MOVEMENT
}
label { name: "watch (a person)" label_id: 80 label_type: PERSON_INTERACTION }
"""
ITEM_STYLE = 'item {\n  name: "stand"\n  id: 12\n}\nitem {\n  name: "watch (a person)"\n  id: 80\n}\n'


def write(path, text: str):
    path.write_text(text)
    return path


def test_segment_is_the_annotated_900_to_1800_seconds():
    assert AVA_SEGMENT == (900.0, 1800.0)


def test_read_boxes_types_values_and_file_order(tmp_path):
    text = ("vid_2,1798,0.5,0.25,1.0,0.75,80,3\r\n"
            "\n"
            "-vid1,0902, 0.000 ,0.1,0.2,1,12,0\n")
    boxes, report = read_boxes(write(tmp_path / "a.csv", text))
    assert list(boxes.columns) == ["video_id", "timestamp", "x1", "y1", "x2", "y2",
                                   "action_id", "person_id", "line"]
    assert boxes["video_id"].tolist() == ["vid_2", "-vid1"]
    assert boxes["timestamp"].tolist() == [1798.0, 902.0]
    assert boxes["timestamp"].dtype == np.float64
    assert boxes["x1"].dtype == np.float32 and boxes["action_id"].dtype == np.int32
    assert boxes["person_id"].dtype == np.int32
    np.testing.assert_array_equal(boxes[["x1", "y1", "x2", "y2"]].to_numpy(),
                                  np.array([[0.5, 0.25, 1.0, 0.75], [0.0, 0.1, 0.2, 1.0]], np.float32))
    assert boxes["action_id"].tolist() == [80, 12] and boxes["person_id"].tolist() == [3, 0]
    # The blank line keeps its number: the second row is on line 3.
    assert boxes["line"].tolist() == [1, 3]
    assert report.empty


def test_clean_and_line_by_line_paths_agree(tmp_path):
    # A clean file is read in one typed pass; a blank line, spaces or CRLF send it
    # through the exact line-by-line path. Both must give the same rows.
    rows = [f"v{i % 7},{902 + i % 5:04d},0.{i % 9}00,0.1,0.95,0.9,{1 + i % 3},{i % 4}" for i in range(200)]
    clean, _ = read_boxes(write(tmp_path / "clean.csv", "\n".join(rows) + "\n"))
    messy_text = "\r\n".join(rows[:100]) + "\r\n\n" + "\n".join(r.replace(",", " , ") for r in rows[100:])
    messy, _ = read_boxes(write(tmp_path / "messy.csv", messy_text))
    assert clean.drop(columns="line").equals(messy.drop(columns="line"))
    assert clean["line"].tolist() == list(range(1, 201))
    assert messy["line"].tolist() == list(range(1, 101)) + list(range(102, 202))


def test_non_finite_number_in_an_otherwise_clean_file(tmp_path):
    path = write(tmp_path / "inf.csv", GOOD + "vidA,0903,0.1,0.2,inf,0.4,12,0\n")
    with pytest.raises(AnnotationError, match=r"inf\.csv:3: x2 'inf' is not a number"):
        read_boxes(path)


BAD_ROWS = [
    ("vidA,0903,0.1,0.2,0.3,0.4,12", "expected 8 comma-separated fields (video_id, timestamp, "
     "x1, y1, x2, y2, action_id, person_id), found 7"),
    ("vidA,0903,0.1,0.2,0.3,0.4,12,0,1", "expected 8 comma-separated fields (video_id, timestamp, "
     "x1, y1, x2, y2, action_id, person_id), found 9"),
    ("vid A,0903,0.1,0.2,0.3,0.4,12,0", "video_id 'vid A' is not a plain id ([A-Za-z0-9_-]+)"),
    ("../x,0903,0.1,0.2,0.3,0.4,12,0", "video_id '../x' is not a plain id ([A-Za-z0-9_-]+)"),
    ("vidA,09o3,0.1,0.2,0.3,0.4,12,0", "timestamp '09o3' is not a number"),
    ("vidA,0903,0.1,nan,0.3,0.4,12,0", "y1 'nan' is not a number"),
    ("vidA,0903,0.1,0.2,,0.4,12,0", "x2 '' is not a number"),
    ("vidA,0903,0.1,0.2,0.3,0.4,12.5,0", "action_id '12.5' is not an integer"),
    ("vidA,0903,0.1,0.2,0.3,0.4,12,p1", "person_id 'p1' is not an integer"),
    ("vidA,-903,0.1,0.2,0.3,0.4,12,0", "timestamp -903 outside the annotated keyframes 902..1798"),
    ("vidA,0903,0.1,0.2,0.3,1.01,12,0", "box y2=1.01 outside [0, 1]"),
    ("vidA,0903,-0.1,0.2,0.3,0.4,12,0", "box x1=-0.1 outside [0, 1]"),
    ("vidA,0903,0.3,0.2,0.3,0.4,12,0", "empty box: x2=0.3 <= x1=0.3"),
    ("vidA,0903,0.1,0.5,0.3,0.4,12,0", "empty box: y2=0.4 <= y1=0.5"),
    ("vidA,0903,0.1,0.2,0.3,0.4,12,-1", "person_id -1 is negative"),
    ("vidA,0903,0.1,0.2,0.3,0.4,99,0", "unknown action id 99 (not in the action list)"),
]


@pytest.mark.parametrize(("row", "problem"), BAD_ROWS)
def test_bad_row_raises_with_file_line_and_problem(tmp_path, row, problem):
    path = write(tmp_path / "ava_train_v2.2.csv", GOOD + row + "\n" + GOOD)
    with pytest.raises(AnnotationError) as caught:
        read_boxes(path, action_ids={12, 80})
    assert str(caught.value) == f"{path}:3: {problem}"
    assert caught.value.line == 3 and caught.value.problem == problem
    assert isinstance(caught.value, ValueError)


def test_first_bad_row_is_reported_and_first_problem_of_a_row_wins(tmp_path):
    text = GOOD + "vid A,0903,1.5,0.2,0.3,0.4,99,0\n" + "vidA,0903,1.5,0.2,0.3,0.4,12,0\n"
    path = write(tmp_path / "b.csv", text)
    with pytest.raises(AnnotationError, match=r"b\.csv:3: video_id 'vid A' is not a plain id"):
        read_boxes(path, action_ids={12, 80})


def test_unknown_action_ids_pass_without_an_action_list(tmp_path):
    boxes, _ = read_boxes(write(tmp_path / "c.csv", "vidA,0903,0.1,0.2,0.3,0.4,99,0\n"))
    assert boxes["action_id"].tolist() == [99]


def test_skip_mode_drops_and_reports_every_bad_row(tmp_path):
    rows = [row for row, _ in BAD_ROWS[:4]]
    text = GOOD + "\n".join(rows) + "\n" + GOOD
    path = write(tmp_path / "d.csv", text)
    boxes, report = read_boxes(path, action_ids={12, 80}, skip_bad_rows=True)
    assert boxes["line"].tolist() == [1, 2, 7, 8]
    assert list(report.columns) == ["file", "line", "problem", "text"]
    assert report["line"].tolist() == [3, 4, 5, 6]
    assert report["problem"].tolist() == [problem for _, problem in BAD_ROWS[:4]]
    assert report["text"].tolist() == rows
    assert set(report["file"]) == {str(path)}


def test_missing_box_file_names_it(tmp_path):
    with pytest.raises(AnnotationError, match="nothere.csv: file not found"):
        read_boxes(tmp_path / "nothere.csv")


@pytest.mark.parametrize("text", [LABEL_STYLE, ITEM_STYLE])
def test_action_list_both_pbtxt_styles(tmp_path, text):
    names = read_action_list(write(tmp_path / "list.pbtxt", text))
    assert names[12] == "stand" and names[80] == "watch (a person)"
    assert list(names) == sorted(names)


def test_action_list_label_style_ids(tmp_path):
    names = read_action_list(write(tmp_path / "list.pbtxt", LABEL_STYLE))
    assert names == {1: "bend/bow (at the waist)", 12: "stand", 80: "watch (a person)"}


def test_action_list_real_activitynet_file(shared_dir):
    names = read_action_list(shared_dir / "data/ava/ava_action_list_v2.1_for_activitynet_2018.pbtxt")
    assert len(names) == 60
    assert names[1] == "bend/bow (at the waist)"
    assert names[80] == "watch (a person)"
    assert 2 not in names  # not a challenge class


@pytest.mark.parametrize(("text", "problem"), [
    ('item {\n  name: "stand"\n}\n', ":1: item block without a id"),
    ('item { name: "a" id: 1 }\n\nitem { id: 3 }\n', ":3: item block without a name"),
    ('item { name: "a" id: 1 }\nitem { name: "b" id: 1 }\n', ":2: action id 1 defined twice"),
    ("nothing here\n", ": no 'label { ... }' or 'item { ... }' blocks"),
])
def test_action_list_errors(tmp_path, text, problem):
    path = write(tmp_path / "bad.pbtxt", text)
    with pytest.raises(AnnotationError) as caught:
        read_action_list(path)
    assert str(caught.value) == f"{path}{problem}"


def test_excluded_timestamps_and_drop(tmp_path):
    excluded = read_excluded_timestamps(write(tmp_path / "ex.csv", "vidA,0903\nvidB,1000\n"))
    assert excluded.to_dict("list") == {"video_id": ["vidA", "vidB"], "timestamp": [903.0, 1000.0]}
    text = ("vidA,0902,0.1,0.2,0.3,0.4,12,0\nvidA,0903,0.1,0.2,0.3,0.4,12,0\n"
            "vidB,0903,0.1,0.2,0.3,0.4,12,0\nvidA,0903,0.5,0.2,0.6,0.4,80,1\n")
    boxes, _ = read_boxes(write(tmp_path / "b.csv", text))
    kept = drop_excluded(boxes, excluded)
    assert kept["line"].tolist() == [1, 3]
    assert drop_excluded(boxes, excluded.iloc[:0])["line"].tolist() == [1, 2, 3, 4]


def test_excluded_timestamps_bad_row(tmp_path):
    path = write(tmp_path / "ex.csv", "vidA,0903\nvidA,0903,1\n")
    with pytest.raises(AnnotationError, match=r"ex\.csv:2: expected 2 comma-separated fields"):
        read_excluded_timestamps(path)


def test_file_names_mixed_extensions(tmp_path):
    names = read_file_names(write(tmp_path / "f.txt", "-5KQ66BBWC4.mkv\nabc_1.mp4\n\nxyz.webm\n"))
    assert names == {"-5KQ66BBWC4": "-5KQ66BBWC4.mkv", "abc_1": "abc_1.mp4", "xyz": "xyz.webm"}


@pytest.mark.parametrize(("text", "problem"), [
    ("a.mp4\nnoext\n", ":2: file name 'noext' has no extension"),
    ("a.mp4\nb c.mp4\n", ":2: video id 'b c' is not a plain id ([A-Za-z0-9_-]+)"),
    ("a.mp4\na.mkv\n", ":2: video id 'a' listed twice"),
])
def test_file_names_errors(tmp_path, text, problem):
    path = write(tmp_path / "f.txt", text)
    with pytest.raises(AnnotationError) as caught:
        read_file_names(path)
    assert str(caught.value) == f"{path}{problem}"


def make_release(directory, version="2.2", *, activitynet_list=False, file_list_version="2.1"):
    """A tiny release: two train rows (one excluded), one val row."""
    directory.mkdir(exist_ok=True)
    write(directory / f"ava_train_v{version}.csv",
          "tr1,0902,0.1,0.2,0.3,0.4,12,0\ntr1,0903,0.1,0.2,0.3,0.4,12,0\n")
    write(directory / f"ava_val_v{version}.csv", "va1,0902,0.1,0.2,0.3,0.4,80,0\n")
    name = (f"ava_action_list_v{version}_for_activitynet_2018.pbtxt" if activitynet_list
            else f"ava_action_list_v{version}.pbtxt")
    write(directory / name, ITEM_STYLE)
    write(directory / f"ava_train_excluded_timestamps_v{version}.csv", "tr1,0903\n")
    write(directory / f"ava_val_excluded_timestamps_v{version}.csv", "")
    write(directory / f"ava_file_names_trainval_v{file_list_version}.txt", "tr1.mkv\nva1.webm\n")
    return directory


def test_load_annotations_v22_reuses_v21_file_list_and_applies_exclusions(tmp_path):
    release = load_annotations(make_release(tmp_path / "ann"))
    assert release.version == "2.2"
    assert release.train["timestamp"].tolist() == [902.0]
    assert release.val["video_id"].tolist() == ["va1"]
    assert release.action_names == {12: "stand", 80: "watch (a person)"}
    assert release.file_names == {"tr1": "tr1.mkv", "va1": "va1.webm"}
    assert release.excluded_rows == 1
    assert release.bad_rows.empty
    assert release.files["file_names"].name == "ava_file_names_trainval_v2.1.txt"


def test_load_annotations_v21_with_activitynet_list(tmp_path):
    release = load_annotations(make_release(tmp_path / "ann", "2.1", activitynet_list=True),
                               version="2.1")
    assert release.files["action_list"].name == "ava_action_list_v2.1_for_activitynet_2018.pbtxt"
    assert len(release.train) == 1


def test_find_version_picks_newest(tmp_path):
    directory = make_release(tmp_path / "ann", "2.1")
    make_release(directory, "2.2")
    assert find_version(directory) == "2.2"
    with pytest.raises(AnnotationError, match="no ava_train_v2.X.csv"):
        find_version(tmp_path)


def test_load_annotations_missing_file_is_named(tmp_path):
    directory = make_release(tmp_path / "ann")
    (directory / "ava_val_excluded_timestamps_v2.2.csv").unlink()
    with pytest.raises(AnnotationError, match=r"ava_val_excluded_timestamps_v2\.2\.csv: missing"):
        load_annotations(directory)


def test_load_annotations_unknown_action_and_skip_report(tmp_path):
    directory = make_release(tmp_path / "ann")
    write(directory / "ava_val_v2.2.csv", "va1,0902,0.1,0.2,0.3,0.4,80,0\nva1,0903,0.1,0.2,0.3,0.4,7,0\n")
    with pytest.raises(AnnotationError, match=r"ava_val_v2\.2\.csv:2: unknown action id 7"):
        load_annotations(directory)
    release = load_annotations(directory, skip_bad_rows=True)
    assert release.bad_rows["line"].tolist() == [2]
    assert len(release.val) == 1


def test_errors_are_value_errors():
    assert issubclass(AnnotationError, StvrDataError) and issubclass(StvrDataError, ValueError)


@pytest.mark.parametrize("row, problem", [
    ("vidA,902.5,0.1,0.2,0.3,0.4,12,0", "timestamp 902.5 is not a whole second (AVA keyframes are)"),
    ("vidA,1e400,0.1,0.2,0.3,0.4,12,0", "timestamp inf is not a finite number"),
    ("vidA,4911,0.1,0.2,0.3,0.4,12,0", "timestamp 4911 outside the annotated keyframes 902..1798"),
    ("vidA,0901,0.1,0.2,0.3,0.4,12,0", "timestamp 901 outside the annotated keyframes 902..1798"),
    ("vidA,0902,0.1,0.2,1e400,0.4,12,0", "box x2=inf outside [0, 1]"),
])
def test_keyframes_must_be_whole_seconds_inside_the_segment(tmp_path, row, problem):
    path = write(tmp_path / "ava_train_v2.2.csv", GOOD + row + "\n")
    with pytest.raises(AnnotationError) as caught:
        read_boxes(path, action_ids={12, 80})
    line = GOOD.count("\n") + 1
    assert str(caught.value) == f"{path}:{line}: {problem}"
    boxes, report = read_boxes(path, action_ids={12, 80}, skip_bad_rows=True)
    assert len(boxes) == line - 1 and report["line"].tolist() == [line]
    assert report["problem"].tolist() == [problem]


@pytest.mark.parametrize("data, line, problem", [
    (b"vidA,0902,0.1,0.2,0.3,0.4,12,0\n\x00\x01\x02binary\n", 2, "binary data (a NUL byte), not a text file"),
    (b"vidA,0902,0.1,0.2,0.3,0.4,12,0\nvid\xff,0902,0.1,0.2,0.3,0.4,12,0\n", 2, "not UTF-8 text (byte 0xff)"),
])
def test_binary_or_non_utf8_files_name_file_and_line(tmp_path, data, line, problem):
    csv = tmp_path / "ava_train_v2.2.csv"
    csv.write_bytes(data)
    with pytest.raises(AnnotationError, match=re.escape(f"{csv}:{line}: {problem}")):
        read_boxes(csv, skip_bad_rows=True)
    pbtxt = tmp_path / "ava_action_list_v2.2.pbtxt"
    pbtxt.write_bytes(ITEM_STYLE.encode() + data)
    with pytest.raises(AnnotationError, match=re.escape(f"{pbtxt}:{ITEM_STYLE.count(chr(10)) + line}: {problem}")):
        read_action_list(pbtxt)


def test_conflicting_boxes_are_skipped_and_reported_with_skip_bad_rows(tmp_path):
    directory = make_release(tmp_path / "ann")
    write(directory / "ava_val_v2.2.csv", "va1,0902,0.1,0.2,0.3,0.4,80,0\nva1,0903,0.1,0.2,0.3,0.4,80,0\n"
                                          "va1,0903,0.5,0.2,0.6,0.4,12,0\n")
    release = load_annotations(directory, skip_bad_rows=True)
    assert release.val["timestamp"].tolist() == [902.0]
    conflicts = release.bad_rows[release.bad_rows["problem"].str.contains("another box")]
    assert conflicts["line"].tolist() == [2, 3]
    assert conflicts["problem"].tolist() == ["person 0 at 903 s has another box (line 2)"] * 2


@pytest.mark.parametrize("text, skip", [("", False), ("tr1,0902,0.1,0.2,2.0,0.4,12,0\n", True)])
def test_a_release_without_usable_training_rows_is_an_error(tmp_path, text, skip):
    directory = make_release(tmp_path / "ann")
    write(directory / "ava_train_v2.2.csv", text)
    with pytest.raises(AnnotationError, match=r"ava_train_v2\.2\.csv: no usable annotation rows"):
        load_annotations(directory, skip_bad_rows=skip)
