"""Frame-mAP: hand-computed cases, an independent per-image implementation, ActivityNet's
evaluator (when a checkout is named by $ACTIVITYNET_DIR), and the real official test pairs."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stvr_data.errors import DetectionsError, ManifestError
from stvr_data.evaluation import (
    frame_map,
    frame_map_at,
    precision_recall,
    validate_detections,
)
from stvr_data.manifest import read_benchmark_table
from stvr_data.official import import_official

REPO = Path(__file__).resolve().parents[2]
FULL = [0.0, 0.0, 1.0, 1.0]


def gt_rows(rows) -> pd.DataFrame:
    """rows: (pair_id, label, timestamp, box or None)."""
    return pd.DataFrame(
        [(p, lab, t, *(box if box is not None else [np.nan] * 4)) for p, lab, t, box in rows],
        columns=["pair_id", "label", "timestamp", "x1", "y1", "x2", "y2"])


def det_rows(rows) -> pd.DataFrame:
    """rows: (pair_id, timestamp, box, score)."""
    return pd.DataFrame([(p, t, *box, s) for p, t, box, s in rows],
                        columns=["pair_id", "timestamp", "x1", "y1", "x2", "y2", "score"])


def strip(x1: float, x2: float) -> list[float]:
    """A full-height box: IoU between two strips is the 1-D interval IoU."""
    return [x1, 0.0, x2, 1.0]


# --- an independent implementation: per image, plain Python, ActivityNet's semantics --------

def _iou(a, b) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def reference_frame_map(gt: pd.DataFrame, det: pd.DataFrame, threshold: float) -> dict[str, float]:
    images: dict = {}
    labels, num_gt = {}, {}
    for row in gt.itertuples():
        key = (row.pair_id, round(row.timestamp * 3))
        labels[row.pair_id] = row.label
        boxes = images.setdefault(key, [])
        num_gt.setdefault(row.label, 0)
        if not np.isnan(row.x1):
            boxes.append((row.x1, row.y1, row.x2, row.y2))
            num_gt[row.label] += 1
    scored: dict = {label: [] for label in num_gt}
    by_image: dict = {}
    for row in det.itertuples():
        if row.x2 > row.x1 and row.y2 > row.y1:
            by_image.setdefault((row.pair_id, round(row.timestamp * 3)), []).append(row)
    for key, dets in by_image.items():
        boxes, taken = images[key], set()
        for d in sorted(dets, key=lambda r: -r.score):
            tp = False
            if boxes:
                ious = [_iou((d.x1, d.y1, d.x2, d.y2), b) for b in boxes]
                best = int(np.argmax(ious))
                if ious[best] >= threshold and best not in taken:
                    taken.add(best)
                    tp = True
            scored[labels[key[0]]].append((d.score, tp))
    return {label: _voc_ap(scored[label], num_gt[label]) for label in num_gt}


def _voc_ap(scored: list, num_gt: int) -> float:
    ranked = sorted(scored, key=lambda st: (-st[0], st[1]))  # ties: false positives first
    tps = np.cumsum([tp for _, tp in ranked])
    precision = [0.0] + [tps[i] / (i + 1) for i in range(len(ranked))] + [0.0]
    recall = [0.0] + [tps[i] / num_gt for i in range(len(ranked))] + [1.0]
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    return sum((recall[i] - recall[i - 1]) * precision[i]
               for i in range(1, len(recall)) if recall[i] != recall[i - 1])


def random_case(seed: int, num_pairs: int = 30):
    rng = np.random.default_rng(seed)
    gt, det = [], []
    for p in range(num_pairs):
        pair, label, start = f"test-{p:05d}", f"{1 + p % 4}", 900 + int(rng.integers(0, 50))
        for k in range(3 * int(rng.integers(1, 5))):
            t = start + k / 3
            boxes = []
            for _ in range(int(rng.integers(0, 4))):
                x, y = rng.uniform(0, 0.6, 2)
                boxes.append([x, y, x + rng.uniform(0.1, 0.4), y + rng.uniform(0.1, 0.4)])
            gt += [(pair, label, t, b) for b in boxes] or [(pair, label, t, None)]
            for b in boxes + boxes[:1]:  # a duplicate on the first box
                if rng.random() < 0.8:
                    jittered = np.clip(np.asarray(b) + rng.normal(0, 0.05, 4), 0.0, 1.0)  # scorer wants [0, 1]
                    det.append((pair, t, list(jittered), rng.random()))
            for _ in range(int(rng.integers(0, 3))):
                x, y = rng.uniform(0, 0.8, 2)
                det.append((pair, t, [x, y, x + 0.15, y + 0.2], rng.random()))
    detections = det_rows(det)
    fix = detections.x2 < detections.x1  # jitter may invert a thin box
    detections.loc[fix, ["x1", "x2"]] = detections.loc[fix, ["x2", "x1"]].to_numpy()
    fix = detections.y2 < detections.y1
    detections.loc[fix, ["y1", "y2"]] = detections.loc[fix, ["y2", "y1"]].to_numpy()
    return gt_rows(gt), detections


# --- hand-computed cases ------------------------------------------------------------------

def test_perfect_detections_score_one():
    gt = gt_rows([("test-00000", "4", 10.0, [0.1, 0.2, 0.3, 0.4]),
                  ("test-00000", "4", 10.0, [0.5, 0.5, 0.9, 0.9]),
                  ("test-00000", "4", 10 + 1 / 3, None)])
    det = det_rows([("test-00000", 10.0, [0.1, 0.2, 0.3, 0.4], 0.7),
                    ("test-00000", 10.0, [0.5, 0.5, 0.9, 0.9], 0.6)])
    result = frame_map(gt, det)
    assert result["mAP"] == 1.0
    assert result["per_label"] == {"4": 1.0}
    assert (result["num_images"], result["num_groundtruth"], result["num_detections"]) == (2, 2, 2)


def test_tied_scores_count_false_positives_first_whatever_the_row_order():
    # One TP and one FP tied at 0.9, 2 boxes: precision 1/2 at recall 1/2 -> AP 0.25
    # (ranking the TP first would give 0.5).
    gt = gt_rows([("test-00000", "4", 10.0, FULL), ("test-00000", "4", 11.0, FULL),
                  ("test-00000", "4", 12.0, None)])
    det = det_rows([("test-00000", 10.0, FULL, 0.9), ("test-00000", 12.0, FULL, 0.9)])
    assert frame_map(gt, det)["mAP"] == pytest.approx(0.25)
    assert frame_map(gt, det.iloc[::-1])["mAP"] == pytest.approx(0.25)


def test_detections_on_an_image_without_target_are_false_positives():
    gt = gt_rows([("test-00000", "4", 10.0, FULL), ("test-00000", "4", 10 + 1 / 3, None)])
    det = det_rows([("test-00000", 10 + 1 / 3, FULL, 0.9), ("test-00000", 10.0, FULL, 0.8)])
    assert frame_map(gt, det)["mAP"] == pytest.approx(0.5)  # FP then TP: precision 1/2


def test_duplicate_detections_on_one_box():
    # TP (0.9), duplicate FP (0.8), TP (0.7) on another image: precision 1, 1/2, 2/3;
    # monotone 1, 2/3, 2/3 -> AP = 0.5 * 1 + 0.5 * 2/3.
    gt = gt_rows([("test-00000", "4", 10.0, FULL), ("test-00000", "4", 11.0, FULL)])
    det = det_rows([("test-00000", 10.0, FULL, 0.9), ("test-00000", 10.0, FULL, 0.8),
                    ("test-00000", 11.0, FULL, 0.7)])
    assert frame_map(gt, det)["mAP"] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_no_fallback_to_the_second_best_box():
    # Boxes A = [0, .4] and B = [.1, .5]. The second detection [.04, .44] has IoU .36/.44
    # with A and .34/.46 with B: both >= .5, A is best but taken, so it is a false positive.
    a, b, second = strip(0.0, 0.4), strip(0.1, 0.5), strip(0.04, 0.44)
    gt = gt_rows([("test-00000", "4", 10.0, a), ("test-00000", "4", 10.0, b)])
    det = det_rows([("test-00000", 10.0, a, 0.9), ("test-00000", 10.0, second, 0.8)])
    assert _iou(second, a) == pytest.approx(0.36 / 0.44) and _iou(second, b) == pytest.approx(0.34 / 0.46)
    assert frame_map(gt, det)["mAP"] == pytest.approx(0.5)  # recall 1/2 at precision 1
    det_b = det.assign(x1=[0.1, 0.04], x2=[0.5, 0.44])  # first detection takes B: second gets A
    assert frame_map(gt, det_b)["mAP"] == pytest.approx(1.0)


def test_label_without_detections_has_ap_zero():
    gt = gt_rows([("test-00000", "4", 10.0, FULL), ("test-00001", "8+79", 20.0, FULL)])
    det = det_rows([("test-00000", 10.0, FULL, 0.5)])
    result = frame_map(gt, det)
    assert result["per_label"] == {"4": 1.0, "8+79": 0.0}
    assert result["mAP"] == 0.5


def test_all_point_interpolated_ap_with_monotone_precision():
    # Ranks: TP FP FP TP TP FP TP over 5 boxes (one never found). Precision at the TPs:
    # 1, 2/4, 3/5, 4/7; made monotone: 1, 3/5, 3/5, 4/7. Each TP adds recall 1/5.
    outcome = [True, False, False, True, True, False, True]
    box = strip(0.0, 0.3)
    gt = gt_rows([("test-00000", "4", 10.0 + i, box if tp else None) for i, tp in enumerate(outcome)]
                 + [("test-00000", "4", 17.0, box)])  # the box never found
    det = det_rows([("test-00000", 10.0 + i, box, 1.0 - i / 10) for i in range(len(outcome))])
    expected = (1 + 3 / 5 + 3 / 5 + 4 / 7) / 5
    assert frame_map(gt, det)["mAP"] == pytest.approx(expected)
    curve = precision_recall(gt, det)["4"]
    assert curve.precision == pytest.approx([1, 1 / 2, 1 / 3, 2 / 4, 3 / 5, 3 / 6, 4 / 7])
    assert curve.recall == pytest.approx([0.2, 0.2, 0.2, 0.4, 0.6, 0.6, 0.8])
    assert curve.average_precision == pytest.approx(expected)


def test_iou_threshold_is_inclusive_and_zero_area_detections_are_dropped():
    gt = gt_rows([("test-00000", "4", 10.0, strip(0.0, 0.5))])
    det = det_rows([("test-00000", 10.0, strip(0.0, 0.25), 0.5),  # IoU exactly 0.5
                    ("test-00000", 10.0, strip(0.3, 0.3), 0.9)])  # zero width: ignored
    results = frame_map_at(gt, det, (0.5, 0.51))
    assert results[0.5]["mAP"] == 1.0 and results[0.51]["mAP"] == 0.0
    assert results[0.5]["num_detections"] == 1


def test_detection_timestamps_round_to_the_nearest_third_of_a_second():
    gt = gt_rows([("test-00000", "4", 10 + 1 / 3, FULL), ("test-00000", "4", 10 + 2 / 3, None)])
    assert frame_map(gt, det_rows([("test-00000", 10.3334, FULL, 0.9)]))["mAP"] == 1.0
    assert frame_map(gt, det_rows([("test-00000", 10.6, FULL, 0.9)]))["mAP"] == 0.0


# --- validation ---------------------------------------------------------------------------

GOOD = det_rows([("test-00000", 10.0, FULL, 0.9), ("test-00000", 10.0, [0.2, 0.2, 0.4, 0.4], 0.8)])


@pytest.mark.parametrize("change, message", [
    (lambda d: d.drop(columns=["score"]), "missing columns ['score']"),
    (lambda d: d.assign(y1=[0.0, np.nan]), "row 2 (pair_id='test-00000', timestamp=10.0): y1 is NaN"),
    (lambda d: d.assign(x2=[1.0, 0.1]), "row 2 (pair_id='test-00000', timestamp=10.0): x2 < x1"),
    (lambda d: d.assign(y2=[-1.0, 0.4]), "row 1 (pair_id='test-00000', timestamp=10.0): y2 < y1"),
    (lambda d: d.assign(x2=[1.0, 1.5]),
     "row 2 (pair_id='test-00000', timestamp=10.0): box [0.2, 0.2, 1.5, 0.4] outside [0, 1] "
     "(boxes are normalised x1, y1, x2, y2)"),
    (lambda d: d.assign(x1=[10.0, 64.0], y1=[12.0, 64.0], x2=[200.0, 128.0], y2=[240.0, 128.0]),
     "row 1 (pair_id='test-00000', timestamp=10.0): box [10.0, 12.0, 200.0, 240.0] outside [0, 1] "
     "(boxes are normalised x1, y1, x2, y2); they look like pixel coordinates: divide x by the frame "
     "width and y by its height (1 more rows like it)"),
    (lambda d: d.assign(score=["0.9", "high"]), "row 2 (pair_id='test-00000', timestamp=10.0): score 'high' is not a number"),
    (lambda d: d.assign(pair_id=["test-00000", "test-00042"]), "row 2 (pair_id='test-00042', timestamp=10.0): unknown pair_id"),
    (lambda d: d.assign(pair_id=["val-00000", "test-00000"]), "row 1 (pair_id='val-00000', timestamp=10.0): pair belongs to the val split, not test"),
])
def test_bad_detections_name_the_row_and_the_problem(change, message):
    with pytest.raises(DetectionsError) as err:
        validate_detections(change(GOOD), source="dets.csv", pair_ids=["test-00000"], split="test")
    assert str(err.value).startswith("dets.csv: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_detections_outside_the_reference_images_are_an_error():
    gt = gt_rows([("test-00000", "4", 10.0, FULL)])
    with pytest.raises(DetectionsError, match=r"row 1 .*not an image of the pair's reference"):
        frame_map(gt, det_rows([("test-00000", 11.0, FULL, 0.9)]))
    with pytest.raises(DetectionsError, match="unknown pair_id"):
        frame_map(gt, det_rows([("test-00001", 10.0, FULL, 0.9)]))


def test_malformed_groundtruth_is_reported():
    gt = gt_rows([("test-00000", "4", 10.0, FULL), ("test-00000", "4", 10 + 1 / 9, FULL)])
    det = det_rows([("test-00000", 10.0, FULL, 0.9)])
    with pytest.raises(ManifestError, match=r"row 2 \(pair_id='test-00000'\): timestamp 10.11.* not a clip start"):
        frame_map(gt, det)  # 9 images a second would silently merge into 3
    with pytest.raises(ManifestError, match="pair 'test-00000' has more than one label"):
        frame_map(gt_rows([("test-00000", "4", 10.0, FULL), ("test-00000", "8", 11.0, FULL)]), det)
    with pytest.raises(ManifestError, match=r"missing columns \['label'\]"):
        frame_map(gt.drop(columns="label"), det)


# --- cross-checks -------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_an_independent_per_image_implementation(seed):
    gt, det = random_case(seed)
    for threshold, result in frame_map_at(gt, det, (0.3, 0.5, 0.7)).items():
        expected = reference_frame_map(gt, det, threshold)
        assert result["per_label"] == pytest.approx(expected, abs=1e-12)
        assert result["mAP"] == pytest.approx(np.mean(list(expected.values())), abs=1e-12)
        assert 0.0 < result["mAP"] < 1.0  # the case exercises both kinds of outcome


def test_row_order_does_not_change_the_score():
    gt, det = random_case(3)
    det = det.assign(score=np.round(det.score, 1))  # many ties across images
    shuffled = det.sample(frac=1.0, random_state=0)
    assert frame_map(gt, shuffled) == frame_map(gt, det)
    assert frame_map(gt, det)["per_label"] == pytest.approx(reference_frame_map(gt, det, 0.5), abs=1e-12)


def _scorer_benchmark():
    spec = importlib.util.spec_from_file_location("stvr_scorer_benchmark", REPO / "benchmarks" / "scorer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not os.environ.get("ACTIVITYNET_DIR"),
                    reason="set ACTIVITYNET_DIR to a checkout of github.com/activitynet/ActivityNet")
@pytest.mark.parametrize("threshold", [0.3, 0.5])
def test_matches_activitynet_ava_evaluator(threshold):
    gt, det = random_case(4, num_pairs=60)
    ours = frame_map(gt, det, threshold)
    theirs = _scorer_benchmark().activitynet_frame_map(gt, det, threshold, os.environ["ACTIVITYNET_DIR"])
    assert ours["per_label"] == pytest.approx(theirs["per_label"], abs=1e-12)
    assert ours["mAP"] == pytest.approx(theirs["mAP"], abs=1e-12)


# --- the real official test pairs ---------------------------------------------------------

@pytest.fixture(scope="module")
def official_gt(shared_dir, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("official")
    import_official(shared_dir / "data" / "stvr-official" / "stvr_test.json", out)
    return read_benchmark_table(out, "groundtruth_test")


def _perfect(gt: pd.DataFrame) -> pd.DataFrame:
    return gt[gt.x1.notna()].drop(columns="label").assign(score=1.0).reset_index(drop=True)


def test_perfect_detections_on_the_official_test_pairs_score_one(official_gt):
    result = frame_map(official_gt, _perfect(official_gt))
    assert result["mAP"] == 1.0
    assert len(result["per_label"]) == 27 and set(result["per_label"].values()) == {1.0}
    assert result["num_images"] == 82920 and result["num_groundtruth"] == 59535


def test_dropping_detections_scores_the_fraction_found(official_gt):
    det = _perfect(official_gt)
    kept = det.sample(frac=0.7, random_state=1)
    labels = official_gt.loc[official_gt.x1.notna(), "label"].reset_index(drop=True)
    found = labels[kept.index].value_counts() / labels.value_counts()  # AP = recall at precision 1
    result = frame_map(official_gt, kept)
    assert result["per_label"] == pytest.approx(found.to_dict(), abs=1e-12)
    assert result["mAP"] == pytest.approx(found.mean(), abs=1e-12)


def _single_box_rows(det: pd.DataFrame) -> pd.Series:
    per_image = det.groupby(["pair_id", "timestamp"]).pair_id.transform("size")
    return per_image == 1


def test_shifting_boxes_across_the_threshold(official_gt):
    # Shifting a box of width w by d gives IoU (w - d) / (w + d): d = 3w/7 -> IoU 0.4.
    # Only images with a single box are shifted, so a shifted detection has no other match.
    det = _perfect(official_gt)
    rng = np.random.default_rng(2)
    shift = (det.x2 - det.x1) * 3 / 7
    # boxes stay inside [0, 1], as the scorer requires: shifted left where right would leave it
    shift = shift.where(det.x2 + shift <= 1, -shift)
    fits = ((det.x1 + shift >= 0) & (det.x2 + shift <= 1)).to_numpy()
    shifted = _single_box_rows(det).to_numpy() & fits & (rng.random(len(det)) < 0.3)
    det.loc[shifted, "x1"] += shift[shifted]
    det.loc[shifted, "x2"] += shift[shifted]
    det.loc[shifted, "score"] = 0.5  # ranked after every correct detection
    labels = official_gt.loc[official_gt.x1.notna(), "label"].reset_index(drop=True)
    found = labels[~shifted].value_counts().reindex(labels.unique(), fill_value=0) / labels.value_counts()
    results = frame_map_at(official_gt, det, (0.3, 0.5))
    assert results[0.5]["per_label"] == pytest.approx(found.to_dict(), abs=1e-9)
    assert list(results[0.3]["per_label"].values()) == [1.0] * 27  # IoU 0.4 >= 0.3: all found


def test_false_positives_above_and_below_the_true_positives(official_gt):
    det = _perfect(official_gt)
    empty = official_gt[official_gt.x1.isna()].groupby("label").head(5)  # 5 empty images per label
    false = empty.drop(columns="label").assign(x1=0.2, y1=0.2, x2=0.4, y2=0.4)
    below = frame_map(official_gt, pd.concat([det, false.assign(score=0.5)]))
    assert set(below["per_label"].values()) == {1.0}
    above = frame_map(official_gt, pd.concat([det, false.assign(score=2.0)]))
    n = official_gt[official_gt.x1.notna()].groupby("label").size()
    k = empty.groupby("label").size()
    assert above["per_label"] == pytest.approx((n / (n + k)).to_dict(), abs=1e-12)  # precision n/(n+k) throughout
