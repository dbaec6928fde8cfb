"""`stvr-data evaluate`, `import-official` and `export-official` from the command line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from stvr_data import manifest
from stvr_data.cli._errors import EXIT_BAD_INPUT
from stvr_data.cli.main import main

FULL = [0.0, 0.0, 1.0, 1.0]


def run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def small_benchmark(tmp_path):
    """Two test pairs: label '4' with 2 boxes on 3 images, label '8+79' with 1 box."""
    gt = pd.DataFrame(
        [("test-00000", "4", 10.0, *FULL), ("test-00000", "4", 10 + 1 / 3, 0.0, 0.0, 0.5, 0.5),
         ("test-00000", "4", 10 + 2 / 3, *[np.nan] * 4), ("test-00001", "8+79", 20.0, *FULL)],
        columns=["pair_id", "label", "timestamp", "x1", "y1", "x2", "y2"])
    bench = tmp_path / "bench"
    manifest.write_table(gt, bench / "groundtruth_test.parquet", manifest.GROUNDTRUTH_SCHEMA)
    return bench


def detections(rows) -> pd.DataFrame:
    return pd.DataFrame([(p, t, *b, s) for p, t, b, s in rows],
                        columns=["pair_id", "timestamp", "x1", "y1", "x2", "y2", "score"])


def test_evaluate_prints_table_writes_json_and_plots(small_benchmark, tmp_path):
    # Label 4 ranks TP 0.9, FP 0.8 (empty image), then 0.7 on [0, 0, .5, .5] with IoU 0.5:
    # a TP up to IoU 0.5 (AP 0.5 + 0.5 * 2/3), a FP above (AP 0.5). Label 8+79 has no
    # detection (AP 0).
    dets = detections([("test-00000", 10.0, FULL, 0.9), ("test-00000", 10 + 2 / 3, FULL, 0.8),
                       ("test-00000", 10 + 1 / 3, [0.0, 0.0, 0.25, 0.5], 0.7)])
    path = tmp_path / "dets.csv"
    dets.to_csv(path, index=False)
    result = run("evaluate", "--benchmark", str(small_benchmark), "--split", "test",
                 "--detections", str(path), "--iou", "0.6", "--json", str(tmp_path / "out.json"),
                 "--plot-dir", str(tmp_path / "plots"))
    assert result.exit_code == 0, result.output
    assert "frame-mAP@0.6: 0.2500" in result.output  # label 4: 1 of 2 boxes at precision 1
    assert "mAP@0.3 0.4167" in result.output and "mAP@0.7 0.2500" in result.output
    assert "mAP@0.5 0.4167" in result.output
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["iou_threshold"] == 0.6 and out["mAP"] == pytest.approx(0.25)
    assert out["per_label"] == {"4": pytest.approx(0.5), "8+79": 0.0}
    assert out["summary"] == {"0.3": pytest.approx(5 / 12), "0.5": pytest.approx(5 / 12),
                              "0.7": pytest.approx(0.25)}
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert plots == ["pr_4.png", "pr_8+79.png"]
    assert (tmp_path / "plots" / "pr_4.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_reads_parquet(small_benchmark, tmp_path):
    path = tmp_path / "dets.parquet"
    detections([("test-00000", 10.0, FULL, 0.9), ("test-00001", 20.0, FULL, 0.4)]).to_parquet(path)
    result = run("evaluate", "--benchmark", str(small_benchmark), "--split", "test", "--detections", str(path))
    assert result.exit_code == 0, result.output
    assert "frame-mAP@0.5: 0.7500" in result.output  # label 4: 1 of 2 boxes; 8+79: 1 of 1


@pytest.mark.parametrize("rows, message", [
    ([("val-00000", 10.0, FULL, 0.9)], "row 1 (pair_id='val-00000', timestamp=10.0): pair belongs to the val split, not test"),
    ([("test-00000", 10.0, FULL, 0.9), ("test-00007", 10.0, FULL, 0.9)], "row 2 (pair_id='test-00007', timestamp=10.0): unknown pair_id"),
    ([("test-00000", 10.0, [0.5, 0.0, 0.4, 1.0], 0.9)], "row 1 (pair_id='test-00000', timestamp=10.0): x2 < x1"),
    ([("test-00000", 10.0, FULL, "high")], "row 1 (pair_id='test-00000', timestamp=10.0): score 'high' is not a number"),
    ([("test-00000", 30.0, FULL, 0.9)], "row 1 (pair_id='test-00000', timestamp=30.0): timestamp is not an image"),
])
def test_bad_detections_fail_with_one_line(small_benchmark, tmp_path, rows, message):
    path = tmp_path / "dets.csv"
    detections(rows).to_csv(path, index=False)
    result = run("evaluate", "--benchmark", str(small_benchmark), "--split", "test", "--detections", str(path))
    assert result.exit_code == EXIT_BAD_INPUT
    assert result.output.strip().count("\n") == 0
    assert result.output.startswith(f"error: {path}: ")
    assert message in result.output


def test_missing_columns_and_missing_groundtruth(small_benchmark, tmp_path):
    path = tmp_path / "dets.csv"
    detections([("test-00000", 10.0, FULL, 0.9)]).drop(columns=["y2"]).to_csv(path, index=False)
    result = run("evaluate", "--benchmark", str(small_benchmark), "--split", "test", "--detections", str(path))
    assert result.exit_code == EXIT_BAD_INPUT and "missing columns ['y2']" in result.output
    result = run("evaluate", "--benchmark", str(small_benchmark), "--split", "val", "--detections", str(path))
    assert result.exit_code == EXIT_BAD_INPUT and "groundtruth_val.parquet: no such manifest table" in result.output


def test_import_evaluate_export_on_the_official_test_pairs(shared_dir, tmp_path):
    release = shared_dir / "data" / "stvr-official" / "stvr_test.json"
    bench = tmp_path / "bench"
    result = run("import-official", "--json", str(release), "--out", str(bench))
    assert result.exit_code == 0, result.output
    assert "6495 test pairs, 82920 images, 59535 boxes, 27 labels; 50 pairs" in result.output
    gt = manifest.read_benchmark_table(bench, "groundtruth_test")
    perfect = gt[gt.x1.notna()].drop(columns="label").assign(score=1.0)
    perfect.to_parquet(tmp_path / "perfect.parquet")
    result = run("evaluate", "--benchmark", str(bench), "--split", "test",
                 "--detections", str(tmp_path / "perfect.parquet"), "--json", str(tmp_path / "out.json"))
    assert result.exit_code == 0, result.output
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["mAP"] == 1.0 and len(out["per_label"]) == 27 and out["summary"]["0.7"] == 1.0
    result = run("export-official", "--benchmark", str(bench), "--split", "test", "--out", str(tmp_path / "t.json"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "t.json").read_bytes() == release.read_bytes()


def test_import_official_split_option(shared_dir, tmp_path):
    release = shared_dir / "data" / "stvr-official" / "stvr_test.json"
    renamed = tmp_path / "pairs.json"
    renamed.write_bytes(release.read_bytes())
    result = run("import-official", "--json", str(renamed), "--out", str(tmp_path / "a"))
    assert result.exit_code == EXIT_BAD_INPUT and "--split" in result.output
    result = run("import-official", "--json", str(renamed), "--out", str(tmp_path / "b"), "--split", "val")
    assert result.exit_code == 0, result.output
    assert manifest.read_benchmark_table(tmp_path / "b", "pairs_val").pair_id.iloc[0] == "val-00000"
