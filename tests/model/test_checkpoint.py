"""Run settings in checkpoints: the nested configuration survives a checkpoint whole and
rebuilds the same network; unknown settings are refused; checkpoints of the flat layout,
including those written before a setting was recorded, rebuild the network they were
trained as."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from stvr_model.cells import CellConfig
from stvr_model.checkpoint import (
    CheckpointError,
    build_model,
    model_from_checkpoint,
    run_config,
    save_checkpoint,
)
from stvr_model.config import (
    BEFORE_RECORDED,
    ModelConfig,
    RunConfig,
    TrainConfig,
    model_dict_from_flat,
)
from stvr_model.data import DataConfig
from stvr_model.detector import DetectorConfig

pytestmark = pytest.mark.usefixtures("one_thread")

FLAT = Path(__file__).parent / "fixtures" / "flat_spec_checkpoint.json"
SMALL = ModelConfig(backbone="small", detector=DetectorConfig(
    image_size=(96, 96), feature_channels=16, box_head_blocks=1, box_head_width=8,
    anchor_sizes=(16.0, 32.0, 64.0)))


def _inputs():
    """Seeded query [1, 1, 3, 8, 96, 96], query box and reference [1, 3, 3, 8, 96, 96]."""
    g = torch.Generator().manual_seed(1)
    query = torch.rand(1, 1, 3, 8, 96, 96, generator=g) * 2 - 1
    ref = torch.rand(1, 3, 3, 8, 96, 96, generator=g) * 2 - 1
    return query, torch.tensor([[[20.0, 16.0, 60.0, 80.0]]]), ref


@torch.no_grad()
def _outputs(model):
    query, boxes, ref = _inputs()
    detections, _ = model(query, boxes, ref)
    return model.propagate(ref), detections[0]


def test_new_configs_record_the_authors_rpn_settings():
    spec = SMALL
    detector = spec.detector
    assert detector.rpn_box_weights == (10.0, 10.0, 5.0, 5.0) and detector.rpn_smooth_l1_beta == 1.0
    assert detector.rpn_border_anchors == "remove"
    rpn = build_model(spec).rpn
    assert rpn.box_coder.weights == (10.0, 10.0, 5.0, 5.0) and rpn.smooth_l1_beta == 1.0
    assert rpn.border_anchors == "remove"
    assert detector.rpn_conv_width == 512 and rpn.head.cls_logits.in_channels == 512
    assert spec.cell.separable_offset and build_model(spec).cell.offset[0].groups == 32  # 2C


def _every_knob() -> RunConfig:
    """A run whose model, data and training settings differ from the defaults wherever the
    paper or the command line varies them."""
    cell = CellConfig(kind="warp", bottleneck=8, forget_bias=0.5, control_grid=2, interpolation_order=1,
                      num_boundary_points=2, regularization_weight=0.1, max_offset=1.5, separable_offset=False)
    detector = dataclasses.replace(
        SMALL.detector, box_head_blocks=2, box_head_width=12, box_head_fc=20, match_product=True,
        anchor_aspect_ratios=(1.0, 3.0), add_gt_to_proposals=True, rpn_box_weights=(1.0, 2.0, 3.0, 4.0),
        rpn_smooth_l1_beta=0.5, rpn_border_anchors="clip", rpn_conv_width=None, rpn_post_nms_top_n=20,
        detection_nms_thresh=0.5, attention_dim=64, action_weight=0.5, action_atoms=("sit", "stand"))
    data = DataConfig(reference_seconds=1.0, max_query_seconds=3.0, query_clips_per_second=1, hflip=False,
                      query_swap=0.25)
    training = TrainConfig(iterations=9, lr=1e-3, optimizer="adam", milestones=(4, 8), seed=3,
                           init_from="runs/stage1/last.pt", freeze_backbone=True, feature_cache="cache")
    return RunConfig(model=ModelConfig(backbone="small", cell=cell, detector=detector), data=data,
                     training=training)


def test_the_run_config_survives_a_checkpoint_whole_and_rebuilds_the_same_network(tmp_path):
    run = _every_knob()
    stored = json.loads(json.dumps(run.to_dict()))  # plain JSON values only
    assert stored["model"]["cell"]["interpolation_order"] == 1 and stored["data"]["query_swap"] == 0.25
    assert RunConfig.from_dict(stored) == run
    torch.manual_seed(0)
    model = build_model(run.model).eval()
    with torch.no_grad():  # a moving warp, so that the spline's settings matter
        model.cell.offset.weight.normal_(0, 0.5)
    save_checkpoint(tmp_path / "run.pt", {"model": model.state_dict(), "run": stored})
    rebuilt, state = model_from_checkpoint(tmp_path / "run.pt")
    assert run_config(state) == run
    assert rebuilt.cell.config == run.model.cell and rebuilt.config == run.model.detector
    assert rebuilt.action_head.classify.out_features == 2
    (hidden, found), (hidden_again, found_again) = _outputs(model), _outputs(rebuilt)
    assert torch.equal(hidden, hidden_again)
    for clip, again in zip(found, found_again, strict=True):
        assert torch.equal(clip["boxes"], again["boxes"]) and torch.equal(clip["scores"], again["scores"])


@pytest.mark.parametrize("where", [(), ("model",), ("model", "cell"), ("model", "detector"), ("training",)])
def test_unknown_settings_are_refused_in_one_line_naming_them(tmp_path, where):
    stored = RunConfig(model=SMALL).to_dict()
    part = stored
    for key in where:
        part = part[key]
    part["links"] = 3
    save_checkpoint(tmp_path / "run.pt", {"model": {}, "run": stored})
    with pytest.raises(CheckpointError) as caught:
        model_from_checkpoint(tmp_path / "run.pt")
    message = str(caught.value)
    named = ".".join(where) or "run"
    assert message == (f"{tmp_path / 'run.pt'}: {named} settings ['links'] are unknown to this version "
                       "of stvr-model")


def _fill(shapes: dict) -> dict:
    """Weights of the given shapes, each from its own seeded draw (as the reference's were)."""
    out = {}
    for index, name in enumerate(sorted(shapes)):
        shape = tuple(shapes[name])
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(index))
        if len(shape) == 1 and name.endswith("weight"):
            out[name] = 1 + 0.1 * noise
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 100
            out[name] = noise * fan_in ** -0.5
    return out


def test_a_flat_checkpoint_computes_what_it_computed_when_it_was_written(tmp_path):
    """`flat_spec_checkpoint.json`: a warp-cell checkpoint of the flat layout as the flat
    version wrote it (a spec without the settings in `BEFORE_RECORDED`, and the training
    and data settings beside it), its weights' shapes, and that version's outputs on
    `_inputs()` with the weights `_fill` gives."""
    reference = json.loads(FLAT.read_text())
    assert not set(BEFORE_RECORDED) & set(reference["spec"])
    old = {key: reference[key] for key in ("spec", "config", "data", "iteration")}
    save_checkpoint(tmp_path / "old.pt", {**old, "model": _fill(reference["weight_shapes"])})
    model, state = model_from_checkpoint(tmp_path / "old.pt")
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == reference["weight_shapes"]
    hidden, found = _outputs(model)
    expected = reference["outputs"]
    torch.testing.assert_close(hidden, torch.tensor(expected["hidden"]), rtol=1e-5, atol=1e-6)
    for clip, boxes, scores in zip(found, expected["boxes"], expected["scores"], strict=True):
        torch.testing.assert_close(clip["boxes"], torch.tensor(boxes).reshape(-1, 4), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(clip["scores"], torch.tensor(scores), rtol=1e-5, atol=1e-6)
    run = run_config(state)  # the settings stored beside the spec; the rest are defaults
    assert run.training == TrainConfig(lr=0.01, iterations=7, milestones=(5,))
    assert run.data == DataConfig(query_clips_per_second=1)


def test_flat_checkpoints_load_as_they_were_trained(tmp_path):
    flat = {"cell": "warp", "backbone": "small", "image_size": [96, 96], "hidden_channels": 16,
            "box_head_blocks": 1, "box_head_width": 8, "anchor_sizes": [16.0, 32.0, 64.0],
            "control_grid": 2, "max_offset": None, "action_loss": 0.5, "action_atoms": ["sit", "stand"]}
    spec = ModelConfig.from_dict(model_dict_from_flat(flat))
    assert spec.detector.feature_channels == 16 and spec.detector.action_classes == 2
    assert (spec.cell.kind, spec.cell.control_grid, spec.cell.max_offset) == ("warp", 2, None)
    old = build_model(spec)
    save_checkpoint(tmp_path / "old.pt", {"model": old.state_dict(), "spec": flat})
    model, state = model_from_checkpoint(tmp_path / "old.pt")
    detector = run_config(state).model.detector
    assert detector.rpn_box_weights == (1.0, 1.0, 1.0, 1.0) and detector.rpn_smooth_l1_beta == pytest.approx(1 / 9)
    assert model.rpn.box_coder.weights == (1.0, 1.0, 1.0, 1.0) and model.rpn.border_anchors == "keep"
    # torchvision's RPN head at the features' width: the stored weights' shapes
    assert detector.rpn_conv_width is None and model.rpn.head.cls_logits.in_channels == 16
    # the warp cell's plain zero-initialised offset conv
    assert not model.cell.config.separable_offset and model.cell.offset.weight.shape == (2, 32, 1, 1)
    for name, tensor in old.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    save_checkpoint(tmp_path / "odd.pt", {"model": {}, "spec": {**flat, "links": 3}})
    with pytest.raises(CheckpointError, match=r"odd.pt: model settings \['links'\] are unknown"):
        model_from_checkpoint(tmp_path / "odd.pt")
