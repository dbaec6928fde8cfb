"""The detector's second-stage heads (paper §4.1, §4.4-4.5 and Figure 5): RoI crops,
attention over the query clips (eq. 10) and the second stage (the region proposal
network is `stvr_model.rpn`).

Every box here is pixel xyxy in the resized clip frame (the frame the backbone saw);
the feature maps are that frame at stride `1 / spatial_scale`. Second-stage classes:
0 background, 1 other actor, 2 matching actor (an actor doing the query's action).
The parts are torchvision's (RoIAlign, Matcher, BoxCoder,
BalancedPositiveNegativeSampler, FastRCNNPredictor, Bottleneck, nms); this module only
wires them the way the authors' TensorFlow meta-architecture did.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.models.resnet import Bottleneck
from torchvision.ops import RoIAlign
from torchvision.ops import boxes as box_ops

BACKGROUND, OTHER_ACTOR, MATCHING_ACTOR = 0, 1, 2
# cross_entropy's default ignore_index: labels between the IoU thresholds carry no loss.
IGNORED_LABEL = -100


class CropAndPool(nn.Module):
    """RoI features as the authors computed them: a bilinear `crop_size` x `crop_size`
    crop (TF crop_and_resize) then a `pool_kernel` max-pool, so 14 -> 7 by default.

    forward(features [N, C, h, w], rois) -> [K, C, crop_size // pool_kernel, same]; `rois`
    is a list of N tensors [K_i, 4] or one tensor [K, 5] (image index, x1, y1, x2, y2),
    in input pixels, brought onto the feature grid by `spatial_scale` (1 / stride).
    """

    def __init__(
        self, crop_size: int, pool_kernel: int, spatial_scale: float, sampling_ratio: int = 1
    ) -> None:
        super().__init__()
        # One bilinear sample per cell (sampling_ratio=1) is what crop_and_resize does;
        # aligned=True puts pixel centres at half-integers on both grids.
        self.align = RoIAlign(crop_size, spatial_scale, sampling_ratio, aligned=True)
        self.pool_kernel = pool_kernel

    def forward(self, features: Tensor, rois: Tensor | list[Tensor]) -> Tensor:
        return F.max_pool2d(self.align(features, rois), self.pool_kernel)


class QueryAttention(nn.Module):
    """Attention of each proposal over the clips of its own query (paper eq. 10).

    e_kj = tanh(W_q avg(f_j^q) + W_r avg(f_k^p) + b_p), alpha_kj = softmax_j(w^T e_kj),
    output_k = sum_j alpha_kj f_j^q, with avg the spatial mean. The paper's b_s is left
    out: a constant added to every logit cancels in the softmax and would never learn.
    Padded query clips (query_valid False) get exactly zero weight.
    """

    def __init__(self, channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.query_proj = nn.Linear(channels, hidden)  # W_q, b_p
        self.proposal_proj = nn.Linear(channels, hidden, bias=False)  # W_r
        self.score = nn.Linear(hidden, 1, bias=False)  # w
        for layer in (self.query_proj, self.proposal_proj, self.score):
            nn.init.xavier_uniform_(layer.weight)  # the authors' slim default (Glorot)
        nn.init.zeros_(self.query_proj.bias)

    def forward(
        self, proposals: Tensor, queries: Tensor, query_valid: Tensor, owner: Tensor
    ) -> tuple[Tensor, Tensor]:
        """proposals [R, C, S, S]; queries [B, Tq, C, S, S]; query_valid [B, Tq] bool;
        owner [R] int64, the batch row (query) of each proposal.
        Returns (attended queries [R, C, S, S], weights [R, Tq], rows summing to 1)."""
        num_rois, (batch, steps) = proposals.shape[0], query_valid.shape
        q = self.query_proj(queries.mean(dim=(-2, -1)))  # (B, Tq, D)
        p = self.proposal_proj(proposals.mean(dim=(-2, -1)))  # (R, D)
        logits = self.score(torch.tanh(q[owner] + p[:, None])).squeeze(-1)  # (R, Tq)
        weights = logits.masked_fill(~query_valid[owner], float("-inf")).softmax(dim=-1)
        # Each row's weights sit in its owner's slot of a (R, B, Tq) grid, zeros elsewhere,
        # so one matmul against all queries serves every proposal without copying them.
        spread = weights.new_zeros(num_rois, batch, steps)
        spread[torch.arange(num_rois, device=owner.device), owner] = weights
        attended = spread.flatten(1) @ queries.flatten(2).flatten(0, 1)  # (R, C*S*S)
        return attended.view(num_rois, *queries.shape[2:]), weights


class ChannelAffine(nn.Module):
    """Batch norm as the authors' box classifier ran it: statistics frozen at their
    initial values (mean 0, variance 1), only the per-channel scale and shift learnt.
    Unlike nn.BatchNorm2d it does not depend on how many RoIs a batch holds."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class ResidualBoxHead(nn.Module):
    """Second-stage features: ResNet bottleneck units on the concatenated [proposal,
    attended query] crop, then the spatial mean. The authors used ResNet-101's block4
    (3 units, depth 2048) on the 7x7x2048 concatenation; that is `width=None` (the
    input's width), `num_blocks=3` and `fc=None`.

    The light configuration for CPU runs: with `width` below the input's, a 1x1 conv
    (with its scale/shift and a ReLU) first reduces the concatenation to `width`
    channels and the units run at that width; with `fc`, the map is flattened into a
    fully connected layer of `fc` units (+ ReLU) instead of averaged, which keeps where
    things are in the crop for the box regression (torchvision's TwoMLPHead habit;
    a few units and a mean leave little of it). At least one unit always runs on the
    7x7 map, so the head compares query and proposal position by position (a linear
    layer on the two means cannot express their similarity).

    forward([R, channels, S, S]) -> [R, out_channels].
    """

    def __init__(self, channels: int, num_blocks: int = 3, width: int | None = None,
                 fc: int | None = None, crop_size: int = 7) -> None:
        super().__init__()
        width = channels if width is None else width
        if num_blocks < 1:
            raise ValueError(f"box head needs at least one bottleneck unit, got {num_blocks}")
        if width < Bottleneck.expansion or width % Bottleneck.expansion:
            raise ValueError(f"box head width {width} is not a positive multiple of 4")
        self.reduce = nn.Identity()
        if width != channels:
            self.reduce = nn.Sequential(
                nn.Conv2d(channels, width, 1, bias=False), ChannelAffine(width), nn.ReLU(inplace=True)
            )
        self.blocks = nn.Sequential(
            *(Bottleneck(width, width // Bottleneck.expansion, norm_layer=ChannelAffine)
              for _ in range(num_blocks))
        )
        self.fc = None if fc is None else nn.Sequential(
            nn.Flatten(), nn.Linear(width * crop_size * crop_size, fc), nn.ReLU(inplace=True))
        self.out_channels = width if fc is None else fc
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        for block in self.blocks:
            # Each unit starts as the identity (zero last scale, Goyal et al. 2017): without
            # batch statistics, stacked units would otherwise grow the features' scale.
            nn.init.zeros_(block.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.reduce(x))  # (R, width, S, S)
        return x.mean(dim=(-2, -1)) if self.fc is None else self.fc(x)


class ActorActionHead(nn.Module):
    """An auxiliary classifier of what each annotated actor does (not the authors').

    The paper's I3D arrives pretrained on Kinetics actions, so its features already tell
    actions apart and the second stage only has to compare them. A backbone trained from
    scratch (the small one) gets no such start: the detection losses only teach it to
    find actors, and matching a query needs features that differ between actions. This
    head gives it that signal during training: a linear layer on the spatial mean of each
    ground-truth actor's crop of the features the second stage sees, scored with binary
    cross-entropy against the atomic actions of the actor's combined label (multi-label,
    as AVA's actions are). Only the training labels' actions are classes, so held-out
    labels stay unseen as labels; their actions recur in training labels by design.

    forward(crops [K, C, S, S]) -> logits [K, classes].
    """

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.classify = nn.Linear(channels, classes)

    def forward(self, crops: Tensor) -> Tensor:
        return self.classify(crops.mean(dim=(-2, -1)))

    def loss(self, crops: Tensor, actions: Tensor) -> Tensor:
        """Mean binary cross-entropy of the crops' logits against multi-hot `actions` [K, classes]."""
        if len(crops) == 0:
            return self.classify.weight.sum() * 0.0
        return F.binary_cross_entropy_with_logits(self(crops), actions.to(crops.dtype))


def select_detections(
    boxes: Tensor,
    scores: Tensor,
    image_size: tuple[int, int],
    score_thresh: float,
    nms_thresh: float,
    max_detections: int,
) -> dict[str, Tensor]:
    """One clip's detections: boxes [R, 4] pixel xyxy clipped to `image_size` (H, W),
    those scoring above `score_thresh`, non-empty, after NMS, best first, at most
    `max_detections`. Returns {"boxes": [D, 4], "scores": [D]}."""
    boxes = box_ops.clip_boxes_to_image(boxes, image_size)
    keep = torch.where(scores > score_thresh)[0]
    keep = keep[box_ops.remove_small_boxes(boxes[keep], min_size=1e-2)]
    keep = keep[box_ops.nms(boxes[keep], scores[keep], nms_thresh)][:max_detections]
    return {"boxes": boxes[keep], "scores": scores[keep]}


class RelocalizationHead(nn.Module):
    """The second stage (paper §4.4-4.5): crop each proposal, attend over its query's
    clips, concatenate, box head, then 3-way classification and class-specific boxes.

    forward(features [N, C, h, w] one map per reference clip, proposals N tensors
    [P_i, 4] pixel xyxy, queries [B, Tq, C, S, S], query_valid [B, Tq] bool, owner [N]
    int64 (batch row of each clip), image_size (H, W), targets N dicts {"boxes" [K, 4]
    pixel xyxy, "labels" [K] int64 in {1, 2}} or None) -> (detections: N dicts {"boxes"
    [D, 4] pixel xyxy, "scores" [D] probability of the matching-actor class}, losses:
    {} or {"loss_classifier", "loss_box"}).

    With `match_product` the concatenation also holds proposal x attended query (an
    option, not the authors': it makes query-proposal similarity easy to learn).

    With targets in training mode a balanced sample of the proposals goes through (the
    authors: 16 per clip, a quarter positive); in eval mode every proposal does and the
    loss covers all of them, so detections do not depend on whether targets are given.
    """

    def __init__(
        self,
        roi_pool: nn.Module,
        attention: nn.Module,
        box_head: nn.Module,
        predictor: nn.Module,
        *,
        fg_iou_thresh: float,
        bg_iou_thresh: float,
        batch_size_per_clip: int,
        positive_fraction: float,
        bbox_reg_weights: tuple[float, float, float, float],
        score_thresh: float,
        nms_thresh: float,
        detections_per_clip: int,
        add_gt_to_proposals: bool = False,
        match_product: bool = False,
    ) -> None:
        super().__init__()
        self.roi_pool = roi_pool
        self.attention = attention
        self.box_head = box_head
        self.predictor = predictor
        self.proposal_matcher = det_utils.Matcher(fg_iou_thresh, bg_iou_thresh, False)
        self.fg_bg_sampler = det_utils.BalancedPositiveNegativeSampler(
            batch_size_per_clip, positive_fraction
        )
        self.box_coder = det_utils.BoxCoder(bbox_reg_weights)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_clip = detections_per_clip
        self.add_gt_to_proposals = add_gt_to_proposals
        # The product of proposal and attended query, position by position, beside the
        # two: a similarity the box head reads directly instead of learning it.
        self.match_product = match_product

    def forward(
        self,
        features: Tensor,
        proposals: list[Tensor],
        queries: Tensor,
        query_valid: Tensor,
        owner: Tensor,
        image_size: tuple[int, int],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        labels = regression_targets = None
        if targets is not None:
            proposals, labels, regression_targets = self.select_targets(proposals, targets)
        counts = torch.tensor([len(p) for p in proposals], device=owner.device)
        rois = self.roi_pool(features, proposals)  # (R, C, S, S)
        attended, _ = self.attention(rois, queries, query_valid, owner.repeat_interleave(counts))
        parts = [rois, attended, rois * attended] if self.match_product else [rois, attended]
        pooled = self.box_head(torch.cat(parts, dim=1))  # (R, 2C or 3C, S, S) -> (R, D)
        class_logits, box_regression = self.predictor(pooled)  # (R, 3), (R, 3 * 4)
        losses = {}
        if labels is not None:
            losses = self.loss(class_logits, box_regression, labels, regression_targets)
        with torch.no_grad():
            detections = self.postprocess(class_logits, box_regression, proposals, image_size)
        return detections, losses

    def label_proposals(
        self, proposals: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Per clip: labels [P] int64 (0 background, the matched box's label, -1 between
        the IoU thresholds) and box regression targets [P, 4] to the matched box."""
        labels, regression = [], []
        for boxes, target in zip(proposals, targets, strict=True):
            gt_boxes = target["boxes"].to(boxes.dtype)
            if gt_boxes.numel() == 0 or boxes.numel() == 0:
                labels.append(torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device))
                regression.append(torch.zeros_like(boxes))
                continue
            matched = self.proposal_matcher(box_ops.box_iou(gt_boxes, boxes))
            per_box = target["labels"][matched.clamp(min=0)].to(torch.int64)
            per_box[matched == self.proposal_matcher.BELOW_LOW_THRESHOLD] = BACKGROUND
            per_box[matched == self.proposal_matcher.BETWEEN_THRESHOLDS] = -1
            labels.append(per_box)
            regression.append(self.box_coder.encode_single(gt_boxes[matched.clamp(min=0)], boxes))
        return labels, regression

    def select_targets(
        self, proposals: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """The proposals that enter the second stage, with their labels and box targets."""
        if self.training and self.add_gt_to_proposals:
            proposals = [
                torch.cat([p, t["boxes"].to(p.dtype)])
                for p, t in zip(proposals, targets, strict=True)
            ]
        labels, regression = self.label_proposals(proposals, targets)
        if not self.training:
            return (
                proposals,
                [lab.masked_fill(lab < 0, IGNORED_LABEL) for lab in labels],
                regression,
            )
        positive, negative = self.fg_bg_sampler(labels)
        keep = [torch.where(p | n)[0] for p, n in zip(positive, negative, strict=True)]
        return (
            [p[k] for p, k in zip(proposals, keep, strict=True)],
            [lab[k] for lab, k in zip(labels, keep, strict=True)],
            [r[k] for r, k in zip(regression, keep, strict=True)],
        )

    def loss(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        labels: list[Tensor],
        regression_targets: list[Tensor],
    ) -> dict[str, Tensor]:
        """Cross-entropy over the 3 classes (mean over the RoIs) and smooth-L1 on the
        positives' boxes of their own class (summed, divided by the RoI count)."""
        if sum(len(lab) for lab in labels) == 0 or all((lab < 0).all() for lab in labels):
            # Nothing to learn from in this batch: a zero that keeps the graph connected.
            zero = class_logits.sum() * 0.0 + box_regression.sum() * 0.0
            return {"loss_classifier": zero, "loss_box": zero.clone()}
        loss_cls, loss_box = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        return {"loss_classifier": loss_cls, "loss_box": loss_box}

    def postprocess(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        proposals: list[Tensor],
        image_size: tuple[int, int],
    ) -> list[dict[str, Tensor]]:
        """Matching-actor boxes (the class-2 regression applied to each proposal) scored by
        the softmax probability of class 2, per clip through `select_detections`."""
        counts = [len(p) for p in proposals]
        if sum(counts) == 0:
            empty = class_logits.new_zeros((0, 4))
            return [{"boxes": empty, "scores": empty[:, 0]} for _ in proposals]
        boxes = self.box_coder.decode(box_regression, proposals)[:, MATCHING_ACTOR]  # (R, 4)
        scores = class_logits.softmax(dim=-1)[:, MATCHING_ACTOR]  # (R,)
        return [
            select_detections(
                b, s, image_size, self.score_thresh, self.nms_thresh, self.detections_per_clip
            )
            for b, s in zip(boxes.split(counts), scores.split(counts), strict=True)
        ]
