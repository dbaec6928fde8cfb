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
