"""The region proposal network (paper §4.3, Figure 5): the authors' first stage.

torchvision's `RegionProposalNetwork` does the work (anchors, decoding, NMS, matching at
IoU 0.7 / 0.3, balanced sampling of 256 anchors per clip); this module sets it up the way
the authors' TensorFlow Object Detection API ran it (`ava_meta_arch.py` of the STVR
branch, `ava.proto` defaults and the release's pipeline config):

- Box coding: (tx, ty, tw, th) scaled by (10, 10, 5, 5), the `FasterRcnnBoxCoder` of the
  first-stage target assigner (torchvision's RPN: unscaled).
- Box loss: Huber with delta 1 (`WeightedSmoothL1LocalizationLoss`), i.e. smooth L1
  with beta 1 (torchvision's RPN: beta 1/9). Both losses are summed over a clip's
  sampled anchors, divided by that clip's number of sampled anchors, then averaged over
  the clips (torchvision divides by the sampled anchors of the whole batch).

- Head (`ProposalHead`): a 3x3 conv to 512 channels with ReLU6, then 1x1 convs, weights
  from a normal of std 0.01 truncated at two std (`first_stage_box_predictor_depth`,
  `_kernel_size` defaults, the config's initializer); torchvision's RPNHead keeps the
  input's width (1024) with ReLU.
- Anchors crossing the frame's border: removed in training (no loss, no proposals) and
  clipped to the frame at inference, the Faster R-CNN paper's recipe that the authors'
  meta-architecture follows (`clip_anchors_to_image: false`); torchvision keeps them.

Boxes are pixel xyxy in the clip frame; objectness is one logit per anchor (the authors'
two-class softmax is the same function of the difference of its two logits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
from torchvision.ops import boxes as box_ops

from stvr_model.boxes import AUTHORS_BOX_WEIGHTS

# What happens to anchors that cross the frame's border (see `ActorProposalNetwork`)
BORDER_ANCHORS = ("remove", "clip", "keep")


def inside_frame(anchors: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Which anchors [A, 4] (pixel xyxy) lie wholly inside a frame of (H, W): bool [A].
    An edge on the border counts as inside (TensorFlow's `prune_outside_window`)."""
    height, width = image_size
    return (anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] <= width) & (anchors[:, 3] <= height)


class ProposalHead(nn.Module):
    """The authors' first-stage box predictor: a `kernel_size` conv from `in_channels` to
    `width` channels with ReLU6, then 1x1 convs to one objectness logit and 4 box deltas
    per anchor; weights from a normal of std 0.01 truncated at 2 std, biases zero.

    forward(maps: list of [N, in_channels, h, w]) -> (logits: list of [N, A, h, w],
    deltas: list of [N, 4A, h, w]), as torchvision's RPNHead.
    """

    def __init__(self, in_channels: int, num_anchors: int, width: int = 512, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size, padding=kernel_size // 2), nn.ReLU6(inplace=True))
        self.cls_logits = nn.Conv2d(width, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(width, 4 * num_anchors, 1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.trunc_normal_(layer.weight, std=0.01, a=-0.02, b=0.02)
                nn.init.zeros_(layer.bias)

    def forward(self, maps: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        hidden = [self.conv(x) for x in maps]
        return [self.cls_logits(t) for t in hidden], [self.bbox_pred(t) for t in hidden]


class ActorProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN on one feature level, with losses whenever targets are given.

    torchvision computes RPN losses only in training mode; a validation loss needs them
    in eval mode too, so `forward` re-wires the parent's own steps (head, anchors,
    decoding, NMS, target assignment, loss). Any actor is foreground.

    Beyond the parent's arguments: `box_weights` (wx, wy, ww, wh) scale the regression
    targets, `smooth_l1_beta` is the box loss's beta, and `border_anchors` says what
    happens to anchors crossing the frame's border: "remove" (the authors') drops them in
    training mode (they get no label, no loss and give no proposal) and clips them to the
    frame in eval mode; "clip" clips them in both (the authors' `clip_anchors_to_image`);
    "keep" leaves them (torchvision).

    forward(features [N, C, h, w], image_size (H, W), targets: N dicts with "boxes"
    [K, 4] pixel xyxy, or None) -> (proposals: N tensors [P_i, 4] pixel xyxy, detached,
    P_i <= post_nms_top_n; losses: {} or {"loss_rpn_objectness", "loss_rpn_box"}).
    """

    def __init__(self, *args, box_weights: tuple[float, float, float, float] = AUTHORS_BOX_WEIGHTS,
                 smooth_l1_beta: float = 1.0, border_anchors: str = "remove", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if border_anchors not in BORDER_ANCHORS:
            raise ValueError(f"border_anchors {border_anchors!r}: choose one of {BORDER_ANCHORS}")
        self.box_coder = det_utils.BoxCoder(box_weights)
        self.smooth_l1_beta = smooth_l1_beta
        self.border_anchors = border_anchors

    def forward(  # type: ignore[override]
        self,
        features: Tensor,
        image_size: tuple[int, int],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        n = features.shape[0]
        # The anchor generator reads only the frame size from this tensor: it holds no pixels.
        images = ImageList(features.new_empty((n, 0, *image_size)), [tuple(image_size)] * n)
        objectness, deltas = self.head([features])
        anchors = self.anchor_generator(images, [features])
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        anchors, objectness, deltas = self.fit_anchors(anchors, objectness, deltas, image_size)
        num_anchors = [len(anchors[0])]
        decoded = self.box_coder.decode(deltas.detach(), anchors).view(n, -1, 4)
        proposals, _ = self.filter_proposals(decoded, objectness, images.image_sizes, num_anchors)
        if targets is None:
            return proposals, {}
        labels, matched_boxes = self.assign_targets_to_anchors(anchors, targets)
        regression_targets = self.box_coder.encode(matched_boxes, anchors)
        loss_objectness, loss_box = self.compute_loss(
            objectness, deltas, labels, regression_targets
        )
        return proposals, {"loss_rpn_objectness": loss_objectness, "loss_rpn_box": loss_box}

    def fit_anchors(
        self, anchors: list[Tensor], objectness: Tensor, deltas: Tensor, image_size: tuple[int, int]
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """Anchors crossing the border removed or clipped as `border_anchors` says, with the
        predictions of the removed ones. anchors: N tensors [A, 4], the same for every
        clip (one frame size); objectness [N*A, 1]; deltas [N*A, 4]. Returns the same with
        A' <= A anchors per clip."""
        if self.border_anchors == "keep":
            return anchors, objectness, deltas
        if self.border_anchors == "clip" or not self.training:
            return [box_ops.clip_boxes_to_image(a, image_size) for a in anchors], objectness, deltas
        keep = inside_frame(anchors[0], image_size)
        n = len(anchors)
        objectness = objectness.view(n, -1)[:, keep].reshape(-1, 1)
        deltas = deltas.view(n, -1, 4)[:, keep].reshape(-1, 4)
        return [a[keep] for a in anchors], objectness, deltas

    def compute_loss(  # type: ignore[override]
        self,
        objectness: Tensor,
        pred_bbox_deltas: Tensor,
        labels: list[Tensor],
        regression_targets: list[Tensor],
    ) -> tuple[Tensor, Tensor]:
        """The authors' first-stage losses over a balanced sample of each clip's anchors.

        objectness [N*A, 1] logits and pred_bbox_deltas [N*A, 4] (clip-major, as
        `concat_box_prediction_layers` gives them); labels N tensors [A] (1 actor, 0
        background, -1 ignored); regression_targets N tensors [A, 4] (encoded).
        Returns (objectness loss, box loss): per clip the binary cross-entropy of the
        sampled anchors and the smooth L1 (`smooth_l1_beta`) of the sampled positives'
        4 coordinates, both summed and divided by the clip's sampled anchors, then
        averaged over the clips that have any.
        """
        positive, negative = self.fg_bg_sampler(labels)
        positive = torch.stack(positive).bool()  # (N, A)
        sampled = positive | torch.stack(negative).bool()
        n = len(labels)
        logits = objectness.view(n, -1)
        targets = torch.stack(labels).to(logits.dtype).clamp(min=0)
        objectness_loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        # Clips without actors have infinite targets (encoded from empty boxes): only the
        # positives' targets are read.
        box_targets = torch.where(positive[..., None], torch.stack(regression_targets), 0.0)
        box_loss = F.smooth_l1_loss(
            pred_bbox_deltas.view(n, -1, 4), box_targets, beta=self.smooth_l1_beta, reduction="none"
        ).sum(dim=-1)  # (N, A)
        counts = sampled.sum(dim=1)
        clips = counts > 0
        if not bool(clips.any()):  # no labelled anchor: zeros that keep the graph connected
            zero = objectness.sum() * 0.0 + pred_bbox_deltas.sum() * 0.0
            return zero, zero.clone()
        per_clip = counts[clips].to(logits.dtype)
        objectness_loss = ((objectness_loss * sampled)[clips].sum(dim=1) / per_clip).mean()
        box_loss = ((box_loss * positive)[clips].sum(dim=1) / per_clip).mean()
        return objectness_loss, box_loss
