"""`stvr-data view`: a static HTML site for looking at one split of a benchmark.

The site opens from disk (no server) and needs no build step:

    index.html viewer.js viewer.css   the page, copied from `viewer_assets/`
    data.js                           ``window.STVR_DATA = {...}``: summary, labels, pairs
    figure6.png                       the benchmark's samples_per_label.png (paper Fig. 6)
    media/<pair_id>_{query,ref}.mp4   short H.264 previews cut from the benchmark's clips

Boxes are not burned into the previews: the page draws them on a canvas from the data
(ground truth, the query box and, given a detections file, predictions with a score
threshold). The data is a ``.js`` file rather than JSON because browsers refuse to fetch
local JSON from a ``file://`` page. Times in the data are seconds since the start of the
pair's query or reference span (a preview's own timeline); reference image ``k`` is the
8-frame clip at ``ref_start + k / 3`` (`stvr_data.manifest` conventions).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from stvr_data import atomic, evaluation, manifest
from stvr_data.errors import ManifestError, MediaError
from stvr_data.tubelets import describe_label

ASSETS_DIR = Path(__file__).with_name("viewer_assets")
ASSETS = ("index.html", "viewer.js", "viewer.css")
FIGURE = "figure6.png"
MEDIA_DIR = "media"
DISPLAY_WIDTH = 320  # on-screen width of each video (pixels)
DECIMALS = 4  # box coordinates and scores in data.js


def choose_pairs(pairs: pd.DataFrame, per_label: int) -> pd.DataFrame:
    """The first `per_label` pairs (in pair id order) of every combined label."""
    ordered = pairs.sort_values("pair_id", kind="stable")
    return ordered.groupby("label", sort=False).head(per_label).reset_index(drop=True)


def label_names(labels, action_names: dict) -> dict:
    """``{combined label: 'name + name'}`` from the card's action names ('' when unknown)."""
    out = {}
    for label in map(str, labels):
        described = describe_label(label, action_names)
        out[label] = described[len(label) + 2:-1] if described != label else ""
    return out


def image_rows(frame: pd.DataFrame, ref_start: dict, columns: list[str]) -> dict:
    """``{pair_id: [[image, *columns], ...]}`` for the rows of `frame` with a box; ``image``
    is the reference image index ``round((timestamp - ref_start) * 3)``."""
    frame = frame.dropna(subset=["x1"])
    frame = frame[frame.pair_id.astype(str).isin(ref_start.keys())]
    starts = frame.pair_id.astype(str).map(ref_start).to_numpy(np.float64)
    image = np.rint((frame.timestamp.to_numpy(np.float64) - starts) * manifest.CLIPS_PER_SECOND)
    values = np.round(frame[columns].to_numpy(np.float64), DECIMALS)
    out: dict = {}
    for pair_id, k, row in zip(frame.pair_id.astype(str), image.astype(int).tolist(), values.tolist(),
                               strict=True):
        out.setdefault(pair_id, []).append([k, *row])
    return out


def pair_entry(pair, truth: list, detections: list, media: dict) -> dict:
    """One pair of data.js: spans, query boxes per keyframe, ground truth and detections."""
    return {
        "id": pair.pair_id, "label": pair.label,
        "query": {"video": pair.query_video_id, "start": float(pair.query_start),
                  "end": float(pair.query_end), "media": media.get("query"),
                  "boxes": np.round(np.asarray([list(b) for b in pair.query_boxes], np.float64),
                                    DECIMALS).tolist()},
        "ref": {"video": pair.ref_video_id, "start": float(pair.ref_start), "end": float(pair.ref_end),
                "media": media.get("ref"), "truth": truth, "detections": detections},
    }


def _summary(card: dict, split: str, pairs: pd.DataFrame, videos: pd.DataFrame, figure: bool) -> dict:
    counts = card.get("counts", {})
    tools = card.get("tools", {})
    ok = videos[videos.status == "ok"]
    width, height = (int(ok.width.iloc[0]), int(ok.height.iloc[0])) if len(ok) else (1, 1)
    lines = [f"{counts.get(f'pairs_{split}', len(pairs))} pairs, {counts.get(f'images_{split}')} images, "
             f"{counts.get(f'boxes_{split}')} target boxes, {pairs.label.nunique()} combined labels",
             f"schema {card.get('schema_version')}"]
    if tools:
        lines.append(f"stvr-data {tools.get('stvr-data')}, {tools.get('ffmpeg', {}).get('version')}")
    return {"name": card.get("name", "STVR benchmark"), "split": split, "lines": lines,
            "figure": FIGURE if figure else None, "keyframe_interval": card.get("keyframe_interval", 1.0),
            "clip_width": width, "clip_height": height, "display_width": DISPLAY_WIDTH,
            "pairs_per_label": {str(k): int(v) for k, v in pairs.label.value_counts().items()}}


def site_data(benchmark, split: str, *, detections: pd.DataFrame | None = None, per_label: int = 10,
              media: dict | None = None) -> dict:
    """Everything data.js holds for `split` of `benchmark` (see the module docstring).

    `detections` is a validated detections frame (or None); `media` maps a pair id to
    ``{"query": path, "ref": path}`` of its previews, relative to the site.
    """
    card = manifest.read_dataset_card(benchmark)
    pairs = manifest.read_benchmark_table(benchmark, f"pairs_{split}")
    truth = manifest.read_benchmark_table(benchmark, f"groundtruth_{split}")
    videos = manifest.read_benchmark_table(benchmark, "videos")
    chosen = choose_pairs(pairs, per_label)
    starts = dict(zip(chosen.pair_id, chosen.ref_start, strict=True))
    truth_rows = image_rows(truth, starts, ["x1", "y1", "x2", "y2"])
    det_rows = {} if detections is None else image_rows(detections, starts, ["x1", "y1", "x2", "y2", "score"])
    names = {str(k): v for k, v in card.get("action_names", {}).items()}
    labels = sorted(pairs.label.unique(), key=lambda s: [int(p) if p.isdigit() else p for p in s.split("+")])
    figure = (Path(benchmark) / "samples_per_label.png").is_file()
    return {
        "summary": _summary(card, split, pairs, videos, figure),
        "labels": label_names(labels, names),
        "has_detections": detections is not None,
        "pairs": [pair_entry(p, truth_rows.get(p.pair_id, []), det_rows.get(p.pair_id, []),
                             (media or {}).get(p.pair_id, {}))
                  for p in chosen.itertuples(index=False)],
    }


def cut_previews(benchmark, pairs: pd.DataFrame, out: Path) -> dict:
    """Cut each pair's query and reference span from the benchmark's clips into
    ``out/media`` (H.264 mp4 at the clips' size and frame rate); returns
    ``{pair_id: {"query": path, "ref": path}}`` relative to `out`. A span whose video has
    no clip gets no preview. Previews already cut with the same options are kept."""
    from stvr_data.media import cut_clip
    from stvr_data.media_step import MediaOptions, finished_clip

    benchmark = Path(benchmark)
    videos = manifest.read_benchmark_table(benchmark, "videos").set_index("video_id")
    done: dict = {}
    jobs = [(p.pair_id, part, video, start, end) for p in pairs.itertuples(index=False)
            for part, video, start, end in (("query", p.query_video_id, p.query_start, p.query_end),
                                            ("ref", p.ref_video_id, p.ref_start, p.ref_end))]
    for pair_id, part, video, start, end in tqdm(jobs, desc="previews", unit="clip"):
        if video not in videos.index or videos.at[video, "status"] != "ok":
            continue
        row = videos.loc[video]
        relative = f"{MEDIA_DIR}/{pair_id}_{part}.mp4"
        options = MediaOptions(start=start - row.clip_start, end=end - row.clip_start, fps=int(row.fps),
                               size=(int(row.width), int(row.height)))
        if finished_clip(out / relative, options) is None:
            cut_clip(benchmark / row.clip_path, out / relative, start=options.start, end=options.end,
                     fps=options.fps, size=options.size)
        done.setdefault(pair_id, {})[part] = relative
    return done


def write_site(benchmark, out, *, split: str = "test", detections=None, per_label: int = 10) -> Path:
    """Write the viewer site of `split` of `benchmark` into `out`; returns its index.html.

    `detections` is a detections file (CSV or Parquet, the scorer's format) or None.
    Raises `ManifestError` / `DetectionsError` / `MediaError` naming the bad input.
    """
    benchmark, out = Path(benchmark), Path(out)
    if split not in ("val", "test"):
        raise ManifestError(f"split must be val or test, not {split!r}")
    frame = None
    if detections is not None:
        pairs = manifest.read_benchmark_table(benchmark, f"pairs_{split}")
        frame = evaluation.validate_detections(evaluation.read_detections(detections), source=str(detections),
                                               pair_ids=pairs.pair_id, split=split)
    out.mkdir(parents=True, exist_ok=True)
    chosen = choose_pairs(manifest.read_benchmark_table(benchmark, f"pairs_{split}"), per_label)
    try:
        media = cut_previews(benchmark, chosen, out)
    except MediaError as err:
        raise MediaError(f"{benchmark}: cannot cut a preview: {err}") from None
    data = site_data(benchmark, split, detections=frame, per_label=per_label, media=media)
    atomic.write_text(out / "data.js", "window.STVR_DATA = " + json.dumps(data, separators=(",", ":")) + ";\n")
    for name in ASSETS:
        atomic.write_bytes(out / name, (ASSETS_DIR / name).read_bytes())
    if data["summary"]["figure"]:
        atomic.write_bytes(out / FIGURE, (benchmark / "samples_per_label.png").read_bytes())
    return out / "index.html"
