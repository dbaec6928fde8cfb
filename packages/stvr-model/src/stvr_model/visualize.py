"""Pictures a person looks at: the training loss curve, and pairs with their detections
(query frames with the query box beside reference frames with predicted and true boxes,
like the paper's Figure 8)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stvr_data.atomic import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        _pyplot().close(fig)
    return Path(path)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over at most `window` values (shorter at the start)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return values
    sums = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    return (sums[idx] - sums[lo]) / (idx - lo)


def draw_loss_curve(metrics: str | Path, path: str | Path, window: int = 20) -> Path | None:
    """Total loss and its components over iterations, from a training `metrics.jsonl`."""
    metrics = Path(metrics)
    if not metrics.exists():
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not rows:
        return None
    plt = _pyplot()
    iterations = np.array([r["iteration"] for r in rows])
    fixed = {"iteration", "lr", "grad_norm", "data_wait_s", "step_s", "ref_clips", "query_clips"}
    names = [k for k in rows[0] if k not in fixed]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in names:
        values = np.array([r.get(name, np.nan) for r in rows], dtype=np.float64)
        ax.plot(iterations, moving_average(values, window), label=name, lw=2 if name == "loss" else 1)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"loss (mean of last {window})")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, Path(path))


def _frame(clip) -> np.ndarray:
    """Middle frame of a sample's uint8 clip [8, H, W, 3] as uint8 [H, W, 3]."""
    return clip[clip.shape[0] // 2].cpu().numpy()


COLOURS = {"query": "#1f77b4", "truth": "#2ca02c", "prediction": "#d62728"}


def _box(ax, box, colour, label=None, style="-"):
    x1, y1, x2, y2 = (float(v) for v in box)
    ax.add_patch(_pyplot().Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=colour, lw=2, ls=style))
    if label:  # white on the box colour: readable over any frame
        ax.text(x1, y1, label, color="white", fontsize=7, fontweight="bold", va="bottom",
                bbox={"facecolor": colour, "edgecolor": "none", "pad": 1.0})


def pixel_aspect(frame_size: tuple[int, int], display_aspect: float | None) -> float | str:
    """matplotlib `imshow` aspect (a pixel's height / width) that shows a `(width, height)`
    frame at `display_aspect` (the source video's width / height); 'equal' when unknown.
    Clips are resized to the square model input, so a 16:9 source needs 9/16."""
    if not display_aspect:
        return "equal"
    width, height = frame_size
    return (width / height) / display_aspect


def visible_boxes(boxes, scores, min_score: float, keep_best: bool = False) -> list[int]:
    """Indices of the detections to draw: score >= `min_score`, and with `keep_best` the
    highest-scoring one whatever its score."""
    scores = np.asarray(scores, dtype=np.float64)
    shown = set(np.flatnonzero(scores >= min_score).tolist())
    if keep_best and len(scores):
        shown.add(int(np.argmax(scores)))
    return sorted(shown)


def _legend(fig, min_score: float, with_truth: bool, keep_best: bool) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=COLOURS["query"], lw=2, label="query box")]
    if with_truth:
        handles.append(Line2D([], [], color=COLOURS["truth"], lw=2, ls="--",
                              label="ground truth (matching actor)"))
    shown = f"prediction, score >= {min_score:g}" + (" (and each clip's best)" if keep_best else "")
    handles.append(Line2D([], [], color=COLOURS["prediction"], lw=2, label=shown))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)


def draw_pair(sample: dict, detections: list[dict], path: str | Path, *, title: str = "",
              label: str = "", columns: int = 4, min_score: float = 0.3, keep_best: bool = False,
              with_truth: bool = True,
              display_aspect: tuple[float | None, float | None] = (None, None)) -> Path:
    """Query frames with the query box (top row) and reference frames with the true
    matching boxes (green, dashed) and detections (red, with score), and a legend.

    `sample` is a `PairDataset` item (uint8 clips, pixel boxes); `detections` holds one dict per
    reference clip with pixel `boxes` and `scores`. Detections under `min_score` are
    hidden, except each clip's best with `keep_best`. `with_truth` False (no ground
    truth, as in `predict`) leaves it out of the legend. `label` (the pair's combined label
    with action names) goes under the title. `display_aspect` is the (query, reference)
    source videos' width / height: frames are shown at that shape instead of the model's
    square input (None: as stored).
    """
    plt = _pyplot()
    tq, tr = sample["query"].shape[0], sample["reference"].shape[0]
    q_idx = np.linspace(0, tq - 1, min(columns, tq)).round().astype(int)
    r_idx = np.linspace(0, tr - 1, min(columns, tr)).round().astype(int)
    wide = max(a or 1.0 for a in display_aspect)
    fig, axes = plt.subplots(2, columns, figsize=(2.4 * columns * max(1.0, wide) ** 0.5, 6.0), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    size = tuple(sample["reference"].shape[-2:-4:-1])  # (W, H) of uint8 [Tr, 8, H, W, 3]
    for ax, i in zip(axes[0], q_idx, strict=False):
        ax.imshow(_frame(sample["query"][i]), aspect=pixel_aspect(size, display_aspect[0]))
        _box(ax, sample["query_boxes"][i], COLOURS["query"], "query")
        ax.set_title(f"query clip {i}", fontsize=8)
    for ax, i in zip(axes[1], r_idx, strict=False):
        ax.imshow(_frame(sample["reference"][i]), aspect=pixel_aspect(size, display_aspect[1]))
        target = sample["targets"][i]
        for box in target["boxes"][target["labels"] == 2]:
            _box(ax, box, COLOURS["truth"], style="--")
        det = detections[i]
        for k in visible_boxes(det["boxes"], det["scores"], min_score, keep_best):
            _box(ax, det["boxes"][k], COLOURS["prediction"], f"{float(det['scores'][k]):.2f}")
        ax.set_title(f"reference t = {float(sample['times'][i]):.2f} s", fontsize=8)
    heading = title or sample["pair_id"]
    fig.suptitle(f"{heading}\n{label}" if label else heading, fontsize=9)
    _legend(fig, min_score, with_truth, keep_best)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, Path(path))
