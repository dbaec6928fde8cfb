import json

import numpy as np
import pandas as pd
import pytest
import torch

from stvr_data import manifest
from stvr_model.cells import CellConfig
from stvr_model.config import ModelConfig, RunConfig, TrainConfig
from stvr_model.data import DataConfig
from stvr_model.detector import DetectorConfig
from stvr_model.evaluate import detection_rows, evaluate, score
from stvr_model.train import train


def test_detection_rows_normalise_and_clip():
    dets = [{"boxes": torch.tensor([[16.0, 8.0, 48.0, 72.0]]), "scores": torch.tensor([0.9])},
            {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0)}]
    rows = detection_rows("test-00000", [902.0, 902 + 1 / 3], dets, width=64, height=64)
    assert len(rows) == 1
    assert rows.iloc[0][["x1", "y1", "x2", "y2"]].tolist() == pytest.approx([0.25, 0.125, 0.75, 1.0])
    assert rows.iloc[0].timestamp == 902.0 and rows.iloc[0].score == pytest.approx(0.9)


def test_score_of_groundtruth_boxes_is_one(tiny_benchmark):
    truth = manifest.read_benchmark_table(tiny_benchmark, "groundtruth_test")
    perfect = truth[truth.x1.notna()].assign(score=1.0)
    results = score(truth, perfect)
    assert set(results) == {"0.3", "0.5", "0.7"}
    assert all(r["mAP"] == pytest.approx(1.0) for r in results.values())


def test_evaluate_writes_detections_metrics_and_pictures(tiny_benchmark, tmp_path):
    spec = ModelConfig(backbone="small", cell=CellConfig(kind="traj"),
                       detector=DetectorConfig(image_size=(64, 64), box_head_blocks=1, box_head_width=16))
    config = TrainConfig(iterations=2, batch_size=2, num_workers=0, device="cpu", checkpoint_every=2)
    data = DataConfig(query_clips_per_second=1, max_query_seconds=2, reference_seconds=1.0)
    train(tiny_benchmark, tmp_path / "run", RunConfig(model=spec, data=data, training=config), progress=False)
    results = evaluate(tmp_path / "run" / "last.pt", tiny_benchmark, "test", tmp_path / "eval",
                       device="cpu", max_pairs=2, pictures=1, progress=False)
    assert results["pairs"] == 2 and results["cell"] == "traj"
    written = json.loads((tmp_path / "eval" / "metrics_test.json").read_text())
    assert written["frame_map"]["0.5"]["mAP"] == pytest.approx(results["frame_map"]["0.5"]["mAP"])
    assert 0.0 <= written["frame_map"]["0.5"]["mAP"] <= 1.0
    detections = manifest.read_table(tmp_path / "eval" / "detections_test.parquet", manifest.DETECTIONS_SCHEMA)
    pairs = manifest.read_benchmark_table(tiny_benchmark, "pairs_test").iloc[:2]
    assert set(detections.pair_id) <= set(pairs.pair_id)
    assert detections[["x1", "y1", "x2", "y2"]].to_numpy().min() >= 0.0
    assert (detections.x2 >= detections.x1).all() and detections.score.between(0, 1).all()
    span = pairs.set_index("pair_id")
    inside = [(span.loc[p].ref_start - 1e-6 <= t < span.loc[p].ref_end) for p, t in
              zip(detections.pair_id, detections.timestamp, strict=True)]
    assert all(inside)
    assert len(list((tmp_path / "eval" / "pictures").glob("*.png"))) == 1
    np.testing.assert_allclose(
        results["frame_map"]["0.5"]["mAP"],
        score(manifest.read_benchmark_table(tiny_benchmark, "groundtruth_test")
              .pipe(lambda g: g[g.pair_id.isin(pairs.pair_id)]), detections)["0.5"]["mAP"])
    assert isinstance(detections, pd.DataFrame)
