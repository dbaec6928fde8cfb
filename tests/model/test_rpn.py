"""The region proposal network with the authors' first-stage settings."""

from __future__ import annotations

import math

import pytest
import torch
from test_heads import small_config

from stvr_model.detector import DetectorConfig, build_rpn
from stvr_model.detector_inputs import DetectorInputError
from stvr_model.rpn import inside_frame

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rpn_gives_losses_in_eval_mode_and_proposals_inside_the_frame():
    torch.manual_seed(0)
    rpn = build_rpn(small_config()).eval()
    features = torch.randn(3, 8, 4, 4)
    targets = [
        {"boxes": torch.tensor([[4.0, 4, 30, 60]])},
        {"boxes": torch.zeros((0, 4))},
        {"boxes": torch.tensor([[10.0, 0, 60, 50], [0, 0, 20, 20]])},
    ]
    proposals, losses = rpn(features, (64, 64), targets)
    assert set(losses) == {"loss_rpn_objectness", "loss_rpn_box"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert len(proposals) == 3
    for boxes in proposals:
        assert 0 < len(boxes) <= 32
        assert (boxes >= 0).all() and (boxes <= 64).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
    _, no_losses = rpn(features, (64, 64))
    assert no_losses == {}


def test_regression_targets_are_the_authors_10_10_5_5_encoding():
    rpn = build_rpn(small_config())
    anchor = torch.tensor([[0.0, 0.0, 32.0, 16.0]])  # centre (16, 8), 32 wide, 16 high
    box = torch.tensor([[8.0, 4.0, 48.0, 36.0]])  # centre (28, 20), 40 wide, 32 high
    expected = torch.tensor([[10 * 12 / 32, 10 * 12 / 16, 5 * math.log(40 / 32), 5 * math.log(32 / 16)]])
    target = rpn.box_coder.encode_single(box, anchor)
    assert torch.allclose(target, expected)
    assert torch.allclose(rpn.box_coder.decode_single(target, anchor), box)
    legacy = build_rpn(small_config(rpn_box_weights=(1.0, 1.0, 1.0, 1.0)))
    assert torch.allclose(legacy.box_coder.encode_single(box, anchor), expected / expected.new_tensor([10, 10, 5, 5]))


def test_losses_are_huber_1_normalised_per_clip():
    # Clip 0: one positive (target 0.5 on x, else 0) and one negative anchor sampled;
    # clip 1: three negatives. Every prediction is 0, every logit 0.
    rpn = build_rpn(small_config())
    labels = [torch.tensor([1.0, 0.0, -1.0, -1.0]), torch.tensor([0.0, 0.0, 0.0, -1.0])]
    targets = [torch.zeros(4, 4), torch.zeros(4, 4)]
    targets[0][0, 0] = 0.5
    targets[1][3] = float("-inf")  # an ignored anchor of a clip without actors: never read
    objectness, loss_box = rpn.compute_loss(torch.zeros(8, 1), torch.zeros(8, 4), labels, targets)
    # Huber(delta 1) of 0.5 is 0.125, divided by clip 0's 2 sampled anchors, averaged
    # with clip 1's 0 (torchvision: smooth L1 beta 1/9 = 0.444, over all 5 anchors).
    assert loss_box.item() == pytest.approx(0.125 / 2 / 2)
    assert objectness.item() == pytest.approx(math.log(2))
    rpn.smooth_l1_beta = 1 / 9
    _, legacy_box = rpn.compute_loss(torch.zeros(8, 1), torch.zeros(8, 4), labels, targets)
    assert legacy_box.item() == pytest.approx((0.5 - 1 / 18) / 4)


def test_clips_without_sampled_anchors_give_a_connected_zero():
    rpn = build_rpn(small_config())
    deltas = torch.zeros(4, 4, requires_grad=True)
    labels = [torch.full((4,), -1.0)]
    objectness, box = rpn.compute_loss(torch.zeros(4, 1), deltas, labels, [torch.zeros(4, 4)])
    (objectness + box).backward()
    assert objectness.item() == 0.0 and box.item() == 0.0 and deltas.grad is not None


def test_inside_frame_counts_edges_on_the_border_as_inside():
    anchors = torch.tensor([[0.0, 0, 64, 64], [-1, 0, 30, 30], [10, 10, 65, 20], [0, 0, 10, 64.5]])
    assert inside_frame(anchors, (64, 64)).tolist() == [True, False, False, False]
    assert inside_frame(anchors, (65, 64)).tolist() == [True, False, False, True]


def _one_anchor_rpn(mode: str):
    """32 px square anchors on a 4x4 map of a 64 px frame: centres 0, 16, 32, 48 per axis,
    so only the 3x3 centred at 16..48 lie inside. The head predicts zeros (proposals are
    the anchors themselves, all equally likely); assignment is recorded."""
    rpn = build_rpn(small_config(anchor_sizes=(32.0,), anchor_aspect_ratios=(1.0,), rpn_border_anchors=mode))
    for parameter in rpn.head.parameters():
        torch.nn.init.zeros_(parameter)
    seen = []

    def assign(anchors, targets):
        seen.append(anchors[0])  # the one clip's
        return assign_targets(anchors, targets)

    assign_targets = rpn.assign_targets_to_anchors
    rpn.assign_targets_to_anchors = assign
    return rpn, seen


def test_training_removes_anchors_crossing_the_border():
    rpn, seen = _one_anchor_rpn("remove")
    corner = [{"boxes": torch.tensor([[0.0, 0, 16, 16]])}]  # best matched by the crossing corner anchor
    proposals, losses = rpn.train()(torch.randn(1, 8, 4, 4), (64, 64), corner)
    (anchors,) = seen
    assert len(anchors) == 9 and bool(inside_frame(anchors, (64, 64)).all())
    assert all(torch.isfinite(v) for v in losses.values())
    # Proposals come from the kept anchors only (zero deltas: the anchors themselves).
    assert all((anchors == box).all(dim=1).any() for box in proposals[0])
    # At inference every anchor is used, clipped to the frame.
    rpn.eval()(torch.randn(1, 8, 4, 4), (64, 64), corner)
    assert len(seen[1]) == 16 and bool(inside_frame(seen[1], (64, 64)).all())
    assert (seen[1] == torch.tensor([0.0, 0, 16, 16])).all(dim=1).any()


def test_keep_leaves_anchors_crossing_the_border_as_torchvision_does():
    rpn, seen = _one_anchor_rpn("keep")
    rpn.train()(torch.randn(1, 8, 4, 4), (64, 64), [{"boxes": torch.tensor([[0.0, 0, 16, 16]])}])
    assert len(seen[0]) == 16 and not bool(inside_frame(seen[0], (64, 64)).all())
    clip, seen = _one_anchor_rpn("clip")
    clip.train()(torch.randn(1, 8, 4, 4), (64, 64), [{"boxes": torch.tensor([[0.0, 0, 16, 16]])}])
    assert len(seen[0]) == 16 and bool(inside_frame(seen[0], (64, 64)).all())


def test_anchors_that_cannot_fit_and_unknown_modes_are_named():
    with pytest.raises(DetectorInputError, match="no anchor of sizes \\[128.0\\] fits inside the 64x64 frame"):
        build_rpn(small_config(anchor_sizes=(128.0,)))
    build_rpn(small_config(anchor_sizes=(128.0,), rpn_border_anchors="keep"))
    with pytest.raises(DetectorInputError, match="rpn_border_anchors 'drop'"):
        build_rpn(small_config(rpn_border_anchors="drop"))


def test_rpn_conv_has_the_configured_width_and_the_authors_init():
    assert DetectorConfig().rpn_conv_width == 512
    head = build_rpn(small_config()).head  # 8 feature channels, 12 anchors
    conv = head.conv[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (8, 512, (3, 3))
    assert isinstance(head.conv[1], torch.nn.ReLU6)
    assert head.cls_logits.in_channels == 512 and head.bbox_pred.out_channels == 48
    # a normal of std 0.01 truncated at 2 std: nothing beyond 0.02, std about 0.0088
    assert conv.weight.abs().max() <= 0.02 and 0.008 < conv.weight.std() < 0.0096
    assert not conv.bias.any()
    logits, deltas = head([torch.randn(2, 8, 4, 4)])
    assert logits[0].shape == (2, 12, 4, 4) and deltas[0].shape == (2, 48, 4, 4)
    narrow = build_rpn(small_config(rpn_conv_width=24)).head
    assert narrow.conv[0].out_channels == 24 and narrow.cls_logits.in_channels == 24
    torchvision_head = build_rpn(small_config(rpn_conv_width=None)).head
    assert torchvision_head.cls_logits.in_channels == 8  # the features' width
    with pytest.raises(DetectorInputError, match="rpn_conv_width 0"):
        small_config(rpn_conv_width=0)
