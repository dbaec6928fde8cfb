"""Import and export of the official STVR release, on the real files."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pandas as pd
import pytest

from stvr_data import manifest
from stvr_data.errors import AnnotationError, ManifestError
from stvr_data.official import (
    export_official,
    import_official,
    official_records,
    official_tables,
    queries_inside_reference,
    read_official,
    split_from_name,
)


@pytest.fixture(scope="module")
def release(shared_dir):
    return shared_dir / "data" / "stvr-official"


@pytest.fixture(scope="module")
def test_records(release) -> list:
    return json.loads((release / "stvr_test.json").read_text())


@pytest.fixture(scope="module")
def both(release, tmp_path_factory):
    """val then test imported into one directory."""
    out = tmp_path_factory.mktemp("official")
    import_official(release / "stvr_val.json", out)
    card = import_official(release / "stvr_test.json", out)
    return out, card


def test_split_from_name():
    assert split_from_name("data/stvr_test.json") == "test"
    assert split_from_name("val.json") == "val"
    with pytest.raises(ManifestError, match="--split"):
        split_from_name("val_test.json")
    with pytest.raises(ManifestError, match="--split"):
        split_from_name("pairs.json")


def test_pairs_table(both, test_records):
    out, _ = both
    pairs = manifest.read_benchmark_table(out, "pairs_test")
    assert len(pairs) == len(test_records) == 6495
    first = pairs.iloc[0]
    query, ref = test_records[0]
    assert first.pair_id == "test-00000" and pairs.pair_id.iloc[-1] == "test-06494"
    assert (first.query_video_id, first.ref_video_id) == (query["id"], ref["id"]) == ("5BDj0ow5hnA", "9F2voT6QWvQ")
    # query frames 1563, 1564: the span [1563, 1565)
    assert (first.query_start, first.query_end, first.ref_start, first.ref_end) == (1563, 1565, 911, 914)
    assert first.label == "4"
    # [y1, x1, y2, x2] = [0.329, 0.358, 0.753, 0.436] becomes [x1, y1, x2, y2]
    assert np.asarray(first.query_boxes[0].tolist()) == pytest.approx([0.358, 0.329, 0.436, 0.753])
    assert pairs.query_tubelet_id.isna().all() and pairs.target_tubelet_id.isna().all()
    assert pairs.label[pairs.label.str.contains(r"\+")].iloc[0].split("+") == sorted(
        pairs.label[pairs.label.str.contains(r"\+")].iloc[0].split("+"), key=int)


def test_groundtruth_holds_each_second_for_its_three_clips(both, test_records):
    out, _ = both
    gt = manifest.read_benchmark_table(out, "groundtruth_test")
    images = sum(3 * (r["end"] - r["start"]) for _, r in test_records)
    boxes = sum(3 * len(second) for _, r in test_records for second in r["gt"])
    assert gt[["pair_id", "timestamp"]].drop_duplicates().shape[0] == images == 82920
    assert gt.x1.notna().sum() == boxes == 59535
    pair0 = gt[gt.pair_id == "test-00000"]
    assert sorted(pair0.timestamp.unique()) == pytest.approx([911 + k / 3 for k in range(9)])
    clip = pair0[np.isclose(pair0.timestamp, 911 + 2 / 3)]
    expected = [[b[1], b[0], b[3], b[2]] for b in test_records[0][1]["gt"][0]]
    assert clip[["x1", "y1", "x2", "y2"]].to_numpy() == pytest.approx(np.asarray(expected), abs=1e-7)
    # Pair 1's second 1444 has no box: one NaN row for each of its 3 images.
    empty = gt[(gt.pair_id == "test-00001") & (gt.timestamp >= 1444) & (gt.timestamp < 1445)]
    assert test_records[1][1]["gt"][1] == [] and len(empty) == 3 and empty.x1.isna().all()
    assert (gt.label == gt.pair_id.map(manifest.read_benchmark_table(out, "pairs_test")
                                       .set_index("pair_id").label)).all()


def test_videos_tubelets_and_card(both, release, test_records):
    out, card = both
    val_records = json.loads((release / "stvr_val.json").read_text())
    ids = {part["id"] for records in (val_records, test_records) for pair in records for part in pair}
    videos = manifest.read_benchmark_table(out, "videos")
    assert set(videos.video_id) == ids and videos.video_id.is_unique
    assert (videos.status == "skipped").all() and videos.clip_path.isna().all()
    assert (videos.clip_start == 900).all() and (videos.clip_end == 1800).all()
    assert len(manifest.read_benchmark_table(out, "tubelets")) == 0
    assert card["source"] == "official STVR release"
    assert card["release"]["test"]["file"] == "stvr_test.json"
    assert card["release"]["test"]["sha256"] == hashlib.sha256((release / "stvr_test.json").read_bytes()).hexdigest()
    assert card["counts"]["pairs_val"] == 6299 and card["counts"]["pairs_test"] == 6495
    assert card["counts"]["videos"] == {"skipped": len(ids)}
    # The imported label sets are the official split (val_test.json is [test, val]).
    test_labels, val_labels = json.loads((release / "val_test.json").read_text())
    assert set(card["labels"]["test"]) == {"+".join(map(str, sorted(a))) for a in test_labels}
    assert set(card["labels"]["val"]) == {"+".join(map(str, sorted(a))) for a in val_labels}
    assert set(card["files"]) >= {"pairs_val.parquet", "pairs_test.parquet", "groundtruth_val.parquet",
                                  "groundtruth_test.parquet", "videos.parquet", "tubelets.parquet"}


def test_queries_inside_their_reference_are_counted(both, test_records):
    _, card = both
    expected = [f"test-{i:05d}" for i, (q, r) in enumerate(test_records)
                if q["id"] == r["id"] and q["frames"][0] < r["end"] and q["frames"][-1] >= r["start"]]
    inside = card["release"]["test"]["query_inside_reference"]
    assert inside["count"] == len(expected) == 50 and inside["pair_ids"] == expected
    assert card["release"]["val"]["query_inside_reference"]["count"] == 44


def test_queries_inside_reference_edges():
    pairs = pd.DataFrame({"pair_id": ["a", "b", "c", "d"], "query_video_id": ["v", "v", "v", "w"],
                          "ref_video_id": ["v", "v", "v", "v"], "query_start": [5.0, 10.0, 3.0, 5.0],
                          "query_end": [10.0, 13.0, 5.0, 7.0], "ref_start": [9.0, 5.0, 5.0, 5.0],
                          "ref_end": [12.0, 10.0, 8.0, 8.0]})
    # a touches the first reference second; b starts at the exclusive end; c ends before; d other video
    assert queries_inside_reference(pairs) == ["a"]


def test_round_trip_reproduces_the_release(both, release, tmp_path):
    out, _ = both
    for split in ("val", "test"):
        original = release / f"stvr_{split}.json"
        exported = export_official(out, split, tmp_path / f"{split}.json")
        assert _close(json.loads(exported.read_text()), json.loads(original.read_text()))
        assert exported.read_bytes() == original.read_bytes()  # even the formatting


def _close(a, b) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= 1e-6
    return a == b


def test_reimport_is_idempotent(release, tmp_path):
    first = import_official(release / "stvr_test.json", tmp_path)
    second = import_official(release / "stvr_test.json", tmp_path, split="test")
    assert first == second


def test_import_refuses_a_directory_holding_another_benchmark(release, tmp_path):
    manifest.write_dataset_card(tmp_path, {"name": "ava", "source": "AVA v2.2"})
    with pytest.raises(ManifestError, match="not the official release"):
        import_official(release / "stvr_test.json", tmp_path)


@pytest.mark.parametrize("mutate, problem", [
    (lambda r: r[3][1].update(end=r[3][1]["end"] + 1), "pair 3: reference gt has"),
    (lambda r: r[0][0].update(frames=[1563, 1565]), "pair 0: query frames must be consecutive"),
    (lambda r: r[1][0]["boxes"].append([0.1, 0.1, 0.2, 0.2]), "pair 1: query has 2 boxes for 1 frames"),
    (lambda r: r[2][1]["gt"][0].append([0.5, 0.1, 0.2, 0.2]),
     "pair 2: reference gt second 0 box 5 [0.5, 0.1, 0.2, 0.2] is inverted"),
    (lambda r: r[1][0]["boxes"].__setitem__(0, [0.1, float("nan"), 0.2, 0.2]),
     "pair 1: query box 0 [0.1, nan, 0.2, 0.2] holds NaN or infinity"),
    (lambda r: r[0][0].update(id="../../etc"), "pair 0: query id '../../etc' is not a plain video id"),
    (lambda r: r[4].pop(), "pair 4: expected [query, reference]"),
])
def test_malformed_release_names_the_pair(test_records, tmp_path, mutate, problem):
    records = json.loads(json.dumps(test_records[:5]))
    mutate(records)
    path = tmp_path / "stvr_test.json"
    path.write_text(json.dumps(records))
    with pytest.raises(AnnotationError, match=re.escape(problem)):
        read_official(path)


def test_export_needs_whole_seconds_and_every_keyframe(test_records):
    pairs, gt = official_tables(test_records[:3], "test")
    assert official_records(pairs, gt) == test_records[:3]
    with pytest.raises(ManifestError, match="not whole seconds"):
        official_records(pairs.assign(ref_start=pairs.ref_start + 0.5), gt)
    missing = gt[~((gt.pair_id == "test-00001") & (gt.timestamp == 1445.0))]
    with pytest.raises(ManifestError, match="pair test-00001: no ground-truth image at second 1445"):
        official_records(pairs, missing)


def test_a_built_benchmark_survives_export_and_import(tmp_path):
    """Pairs and ground truth made by our builder's functions, written out in the release
    format and read back, give the same tables."""
    from stvr_data import pairs as pairing

    rng = np.random.default_rng(0)
    tubelets = pd.DataFrame([
        {"video_id": f"v{v}", "person_id": p, "label": ["4", "8+79"][p % 2], "start": float(s),
         "end": float(s + n), "split": "test",
         "boxes": [[0.1 + 0.01 * i, 0.2, 0.4 + 0.01 * i, 0.8] for i in range(n)]}
        for v in range(6) for p in range(3)
        for s, n in [(902 + int(rng.integers(0, 40)), int(rng.integers(2, 8)))]])
    tubelets.insert(0, "tubelet_id", np.arange(len(tubelets), dtype=np.int64))
    built = pairing.make_pairs(tubelets, split="test", seed=0)
    gt = pairing.groundtruth(built, tubelets)
    bench, again = tmp_path / "built", tmp_path / "again"
    manifest.write_table(built, bench / "pairs_test.parquet", manifest.PAIRS_SCHEMA)
    manifest.write_table(gt, bench / "groundtruth_test.parquet", manifest.GROUNDTRUTH_SCHEMA)
    import_official(export_official(bench, "test", tmp_path / "built_test.json"), again)
    columns = ["pair_id", "label", "query_video_id", "query_start", "query_end",
               "ref_video_id", "ref_start", "ref_end"]
    back = manifest.read_benchmark_table(again, "pairs_test")
    assert len(built) > 10 and back[columns].equals(manifest.read_benchmark_table(bench, "pairs_test")[columns])
    before, after = (manifest.read_benchmark_table(d, "groundtruth_test") for d in (bench, again))
    key = ["pair_id", "timestamp", "x1"]
    before, after = (f.sort_values(key).reset_index(drop=True) for f in (before, after))
    assert (before.pair_id == after.pair_id).all()
    assert np.allclose(before[["timestamp", "x1", "y1", "x2", "y2"]].to_numpy(float),
                       after[["timestamp", "x1", "y1", "x2", "y2"]].to_numpy(float), equal_nan=True, atol=1e-6)


def test_deeply_nested_release_is_one_error_with_its_line(tmp_path):
    path = tmp_path / "stvr_test.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(AnnotationError, match=r"stvr_test\.json:1: JSON nested deeper than 64 levels"):
        read_official(path)
    # brackets inside strings do not count
    path.write_text(json.dumps([[{"id": "[" * 500}]]))
    with pytest.raises(AnnotationError, match="pair 0: expected"):
        read_official(path)
