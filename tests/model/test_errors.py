"""stvr-model's errors share the one base of both packages and reach the user as one line:
refused checkpoints, numeric options checked when the command line is parsed."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from stvr_data.errors import StvrError
from stvr_model.backbones import WeightsError, load_weights
from stvr_model.backbones.small import SmallBackbone
from stvr_model.cells import CellError
from stvr_model.checkpoint import CheckpointError, load_checkpoint
from stvr_model.cli import main
from stvr_model.detector_inputs import DetectorInputError
from stvr_model.flow import FlowError
from stvr_model.predict import PredictError
from stvr_model.train import TrainingDiverged
from stvr_model.warp import NonFiniteWarpError, WarpError


class _Payload:
    """Any object torch's weights-only loader must refuse."""

    def __init__(self):
        self.x = 1


def test_every_model_error_is_an_stvr_error():
    for error in (WarpError, NonFiniteWarpError, CellError, FlowError, CheckpointError, WeightsError,
                  DetectorInputError, PredictError, TrainingDiverged):
        assert issubclass(error, StvrError), error


def test_a_checkpoint_with_foreign_objects_is_refused_in_one_line_of_ours(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"model": {}, "spec": {}, "extra": _Payload()}, path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: refused to load, the checkpoint holds objects other than tensors")
    assert "_Payload" in message and "\n" not in message and "weights_only" not in message
    with pytest.raises(WeightsError, match="refused to load, the torch state dict holds"):
        load_weights(SmallBackbone(), path)


def test_the_command_line_prints_a_refused_checkpoint_as_one_line(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"extra": _Payload()}, path)
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(path), "--manifest", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {path}: refused to load") and result.output.count("\n") == 1


@pytest.mark.parametrize("option, value", [
    ("--checkpoint-every", "0"), ("--batch-size", "0"), ("--reference-seconds", "0"),
    ("--workers", "-1"), ("--milestones", "abc"), ("--milestones", "200,100"), ("--iterations", "0"),
    ("--anchor-sizes", "0,-5"), ("--anchor-sizes", "64,inf"), ("--lr", "0"), ("--seed", "-1"),
    ("--max-query-seconds", "-2"),
])
def test_train_options_are_checked_when_parsed(tmp_path, option, value):
    args = ["train", "--manifest", str(tmp_path), "--cell", "warp", "--out", str(tmp_path / "run"), option, value]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [
    ["evaluate", "--max-pairs", "0"], ["evaluate", "--pictures", "-1"],
])
def test_evaluate_options_are_checked_when_parsed(tmp_path, args):
    result = CliRunner().invoke(main, [*args, "--checkpoint", str(tmp_path / "x.pt"), "--manifest", str(tmp_path)])
    assert result.exit_code == 2 and f"Invalid value for '{args[1]}'" in result.output


@pytest.fixture(scope="module")
def warp_benchmark(tmp_path_factory):
    """A tiny built benchmark at 96x96: the smallest clips whose feature maps (6x6) hold
    the warp cell's control grid."""
    from stvr_data.ava_recipe import prepare_ava
    from stvr_data.build import BuildOptions
    from stvr_data.sample import SampleConfig, make_sample

    root = tmp_path_factory.mktemp("warp")
    make_sample(root / "sample", seed=3, config=SampleConfig(train_videos=2, val_videos=2))
    prepare_ava(root / "sample" / "annotations", str(root / "sample" / "videos"), root / "bench",
                options=BuildOptions(seed=0, resolution=(96, 96), workers=2),
                min_tubelets=2, num_val_labels=1, num_test_labels=1)
    return root / "bench"


def _warp_run(benchmark, out, lr: float):
    from stvr_model.config import ModelConfig, RunConfig, TrainConfig
    from stvr_model.data import DataConfig
    from stvr_model.detector import DetectorConfig
    from stvr_model.train import train

    spec = ModelConfig(backbone="small",  # the warp cell
                       detector=DetectorConfig(image_size=(96, 96), box_head_blocks=1, box_head_width=64))
    config = TrainConfig(iterations=4, batch_size=1, lr=lr, milestones=(), checkpoint_every=4,
                         num_workers=0, device="cpu", seed=0)
    data = DataConfig(query_clips_per_second=1, max_query_seconds=1, reference_seconds=1.0)
    return train(benchmark, out, RunConfig(model=spec, data=data, training=config), progress=False)


def test_a_warp_cell_trained_with_a_huge_lr_gives_the_divergence_message(warp_benchmark, tmp_path):
    with pytest.raises(TrainingDiverged) as caught:
        _warp_run(warp_benchmark, tmp_path, lr=1e12)
    message = str(caught.value)  # the NaN weights stop the warp before any loss is computed
    assert message.startswith("training diverged: query points must be finite (the flow holds NaN or inf) at")
    assert message.endswith("no checkpoint was saved yet: lower --lr or check the data") and "\n" not in message


def test_nan_weights_stopping_the_warp_are_reported_as_divergence(warp_benchmark, tmp_path, monkeypatch):
    from stvr_model import train as train_module

    real_build = train_module.build_model

    def poisoned(spec, **kwargs):  # NaN weights, as a huge step leaves them
        model = real_build(spec, **kwargs)
        with torch.no_grad():
            for parameter in model.cell.parameters():
                parameter.fill_(float("nan"))
        return model

    monkeypatch.setattr(train_module, "build_model", poisoned)
    with pytest.raises(TrainingDiverged, match=r"training diverged: query points must be finite .* at iteration 0"):
        _warp_run(warp_benchmark, tmp_path, lr=0.01)
