"""Re-localize a query in any pair of user videos with a trained detector (paper §3).

The user gives a query video, the span of it that shows the action, and one box around
the actor; and a reference video (optionally a span of it). Both spans are cut to 24 fps
at the checkpoint's resolution with `stvr_data.media.cut_clip` (into `out/work/`), split
into 8-frame clips on the 1/3 s grid, and run through the model exactly as
`stvr_model.evaluate` runs a benchmark pair: the whole reference in one sequence, the
query at the checkpoint's `query_clips_per_second`, at most its `max_query_seconds`
(the middle of a longer query, as in evaluation).

Box convention: the query box is `(x1, y1, x2, y2)` normalised to [0, 1] of the query
video's frame (AVA's convention and the scorer's), or in pixels of the source video
when `pixels=True`. The same box holds for every query clip.

Outputs in `out/`: `detections.csv` and `detections.parquet` in the scorer's format
(`pair_id` 'predict', `timestamp` = start of each 8-frame reference clip in seconds of
the reference video's own timeline, normalised xyxy boxes, score), and two pictures:
`pictures/overview.png` (reference clips evenly spaced over the span) and
`pictures/best.png` (the reference clips with the highest-scoring detections, each with
its best box whatever its score). There is no ground truth here, so the pictures show the
query box and the detections only, at the source videos' aspect ratios.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stvr_data import manifest
from stvr_data.atomic import atomic_write
from stvr_data.errors import MediaError
from stvr_data.media import cut_clip, probe_video, read_frames
from stvr_model.checkpoint import run_config
from stvr_model.config import ModelConfig
from stvr_model.data import DataConfig, batch_to_model, clip_tensor, collate
from stvr_model.errors import ModelError
from stvr_model.inference import (
    DETECTION_COLUMNS,
    detection_rows,
    inference_data,
    load_for_inference,
    model_inputs,
)
from stvr_model.visualize import draw_pair

PAIR_ID = "predict"
CLIP_SECONDS = 1.0 / manifest.CLIPS_PER_SECOND
TOLERANCE = 1e-3  # seconds: container durations are rounded to the millisecond or so


class PredictError(ModelError):
    """A query box or span that does not fit the video it is given for."""


@dataclass(frozen=True)
class Span:
    """`[start, end)` seconds of `video`'s own timeline; `end=None` means to the end."""

    video: Path
    start: float = 0.0
    end: float | None = None


def check_box(box, *, pixels: bool = False, width: int = 0, height: int = 0) -> tuple[float, ...]:
    """The query box as normalised `(x1, y1, x2, y2)`; `pixels` gives it in source pixels
    of a `width` x `height` frame. Raises `PredictError` for a box outside the frame or
    with `x2 <= x1` / `y2 <= y1`."""
    values = tuple(float(v) for v in box)
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise PredictError(f"--query-box: expected four numbers x1,y1,x2,y2, got {box}")
    if pixels:
        values = (values[0] / width, values[1] / height, values[2] / width, values[3] / height)
        unit = f"pixels of the {width}x{height} query video"
    else:
        unit = "normalised [0, 1] (use --pixels for pixel boxes)"
    x1, y1, x2, y2 = values
    if min(values) < 0.0 or max(values) > 1.0:
        raise PredictError(f"--query-box {_fmt(box)}: outside the frame, expected {unit}")
    if x2 <= x1 or y2 <= y1:
        raise PredictError(f"--query-box {_fmt(box)}: needs x1 < x2 and y1 < y2")
    return values


def _fmt(box) -> str:
    return ",".join(f"{float(v):g}" for v in box)


def resolve_span(span: Span, role: str) -> tuple[float, float]:
    """`(start, end)` of `span`, checked against its video. Raises `MediaError` for a
    missing or undecodable file and `PredictError` for a span outside the video or
    shorter than one 8-frame clip (1/3 s)."""
    if not Path(span.video).is_file():
        raise MediaError(f"{span.video}: no such {role} video file")
    duration = probe_video(span.video).duration
    end = duration if span.end is None else float(span.end)
    start = float(span.start)
    if start < 0 or end > duration + TOLERANCE or start >= end:
        raise PredictError(f"{span.video}: the {role} span [{start:g}, {end:g}) s is not inside "
                           f"the video (0 to {duration:.2f} s) or is empty")
    if end - start < CLIP_SECONDS - TOLERANCE:
        raise PredictError(f"{span.video}: the {role} span [{start:g}, {end:g}) s is shorter "
                           f"than one 8-frame clip ({CLIP_SECONDS:.3f} s)")
    return start, min(end, duration)


def read_clips(path: Path, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 clips [T, 8, H, W, 3], their start times [T] in source seconds): the whole
    8-frame clips of a 24-fps file cut from `start`, one every 1/3 s up to `end`."""
    count = max(1, math.floor((end - start) * manifest.CLIPS_PER_SECOND + 1e-6))
    frames = read_frames(path, start, count * manifest.CLIP_FRAMES, clip_start=start,
                         fps=manifest.CLIP_FPS)
    times = start + np.arange(count) / manifest.CLIPS_PER_SECOND
    return frames.reshape(count, manifest.CLIP_FRAMES, *frames.shape[1:]), times


def query_window(times: np.ndarray, data: DataConfig) -> np.ndarray:
    """Indices of the query clips the model sees: every `3 / query_clips_per_second`-th
    clip of the middle `max_query_seconds` (as `PairDataset` does for evaluation)."""
    limit = max(1, int(round(data.max_query_seconds * manifest.CLIPS_PER_SECOND)))
    first = max(0, (len(times) - limit) // 2)
    step = max(1, manifest.CLIPS_PER_SECOND // data.query_clips_per_second)
    return np.arange(first, min(len(times), first + limit), step)


def build_sample(query: np.ndarray, box: tuple[float, ...], reference: np.ndarray,
                 times: np.ndarray) -> dict:
    """A `PairDataset`-style sample (pixel boxes, empty targets) for one user pair."""
    height, width = reference.shape[2:4]
    pixel_box = np.asarray(box, np.float32) * np.array([width, height, width, height], np.float32)
    empty = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)}
    return {
        "pair_id": PAIR_ID,
        "query": clip_tensor(query),
        "query_boxes": torch.from_numpy(np.repeat(pixel_box[None], len(query), axis=0)),
        "reference": clip_tensor(reference),
        "ref_valid": torch.ones(len(reference), dtype=torch.bool),
        "times": torch.from_numpy(np.asarray(times, np.float64)),
        "targets": [dict(empty) for _ in range(len(reference))],
    }


@torch.no_grad()
def detect(model, sample: dict, spec: ModelConfig, device: torch.device) -> list[dict]:
    """Per reference clip: `{boxes [K, 4] pixel xyxy, scores [K]}` on the CPU."""
    detections, _ = model(**model_inputs(batch_to_model(collate([sample]), device), spec))
    return [{k: v.detach().float().cpu() for k, v in d.items()} for d in detections[0]]


def best_clips(detections: list[dict], count: int = 4) -> np.ndarray:
    """Indices (in time order) of the `count` clips with the highest detection score."""
    top = np.array([float(d["scores"].max()) if len(d["scores"]) else -1.0 for d in detections])
    return np.sort(np.argsort(-top, kind="stable")[:count])


def _subset(sample: dict, detections: list[dict], keep: np.ndarray) -> tuple[dict, list[dict]]:
    part = dict(sample, reference=sample["reference"][keep], times=sample["times"][keep],
                targets=[sample["targets"][i] for i in keep], ref_valid=sample["ref_valid"][keep])
    return part, [detections[i] for i in keep]


def predict_pair(checkpoint: str | Path, query: Span, box, reference: Span, out: str | Path, *,
                 pixels: bool = False, device: str = "auto", min_score: float = 0.3) -> dict:
    """Cut, detect, write `detections.{csv,parquet}` and the pictures; returns a summary
    (paths, clip counts, the best detection)."""
    out = Path(out)
    q_start, q_end = resolve_span(query, "query")
    r_start, r_end = resolve_span(reference, "reference")
    info = probe_video(query.video)
    box = check_box(box, pixels=pixels, width=info.width, height=info.height)
    model, state, spec, torch_device = load_for_inference(checkpoint, device)
    data = inference_data(run_config(state).data)
    height, width = spec.detector.image_size
    work = out / "work"
    cut_clip(query.video, work / "query.mp4", start=q_start, end=q_end, size=(width, height))
    cut_clip(reference.video, work / "reference.mp4", start=r_start, end=r_end, size=(width, height))
    q_clips, q_times = read_clips(work / "query.mp4", q_start, q_end)
    r_clips, r_times = read_clips(work / "reference.mp4", r_start, r_end)
    sample = build_sample(q_clips[query_window(q_times, data)], box, r_clips, r_times)
    detections = detect(model, sample, spec, torch_device)
    rows = detection_rows(PAIR_ID, r_times, detections, width, height)
    ref_info = probe_video(reference.video)
    aspect = (info.width / info.height, ref_info.width / ref_info.height)
    return _write(out, rows, sample, detections, spec, min_score, aspect)


def _write(out: Path, rows: pd.DataFrame, sample: dict, detections: list[dict], spec: ModelConfig,
           min_score: float, aspect: tuple[float, float]) -> dict:
    rows = rows.sort_values(["timestamp", "score"], ascending=[True, False], ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "detections.csv") as tmp:
        rows[DETECTION_COLUMNS].to_csv(tmp, index=False)
    manifest.write_table(rows, out / "detections.parquet", manifest.DETECTIONS_SCHEMA)
    title = f"predict ({spec.cell.kind}, {spec.backbone})"
    shown = {"min_score": min_score, "with_truth": False, "display_aspect": aspect}
    overview = draw_pair(sample, detections, out / "pictures" / "overview.png", title=title, **shown)
    # The best clips always show their best box, however low its score.
    best = draw_pair(*_subset(sample, detections, best_clips(detections)), out / "pictures" / "best.png",
                     title=title + ": the clips with the highest scores", keep_best=True, **shown)
    top = rows.loc[rows.score.idxmax()].to_dict() if len(rows) else None
    return {"detections": out / "detections.csv", "parquet": out / "detections.parquet",
            "pictures": [overview, best], "query_clips": int(sample["query"].shape[0]),
            "reference_clips": int(sample["reference"].shape[0]), "rows": len(rows), "best": top}
