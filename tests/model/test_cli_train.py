"""`stvr-model train` and `evaluate` through the command line, and their bad-input errors."""

import json

import torch
from click.testing import CliRunner

from stvr_model.checkpoint import load_checkpoint
from stvr_model.cli import main

LIGHT = ["--backbone", "small", "--box-head-blocks", "1", "--box-head-width", "16", "--batch-size", "2", "--workers", "0",
         "--query-clips-per-second", "1", "--max-query-seconds", "2", "--reference-seconds", "1",
         "--device", "cpu", "--anchor-sizes", "16,32,64,128"]


def test_train_then_evaluate_prints_the_scores(tiny_benchmark, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--manifest", str(tiny_benchmark), "--cell", "none",
                                       "--out", str(run), "--iterations", "2", *LIGHT,
                                       "--rpn-border-anchors", "clip", "--rpn-conv-width", "0"])
    assert result.exit_code == 0, result.output
    assert "trained none for 2 iterations" in result.output and (run / "last.pt").is_file()
    detector = load_checkpoint(run / "last.pt")["run"]["model"]["detector"]
    assert detector["rpn_border_anchors"] == "clip" and detector["rpn_conv_width"] is None
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(run / "last.pt"), "--manifest",
                                       str(tiny_benchmark), "--split", "val", "--max-pairs", "1",
                                       "--pictures", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert any(line.startswith("frame-mAP ") for line in lines)
    metrics = json.loads((run / "eval_val" / "metrics_val.json").read_text())
    floor = metrics["chance_mAP"]["mAP"]
    assert f"chance frame-mAP (query-blind detector, perfect boxes, random scores): {floor:.4f}" in result.output
    margin = 2 * metrics["chance_mAP"]["std"]
    verdict = "is above" if metrics["frame_map"]["0.5"]["mAP"] > floor + margin else "is NOT above"
    assert f"{verdict} the chance floor {floor:.4f}" in lines[-3]
    summary = json.loads(lines[-1])
    assert set(summary) == {"0.3", "0.5", "0.7"}
    assert summary["0.5"] == round(metrics["frame_map"]["0.5"]["mAP"], 4)


def test_bad_inputs_are_one_line_errors(tiny_benchmark, tmp_path):
    not_a_benchmark = tmp_path / "empty"
    not_a_benchmark.mkdir()
    result = CliRunner().invoke(main, ["train", "--manifest", str(not_a_benchmark), "--cell", "warp",
                                       "--out", str(tmp_path / "r"), *LIGHT])
    assert result.exit_code == 2 and "no dataset card" in result.output
    result = CliRunner().invoke(main, ["train", "--manifest", str(tiny_benchmark), "--cell", "warp",
                                       "--out", str(tmp_path / "r"), *LIGHT[:-1], "16,x"])
    assert result.exit_code == 2 and "--anchor-sizes" in result.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(bad), "--manifest", str(tiny_benchmark)])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "bad.pt" in result.output


def test_warp_cell_options_round_trip_through_a_checkpoint(tiny_benchmark, tmp_path):
    from stvr_model.cells import CellConfig
    from stvr_model.checkpoint import load_checkpoint, model_from_checkpoint, run_config
    from stvr_model.cli import train_command

    defaults = {p.name: p.default for p in train_command.params}
    authors = CellConfig()
    assert (defaults["control_grid"], defaults["interpolation_order"], defaults["num_boundary_points"]) == (
        authors.control_grid, authors.interpolation_order, authors.num_boundary_points)

    run = tmp_path / "run"
    options = ["--control-grid", "1", "--interpolation-order", "1", "--num-boundary-points", "2"]
    result = CliRunner().invoke(main, ["train", "--manifest", str(tiny_benchmark), "--cell", "warp",
                                       "--out", str(run), "--iterations", "1", *LIGHT, *options])
    assert result.exit_code == 0, result.output
    spec = run_config(load_checkpoint(run / "last.pt")).model
    assert (spec.cell.control_grid, spec.cell.interpolation_order, spec.cell.num_boundary_points) == (1, 1, 2)
    model, _ = model_from_checkpoint(run / "last.pt")
    assert model.cell.config == spec.cell
    x = torch.randn(1, spec.detector.feature_channels, 4, 4)
    with torch.no_grad():
        model.cell(x, model.cell(x, None))
    assert model.cell.last_offsets.shape == (1, 1, 2)  # a 1x1 control grid: one point


def test_every_train_option_reaches_the_run_config(tiny_benchmark, tmp_path, monkeypatch):
    """Each model, data and training option of `train`, set to a value other than its
    default, lands in the one `RunConfig` that the checkpoint records."""
    from stvr_model import train as train_module
    from stvr_model.cells import CellConfig
    from stvr_model.config import ModelConfig, RunConfig, TrainConfig
    from stvr_model.data import DataConfig
    from stvr_model.detector import DetectorConfig

    runs = []
    monkeypatch.setattr(train_module, "train", lambda manifest, out, run, **kw: runs.append((run, kw)) or
                        {"clips_per_second": 1.0, "data_wait_fraction": 0.0})
    stage1 = tmp_path / "stage1.pt"
    stage1.write_bytes(b"")
    options = ["--cell", "traj", "--backbone", "small", "--feature-channels", "32", "--iterations", "5",
               "--batch-size", "3", "--lr", "0.5", "--milestones", "2,4", "--optimizer", "adam", "--device", "cpu",
               "--seed", "7", "--workers", "0", "--checkpoint-every", "9", "--reference-seconds", "1.5",
               "--max-query-seconds", "3", "--query-swap", "0.5", "--query-clips-per-second", "1",
               "--box-head-blocks", "2", "--box-head-width", "64", "--box-head-fc", "100", "--match-product",
               "--anchor-ratios", "1,3", "--add-gt-to-proposals", "--rpn-border-anchors", "keep",
               "--rpn-conv-width", "0", "--max-offset", "0", "--control-grid", "2", "--interpolation-order", "1",
               "--num-boundary-points", "0", "--anchor-sizes", "8,16", "--train-split", "val", "--train-pairs", "2",
               "--init-from", str(stage1), "--action-loss", "0.5", "--freeze-backbone", "--feature-cache",
               str(tmp_path / "cache"), "--no-amp", "--resume", "--allow-lr-change"]
    result = CliRunner().invoke(main, ["train", "--manifest", str(tiny_benchmark), "--out", str(tmp_path / "r"),
                                       *options])
    assert result.exit_code == 0, result.output
    assert "trained traj for 5 iterations" in result.output
    (run, kwargs), = runs
    assert kwargs == {"resume": True, "backbone_weights": None, "allow_lr_change": True}
    detector = DetectorConfig(image_size=(64, 64), feature_channels=32, box_head_blocks=2, box_head_width=64,
                              box_head_fc=100, match_product=True, anchor_sizes=(8.0, 16.0),
                              anchor_aspect_ratios=(1.0, 3.0), add_gt_to_proposals=True, rpn_border_anchors="keep",
                              rpn_conv_width=None, action_weight=0.5)
    cell = CellConfig(kind="traj", max_offset=None, control_grid=2, interpolation_order=1, num_boundary_points=0)
    data = DataConfig(reference_seconds=1.5, max_query_seconds=3.0, query_clips_per_second=1, query_swap=0.5)
    training = TrainConfig(iterations=5, batch_size=3, lr=0.5, milestones=(2, 4), optimizer="adam", seed=7,
                           num_workers=0, device="cpu", amp=False, checkpoint_every=9, split="val", max_pairs=2,
                           init_from=str(stage1), freeze_backbone=True, feature_cache=str(tmp_path / "cache"))
    assert run == RunConfig(model=ModelConfig(backbone="small", cell=cell, detector=detector), data=data,
                            training=training)
