"""Pairs (SPEC §1 step 3): the official padding rule, target choice with the query never
inside its reference, ground truth at 3 images per keyframe, training draws."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stvr_data import ava, splits
from stvr_data.chance import chance_map
from stvr_data.errors import StvrDataError
from stvr_data.evaluation import frame_map
from stvr_data.manifest import (
    GROUNDTRUTH_SCHEMA,
    PAIRS_SCHEMA,
    TUBELETS_SCHEMA,
    read_table,
    write_table,
)
from stvr_data.pairs import (
    actor_images,
    choose_targets,
    draw_train_pairs,
    groundtruth,
    make_pairs,
    reference_actors,
    reference_span,
    shuffled_query_sources,
    video_bounds,
)
from stvr_data.sample import make_sample
from stvr_data.tubelets import assign_ids, boxes_series, explode, link_tubelets


def make_tubelets(rows, split="val") -> pd.DataFrame:
    """rows: (video, person, label, start, n_keyframes); box x1 = 0.01 * offset + 0.1 * person."""
    frame = pd.DataFrame(rows, columns=["video_id", "person_id", "label", "start", "n"])
    values = np.concatenate([[[0.01 * i + 0.1 * p, 0.2, 0.5 + 0.1 * p, 0.6] for i in range(n)]
                             for p, n in zip(frame["person_id"], frame["n"], strict=True)])
    frame["start"] = frame["start"].astype(np.float64)
    frame["end"] = frame["start"] + frame["n"]  # half-open [start, end)
    frame["person_id"] = frame["person_id"].astype(np.int32)
    frame["boxes"] = boxes_series(values.astype(np.float32), np.append(0, np.cumsum(frame["n"])))
    return assign_ids(frame.drop(columns="n").assign(split=split))


@pytest.mark.parametrize(("start", "end", "expected"), [
    (1000, 1003, (997, 1006)),    # 3 keyframes: 3 s of background each side
    (1000, 1009, (991, 1018)),    # 9 < 10: padded
    (1000, 1010, (1000, 1010)),   # 10 keyframes: its own span
    (902, 906, (900, 910)),       # clamped below at 900
    (1795, 1799, (1791, 1800)),   # clamped above at 1800
    (902, 903, (901, 904)),
])
def test_reference_span_official_rule(start, end, expected):
    ref_start, ref_end = reference_span(start, end, 900, 1800)
    assert (float(ref_start), float(ref_end)) == expected


def test_reference_span_vectorised_with_options():
    ref_start, ref_end = reference_span(np.array([10.0, 10.0]), np.array([11.5, 14.5]),
                                        np.array([0.0, 12.0]), np.array([100.0, 100.0]),
                                        keyframe_interval=0.5, pad_below=5)
    # 3 keyframes of 0.5 s -> 1.5 s each side; 9 keyframes >= 5 -> own span [10, 14.5).
    assert ref_start.tolist() == [8.5, 10.0] and ref_end.tolist() == [13.0, 14.5]


def test_video_bounds_forms():
    assert [a.tolist() for a in video_bounds(["x"])] == [[900.0], [1800.0]]
    assert [a.tolist() for a in video_bounds(["b", "a"], {"a": (0, 5), "b": (1, 9)})] == [[1, 0], [9, 5]]
    frame = pd.DataFrame({"video_id": ["a"], "lo": [2.0], "hi": [3.0]})
    assert [a.tolist() for a in video_bounds(["a"], frame)] == [[2.0], [3.0]]
    with pytest.raises(StvrDataError, match="no time bounds for video z"):
        video_bounds(["z"], {"a": (0, 5)})


def test_choose_targets_walks_valid_candidates_in_label_video_start_order():
    # Label '5': tubelets 0 (a, 902), 1 (a, 1000), 2 (b, 950), 3 (c, 902); query 0.
    # Tubelet 0's own second overlaps nothing else; all three others are valid for it.
    table = make_tubelets([("a", 0, "5", 902, 1), ("a", 1, "5", 1000, 1), ("b", 0, "5", 950, 1),
                           ("c", 0, "5", 902, 1)])
    ref_start, ref_end = reference_span(table.start, table.end, 900, 1800)
    picks = [choose_targets(table, ref_start, ref_end, np.full(4, u))[0] for u in (0.0, 0.34, 0.67, 0.99)]
    assert picks == [1, 2, 3, 3]


def test_choose_targets_is_uniform_over_valid_candidates_only():
    # Query: tubelet 0 (a, 1000). Tubelet 1 (a, 1001) is invalid: its reference [1000, 1003)
    # holds the query. Valid: 2 (a, 1100, same video), 3 (b) and 4 (c).
    table = make_tubelets([("a", 0, "5", 1000, 1), ("a", 1, "5", 1001, 1), ("a", 2, "5", 1100, 1),
                           ("b", 0, "5", 950, 1), ("c", 0, "5", 950, 1)])
    ref_start, ref_end = reference_span(table.start, table.end, 900, 1800)
    grid = (np.arange(3000) + 0.5) / 3000
    picks = [choose_targets(table, ref_start, ref_end, np.full(5, u))[0] for u in grid[::10]]
    assert sorted(set(picks)) == [2, 3, 4]
    assert [picks.count(t) for t in (2, 3, 4)] == [100, 100, 100]


def test_query_inside_its_only_reference_is_dropped_and_counted():
    # Same person-less setting: tubelet 1 (903) lies inside tubelet 0's padded reference
    # [901, 904) and vice versa, so neither has a valid target; 2 and 3 pair with each other.
    table = make_tubelets([("a", 0, "5", 902, 1), ("a", 1, "5", 903, 1),
                           ("b", 0, "7", 902, 1), ("c", 0, "7", 902, 1)])
    pairs = make_pairs(table, split="val", seed=0)
    assert pairs.attrs["queries_without_target"] == 2
    assert pairs["query_tubelet_id"].tolist() == [2, 3]
    assert pairs["target_tubelet_id"].tolist() == [3, 2]
    assert pairs["pair_id"].tolist() == ["val-00000", "val-00001"]


def random_split(seed, n=400, split="val"):
    rng = np.random.default_rng(seed)
    rows = [(f"v{rng.integers(4)}", int(rng.integers(50)), str(rng.choice(["5", "7", "5+7", "9"])),
             int(rng.integers(902, 1790)), int(rng.integers(1, 14))) for _ in range(n)]
    frame = make_tubelets(rows, split)
    return frame.drop_duplicates(["video_id", "person_id"]).pipe(lambda f: assign_ids(f))


def test_make_pairs_rules_hold_on_random_tubelets():
    table = random_split(1)
    pairs = make_pairs(table, split="val", seed=3)
    assert list(pairs.columns) == PAIRS_SCHEMA.names
    assert len(pairs) + pairs.attrs["queries_without_target"] == len(table)
    assert len(pairs) > 0.9 * len(table)
    byid = table.set_index("tubelet_id")
    target, query = byid.loc[pairs.target_tubelet_id], byid.loc[pairs.query_tubelet_id]
    assert (pairs.target_tubelet_id != pairs.query_tubelet_id).all()
    assert (target.label.to_numpy() == pairs.label.to_numpy()).all()
    assert (query.label.to_numpy() == pairs.label.to_numpy()).all()
    assert (pairs.ref_video_id.to_numpy() == target.video_id.to_numpy()).all()
    # The query never overlaps its own reference.
    same = pairs.query_video_id == pairs.ref_video_id
    overlap = same & (pairs.query_start < pairs.ref_end) & (pairs.query_end > pairs.ref_start)
    assert same.any() and not overlap.any()
    # The reference contains its target and stays in the 900-1800 s segment.
    assert (pairs.ref_start <= target.start.to_numpy()).all()
    assert (pairs.ref_end >= target.end.to_numpy()).all()
    assert pairs.ref_start.min() >= 900 and pairs.ref_end.max() <= 1800
    lengths = [len(b) for b in pairs.query_boxes]
    assert lengths == (pairs.query_end - pairs.query_start).astype(int).tolist()


def test_make_pairs_is_deterministic_and_seeded():
    table = random_split(2)
    first = make_pairs(table, split="val", seed=4)
    assert first.equals(make_pairs(table, split="val", seed=4))
    assert not first.target_tubelet_id.equals(make_pairs(table, split="val", seed=5).target_tubelet_id)


def test_make_pairs_selects_its_split_and_writes_to_schema(tmp_path):
    table = pd.concat([random_split(3, 60, "val"), random_split(4, 60, "test")], ignore_index=True)
    table = assign_ids(table)
    pairs = make_pairs(table, split="test", seed=0)
    assert set(pairs.split) == {"test"} and pairs.pair_id.iloc[0] == "test-00000"
    assert set(table.set_index("tubelet_id").loc[pairs.query_tubelet_id, "split"]) == {"test"}
    back = read_table(write_table(pairs, tmp_path / "pairs_test.parquet", PAIRS_SCHEMA), PAIRS_SCHEMA)
    assert back.pair_id.tolist() == pairs.pair_id.tolist()
    with pytest.raises(StvrDataError, match="tubelet_id"):
        make_pairs(table.drop(columns="tubelet_id"), split="val", seed=0)


def small_case():
    """Video r: label '5' person 0 at 1000-1001, person 1 at 1001; label '7' person 2 at 1000."""
    table = make_tubelets([("q", 0, "5", 950, 2), ("r", 0, "5", 1000, 2), ("r", 1, "5", 1001, 1),
                           ("r", 2, "7", 1000, 1), ("q", 1, "7", 950, 1)])
    pairs = pd.DataFrame({"pair_id": ["val-00000"], "label": ["5"], "ref_video_id": ["r"],
                          "ref_start": [999.0], "ref_end": [1002.0]})
    return table, pairs


def test_groundtruth_hand_computed(tmp_path):
    table, pairs = small_case()
    truth = groundtruth(pairs, table)
    assert list(truth.columns) == GROUNDTRUTH_SCHEMA.names
    third = 1 / 3
    expected_times = [999, 999 + third, 999 + 2 * third,
                      1000, 1000 + third, 1000 + 2 * third,
                      1001, 1001, 1001 + third, 1001 + third, 1001 + 2 * third, 1001 + 2 * third]
    assert np.allclose(truth.timestamp, expected_times)
    assert truth.x1.isna().tolist() == [True] * 3 + [False] * 9
    # Keyframe 1000: person 0's first box; keyframe 1001: person 0's second box, then person 1.
    assert np.allclose(truth.x1.iloc[3:6], 0.0)
    assert np.allclose(truth.x1.iloc[6::2], 0.01) and np.allclose(truth.x1.iloc[7::2], 0.1)
    assert set(truth.label) == {"5"} and set(truth.pair_id) == {"val-00000"}
    write_table(truth, tmp_path / "groundtruth_val.parquet", GROUNDTRUTH_SCHEMA)


def test_groundtruth_counts_every_image_of_real_pairs():
    table = random_split(6)
    pairs = make_pairs(table, split="val", seed=0)
    truth = groundtruth(pairs, table)
    images = truth.drop_duplicates(["pair_id", "timestamp"]).groupby("pair_id", sort=False).size()
    assert images.tolist() == ((pairs.ref_end - pairs.ref_start) * 3).astype(int).tolist()
    # The target's boxes are there at each of its images (and maybe other tubelets' too).
    target = table.set_index("tubelet_id").loc[pairs.target_tubelet_id]
    boxed = truth.dropna(subset=["x1"]).groupby("pair_id", sort=False).size().reindex(pairs.pair_id)
    assert (boxed.to_numpy() >= 3 * (target.end - target.start).to_numpy()).all()


def test_reference_actors_marks_matching_label():
    table, pairs = small_case()
    actors = reference_actors(pairs, table)
    assert list(actors.columns) == ["pair_id", "timestamp", "x1", "y1", "x2", "y2", "matching", "label"]
    assert actors.label.tolist() == ["5", "7", "5", "5"]
    assert actors.timestamp.tolist() == [1000.0, 1000.0, 1001.0, 1001.0]
    assert actors.matching.tolist() == [True, False, True, True]
    assert np.allclose(actors.x1, [0.0, 0.2, 0.01, 0.1])


def test_draw_train_pairs_rules():
    rng_rows = np.random.default_rng(8)
    rows = [(f"t{rng_rows.integers(6)}", i, str(rng_rows.choice(["1", "2", "3"])),
             int(rng_rows.integers(902, 1700)), int(rng_rows.integers(1, 25))) for i in range(200)]
    rows.append(("t0", 999, "lonely", 902, 3))
    table = make_tubelets(rows, "train")
    pairs = draw_train_pairs(table, np.random.default_rng(0))
    assert list(pairs.columns) == PAIRS_SCHEMA.names
    assert len(pairs) == 200 and "lonely" not in set(pairs.label)
    assert pairs.pair_id.iloc[-1] == "train-00199" and set(pairs.split) == {"train"}
    byid = table.set_index("tubelet_id")
    query, target = byid.loc[pairs.query_tubelet_id], byid.loc[pairs.target_tubelet_id]
    assert (pairs.query_tubelet_id != pairs.target_tubelet_id).all()
    assert (target.label.to_numpy() == pairs.label.to_numpy()).all()
    q_len = pairs.query_end - pairs.query_start
    assert q_len.max() == 10 and (q_len == np.minimum(query.end - query.start, 10).to_numpy()).all()
    assert (pairs.query_start >= query.start.to_numpy()).all()
    assert (pairs.query_end <= query.end.to_numpy()).all()
    r_len = pairs.ref_end - pairs.ref_start
    assert (r_len == np.minimum(target.end - target.start, 2).to_numpy()).all()
    assert (pairs.ref_start >= target.start.to_numpy()).all()
    assert (pairs.ref_end <= target.end.to_numpy()).all()
    # Query boxes are the tubelet's boxes at the window's keyframes.
    offset = (pairs.query_start.to_numpy() - query.start.to_numpy()).astype(int)
    for k in range(len(pairs)):
        whole = np.asarray(query.boxes.iloc[k])
        assert np.allclose(pairs.query_boxes.iloc[k], whole[offset[k]:offset[k] + int(q_len.iloc[k])])
    assert offset.max() > 0
    assert pairs.equals(draw_train_pairs(table, np.random.default_rng(0)))
    assert not pairs.equals(draw_train_pairs(table, np.random.default_rng(1)))


def test_reference_actors_for_training_pairs_cover_every_actor():
    table = make_tubelets([("a", 0, "1", 902, 4), ("a", 1, "2", 903, 2), ("b", 0, "1", 902, 3)],
                          "train")
    pairs = draw_train_pairs(table, np.random.default_rng(0))
    actors = reference_actors(pairs, table)
    seconds = explode(table)
    for pair in pairs.itertuples():
        mine = actors[actors.pair_id == pair.pair_id]
        inside = seconds[(seconds.video_id == pair.ref_video_id) & (seconds.timestamp >= pair.ref_start)
                         & (seconds.timestamp < pair.ref_end)]
        assert len(mine) == len(inside)
        assert mine.matching.sum() == (inside.label == pair.label).sum()


def annotation_steps(directory, seed):
    release = ava.load_annotations(directory)
    train, val = link_tubelets(release.train), link_tubelets(release.val)
    val_labels, test_labels = splits.choose_heldout_labels(val, min_tubelets=4, num_val=2,
                                                          num_test=2, seed=seed)
    table = assign_ids(splits.assign_splits(train, val, val_labels, test_labels))
    made = {split: make_pairs(table, split=split, seed=seed) for split in ("val", "test")}
    return table, made, {split: groundtruth(p, table) for split, p in made.items()}


def test_annotation_steps_on_the_synthetic_sample(tmp_path):
    make_sample(tmp_path / "sample", videos=False)
    table, made, truth = annotation_steps(tmp_path / "sample" / "annotations", seed=0)
    labels = {s: set(table.label[table.split == s]) for s in ("train", "val", "test")}
    assert all(labels.values()) and not labels["train"] & (labels["val"] | labels["test"])
    for split in ("val", "test"):
        pairs = made[split]
        assert len(pairs) > 0 and set(pairs.label) <= labels[split]
        inside = ((pairs.query_video_id == pairs.ref_video_id) & (pairs.query_start < pairs.ref_end)
                  & (pairs.query_end > pairs.ref_start))
        assert not inside.any()
        assert truth[split].x1.notna().any() and truth[split].x1.isna().any()
        write_table(pairs, tmp_path / f"pairs_{split}.parquet", PAIRS_SCHEMA)
        write_table(truth[split], tmp_path / f"groundtruth_{split}.parquet", GROUNDTRUTH_SCHEMA)
    write_table(table, tmp_path / "tubelets.parquet", TUBELETS_SCHEMA)
    again = annotation_steps(tmp_path / "sample" / "annotations", seed=0)
    assert again[0].equals(table) and again[1]["test"].equals(made["test"])
    assert again[2]["val"].equals(truth["val"])


# The chance floor's detector and the shuffled-query diagnostic.

def test_actor_images_box_every_actor_on_every_image():
    table, pairs = small_case()
    actors = actor_images(pairs, table)
    assert list(actors.columns) == ["pair_id", "timestamp", "x1", "y1", "x2", "y2"]
    third = 1 / 3
    # keyframe 999 has no actor; 1000 has persons 0 (label 5) and 2 (label 7); 1001 persons 0, 1
    expected = [t for t in (1000, 1000 + third, 1000 + 2 * third,
                            1001, 1001 + third, 1001 + 2 * third) for _ in range(2)]
    assert np.allclose(actors.timestamp, expected)
    assert np.allclose(actors.x1.iloc[:2], [0.0, 0.2]) and np.allclose(actors.x1.iloc[6:8], [0.01, 0.1])


def test_chance_is_one_when_every_actor_matches_and_below_one_otherwise():
    table, pairs = small_case()
    only_matching = table[table.label == "5"]
    truth = groundtruth(pairs, only_matching)
    assert chance_map(truth, actor_images(pairs, only_matching))["mAP"] == pytest.approx(1.0)
    truth = groundtruth(pairs, table)
    actors = actor_images(pairs, table)
    floor = chance_map(truth, actors, repeats=7, seed=3)
    # by definition: the mean frame-mAP@0.5 of the actors' boxes under the seeded random scores
    rng = np.random.default_rng(3)
    by_hand = [frame_map(truth, actors.assign(score=rng.random(len(actors))))["mAP"] for _ in range(7)]
    assert floor["mAP"] == pytest.approx(np.mean(by_hand)) and floor["std"] == pytest.approx(np.std(by_hand))
    assert 0.5 < floor["mAP"] < 1.0 and floor["repeats"] == 7


def test_shuffled_queries_come_from_another_label_and_are_seeded():
    labels = np.array(["5", "5", "7", "9", "7", "5"], dtype=object)
    sources = shuffled_query_sources(labels, seed=0)
    assert (labels[sources] != labels).all()
    assert np.array_equal(sources, shuffled_query_sources(labels, seed=0))
    assert any(not np.array_equal(sources, shuffled_query_sources(labels, seed=s)) for s in range(1, 6))
    with pytest.raises(StvrDataError, match="two combined labels"):
        shuffled_query_sources(np.array(["5", "5"], dtype=object), seed=0)
