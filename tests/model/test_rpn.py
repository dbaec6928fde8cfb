"""The region proposal network with the authors' first-stage settings."""

from __future__ import annotations

import math

import pytest
import torch

from stvr_model.detector import DetectorConfig, build_rpn

pytestmark = pytest.mark.usefixtures("one_thread")


def small_config(**overrides) -> DetectorConfig:
    settings = dict(
        image_size=(64, 64),
        feature_channels=8,
        anchor_sizes=(16.0, 24.0, 32.0, 48.0),
        attention_dim=4,
        box_head_blocks=1,
    )
    settings.update(overrides)
    return DetectorConfig(**settings)


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
