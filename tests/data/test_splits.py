"""Label splits (paper §5): held-out label choice, the official split file, removal of
held-out seconds from training videos, and disjoint train/val/test labels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stvr_data.errors import AnnotationError, StvrDataError
from stvr_data.splits import (
    assign_splits,
    choose_heldout_labels,
    read_split_file,
    remove_heldout_seconds,
    sort_labels,
)
from stvr_data.tubelets import boxes_series, explode


def make_tubelets(rows) -> pd.DataFrame:
    """rows: (video, person, label, start, n_keyframes); box x1 = 0.01 * keyframe offset."""
    frame = pd.DataFrame(rows, columns=["video_id", "person_id", "label", "start", "n"])
    values = np.concatenate([[[0.01 * i, 0.2, 0.5, 0.6] for i in range(n)] for n in frame["n"]])
    frame["start"] = frame["start"].astype(np.float64)
    frame["end"] = frame["start"] + frame["n"]  # half-open [start, end)
    frame["person_id"] = frame["person_id"].astype(np.int32)
    frame["boxes"] = boxes_series(values.astype(np.float32), np.append(0, np.cumsum(frame["n"])))
    return frame.drop(columns="n")


def spans(frame: pd.DataFrame) -> list[tuple]:
    return [(r.video_id, r.person_id, r.label, r.start, r.end) for r in frame.itertuples()]


def test_sort_labels_numeric_order():
    assert sort_labels(["11", "1+79", "9", "11+17", "9"]) == ["1+79", "9", "11", "11+17"]


def test_choose_heldout_labels_strictly_more_than_threshold_and_seeded():
    labels = [f"{i}" for i in range(1, 9)]
    counts = {label: 3 + i for i, label in enumerate(labels)}  # '1': 3 ... '8': 10
    rows = [("v", i, label, 902, 1) for label, n in counts.items() for i in range(n)]
    val = make_tubelets(rows)
    val_labels, test_labels = choose_heldout_labels(val, min_tubelets=5, num_val=2, num_test=2, seed=7)
    eligible = {"4", "5", "6", "7", "8"}  # more than 5 tubelets: 6..10
    assert set(val_labels) <= eligible and set(test_labels) <= eligible
    assert len(val_labels) == 2 and len(test_labels) == 2
    assert not set(val_labels) & set(test_labels)
    assert val_labels == sort_labels(val_labels) and test_labels == sort_labels(test_labels)
    assert choose_heldout_labels(val, min_tubelets=5, num_val=2, num_test=2, seed=7) == (val_labels, test_labels)
    draws = {tuple(map(tuple, choose_heldout_labels(val, min_tubelets=5, num_val=2, num_test=2, seed=s)))
             for s in range(10)}
    assert len(draws) > 1


def test_choose_heldout_labels_too_few_eligible():
    val = make_tubelets([("v", i, "12", 902, 1) for i in range(4)])
    with pytest.raises(StvrDataError) as caught:
        choose_heldout_labels(val, min_tubelets=3, num_val=1, num_test=1)
    message = str(caught.value)
    assert "only 1 combined labels have more than 3 tubelets" in message
    assert "2 are needed" in message and "--min-tubelets" in message


def test_read_real_split_file(shared_dir):
    val, test = read_split_file(shared_dir / "data/stvr-official/val_test.json")
    assert len(val) == 27 and len(test) == 27
    assert not set(val) & set(test)
    # The file is [test_labels, val_labels]: its first test label is [4], first val one [11, 17, 74, 80].
    assert "4" in test and "11+17+74+80" in val
    assert "11+59+74+80" in test and "79" in val


@pytest.mark.parametrize(("data", "problem"), [
    ({"test": []}, "expected [test_labels, val_labels]"),
    ([[[1]], [[2, "x"]]], "expected [test_labels, val_labels]"),
    ([[[1]], [[]]], "expected [test_labels, val_labels]"),
    ([[[1, 2]], [[2, 1]]], "label 1+2 is both a val and a test label"),
    ([[[3], [3]], [[1]]], "test label 3 listed twice"),
])
def test_read_split_file_errors(tmp_path, data, problem):
    path = tmp_path / "val_test.json"
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError) as caught:
        read_split_file(path)
    assert str(caught.value) == f"{path}: {problem}" + (
        ", each a list of lists of integer action ids" if problem.startswith("expected") else "")


def test_read_split_file_not_json(tmp_path):
    path = tmp_path / "val_test.json"
    path.write_text("[[1]\n")
    with pytest.raises(AnnotationError, match=r"val_test\.json:\d+: not valid JSON"):
        read_split_file(path)


def test_remove_heldout_seconds_splits_every_person_of_the_video():
    train = make_tubelets([
        ("a", 0, "12", 902, 10),   # 902..911
        ("a", 1, "80", 905, 2),    # held out: covers 905, 906 in video a
        ("a", 2, "12+80", 904, 5),  # 904..908
        ("a", 3, "80", 910, 1),    # held out: covers 910
        ("b", 0, "12", 905, 3),    # other video: untouched
    ])
    kept = remove_heldout_seconds(train, ["80"])
    assert spans(kept) == [
        ("a", 0, "12", 902.0, 905.0),
        ("a", 0, "12", 907.0, 910.0),
        ("a", 0, "12", 911.0, 912.0),
        ("a", 2, "12+80", 904.0, 905.0),
        ("a", 2, "12+80", 907.0, 909.0),
        ("b", 0, "12", 905.0, 908.0),
    ]
    # Boxes follow their seconds: the piece [907, 910) of person 0 starts at offset 5.
    assert np.allclose(kept["boxes"].iloc[1][0], [0.05, 0.2, 0.5, 0.6])
    assert np.allclose(kept["boxes"].iloc[4][1], [0.04, 0.2, 0.5, 0.6])


def test_remove_nothing_keeps_everything():
    train = make_tubelets([("a", 0, "12", 902, 3), ("a", 0, "11", 905, 2)])
    assert spans(remove_heldout_seconds(train, [])) == spans(train)


def test_assign_splits_drops_singletons_and_keeps_labels_disjoint():
    train = make_tubelets([
        ("t1", 0, "12", 902, 5), ("t1", 1, "79", 903, 1), ("t2", 0, "12", 902, 2),
        ("t2", 1, "14", 902, 2),  # single training tubelet of 14: dropped
        ("t3", 0, "79", 950, 2), ("t3", 1, "11", 940, 3), ("t3", 2, "11", 960, 2),
    ])
    val = make_tubelets([
        ("v1", 0, "79", 902, 2), ("v1", 1, "79", 910, 2), ("v1", 2, "12", 902, 3),
        ("v2", 0, "11", 902, 2),  # single test tubelet of 11: dropped
        ("v2", 1, "80", 902, 2), ("v2", 2, "80", 920, 1),
    ])
    table = assign_splits(train, val, ["79"], ["80", "11"])
    assert spans(table[table.split == "train"]) == [
        ("t1", 0, "12", 902.0, 903.0), ("t1", 0, "12", 904.0, 907.0), ("t2", 0, "12", 902.0, 904.0)]
    assert spans(table[table.split == "val"]) == [("v1", 0, "79", 902.0, 904.0),
                                                 ("v1", 1, "79", 910.0, 912.0)]
    assert spans(table[table.split == "test"]) == [("v2", 1, "80", 902.0, 904.0),
                                                  ("v2", 2, "80", 920.0, 921.0)]
    # every other actor of the validation videos stays, as context (the dropped singleton too)
    assert spans(table[table.split == "context"]) == [("v1", 2, "12", 902.0, 905.0),
                                                     ("v2", 0, "11", 902.0, 904.0)]
    assert list(table.columns) == ["video_id", "person_id", "label", "start", "end", "boxes", "split"]


def random_tubelets(rng, videos, labels, n):
    rows = [(f"{videos}{rng.integers(5)}", int(rng.integers(6)), str(rng.choice(labels)),
             int(rng.integers(902, 1790)), int(rng.integers(1, 8))) for _ in range(n)]
    frame = make_tubelets(rows)
    # One tubelet per person and second: keep the first of overlapping rows.
    seconds = explode(frame)
    clash = seconds.duplicated(["video_id", "person_id", "timestamp"])
    return frame[~np.isin(np.arange(len(frame)), seconds.loc[clash, "tubelet"])].reset_index(drop=True)


def test_train_labels_never_meet_heldout_labels_nor_their_seconds():
    rng = np.random.default_rng(5)
    labels = ["11", "12", "79", "80", "12+80", "11+79"]
    train, val = random_tubelets(rng, "t", labels, 300), random_tubelets(rng, "v", labels, 300)
    table = assign_splits(train, val, ["79", "12+80"], ["80"])
    by_split = {s: set(table.loc[table.split == s, "label"]) for s in ("train", "val", "test")}
    assert by_split["train"] and by_split["val"] and by_split["test"]
    assert not by_split["train"] & (by_split["val"] | by_split["test"])
    assert not by_split["val"] & by_split["test"]
    held = explode(train[train.label.isin(["79", "12+80", "80"])])
    kept = explode(table[table.split == "train"].reset_index(drop=True))
    covered = set(zip(held.video_id, held.timestamp, strict=True))
    assert covered and not covered & set(zip(kept.video_id, kept.timestamp, strict=True))
    assert (table.groupby(["split", "label"]).size() >= 2).all()


def test_assign_splits_rejects_overlapping_label_lists():
    frame = make_tubelets([("v", 0, "1", 902, 1)])
    with pytest.raises(StvrDataError, match="label 1 is both a val and a test label"):
        assign_splits(frame, frame, ["1"], ["1"])
