import dataclasses
import json

import pytest
import torch

from stvr_model import train as train_module
from stvr_model.cells import CellConfig
from stvr_model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    run_config,
)
from stvr_model.config import ModelConfig, RunConfig, TrainConfig
from stvr_model.data import DataConfig
from stvr_model.detector import DetectorConfig
from stvr_model.train import BatchWindow, TrainingDiverged, get_lr, train

SPEC = ModelConfig(backbone="small", cell=CellConfig(kind="convlstm"),
                   detector=DetectorConfig(image_size=(64, 64), box_head_blocks=1, box_head_width=16))
DATA = DataConfig(query_clips_per_second=1, max_query_seconds=2, reference_seconds=1.0)
# The flat layout's settings that `BEFORE_RECORDED` fills, as a run of today records them.
BEFORE_RECORDED_AS_TODAY = {"rpn_box_weights": [10.0, 10.0, 5.0, 5.0], "rpn_smooth_l1_beta": 1.0,
                            "rpn_border_anchors": "remove", "rpn_conv_width": 512, "separable_offset": True}


def _config(**changes):
    base = dict(iterations=4, batch_size=2, lr=0.01, milestones=(3,), checkpoint_every=2,
                keep_every=4, num_workers=0, device="cpu", seed=0)
    return TrainConfig(**{**base, **changes})


def _run(model=SPEC, data=DATA, **training) -> RunConfig:
    return RunConfig(model=model, data=data, training=_config(**training))


def test_step_schedule():
    config = TrainConfig(lr=0.03, milestones=(10, 20))
    assert [get_lr(i, config) for i in (0, 9, 10, 19, 20)] == pytest.approx([0.03, 0.03, 0.003, 0.003, 0.0003])


def test_batch_window_gives_each_rank_its_slice():
    assert list(BatchWindow(2, 4, 3)) == [[6, 7, 8], [9, 10, 11]]
    rank1 = list(BatchWindow(0, 2, 2, rank=1, world=2))
    assert rank1 == [[2, 3], [6, 7]]


def test_train_writes_checkpoints_metrics_and_curve(tiny_benchmark, tmp_path):
    summary = train(tiny_benchmark, tmp_path, _run(), progress=False)
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["iteration"] == 4 and state["run"] == _run().to_dict() and run_config(state) == _run()
    assert (tmp_path / "iter_000004.pt").is_file() and (tmp_path / "loss.png").stat().st_size > 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    assert rows[-1]["lr"] == pytest.approx(0.001)
    assert all(r["loss"] > 0 for r in rows)
    assert 0.0 <= summary["data_wait_fraction"] <= 1.0
    model, _ = model_from_checkpoint(tmp_path / "last.pt")
    assert not model.training


def test_resume_continues_exactly(tiny_benchmark, tmp_path):
    train(tiny_benchmark, tmp_path / "straight", _run(), progress=False)
    train(tiny_benchmark, tmp_path / "split", _run(iterations=2), progress=False)
    with pytest.raises(CheckpointError, match="--resume"):
        train(tiny_benchmark, tmp_path / "split", _run(), progress=False)
    train(tiny_benchmark, tmp_path / "split", _run(), resume=True, progress=False)
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    resumed = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    for name, value in straight.items():
        assert torch.equal(value, resumed[name]), name
    losses = [json.loads(x)["loss"] for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(x)["loss"] for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert losses == expected


def test_resume_refuses_another_model(tiny_benchmark, tmp_path):
    train(tiny_benchmark, tmp_path, _run(iterations=2), progress=False)
    other = dataclasses.replace(SPEC, cell=CellConfig(kind="none"))
    with pytest.raises(CheckpointError, match=r"changed model.cell.kind: 'convlstm' -> 'none'$"):
        train(tiny_benchmark, tmp_path, _run(other), resume=True, progress=False)
    wider = dataclasses.replace(SPEC, detector=dataclasses.replace(SPEC.detector, box_head_width=24))
    with pytest.raises(CheckpointError, match=r"changed model.detector.box_head_width: 16 -> 24$"):
        train(tiny_benchmark, tmp_path, _run(wider), resume=True, progress=False)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_benchmark, tmp_path, monkeypatch):
    train(tiny_benchmark, tmp_path, _run(iterations=2), progress=False)
    before = (tmp_path / "last.pt").read_bytes()
    real_build = train_module.build_model

    def poisoned(spec, **kwargs):
        model = real_build(spec, **kwargs)
        forward = model.forward

        def nan_forward(*args, **kw):
            detections, losses = forward(*args, **kw)
            return detections, {**losses, "loss_box": losses["loss_box"] * float("nan")}

        model.forward = nan_forward
        return model

    monkeypatch.setattr(train_module, "build_model", poisoned)
    with pytest.raises(TrainingDiverged, match="iteration 2"):
        train(tiny_benchmark, tmp_path, _run(), resume=True, progress=False)
    assert (tmp_path / "last.pt").read_bytes() == before


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(bad)


def test_resume_refuses_changed_settings_and_another_benchmark(tiny_benchmark, tmp_path):
    train(tiny_benchmark, tmp_path, _run(iterations=2), progress=False)
    with pytest.raises(CheckpointError, match=r"changed training.lr: 0.01 -> 0.02 \(--allow-lr-change"):
        train(tiny_benchmark, tmp_path, _run(lr=0.02), resume=True, progress=False)
    with pytest.raises(CheckpointError, match="changed data.max_query_seconds: 2"):
        train(tiny_benchmark, tmp_path, _run(data=DataConfig(query_clips_per_second=1, reference_seconds=1.0)),
              resume=True, progress=False)
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["benchmark"]["labels"]["test"] and state["benchmark"]["split"] == "train"
    state["benchmark"] = {**state["benchmark"], "path": "elsewhere", "fingerprint": "f" * 64}
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="changed benchmark: elsewhere"):
        train(tiny_benchmark, tmp_path, _run(), resume=True, progress=False)


def test_resume_may_change_the_learning_rate_when_allowed(tiny_benchmark, tmp_path):
    train(tiny_benchmark, tmp_path, _run(iterations=2), progress=False)
    train(tiny_benchmark, tmp_path, _run(iterations=3, lr=0.02), resume=True, allow_lr_change=True, progress=False)
    assert load_checkpoint(tmp_path / "last.pt")["run"]["training"]["lr"] == 0.02


def test_every_model_setting_survives_the_checkpoint(tiny_benchmark, tmp_path):
    detector = DetectorConfig(image_size=(64, 64), feature_channels=32, box_head_blocks=2, box_head_width=24,
                              box_head_fc=40, anchor_sizes=(20.0, 40.0), anchor_aspect_ratios=(1.0, 3.0),
                              add_gt_to_proposals=True)
    spec = ModelConfig(backbone="small", cell=CellConfig(kind="convlstm", max_offset=1.5), detector=detector)
    data = DataConfig(query_clips_per_second=1, max_query_seconds=1, reference_seconds=1.0)
    small = TrainConfig(iterations=1, batch_size=1, num_workers=0, device="cpu", checkpoint_every=1)
    train(tiny_benchmark, tmp_path, RunConfig(model=spec, data=data, training=small), progress=False)
    model, state = model_from_checkpoint(tmp_path / "last.pt")
    assert run_config(state) == RunConfig(model=spec, data=data, training=small)
    assert model.cell.config.max_offset == 1.5 and model.second_stage.box_head.out_channels == 40
    assert model.config.feature_channels == 32 and model.config.anchor_aspect_ratios == (1.0, 3.0)
    assert model.rpn.anchor_generator.num_anchors_per_location() == [4]
    assert model.second_stage.add_gt_to_proposals


def test_training_on_a_fixed_split_is_recorded_and_flagged_at_evaluation(tiny_benchmark, tmp_path):
    from stvr_model.evaluate import labels_seen_in_training

    train(tiny_benchmark, tmp_path, _run(iterations=2, split="test"), progress=False)
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["benchmark"]["split"] == "test"
    assert labels_seen_in_training(state, tiny_benchmark, "test") == state["benchmark"]["labels"]["test"]
    normal = {**state, "benchmark": {**state["benchmark"], "split": "train"}}
    assert labels_seen_in_training(normal, tiny_benchmark, "test") == []


def test_a_run_saved_in_the_flat_layout_resumes_and_refuses_changes(tiny_benchmark, tmp_path):
    train(tiny_benchmark, tmp_path, _run(iterations=2), progress=False)
    state = load_checkpoint(tmp_path / "last.pt")
    run = state.pop("run")
    state["spec"] = {"cell": "convlstm", "backbone": "small", "image_size": [64, 64], "hidden_channels": 1024,
                     "box_head_blocks": 1, "box_head_width": 16, **BEFORE_RECORDED_AS_TODAY}
    state["config"], state["data"] = run["training"], run["data"]
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=r"changed training.lr: 0.01 -> 0.02 \(--allow-lr-change"):
        train(tiny_benchmark, tmp_path, _run(lr=0.02), resume=True, progress=False)
    with pytest.raises(CheckpointError, match=r"changed model.cell.max_offset: 4.0 -> 2.0$"):
        other = dataclasses.replace(SPEC, cell=CellConfig(kind="convlstm", max_offset=2.0))
        train(tiny_benchmark, tmp_path, _run(other), resume=True, progress=False)
    train(tiny_benchmark, tmp_path, _run(iterations=3), resume=True, progress=False)
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 3
