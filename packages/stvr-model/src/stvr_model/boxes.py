"""Box conventions at the detector's edges.

Inside the model every box is pixel xyxy in the resized clip frame of size (H, W). The
manifests and the scorer (`stvr_data.evaluation.frame_map`) use normalised xyxy in
[0, 1] (the AVA convention). These helpers convert between the two and turn the
detector's output into the scorer's rows: pair_id, timestamp, x1, y1, x2, y2, score.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

# The authors' box coding (`FasterRcnnBoxCoder` scale factors, both stages) in torchvision
# `BoxCoder` order (wx, wy, ww, wh); TensorFlow's (ty, tx, th, tw) = (10, 10, 5, 5) is the
# same scaling.
AUTHORS_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def _frame_scale(image_size: tuple[int, int], like: Tensor) -> Tensor:
    height, width = image_size
    return like.new_tensor([width, height, width, height])


def normalized_xyxy(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Pixel xyxy [N, 4] in a frame of (H, W) -> normalised xyxy [N, 4] clamped to [0, 1]."""
    return (boxes / _frame_scale(image_size, boxes)).clamp(0.0, 1.0)


def pixel_xyxy(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Normalised xyxy [N, 4] -> pixel xyxy [N, 4] in a frame of (H, W)."""
    return boxes * _frame_scale(image_size, boxes)


def detection_rows(
    detections: Sequence[Sequence[dict[str, Tensor]]],
    pair_ids: Sequence[str],
    timestamps: Sequence[Sequence[float]],
    image_size: tuple[int, int],
) -> list[dict[str, object]]:
    """The detector's output (B lists of Tr dicts {"boxes" [D, 4] pixel xyxy, "scores"
    [D]}) as the scorer's rows, one per detection, boxes normalised: pair_id, timestamp
    (seconds, one per reference clip), x1, y1, x2, y2, score."""
    if not len(detections) == len(pair_ids) == len(timestamps):
        raise ValueError(
            f"detections ({len(detections)}), pair_ids ({len(pair_ids)}) and timestamps "
            f"({len(timestamps)}) must have one entry per batch row"
        )
    rows: list[dict[str, object]] = []
    for b, (clips, pair_id, times) in enumerate(zip(detections, pair_ids, timestamps, strict=True)):
        if len(clips) != len(times):
            raise ValueError(f"timestamps[{b}] has {len(times)} entries for {len(clips)} clips")
        for clip, timestamp in zip(clips, times, strict=True):
            boxes = normalized_xyxy(clip["boxes"].detach().float().cpu(), image_size)
            scores = clip["scores"].detach().float().cpu()
            for (x1, y1, x2, y2), score in zip(boxes.tolist(), scores.tolist(), strict=True):
                rows.append(
                    {
                        "pair_id": pair_id,
                        "timestamp": float(timestamp),
                        "x1": x1,
                        "y1": y1,
                        "x2": x2,
                        "y2": y2,
                        "score": score,
                    }
                )
    return rows
