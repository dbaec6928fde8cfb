"""The spatio-temporal re-localization detector of the paper's Figure 5 (§4, §6.2).

Query: every query clip goes through the backbone and the query box is cropped from its
feature map (14x14 crop, 2x2 max-pool -> 7x7). Reference: every clip goes through the
same backbone, then the recurrent cell carries a state over the clips (the warp LSTM
or a baseline), and on each state's h the RPN proposes actor boxes, which are cropped
(7x7), matched against the query clips by attention (eq. 10), concatenated with the
attended query and classified as background / other actor / matching actor with a
class-specific box refinement. Settings follow the authors' TensorFlow pipeline config
(`data/faster_rcnn_resnet101_pets.config` of the STVR release).

The backbone and the cell are passed in (`stvr_model.backbones.build_backbone`,
`stvr_model.cells.build_cell`); this module only wires them to the heads.
Boxes are pixel xyxy in the clip frame; `stvr_model.boxes` converts at the edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RPNHead

from stvr_model.boxes import AUTHORS_BOX_WEIGHTS
from stvr_model.cells import CellError, WarpLSTMCell, control_points
from stvr_model.detector_inputs import (
    DetectorInputError,
    check_inputs,
    check_ref_valid,
    check_targets,
)
from stvr_model.heads import (
    ActorActionHead,
    CropAndPool,
    QueryAttention,
    RelocalizationHead,
    ResidualBoxHead,
)
from stvr_model.rpn import BORDER_ANCHORS, ActorProposalNetwork, ProposalHead, inside_frame

Detections = list[list[dict[str, Tensor]]]


@dataclass(frozen=True)
class DetectorConfig:
    """Sizes and thresholds of the detector; defaults are the authors' (see module doc)."""

    image_size: tuple[int, int] = (320, 320)  # (H, W) of every clip frame, pixels
    feature_stride: int = 16  # backbone output stride (I3D Mixed_4c)
    feature_channels: int = 1024  # backbone output channels (2 x 512, index t*512+c)
    # 4 scales x 3 ratios = 12 anchors per location: the authors' scales 0.25..2 of 256 px
    anchor_sizes: tuple[float, ...] = (64.0, 128.0, 256.0, 512.0)
    anchor_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_clip: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_pre_nms_top_n: int = 6000  # the authors ran NMS over every anchor (20*20*12 = 4800)
    rpn_nms_thresh: float = 0.7
    rpn_post_nms_top_n: int = 32  # proposals per clip, training and test
    # RPN box coding (wx, wy, ww, wh) and its loss's smooth-L1 beta: the authors' (10, 10,
    # 5, 5) and Huber delta 1; torchvision's RPN uses (1, 1, 1, 1) and 1/9
    rpn_box_weights: tuple[float, float, float, float] = AUTHORS_BOX_WEIGHTS
    rpn_smooth_l1_beta: float = 1.0
    # anchors crossing the frame's border: "remove" in training and clip at inference (the
    # authors'), "clip" always, "keep" (torchvision's); see `rpn.ActorProposalNetwork`
    rpn_border_anchors: str = "remove"
    # RPN 3x3 conv width: the authors' 512 (`rpn.ProposalHead`); None: torchvision's
    # RPNHead at the features' width
    rpn_conv_width: int | None = 512
    roi_crop_size: int = 14  # TF crop_and_resize size, then max-pooled
    roi_pool_kernel: int = 2  # -> 7x7 proposal and query features
    roi_sampling_ratio: int = 1
    attention_dim: int = 128
    box_head_blocks: int = 3  # ResNet bottleneck units on the 2C-channel concatenation (>= 1)
    box_head_width: int | None = None  # None: the units run at 2C (the authors); less: reduced first
    box_head_fc: int | None = None  # None: spatial mean (the authors); n: flatten into n units
    match_product: bool = False  # add proposal x attended query to the head's input (not the authors')
    num_classes: int = 3  # background, other actor, matching actor
    roi_fg_iou_thresh: float = 0.5
    roi_bg_iou_thresh: float = 0.5
    roi_batch_size_per_clip: int = 16
    roi_positive_fraction: float = 0.25
    add_gt_to_proposals: bool = False  # the authors did not; torchvision does
    bbox_reg_weights: tuple[float, float, float, float] = AUTHORS_BOX_WEIGHTS  # both stages
    rpn_objectness_weight: float = 1.0
    rpn_box_weight: float = 2.0
    classifier_weight: float = 1.0
    box_weight: float = 2.0
    detection_score_thresh: float = 0.0
    detection_nms_thresh: float = 0.6
    detections_per_clip: int = 15
    backbone_chunk_size: int | None = None  # clips per backbone call; None = all at once
    # Auxiliary action loss on annotated actors (`ActorActionHead`, not the authors'): its
    # weight (0: no head, the authors') and its classes, the atomic actions of the labels
    # trained on (`train` fills them in from the benchmark)
    action_weight: float = 0.0
    action_atoms: tuple[str, ...] = ()

    @property
    def action_classes(self) -> int:
        """Classes of the auxiliary action head: 0 (no head) without a loss weight."""
        return len(self.action_atoms) if self.action_weight else 0

    @property
    def feature_size(self) -> tuple[int, int]:
        """(h, w) of the backbone's feature maps: the image size over the stride."""
        return self.image_size[0] // self.feature_stride, self.image_size[1] // self.feature_stride

    def __post_init__(self) -> None:
        for name, size in zip(("height", "width"), self.image_size, strict=True):
            if size <= 0 or size % self.feature_stride:
                raise DetectorInputError(
                    f"image_size {name} {size} is not a positive multiple of "
                    f"feature_stride {self.feature_stride}"
                )
        if self.roi_crop_size % self.roi_pool_kernel:
            raise DetectorInputError(
                f"roi_crop_size {self.roi_crop_size} not divisible by roi_pool_kernel "
                f"{self.roi_pool_kernel}"
            )
        if self.num_classes != 3:
            raise DetectorInputError(
                f"num_classes {self.num_classes}: the detector has exactly 3 "
                "(background, other actor, matching actor)"
            )
        if (2 * self.feature_channels) % 4:
            raise DetectorInputError(f"feature_channels {self.feature_channels} must be even")
        if self.box_head_blocks < 1:
            raise DetectorInputError(
                f"box_head_blocks {self.box_head_blocks}: the second stage needs at least one "
                "unit (use box_head_width to make it lighter)"
            )
        if self.box_head_width is not None and (self.box_head_width < 4 or self.box_head_width % 4):
            raise DetectorInputError(f"box_head_width {self.box_head_width} is not a positive multiple of 4")
        if self.action_weight < 0:
            raise DetectorInputError(f"action_weight {self.action_weight} must be >= 0")
        if self.rpn_conv_width is not None and self.rpn_conv_width < 1:
            raise DetectorInputError(f"rpn_conv_width {self.rpn_conv_width} < 1")
        if self.backbone_chunk_size is not None and self.backbone_chunk_size < 1:
            raise DetectorInputError(f"backbone_chunk_size {self.backbone_chunk_size} < 1")

    @property
    def loss_weights(self) -> dict[str, float]:
        weights = {
            "loss_rpn_objectness": self.rpn_objectness_weight,
            "loss_rpn_box": self.rpn_box_weight,
            "loss_classifier": self.classifier_weight,
            "loss_box": self.box_weight,
        }
        if self.action_classes:
            weights["loss_action"] = self.action_weight
        return weights


def build_rpn(config: DetectorConfig) -> ActorProposalNetwork:
    """torchvision's anchor generator and RPN head with the authors' settings."""
    anchors = AnchorGenerator((config.anchor_sizes,), (config.anchor_aspect_ratios,))
    _check_border_anchors(config, anchors)
    return ActorProposalNetwork(
        anchors,
        _rpn_head(config, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=config.rpn_fg_iou_thresh,
        bg_iou_thresh=config.rpn_bg_iou_thresh,
        batch_size_per_image=config.rpn_batch_size_per_clip,
        positive_fraction=config.rpn_positive_fraction,
        pre_nms_top_n={"training": config.rpn_pre_nms_top_n, "testing": config.rpn_pre_nms_top_n},
        post_nms_top_n={
            "training": config.rpn_post_nms_top_n,
            "testing": config.rpn_post_nms_top_n,
        },
        nms_thresh=config.rpn_nms_thresh,
        box_weights=config.rpn_box_weights,
        smooth_l1_beta=config.rpn_smooth_l1_beta,
        border_anchors=config.rpn_border_anchors,
    )


def _rpn_head(config: DetectorConfig, num_anchors: int) -> nn.Module:
    if config.rpn_conv_width is None:
        return RPNHead(config.feature_channels, num_anchors)
    return ProposalHead(config.feature_channels, num_anchors, config.rpn_conv_width)


def _check_border_anchors(config: DetectorConfig, generator: AnchorGenerator) -> None:
    """DetectorInputError for an unknown `rpn_border_anchors`, or for anchors none of
    which fits in the frame when training removes those crossing its border."""
    if config.rpn_border_anchors not in BORDER_ANCHORS:
        raise DetectorInputError(
            f"rpn_border_anchors {config.rpn_border_anchors!r}: choose one of {list(BORDER_ANCHORS)}")
    if config.rpn_border_anchors != "remove":
        return
    height, width = config.feature_size
    images = ImageList(torch.empty(1, 0, *config.image_size), [config.image_size])
    anchors = generator(images, [torch.empty(1, 0, height, width)])[0]
    if not bool(inside_frame(anchors, config.image_size).any()):
        raise DetectorInputError(
            f"no anchor of sizes {list(config.anchor_sizes)} fits inside the "
            f"{config.image_size[1]}x{config.image_size[0]} frame, and training removes those "
            "crossing its border: use smaller anchor sizes")


def build_roi_pool(config: DetectorConfig) -> CropAndPool:
    """The proposal and query crops with the authors' settings (14x14 crop, 2x2 max-pool)."""
    return CropAndPool(config.roi_crop_size, config.roi_pool_kernel, 1.0 / config.feature_stride,
                       config.roi_sampling_ratio)


def build_second_stage(config: DetectorConfig, roi_pool: nn.Module) -> RelocalizationHead:
    """Attention, box head and 3-class predictor with the authors' settings."""
    channels = config.feature_channels
    inputs = (3 if config.match_product else 2) * channels
    box_head = ResidualBoxHead(inputs, config.box_head_blocks, config.box_head_width,
                               config.box_head_fc, config.roi_crop_size // config.roi_pool_kernel)
    predictor = FastRCNNPredictor(box_head.out_channels, config.num_classes)
    # Small initial logits and deltas (torchvision/Detectron2 practice, not the authors'
    # Glorot): training starts from uniform class odds and boxes equal to the proposals.
    for layer, std in ((predictor.cls_score, 0.01), (predictor.bbox_pred, 0.001)):
        nn.init.normal_(layer.weight, std=std)
        nn.init.zeros_(layer.bias)
    return RelocalizationHead(
        roi_pool,
        QueryAttention(channels, config.attention_dim),
        box_head,
        predictor,
        fg_iou_thresh=config.roi_fg_iou_thresh,
        bg_iou_thresh=config.roi_bg_iou_thresh,
        batch_size_per_clip=config.roi_batch_size_per_clip,
        positive_fraction=config.roi_positive_fraction,
        bbox_reg_weights=config.bbox_reg_weights,
        score_thresh=config.detection_score_thresh,
        nms_thresh=config.detection_nms_thresh,
        detections_per_clip=config.detections_per_clip,
        add_gt_to_proposals=config.add_gt_to_proposals,
        match_product=config.match_product,
    )


class ReLocalizationDetector(nn.Module):
    """Backbone + recurrent cell + RPN + attention second stage (Figure 5).

    forward(query_clips [B, Tq, 3, 8, H, W] in [-1, 1], query_boxes [B, Tq, 4] pixel
    xyxy, ref_clips [B, Tr, 3, 8, H, W], targets (B lists of Tr dicts {"boxes" [K, 4]
    pixel xyxy float, "labels" [K] int64, 1 other actor / 2 matching actor}) or None,
    query_valid [B, Tq] bool (False = padding), flows [B, Tr, 2, H/16, W/16] (feature
    pixels, handed to the cell as `flow=`), ref_valid [B, Tr] bool (False = padding: no
    loss, no detections)) -> (detections: B lists of Tr dicts {"boxes" [D, 4] pixel
    xyxy, "scores" [D] probability of the matching actor, best first}, losses: {} without
    targets, else the four weighted losses named in `DetectorConfig.loss_weights`, each
    a mean over the clips' sampled anchors or RoIs; their sum is the training loss).
    Same in train and eval mode, except that training sends only a sample of the
    proposals (with targets) through the second stage, so training-mode detections
    cover those RoIs only; evaluate in eval mode.
    """

    def __init__(self, backbone: nn.Module, cell: nn.Module, config: DetectorConfig) -> None:
        super().__init__()
        if isinstance(cell, WarpLSTMCell):
            height, width = config.feature_size
            try:
                control_points(height, width, cell.config.control_grid)
            except CellError as err:
                raise DetectorInputError(
                    f"image_size {list(config.image_size)} gives {height}x{width} feature "
                    f"maps, too small for the warp cell ({err}); build the benchmark at a "
                    "larger --resolution"
                ) from err
        self.config = config
        self.backbone = backbone
        self.cell = cell
        roi_pool = build_roi_pool(config)
        self.rpn = build_rpn(config)
        self.second_stage = build_second_stage(config, roi_pool)
        self.action_head = (ActorActionHead(config.feature_channels, config.action_classes)
                            if config.action_classes else None)
        self.feature_cache = None

    def forward(
        self,
        query_clips: Tensor,
        query_boxes: Tensor,
        ref_clips: Tensor,
        targets: list[list[dict[str, Tensor]]] | None = None,
        query_valid: Tensor | None = None,
        flows: Tensor | None = None,
        ref_valid: Tensor | None = None,
    ) -> tuple[Detections, dict[str, Tensor]]:
        batch, steps = ref_clips.shape[:2]
        query_valid = _mask_or_all(query_valid, query_clips)
        check_inputs(self.config, query_clips, query_boxes, ref_clips, query_valid, flows)
        clip_valid = check_ref_valid(ref_valid, batch, steps, ref_clips.device)
        if targets is not None:
            check_targets(targets, batch, steps)
        queries = self.encode_query(query_clips, query_boxes, query_valid)
        hidden = self.propagate(ref_clips, flows)  # (B, Tr, C, h, w)
        owner = torch.arange(batch, device=ref_clips.device).repeat_interleave(steps)
        features = hidden.flatten(0, 1)  # (B*Tr, C, h, w), a view
        if not bool(clip_valid.all()):  # select only when there is padding: it copies
            features, owner = features[clip_valid.flatten()], owner[clip_valid.flatten()]
        clip_targets = None
        if targets is not None:
            flat = [t for row in targets for t in row]
            clip_targets = [
                t for t, v in zip(flat, clip_valid.flatten().tolist(), strict=True) if v
            ]
        size = self.config.image_size
        proposals, rpn_losses = self.rpn(features, size, clip_targets)
        found, head_losses = self.second_stage(
            features, proposals, queries, query_valid, owner, size, clip_targets
        )
        if self.action_head is not None and clip_targets is not None:
            head_losses["loss_action"] = self.action_loss(features, clip_targets)
        weights = self.config.loss_weights
        losses = {k: weights[k] * v for k, v in {**rpn_losses, **head_losses}.items()}
        return _unflatten(found, clip_valid), losses

    def action_loss(self, features: Tensor, targets: list[dict[str, Tensor]]) -> Tensor:
        """The auxiliary action loss (`ActorActionHead`) over every annotated actor of the
        clips: each target dict needs "actions" [K, action_classes], multi-hot."""
        missing = [i for i, t in enumerate(targets) if "actions" not in t]
        if missing:
            raise DetectorInputError(
                f"the detector has an action head ({self.config.action_classes} classes) but "
                f"the targets of clip {missing[0]} carry no 'actions'")
        crops = self.second_stage.roi_pool(features, [t["boxes"].to(features.dtype) for t in targets])
        return self.action_head.loss(crops, torch.cat([t["actions"] for t in targets]))

    def extract(self, clips: Tensor) -> Tensor:
        """Backbone over N clips [N, 3, 8, H, W] -> [N, C, H/stride, W/stride], in chunks
        of `backbone_chunk_size` clips when set (bounds memory at evaluation); through
        `feature_cache` (a `stvr_model.feature_cache.FeatureCache`) when one is set, which
        only a frozen backbone may have."""
        chunk = self.config.backbone_chunk_size or max(len(clips), 1)
        backbone = self.backbone if self.feature_cache is None else partial(self.feature_cache, self.backbone)
        features = torch.cat([backbone(part) for part in clips.split(chunk)])
        h, w = self.config.feature_size
        expected = (len(clips), self.config.feature_channels, h, w)
        if tuple(features.shape) != expected:
            raise DetectorInputError(
                f"backbone output {tuple(features.shape)}, expected {expected} "
                "(feature_channels and feature_stride in DetectorConfig)"
            )
        return features

    def encode_query(self, query_clips: Tensor, query_boxes: Tensor, query_valid: Tensor) -> Tensor:
        """Query features [B, Tq, C, S, S] (paper eq. 7); padded clips are not run through
        the backbone and stay zero."""
        if bool(query_valid.all()):  # no padding: views, no copies of the clips
            clips, boxes = query_clips.flatten(0, 1), query_boxes.flatten(0, 1)
        else:
            clips, boxes = query_clips[query_valid], query_boxes[query_valid]
        features = self.extract(clips)
        index = torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None]
        crops = self.second_stage.roi_pool(features, torch.cat([index, boxes], dim=1))
        queries = crops.new_zeros(*query_valid.shape, *crops.shape[1:])
        queries[query_valid] = crops
        return queries

    def propagate(self, ref_clips: Tensor, flows: Tensor | None = None) -> Tensor:
        """The cell's h after each reference clip [B, Tr, C, h, w] (paper eq. 8); the
        backbone sees all B*Tr clips in one call, the cell steps through Tr in order."""
        batch, steps = ref_clips.shape[:2]
        x = self.extract(ref_clips.flatten(0, 1)).unflatten(0, (batch, steps))
        state, hidden = None, []
        for t in range(steps):
            extra = {} if flows is None else {"flow": flows[:, t]}
            state = self.cell(x[:, t], state, **extra)
            hidden.append(state.h)
        return torch.stack(hidden, dim=1)


def _mask_or_all(mask: Tensor | None, clips: Tensor) -> Tensor:
    if mask is None:
        return torch.ones(clips.shape[:2], dtype=torch.bool, device=clips.device)
    return mask


def _unflatten(found: list[dict[str, Tensor]], clip_valid: Tensor) -> Detections:
    """Detections of the valid clips back into [B][Tr]; padded clips get none."""
    remaining = iter(found)
    template = found[0]["boxes"] if found else None
    out: Detections = []
    for row in clip_valid.tolist():
        out.append([next(remaining) if valid else _no_detections(template) for valid in row])
    return out


def _no_detections(like: Tensor | None) -> dict[str, Tensor]:
    boxes = torch.zeros((0, 4)) if like is None else like.new_zeros((0, 4))
    return {"boxes": boxes, "scores": boxes[:, 0]}
