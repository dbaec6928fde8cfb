"""The re-localization detector wired from small injected parts: shapes, losses,
training, gradients, padding masks, the flow pass-through and input errors."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
from torch import nn

from stvr_model.boxes import detection_rows, normalized_xyxy, pixel_xyxy
from stvr_model.detector import DetectorConfig, ReLocalizationDetector
from stvr_model.detector_inputs import DetectorInputError

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE, CHANNELS, B, TQ, TR = 64, 8, 2, 3, 3


class CellState(NamedTuple):
    h: torch.Tensor
    c: torch.Tensor | None


class TinyBackbone(nn.Module):
    """The backbone contract at toy size: [N, 3, 8, H, W] -> [N, C, H/16, W/16], channel
    index t*C/2 + c over the 2 temporal positions left after stride 4."""

    def __init__(self, channels: int = CHANNELS) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, channels // 2, (4, 16, 16), stride=(4, 16, 16))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(clips))  # (N, C/2, 2, h, w)
        return x.permute(0, 2, 1, 3, 4).flatten(1, 2)


class TinyLSTM(nn.Module):
    """A ConvLSTM with the cells' call signature; records the flow it is handed."""

    def __init__(self, channels: int = CHANNELS) -> None:
        super().__init__()
        self.gates = nn.Conv2d(2 * channels, 4 * channels, 3, padding=1)
        self.flows: list[torch.Tensor | None] = []

    def forward(self, x, state=None, flow=None):
        self.flows.append(flow)
        h = torch.zeros_like(x) if state is None else state.h
        c = torch.zeros_like(x) if state is None else state.c
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f + 1.0) * c + torch.sigmoid(i) * torch.tanh(g)
        return CellState(torch.tanh(c) * torch.sigmoid(o) + x, c)


def tiny_config(**overrides) -> DetectorConfig:
    settings = dict(
        image_size=(SIZE, SIZE),
        feature_channels=CHANNELS,
        anchor_sizes=(16.0, 24.0, 32.0, 48.0),
        attention_dim=8,
        box_head_blocks=1,
    )
    settings.update(overrides)
    return DetectorConfig(**settings)


def make_detector(seed: int = 0, **overrides) -> ReLocalizationDetector:
    torch.manual_seed(seed)
    return ReLocalizationDetector(TinyBackbone(), TinyLSTM(), tiny_config(**overrides))


def make_batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    query = torch.rand(B, TQ, 3, 8, SIZE, SIZE, generator=generator) * 2 - 1
    query_boxes = torch.tensor([10.0, 10, 40, 50]).expand(B, TQ, 4).clone()
    reference = torch.rand(B, TR, 3, 8, SIZE, SIZE, generator=generator) * 2 - 1
    boxes = torch.tensor([[8.0, 8, 40, 56], [30, 5, 60, 40]])
    targets = [
        [{"boxes": boxes, "labels": torch.tensor([2, 1])} for _ in range(TR - 1)]
        + [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.long)}]
        for _ in range(B)
    ]
    return query, query_boxes, reference, targets


def test_eval_detections_have_the_documented_shapes_and_formats():
    model = make_detector().eval()
    query, query_boxes, reference, _ = make_batch()
    with torch.no_grad():
        detections, losses = model(query, query_boxes, reference)
    assert losses == {}
    assert len(detections) == B and all(len(row) == TR for row in detections)
    for row in detections:
        for clip in row:
            boxes, scores = clip["boxes"], clip["scores"]
            assert boxes.shape == (len(scores), 4) and 0 < len(scores) <= 15
            assert ((scores >= 0) & (scores <= 1)).all()
            assert (scores[:-1] >= scores[1:]).all()  # best first
            assert (boxes >= 0).all() and (boxes <= SIZE).all()
            assert (boxes[:, 2:] >= boxes[:, :2]).all()  # x1 <= x2, y1 <= y2


def test_training_returns_the_four_weighted_losses_and_detections():
    model = make_detector().train()
    query, query_boxes, reference, targets = make_batch()
    detections, losses = model(query, query_boxes, reference, targets)
    assert set(losses) == {"loss_rpn_objectness", "loss_rpn_box", "loss_classifier", "loss_box"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    assert len(detections) == B and all(len(row) == TR for row in detections)


def test_eval_with_targets_gives_a_validation_loss():
    model = make_detector().eval()
    query, query_boxes, reference, targets = make_batch()
    with torch.no_grad():
        plain, _ = model(query, query_boxes, reference)
        scored, losses = model(query, query_boxes, reference, targets)
    assert len(losses) == 4 and all(torch.isfinite(v) for v in losses.values())
    # Eval does not sample RoIs, so targets do not change what is detected.
    assert torch.equal(plain[1][0]["boxes"], scored[1][0]["boxes"])


def test_overfitting_one_tiny_batch_lowers_the_loss():
    model = make_detector(seed=3).train()
    query, query_boxes, reference, targets = make_batch(seed=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    totals = []
    for _ in range(40):
        _, losses = model(query, query_boxes, reference, targets)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert all(torch.isfinite(torch.tensor(totals)))
    first, last = sum(totals[:5]) / 5, sum(totals[-5:]) / 5
    assert last < 0.8 * first, totals


def test_gradients_reach_the_cell_the_query_path_and_the_heads():
    model = make_detector(add_gt_to_proposals=True).train()
    query, query_boxes, reference, targets = make_batch()
    query.requires_grad_(True)
    _, losses = model(query, query_boxes, reference, targets)
    sum(losses.values()).backward()
    assert query.grad is not None and query.grad.abs().sum() > 0  # through the query encoder
    parts = {
        "cell": model.cell,
        "backbone": model.backbone,
        "rpn head": model.rpn.head,
        "attention": model.second_stage.attention,
        "box head": model.second_stage.box_head,
        "predictor": model.second_stage.predictor,
    }
    for name, part in parts.items():
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name


def test_padded_query_clips_do_not_affect_the_output():
    model = make_detector().eval()
    query, query_boxes, reference, targets = make_batch()
    valid = torch.tensor([[True, True, False], [True, False, False]])
    changed, changed_boxes = query.clone(), query_boxes.clone()
    changed[~valid] = torch.randn_like(changed[~valid])
    changed_boxes[~valid] = torch.tensor([0.0, 0, 64, 64])
    outputs = []
    with torch.no_grad():
        for clips, boxes in ((query, query_boxes), (changed, changed_boxes)):
            torch.manual_seed(0)  # the RPN loss samples anchors even in eval mode
            outputs.append(model(clips, boxes, reference, targets, query_valid=valid))
    (first, first_losses), (second, second_losses) = outputs
    for row_a, row_b in zip(first, second, strict=True):
        for a, b in zip(row_a, row_b, strict=True):
            assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
    assert all(torch.equal(first_losses[k], second_losses[k]) for k in first_losses)
    # The valid clips do matter: changing one changes the scores.
    changed[valid] = torch.randn_like(changed[valid])
    with torch.no_grad():
        third, _ = model(changed, changed_boxes, reference, query_valid=valid)
    assert not torch.equal(first[0][0]["scores"], third[0][0]["scores"])


def test_flows_are_handed_to_the_cell_clip_by_clip():
    model = make_detector().eval()
    query, query_boxes, reference, _ = make_batch()
    flows = torch.randn(B, TR, 2, SIZE // 16, SIZE // 16)
    with torch.no_grad():
        model(query, query_boxes, reference, flows=flows)
    assert len(model.cell.flows) == TR
    for t, flow in enumerate(model.cell.flows):
        assert torch.equal(flow, flows[:, t])
    model.cell.flows.clear()
    with torch.no_grad():
        model(query, query_boxes, reference)
    assert model.cell.flows == [None] * TR


def test_padded_reference_clips_get_no_detections_and_no_loss():
    model = make_detector().eval()
    query, query_boxes, reference, targets = make_batch()
    ref_valid = torch.tensor([[True, True, True], [True, True, False]])
    changed = reference.clone()
    changed[1, 2] = torch.randn_like(changed[1, 2])
    targets[1][2] = {"boxes": torch.tensor([[0.0, 0, 64, 64]]), "labels": torch.tensor([2])}
    results = []
    with torch.no_grad():
        for clips in (reference, changed):
            torch.manual_seed(0)
            results.append(model(query, query_boxes, clips, targets, ref_valid=ref_valid))
    (first, first_losses), (second, second_losses) = results
    assert first[1][2]["boxes"].shape == (0, 4) and first[1][2]["scores"].shape == (0,)
    assert len(first[1][1]["scores"]) > 0
    assert all(torch.equal(first_losses[k], second_losses[k]) for k in first_losses)


def test_backbone_chunks_give_the_same_detections():
    whole = make_detector().eval()
    chunked = make_detector(backbone_chunk_size=2).eval()
    chunked.load_state_dict(whole.state_dict())
    query, query_boxes, reference, _ = make_batch()
    with torch.no_grad():
        a, _ = whole(query, query_boxes, reference)
        b, _ = chunked(query, query_boxes, reference)
    assert torch.allclose(a[0][1]["scores"], b[0][1]["scores"], atol=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda q, qb, r, v, t: (q[..., :32], qb, r, v, t), "query_clips"),
        (lambda q, qb, r, v, t: (q, qb[:, :, :2], r, v, t), "query_boxes"),
        (lambda q, qb, r, v, t: (q, qb, r[:1], v, t), "ref_clips batch"),
        (lambda q, qb, r, v, t: (q, qb, r.to(torch.uint8), v, t), "ref_clips must be float"),
        (lambda q, qb, r, v, t: (q, qb, r, v & False, t), r"batch rows \[0, 1\]"),
        (lambda q, qb, r, v, t: (q, qb, r, v, t[:1]), "targets has 1 rows"),
    ],
)
def test_bad_inputs_raise_errors_naming_the_argument(change, message):
    model = make_detector().eval()
    query, query_boxes, reference, targets = make_batch()
    valid = torch.ones(B, TQ, dtype=torch.bool)
    q, qb, r, v, t = change(query, query_boxes, reference, valid, targets)
    with pytest.raises(DetectorInputError, match=message):
        model(q, qb, r, t, query_valid=v)


def test_bad_labels_flows_and_reference_masks_are_named():
    model = make_detector().eval()
    query, query_boxes, reference, targets = make_batch()
    targets[1][0] = {"boxes": torch.zeros((1, 4)), "labels": torch.tensor([3])}
    with pytest.raises(DetectorInputError, match=r"targets\[1\]\[0\]\['labels'\] holds \[3\]"):
        model(query, query_boxes, reference, targets)
    with pytest.raises(DetectorInputError, match="flows"):
        model(query, query_boxes, reference, flows=torch.zeros(B, TR, 2, 3, 3))
    with pytest.raises(DetectorInputError, match="every reference clip as padding"):
        model(query, query_boxes, reference, ref_valid=torch.zeros(B, TR, dtype=torch.bool))


def test_config_rejects_sizes_that_do_not_fit_the_stride():
    with pytest.raises(DetectorInputError, match="image_size height 100"):
        DetectorConfig(image_size=(100, 320))
    with pytest.raises(DetectorInputError, match="num_classes"):
        DetectorConfig(num_classes=2)


def test_authors_defaults():
    config = DetectorConfig()
    assert len(config.anchor_sizes) * len(config.anchor_aspect_ratios) == 12
    assert (config.rpn_nms_thresh, config.rpn_post_nms_top_n) == (0.7, 32)
    assert config.roi_crop_size // config.roi_pool_kernel == 7
    # the authors' first stage: box coder, Huber delta, border anchors, conv depth
    assert config.rpn_box_weights == config.bbox_reg_weights == (10.0, 10.0, 5.0, 5.0)
    assert (config.rpn_smooth_l1_beta, config.rpn_border_anchors, config.rpn_conv_width) == (1.0, "remove", 512)


def test_box_conversions_and_scorer_rows():
    boxes = torch.tensor([[32.0, 16, 64, 48], [-4, 0, 70, 64]])
    normal = normalized_xyxy(boxes, (64, 128))  # H 64, W 128
    assert normal.tolist() == [[0.25, 0.25, 0.5, 0.75], [0.0, 0.0, 70 / 128, 1.0]]
    assert pixel_xyxy(normal[:1], (64, 128)).tolist() == [[32.0, 16, 64, 48]]
    detections = [
        [
            {"boxes": boxes[:1], "scores": torch.tensor([0.5])},
            {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0)},
        ]
    ]
    rows = detection_rows(detections, ["p1"], [[901.0, 901.333]], (64, 128))
    assert rows == [
        {
            "pair_id": "p1",
            "timestamp": 901.0,
            "x1": 0.25,
            "y1": 0.25,
            "x2": 0.5,
            "y2": 0.75,
            "score": 0.5,
        }
    ]
    with pytest.raises(ValueError, match=r"timestamps\[0\] has 1 entries for 2 clips"):
        detection_rows(detections, ["p1"], [[901.0]], (64, 128))


@pytest.mark.parametrize("kind", ["none", "convlstm", "warp", "traj", "flow"])
def test_real_small_backbone_and_each_real_cell_train_together(kind):
    from stvr_model.backbones import build_backbone
    from stvr_model.cells import build_cell

    torch.manual_seed(0)
    size = 128  # an 8x8 feature map: room for the warp cell's 3x3 control points
    config = DetectorConfig(
        image_size=(size, size), anchor_sizes=(16.0, 32.0, 64.0, 96.0), box_head_blocks=1,
        box_head_width=16,
    )
    cell = build_cell(kind, config.feature_channels, config.feature_channels)
    model = ReLocalizationDetector(build_backbone("small"), cell, config).train()
    query = torch.rand(1, 2, 3, 8, size, size) * 2 - 1
    query_boxes = torch.tensor([16.0, 16, 80, 112]).expand(1, 2, 4).clone()
    reference = torch.rand(1, 2, 3, 8, size, size) * 2 - 1
    box = {"boxes": torch.tensor([[16.0, 16, 80, 112]]), "labels": torch.tensor([2])}
    flows = torch.randn(1, 2, 2, size // 16, size // 16) if kind == "flow" else None
    detections, losses = model(query, query_boxes, reference, [[box, box]], flows=flows)
    assert len(losses) == 4 and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    if kind != "none":  # the Clip baseline has no parameters: h is x itself
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in cell.parameters())
    assert len(detections[0]) == 2


def test_feature_maps_too_small_for_the_warp_cell_are_reported_at_construction():
    from stvr_model.cells import build_cell

    config = tiny_config(image_size=(64, 64))  # 4x4 feature maps
    cell = build_cell("warp", CHANNELS, CHANNELS)
    with pytest.raises(DetectorInputError, match="4x4 feature maps, too small for the warp"):
        ReLocalizationDetector(TinyBackbone(), cell, config)
    ReLocalizationDetector(TinyBackbone(), cell, tiny_config(image_size=(96, 96)))  # 6x6


ATOMS = ("sit", "stand", "talk to")  # the action head's classes


def _with_actions(targets, classes: int = len(ATOMS)):
    """targets with multi-hot actions: the matching actor does action 0, others 1 and 2."""
    for row in targets:
        for target in row:
            hot = torch.zeros(len(target["labels"]), classes)
            hot[target["labels"] == 2, 0] = 1.0
            hot[target["labels"] == 1, 1:] = 1.0
            target["actions"] = hot
    return targets


def test_action_head_adds_its_weighted_loss_and_trains_the_backbone():
    model = make_detector(action_atoms=ATOMS, action_weight=0.5).train()
    query, query_boxes, reference, targets = make_batch()
    _, losses = model(query, query_boxes, reference, _with_actions(targets))
    assert "loss_action" in losses and torch.isfinite(losses["loss_action"])
    model.zero_grad()
    losses["loss_action"].backward()
    assert model.backbone.conv.weight.grad.abs().sum() > 0
    assert model.action_head.classify.weight.grad.abs().sum() > 0
    # Its weight scales it: the same model at weight 1 gives twice the loss.
    full = make_detector(action_atoms=ATOMS, action_weight=1.0).train()
    _, unweighted = full(query, query_boxes, reference, _with_actions(make_batch()[3]))
    assert float(losses["loss_action"]) == pytest.approx(0.5 * float(unweighted["loss_action"]), rel=1e-5)


def test_action_head_without_action_targets_is_named():
    model = make_detector(action_atoms=ATOMS, action_weight=1.0).train()
    query, query_boxes, reference, targets = make_batch()
    with pytest.raises(DetectorInputError, match="carry no 'actions'"):
        model(query, query_boxes, reference, targets)


def test_no_action_head_by_default():
    model = make_detector()
    assert model.action_head is None and "loss_action" not in model.config.loss_weights
    assert make_detector(action_atoms=ATOMS).action_head is None  # classes without a loss weight
