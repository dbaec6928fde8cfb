"""Checks of UCF101-24 annotation entries in the pyannot layout (see `stvr_data.ucf24`).

Ids become file paths of sources and clips, so they must be plain ``Class/v_Name``;
counts must be whole numbers; boxes must be finite, non-empty and (nearly) inside the
frame. Every problem is an `AnnotationError` naming the file, the video, the tube and
the field.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from stvr_data.errors import AnnotationError

# How far (fraction of the frame side) a box may overhang the frame before it is refused.
FRAME_MARGIN = 0.1
# A video id as UCF101 names them, `Class/v_Class_gXX_cYY`; ids become file paths.
VIDEO_ID = re.compile(r"[A-Za-z0-9_-]+/v_[A-Za-z0-9_-]+")


def check_video_id(video_id, path, line: int | None = None) -> str:
    """`video_id` if it is a plain relative ``Class/v_Name`` (letters, digits, '_', '-'):
    ids become paths of sources and clips, so '..', absolute paths and other separators
    are refused with an `AnnotationError` naming `path` (and `line`)."""
    if not isinstance(video_id, str) or not VIDEO_ID.fullmatch(video_id):
        raise AnnotationError(path, line, f"video id {str(video_id)[:80]!r} is not of the form Class/v_Name "
                              "(letters, digits, '_' and '-' only)")
    return video_id


def checked_videos(db, path: Path, num_classes: int, frame_size: tuple[int, int]) -> dict:
    """Validate every video entry of a pyannot-layout dict (`frame_size` (width, height)
    unless an entry gives its ``"resolution"`` (h, w)); errors name video and field."""
    if not isinstance(db, dict):
        raise AnnotationError(path, None, f"'db' is a {type(db).__name__}, expected a dict")
    for video_id, entry in db.items():
        where = f"video '{check_video_id(video_id, path)}'"
        _require_fields(entry, ("numf", "label", "annotations"), path, where)
        label, numf = _integer(entry, "label", path, where), _integer(entry, "numf", path, where)
        if not 0 <= label < num_classes:
            raise AnnotationError(path, None, f"{where}: label {label} outside 0..{num_classes - 1}")
        if not isinstance(entry["annotations"], (list, tuple)):
            raise AnnotationError(path, None, f"{where}: 'annotations' is a {type(entry['annotations']).__name__}, "
                                  "expected a list of tubes")
        height, width = entry.get("resolution") or frame_size[::-1]
        for index, tube in enumerate(entry["annotations"]):
            _check_tube(tube, numf, num_classes, path, f"{where} tube {index}", (width, height))
    return dict(db)


def _integer(entry: dict, field: str, path: Path, where: str) -> int:
    """`entry[field]` as an int; anything but a whole number is an `AnnotationError`."""
    value = entry[field]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    raise AnnotationError(path, None, f"{where}: '{field}' is {str(value)[:40]!r}, expected a whole number")


def _require_fields(entry, fields: tuple[str, ...], path: Path, where: str) -> None:
    if not isinstance(entry, dict):
        raise AnnotationError(path, None, f"{where}: a {type(entry).__name__}, expected a dict")
    missing = [name for name in fields if name not in entry]
    if missing:
        raise AnnotationError(path, None, f"{where}: missing fields {missing}")


def _check_tube(tube, numf: int, num_classes: int, path: Path, where: str, frame: tuple[int, int]) -> None:
    _require_fields(tube, ("label", "sf", "ef", "boxes"), path, where)
    label = _integer(tube, "label", path, where)
    if not 0 <= label < num_classes:
        raise AnnotationError(path, None, f"{where}: label {label} outside 0..{num_classes - 1}")
    sf, ef = _integer(tube, "sf", path, where), _integer(tube, "ef", path, where)
    if not 0 <= sf < ef <= numf:
        raise AnnotationError(path, None, f"{where}: frames sf={sf} ef={ef} outside 0 <= sf < ef <= numf={numf}")
    boxes = np.asarray(tube["boxes"])
    if boxes.shape != (ef - sf, 4) or boxes.dtype.kind not in "iuf":
        raise AnnotationError(path, None, f"{where}: 'boxes' has shape {boxes.shape} ({boxes.dtype}), "
                              f"expected ({ef - sf}, 4) numbers")
    values = boxes.astype(np.float64)  # cast first: uint8 widths compare fine, sums do not
    bad = ~(np.isfinite(values).all(axis=1) & (values[:, 2] > 0) & (values[:, 3] > 0))
    if bad.any():
        at = sf + int(np.flatnonzero(bad)[0])
        raise AnnotationError(path, None, f"{where}: 'boxes' at frame {at} is not a finite, non-empty box")
    _check_inside(values, frame, path, where, sf)


def _check_inside(xywh: np.ndarray, frame: tuple[int, int], path: Path, where: str, sf: int) -> None:
    """Boxes may overhang the `frame` (width, height) by `FRAME_MARGIN` of its side (they
    are clipped to it); further out they are refused, not clipped to a sliver."""
    width, height = frame
    x1, y1 = xywh[:, 0] - 1.0, xywh[:, 1] - 1.0
    x2, y2 = x1 + xywh[:, 2], y1 + xywh[:, 3]
    out = ((x1 < -FRAME_MARGIN * width) | (y1 < -FRAME_MARGIN * height)
           | (x2 > (1 + FRAME_MARGIN) * width) | (y2 > (1 + FRAME_MARGIN) * height))
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise AnnotationError(path, None, f"{where}: box x,y,w,h {xywh[i].tolist()} at frame {sf + i} lies "
                              f"outside the {width}x{height} frame")
