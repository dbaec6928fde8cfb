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
    """Middle frame of a clip tensor [3, 8, H, W] in [-1, 1] as uint8 [H, W, 3]."""
    frame = clip[:, clip.shape[1] // 2].permute(1, 2, 0).float().cpu().numpy()
    return np.clip((frame + 1.0) * 127.5, 0, 255).astype(np.uint8)


def _box(ax, box, colour, label=None, style="-"):
    x1, y1, x2, y2 = (float(v) for v in box)
    ax.add_patch(_pyplot().Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=colour, lw=1.5, ls=style))
    if label:
        ax.text(x1, y1 - 2, label, color=colour, fontsize=6, va="bottom")


def draw_pair(sample: dict, detections: list[dict], path: str | Path, *, title: str = "",
              columns: int = 4, min_score: float = 0.3) -> Path:
    """Query frames with the query box (top row) and reference frames with the true
    matching boxes (green, dashed) and detections above `min_score` (red, with score).

    `sample` is a `PairDataset` item (pixel boxes); `detections` holds one dict per
    reference clip with pixel `boxes` and `scores`.
    """
    plt = _pyplot()
    tq, tr = sample["query"].shape[0], sample["reference"].shape[0]
    q_idx = np.linspace(0, tq - 1, min(columns, tq)).round().astype(int)
    r_idx = np.linspace(0, tr - 1, min(columns, tr)).round().astype(int)
    fig, axes = plt.subplots(2, columns, figsize=(2.4 * columns, 5.2), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes[0], q_idx, strict=False):
        ax.imshow(_frame(sample["query"][i]))
        _box(ax, sample["query_boxes"][i], "#1f77b4", "query")
        ax.set_title(f"query clip {i}", fontsize=7)
    for ax, i in zip(axes[1], r_idx, strict=False):
        ax.imshow(_frame(sample["reference"][i]))
        target = sample["targets"][i]
        for box in target["boxes"][target["labels"] == 2]:
            _box(ax, box, "#2ca02c", style="--")
        det = detections[i]
        for box, score in zip(det["boxes"], det["scores"], strict=True):
            if float(score) >= min_score:
                _box(ax, box, "#d62728", f"{float(score):.2f}")
        ax.set_title(f"t = {float(sample['times'][i]):.2f} s", fontsize=7)
    fig.suptitle(title or sample["pair_id"], fontsize=9)
    fig.tight_layout()
    return _save(fig, Path(path))
