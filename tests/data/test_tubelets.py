"""Linking per-keyframe AVA rows into combined-label tubelets, checked against hand-made cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stvr_data.ava import read_boxes
from stvr_data.errors import AnnotationError, StvrDataError
from stvr_data.manifest import TUBELETS_SCHEMA, read_table, write_table
from stvr_data.tubelets import (
    assign_ids,
    boxes_series,
    combined_label,
    explode,
    keyframe_index,
    label_ids,
    link_tubelets,
    runs_to_tubelets,
)

# Rows out of order on purpose. Person 0 of v1: 902-903 {12, 80}, 904 {12}, gap at 905,
# 906 {12}; person 3 of v1: 902 {11}; v0 person 1: 905-906 {17, 11, 74} with a repeated
# action row at 906. Box of person 0 moves at 903.
TRICKY = """\
v1,0903,0.10,0.20,0.30,0.50,80,0
v1,0902,0.10,0.20,0.30,0.40,12,0
v1,0906,0.10,0.20,0.30,0.50,12,0
v1,0902,0.10,0.20,0.30,0.40,80,0
v0,0906,0.60,0.60,0.70,0.70,74,1
v1,0903,0.10,0.20,0.30,0.50,12,0
v1,0904,0.10,0.20,0.30,0.60,12,0
v0,0905,0.50,0.50,0.60,0.60,17,1
v1,0902,0.50,0.50,0.60,0.60,11,3
v0,0906,0.60,0.60,0.70,0.70,17,1
v0,0905,0.50,0.50,0.60,0.60,74,1
v0,0906,0.60,0.60,0.70,0.70,11,1
v0,0905,0.50,0.50,0.60,0.60,11,1
v0,0906,0.60,0.60,0.70,0.70,74,1
"""


def boxes_of(path_text, tmp_path, name="t.csv"):
    path = tmp_path / name
    path.write_text(path_text)
    return read_boxes(path)[0], path


def as_plain(tubelets: pd.DataFrame) -> list[tuple]:
    return [(r.video_id, r.person_id, r.label, r.start, r.end,
             np.round(np.asarray(r.boxes, dtype=np.float64), 4).tolist())
            for r in tubelets.itertuples()]


def test_combined_label_sorts_numerically_and_dedups():
    assert combined_label([80, 11, 74, 17]) == "11+17+74+80"
    assert combined_label([80, 80, 9]) == "9+80"
    assert label_ids("11+17+74+80") == (11, 17, 74, 80)


def test_link_tricky_rows(tmp_path):
    boxes, _ = boxes_of(TRICKY, tmp_path)
    tubelets = link_tubelets(boxes)
    assert list(tubelets.columns) == ["video_id", "person_id", "label", "start", "end", "boxes"]
    assert as_plain(tubelets) == [
        ("v0", 1, "11+17+74", 905.0, 907.0, [[0.5, 0.5, 0.6, 0.6], [0.6, 0.6, 0.7, 0.7]]),
        ("v1", 0, "12+80", 902.0, 904.0, [[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.5]]),
        ("v1", 0, "12", 904.0, 905.0, [[0.1, 0.2, 0.3, 0.6]]),
        ("v1", 0, "12", 906.0, 907.0, [[0.1, 0.2, 0.3, 0.5]]),
        ("v1", 3, "11", 902.0, 903.0, [[0.5, 0.5, 0.6, 0.6]]),
    ]
    assert tubelets["start"].dtype == np.float64 and tubelets["person_id"].dtype == np.int32


def test_link_does_not_depend_on_row_order(tmp_path):
    boxes, _ = boxes_of(TRICKY, tmp_path)
    shuffled = boxes.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert as_plain(link_tubelets(shuffled)) == as_plain(link_tubelets(boxes))


def test_subset_of_actions_is_another_label(tmp_path):
    # {12, 80} then {12}: the paper links only identical full sets.
    text = "v,0902,0.1,0.1,0.2,0.2,12,0\nv,0902,0.1,0.1,0.2,0.2,80,0\nv,0903,0.1,0.1,0.2,0.2,12,0\n"
    boxes, _ = boxes_of(text, tmp_path)
    assert link_tubelets(boxes)["label"].tolist() == ["12+80", "12"]


def test_conflicting_boxes_name_video_time_person_and_lines(tmp_path):
    text = "v,0902,0.1,0.1,0.2,0.2,12,4\nv,0903,0.1,0.1,0.2,0.2,12,4\nv,0902,0.1,0.1,0.2,0.3,80,4\n"
    boxes, path = boxes_of(text, tmp_path)
    with pytest.raises(AnnotationError) as caught:
        link_tubelets(boxes, source=str(path))
    assert str(caught.value) == (f"{path}:3: video v at 902 s, person 4: box [0.1, 0.1, 0.2, 0.3] "
                                 "differs from [0.1, 0.1, 0.2, 0.2] on line 1")
    with pytest.raises(StvrDataError, match="video v at 902 s, person 4: conflicting boxes"):
        link_tubelets(boxes)


def test_keyframe_interval_is_a_parameter(tmp_path):
    text = "v,902,0.1,0.1,0.2,0.2,1,0\nv,903,0.1,0.1,0.2,0.2,1,0\nv,904,0.1,0.1,0.2,0.2,1,0\n"
    boxes, _ = boxes_of(text, tmp_path)
    boxes["timestamp"] = [1.0, 1.5, 2.5]  # AVA files hold whole seconds only; linking takes any grid
    assert link_tubelets(boxes, keyframe_interval=0.5)[["start", "end"]].values.tolist() == [
        [1.0, 2.0], [2.5, 3.0]]  # half-open spans: last keyframe + 0.5 s
    assert len(link_tubelets(boxes, keyframe_interval=0.25)) == 3  # 1.0 and 1.5 are 2 steps apart
    with pytest.raises(StvrDataError, match="not on the 1.0 s keyframe grid"):
        link_tubelets(boxes)


def test_keyframe_index_rounds_float_noise():
    assert keyframe_index([0.1 * 3, 902.0000000001], 0.1).tolist() == [3, 9020]


def test_explode_round_trip_and_ids(tmp_path):
    boxes, _ = boxes_of(TRICKY, tmp_path)
    tubelets = link_tubelets(boxes)
    seconds = explode(tubelets)
    assert len(seconds) == 7
    assert seconds["tubelet"].tolist() == [0, 0, 1, 1, 2, 3, 4]
    assert seconds["timestamp"].tolist() == [905, 906, 902, 903, 904, 906, 902]
    relinked = runs_to_tubelets(seconds.drop(columns="tubelet"))
    assert as_plain(relinked) == as_plain(tubelets)
    ids = assign_ids(tubelets.iloc[::-1])
    assert ids["tubelet_id"].tolist() == [0, 1, 2, 3, 4]
    assert as_plain(ids) == as_plain(tubelets)


def test_run_key_splits_adjacent_runs():
    seconds = pd.DataFrame({"video_id": ["v"] * 3, "person_id": [0] * 3, "timestamp": [1.0, 2.0, 3.0],
                            "x1": 0.1, "y1": 0.1, "x2": 0.2, "y2": 0.2, "label": "5"})
    assert len(runs_to_tubelets(seconds)) == 1
    split = runs_to_tubelets(seconds, run_key=np.array([0, 0, 1]))
    assert split[["start", "end"]].values.tolist() == [[1.0, 3.0], [3.0, 4.0]]


def test_tubelets_write_to_the_manifest_schema(tmp_path):
    boxes, _ = boxes_of(TRICKY, tmp_path)
    table = assign_ids(link_tubelets(boxes)).assign(split="train")
    path = write_table(table, tmp_path / "tubelets.parquet", TUBELETS_SCHEMA)
    back = read_table(path, TUBELETS_SCHEMA)
    assert back["label"].tolist() == table["label"].tolist()
    assert np.asarray(back["boxes"].iloc[0].tolist(), dtype=np.float32).tolist() == \
        np.asarray(table["boxes"].iloc[0], dtype=np.float32).tolist()


def test_boxes_series_offsets():
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    series = boxes_series(values, np.array([0, 2, 2, 3]))
    assert [len(b) for b in series] == [2, 0, 1]
    assert series.iloc[2] == [[8.0, 9.0, 10.0, 11.0]]


def test_empty_input_gives_empty_tubelets(tmp_path):
    boxes, _ = boxes_of(TRICKY, tmp_path)
    empty = link_tubelets(boxes.iloc[:0])
    assert empty.empty and list(empty.columns) == ["video_id", "person_id", "label", "start", "end", "boxes"]
