"""Model settings in checkpoints: new runs record the authors' defaults, checkpoints
written before a setting was recorded rebuild the network they were trained as."""

from __future__ import annotations

import pytest
import torch

from stvr_model.checkpoint import (
    BEFORE_RECORDED,
    ModelSpec,
    build_model,
    model_from_checkpoint,
    save_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(cell="warp", backbone="small", image_size=(96, 96), hidden_channels=16,
             box_head_blocks=1, box_head_width=8, anchor_sizes=(16.0, 32.0, 64.0))


def _old_checkpoint(path, **settings):
    """A checkpoint as an earlier version wrote it: its spec lacks the settings in
    `BEFORE_RECORDED`, its weights are those of the network they describe."""
    spec = ModelSpec(**{**SMALL, **settings, **BEFORE_RECORDED})
    model = build_model(spec)
    stored = {k: v for k, v in spec.to_dict().items() if k not in BEFORE_RECORDED}
    save_checkpoint(path, {"model": model.state_dict(), "spec": stored})
    return model


def test_new_specs_record_the_authors_rpn_settings():
    spec = ModelSpec(**SMALL)
    assert spec.rpn_box_weights == (10.0, 10.0, 5.0, 5.0) and spec.rpn_smooth_l1_beta == 1.0
    assert spec.rpn_border_anchors == "remove"
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    rpn = build_model(spec).rpn
    assert rpn.box_coder.weights == (10.0, 10.0, 5.0, 5.0) and rpn.smooth_l1_beta == 1.0
    assert rpn.border_anchors == "remove"
    assert spec.rpn_conv_width == 512 and rpn.head.cls_logits.in_channels == 512
    assert spec.separable_offset and build_model(spec).cell.offset[0].groups == 32  # 2C


def test_old_checkpoints_load_as_they_were_trained(tmp_path):
    old = _old_checkpoint(tmp_path / "old.pt")
    model, state = model_from_checkpoint(tmp_path / "old.pt")
    spec = ModelSpec.from_dict(state["spec"])
    assert spec.rpn_box_weights == (1.0, 1.0, 1.0, 1.0) and spec.rpn_smooth_l1_beta == pytest.approx(1 / 9)
    assert model.rpn.box_coder.weights == (1.0, 1.0, 1.0, 1.0) and model.rpn.border_anchors == "keep"
    # torchvision's RPN head at the features' width: the stored weights' shapes
    assert spec.rpn_conv_width is None and model.rpn.head.cls_logits.in_channels == 16
    # the warp cell's plain zero-initialised offset conv
    assert not spec.separable_offset and model.cell.offset.weight.shape == (2, 32, 1, 1)
    for name, tensor in old.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
