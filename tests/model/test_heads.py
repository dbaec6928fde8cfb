"""The detector's heads: RoI crops, eq. 10 attention, box head and second stage."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stvr_model.detector import DetectorConfig, build_second_stage
from stvr_model.heads import (
    IGNORED_LABEL,
    CropAndPool,
    QueryAttention,
    RelocalizationHead,
    ResidualBoxHead,
    select_detections,
)

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


def test_crop_and_pool_gives_7x7_and_keeps_constant_maps():
    pool = CropAndPool(14, 2, 1 / 16)
    features = torch.arange(3.0).view(1, 3, 1, 1).expand(2, 3, 8, 8).contiguous()
    crops = pool(
        features, [torch.tensor([[0.0, 0.0, 64.0, 64.0]]), torch.tensor([[8.0, 8, 40, 72]])]
    )
    assert crops.shape == (2, 3, 7, 7)
    for channel in range(3):
        assert torch.allclose(crops[:, channel], torch.full((2, 7, 7), float(channel)))


def test_crop_and_pool_reads_the_boxed_region_only():
    pool = CropAndPool(14, 2, 1 / 16)
    features = torch.zeros(1, 1, 8, 8)
    features[0, 0, 2, 2] = 1.0  # feature cell 2 covers pixels 32..48
    rois = torch.tensor([[0.0, 32, 32, 48, 48], [0.0, 96, 96, 128, 128]])
    crops = pool(features, rois)
    # Samples sit at bin centres (1.5 + (i + 0.5) / 14 on the feature grid); the nearest
    # to the peak at 2.0 are 1/28 away per axis: (1 - 1/28) ** 2 of the peak.
    assert crops[0].max().item() == pytest.approx((1 - 1 / 28) ** 2, abs=1e-5)
    assert crops[1].abs().max() == 0.0


def _attention_inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    proposals = torch.randn(5, 6, 3, 3, generator=generator)
    queries = torch.randn(2, 4, 6, 3, 3, generator=generator)
    valid = torch.tensor([[True, True, False, False], [True, True, True, True]])
    owner = torch.tensor([0, 0, 1, 1, 0])
    return proposals, queries, valid, owner


def test_attention_weights_sum_to_one_over_valid_query_clips():
    torch.manual_seed(0)
    attention = QueryAttention(6, hidden=5)
    proposals, queries, valid, owner = _attention_inputs()
    attended, weights = attention(proposals, queries, valid, owner)
    assert attended.shape == (5, 6, 3, 3)
    assert weights.shape == (5, 4)
    assert torch.allclose(weights.sum(dim=1), torch.ones(5))
    padded = ~valid[owner]
    assert (weights[padded] == 0).all()
    assert (weights[~padded] > 0).all()


def test_attention_matches_equation_10_by_hand():
    torch.manual_seed(1)
    attention = QueryAttention(6, hidden=5)
    proposals, queries, valid, owner = _attention_inputs(seed=1)
    attended, weights = attention(proposals, queries, valid, owner)
    k = 1  # a proposal of batch row 0, whose query has 2 valid clips
    fq = queries[0, :2]
    e = torch.tanh(
        fq.mean(dim=(-2, -1)) @ attention.query_proj.weight.T
        + attention.query_proj.bias
        + proposals[k].mean(dim=(-2, -1)) @ attention.proposal_proj.weight.T
    )
    alpha = torch.softmax((e @ attention.score.weight.T).squeeze(-1), dim=0)
    expected = (alpha[:, None, None, None] * fq).sum(dim=0)
    assert torch.allclose(weights[k, :2], alpha, atol=1e-6)
    assert torch.allclose(attended[k], expected, atol=1e-5)


def test_attention_ignores_padded_query_content():
    torch.manual_seed(2)
    attention = QueryAttention(6, hidden=5)
    proposals, queries, valid, owner = _attention_inputs(seed=2)
    changed = queries.clone()
    changed[0, 2:] = 1e3 * torch.randn_like(changed[0, 2:])
    first, _ = attention(proposals, queries, valid, owner)
    second, _ = attention(proposals, changed, valid, owner)
    assert torch.equal(first, second)


def test_residual_box_head_keeps_width_and_pools_space():
    head = ResidualBoxHead(16, num_blocks=2)
    assert head(torch.randn(3, 16, 7, 7)).shape == (3, 16)
    reduced = ResidualBoxHead(16, num_blocks=1, width=8)
    assert reduced.out_channels == 8 and reduced(torch.randn(3, 16, 7, 7)).shape == (3, 8)
    with pytest.raises(ValueError, match="multiple of 4"):
        ResidualBoxHead(18)
    with pytest.raises(ValueError, match="at least one"):
        ResidualBoxHead(16, num_blocks=0)


def _matching_task(channels: int = 8, count: int = 128, seed: int = 0):
    """Proposals and queries of two kinds (a +pattern or a -pattern on the 7x7 crop, on a
    random background): a proposal matches when its kind equals its query's, an XOR of
    the two kinds that no function adding a proposal term to a query term can separate."""
    pattern = torch.randn(channels, 7, 7, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(seed)
    kinds = torch.randint(0, 2, (2, count), generator=generator)
    sign = (2 * kinds - 1).float().view(2, count, 1, 1, 1)
    noise = 0.3 * torch.randn(2, count, channels, 7, 7, generator=generator)
    proposals, queries = sign * pattern + noise
    return torch.cat([proposals, queries], dim=1), (kinds[0] == kinds[1]).long()


def _held_out_accuracy(head: nn.Module, steps: int = 150) -> float:
    """Train `head` + a linear classifier on one draw of the task, score another draw."""
    torch.manual_seed(0)
    inputs, labels = _matching_task(seed=1)
    classifier = nn.Linear(head.out_channels, 2)
    optimizer = torch.optim.Adam([*head.parameters(), *classifier.parameters()], lr=1e-2)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(classifier(head(inputs)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    inputs, labels = _matching_task(seed=2)
    with torch.no_grad():
        return (classifier(head(inputs)).argmax(1) == labels).float().mean().item()


def test_light_box_head_learns_whether_proposal_and_query_match():
    assert _held_out_accuracy(ResidualBoxHead(16, num_blocks=1, width=16)) >= 0.95
    # The same head with its units removed is a linear map of the crop's mean, the old
    # light head: on new pairs it does no better than a coin.
    linear = ResidualBoxHead(16, num_blocks=1, width=16)
    linear.blocks, linear.reduce = nn.Identity(), nn.Identity()
    assert _held_out_accuracy(linear) <= 0.65


def _head(**overrides) -> RelocalizationHead:
    config = small_config(**overrides)
    return build_second_stage(config, CropAndPool(14, 2, 1 / 16))


def test_label_proposals_by_iou_with_matching_and_other_actors():
    head = _head()
    proposals = [torch.tensor([[0.0, 0, 20, 20], [40, 40, 60, 60], [0, 0, 10, 20], [30, 0, 40, 8]])]
    target = {
        "boxes": torch.tensor([[0.0, 0, 20, 20], [40, 40, 60, 60]]),
        "labels": torch.tensor([2, 1]),
    }
    labels, regression = head.label_proposals(proposals, [target])
    # IoU 1 -> its label; IoU 0.5 with the first box -> matched (>= 0.5); no overlap -> 0.
    assert labels[0].tolist() == [2, 1, 2, 0]
    assert torch.allclose(regression[0][:2], torch.zeros(2, 4))
    dx = (10.0 - 5.0) / 10.0 * 10.0  # centre shift / proposal width * weight 10
    dw = torch.log(torch.tensor(2.0)).item() * 5.0  # log(20 / 10) * weight 5
    assert regression[0][2].tolist() == pytest.approx([dx, 0.0, dw, 0.0], abs=1e-5)


def test_training_sample_is_balanced_and_capped_per_clip():
    torch.manual_seed(0)
    head = _head(roi_batch_size_per_clip=8, roi_positive_fraction=0.25).train()
    gt = torch.tensor([[0.0, 0, 32, 32]])
    near = gt + torch.tensor([[1.0, 0, 1, 0]])
    far = torch.tensor([[40.0, 40, 60, 60]]).expand(20, 4)
    proposals = [torch.cat([near.expand(6, 4), far])]
    kept, labels, _ = head.select_targets(proposals, [{"boxes": gt, "labels": torch.tensor([2])}])
    assert len(kept[0]) == 8
    assert (labels[0] > 0).sum() == 2 and (labels[0] == 0).sum() == 6


def test_eval_targets_keep_every_proposal_and_ignore_between_thresholds():
    head = _head(roi_fg_iou_thresh=0.6, roi_bg_iou_thresh=0.3).eval()
    gt = torch.tensor([[0.0, 0, 20, 20]])
    proposals = [torch.tensor([[0.0, 0, 20, 20], [0, 0, 10, 20], [40, 40, 60, 60]])]
    kept, labels, _ = head.select_targets(proposals, [{"boxes": gt, "labels": torch.tensor([1])}])
    assert torch.equal(kept[0], proposals[0])
    assert labels[0].tolist() == [1, IGNORED_LABEL, 0]


def test_postprocess_scores_the_matching_actor_and_applies_nms():
    head = _head(detection_score_thresh=0.05, detection_nms_thresh=0.5, detections_per_clip=2)
    proposals = [
        torch.tensor([[0.0, 0, 20, 20], [1, 0, 21, 20], [40, 40, 70, 60]]),
        torch.zeros((0, 4)),
    ]
    logits = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.5]])
    found = head.postprocess(logits, torch.zeros(3, 12), proposals, (64, 64))
    probability = torch.softmax(logits, dim=1)[:, 2]
    # The second box overlaps the first (IoU 0.9) and goes; the third is clipped at 64.
    assert found[0]["boxes"].tolist() == [[0.0, 0, 20, 20], [40, 40, 64, 60]]
    assert found[0]["scores"].tolist() == pytest.approx(probability[[0, 2]].tolist())
    assert found[1]["boxes"].shape == (0, 4) and found[1]["scores"].shape == (0,)


def test_select_detections_thresholds_and_caps():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [5, 5, 5, 9]])
    scores = torch.tensor([0.2, 0.9, 0.01, 0.95])
    kept = select_detections(boxes, scores, (64, 64), 0.05, 0.6, 1)
    # [5, 5, 5, 9] is empty, 0.01 is under the threshold, the cap keeps the best.
    assert kept["boxes"].tolist() == [[20.0, 20, 30, 30]]
    assert kept["scores"].tolist() == pytest.approx([0.9])


def test_head_losses_are_zero_not_nan_when_no_roi_survives():
    torch.manual_seed(0)
    head = _head().train()
    features = torch.randn(1, 8, 4, 4)
    queries, valid = torch.randn(1, 2, 8, 7, 7), torch.ones(1, 2, dtype=torch.bool)
    found, losses = head(
        features,
        [torch.zeros((0, 4))],
        queries,
        valid,
        torch.zeros(1, dtype=torch.long),
        (64, 64),
        [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.long)}],
    )
    assert found[0]["boxes"].shape == (0, 4)
    assert all(v.item() == 0.0 for v in losses.values())


def test_head_runs_end_to_end_with_gradients_to_its_parts():
    torch.manual_seed(0)
    head = _head(add_gt_to_proposals=True).train()
    features = torch.randn(2, 8, 4, 4)
    queries = torch.randn(1, 3, 8, 7, 7)
    valid = torch.tensor([[True, True, False]])
    proposals = [torch.tensor([[0.0, 0, 30, 30], [30, 30, 60, 60]])] * 2
    targets = [{"boxes": torch.tensor([[2.0, 2, 30, 32]]), "labels": torch.tensor([2])}] * 2
    _, losses = head(
        features, proposals, queries, valid, torch.zeros(2, dtype=torch.long), (64, 64), targets
    )
    sum(losses.values()).backward()
    parts: list[nn.Module] = [head.attention.query_proj, head.box_head, head.predictor.bbox_pred]
    for part in parts:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
