"""Assemble a benchmark directory from linked tubelets: pairs, ground truth, media, manifests.

The corpus modules (`ava.py`, `ucf24.py`) turn their dataset's own formats into a
`Corpus`: tubelets with a split, the videos they lie in, and the facts the generic steps
need (keyframe interval, per-video time bounds). Everything after that is shared, so the
trainer and the scorer read AVA and UCF101-24 benchmarks the same way (paper §5).

Re-running is cheap and safe: annotation steps are deterministic and recomputed; the
media step skips clips already finished; every table is written to a temporary name and
renamed; `dataset.json` is written last and marks a complete build. A build whose card
records the same inputs and options is left as it is unless `force`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from stvr_data import manifest, pairs
from stvr_data.card import write_sharing_files
from stvr_data.errors import StvrDataError

log = logging.getLogger(__name__)

REPORTS_DIR = "reports"
FIGURE_FILE = "samples_per_label.png"


@dataclass(frozen=True)
class BuildOptions:
    """Options shared by every corpus build (the CLI's flags)."""

    seed: int = 0
    workers: int = 1
    skip_media: bool = False
    resolution: tuple[int, int] = (320, 320)  # (width, height) of the clip files
    fps: int = manifest.CLIP_FPS
    pad_below: int = 10  # targets shorter than this many keyframes get background padding
    force: bool = False
    youtube_fallback: bool = False

    def card(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("workers")  # does not change the result
        out.pop("force")
        out["resolution"] = list(self.resolution)
        return out


@dataclass(frozen=True)
class Corpus:
    """A dataset's annotations, linked and split, ready for the generic steps.

    `tubelets` has the columns of `manifest.TUBELETS_SCHEMA` except `tubelet_id`
    (assigned here); `videos` has `video_id, subset, source_file, clip_start, clip_end`
    (the time bounds a reference may be padded into, and the span the clip file covers).
    """

    name: str
    tubelets: pd.DataFrame
    videos: pd.DataFrame
    keyframe_interval: float
    media_span: tuple[float, float]  # source-time span cut into each clip file (clamped to the video)
    card: dict = field(default_factory=dict)  # source, version, labels, action names...
    input_hashes: dict = field(default_factory=dict)  # annotation file -> sha256


def build_benchmark(corpus: Corpus, videos_source: str | None, out: str | Path,
                    options: BuildOptions, *, extra_options: dict | None = None) -> dict:
    """Write the benchmark for `corpus` into `out` and return its dataset card."""
    out = Path(out)
    fingerprint = {"inputs": corpus.input_hashes, "options": options.card(),
                   "corpus_options": extra_options or {},
                   "videos": None if videos_source is None else str(videos_source),
                   "schema_version": manifest.SCHEMA_VERSION}  # a newer format rebuilds
    previous = _previous_card(out)
    if previous and previous.get("fingerprint") == fingerprint and not options.force:
        log.info("%s is already built with these inputs and options", out)
        return previous
    out.mkdir(parents=True, exist_ok=True)
    tubelets = _with_ids(corpus.tubelets)
    videos = _media(corpus, videos_source, out, options)
    tables, dropped = _pair_tables(tubelets, videos, corpus, options)
    _write_tables(out, tubelets, videos, tables)
    counts = _counts(tubelets, videos, tables, dropped)
    _draw_samples_per_label(tubelets, out / FIGURE_FILE, title=f"{corpus.name}: samples per combined label")
    card = dict(corpus.card, name=corpus.name, seed=options.seed, options=options.card(),
                corpus_options=extra_options or {}, keyframe_interval=corpus.keyframe_interval,
                clip={"fps": options.fps, "frames": manifest.CLIP_FRAMES,
                      "clips_per_second": manifest.CLIPS_PER_SECOND,
                      "size": list(options.resolution)},
                labels={s: sorted(tubelets.loc[tubelets.split == s, "label"].unique().tolist())
                        for s in ("train", "val", "test")},
                counts=counts, fingerprint=fingerprint)
    manifest.write_dataset_card(out, card)
    write_sharing_files(out)
    return manifest.read_dataset_card(out)


def _previous_card(out: Path) -> dict | None:
    try:
        return manifest.read_dataset_card(out)
    except StvrDataError:
        return None


def _with_ids(tubelets: pd.DataFrame) -> pd.DataFrame:
    ordered = tubelets.sort_values(["video_id", "person_id", "start"], kind="stable")
    ordered = ordered.reset_index(drop=True)
    ordered.insert(0, "tubelet_id", np.arange(len(ordered), dtype=np.int64))
    return ordered


def _media(corpus: Corpus, source: str | None, out: Path, options: BuildOptions) -> pd.DataFrame:
    """The videos table: clips cut when media is built, status 'skipped' otherwise."""
    videos = corpus.videos.sort_values("video_id", kind="stable").reset_index(drop=True)
    width, height = options.resolution
    if options.skip_media or source is None:
        return videos.assign(clip_path=None, fps=float(options.fps), width=width, height=height,
                             status="skipped", sha256=None)
    from stvr_data import media  # ffmpeg is only needed when clips are made

    done = media.prepare_media(
        videos, source, out, workers=options.workers, fps=options.fps, size=options.resolution,
        force=options.force, youtube_fallback=options.youtube_fallback,
        start=corpus.media_span[0], end=corpus.media_span[1])
    failed = done[done.status != "ok"]
    if len(failed):
        media.write_media_report(failed, out / REPORTS_DIR / "media.txt")
        log.warning("%d of %d videos could not be had; their pairs are dropped (see %s)",
                    len(failed), len(done), out / REPORTS_DIR / "media.txt")
    return done


def _pair_tables(tubelets, videos, corpus, options):
    """Fixed val/test pairs and their ground truth; pairs touching a video without media
    are dropped (ids keep their index so a partial build names pairs like a full one)."""
    # Bounds come from the annotations, not from the media step, so that pairs do not
    # depend on which videos could be fetched.
    bounds = {row.video_id: (row.clip_start, row.clip_end) for row in corpus.videos.itertuples()}
    unavailable = set(videos.loc[~videos.status.isin(["ok", "skipped"]), "video_id"])
    tables, dropped = {}, {}
    for offset, split in enumerate(("val", "test")):
        chosen = tubelets[tubelets.split == split]
        table = pairs.make_pairs(chosen, split=split, seed=options.seed + offset, bounds=bounds,
                                 keyframe_interval=corpus.keyframe_interval,
                                 pad_below=options.pad_below)
        lost = table.query_video_id.isin(unavailable) | table.ref_video_id.isin(unavailable)
        dropped[split] = int(lost.sum())
        table = table[~lost].reset_index(drop=True)
        tables[f"pairs_{split}"] = table
        tables[f"groundtruth_{split}"] = pairs.groundtruth(
            table, tubelets, keyframe_interval=corpus.keyframe_interval,
            clips_per_second=manifest.images_per_keyframe(corpus.keyframe_interval))
    return tables, dropped


def _write_tables(out: Path, tubelets, videos, tables) -> None:
    manifest.write_table(videos, out / manifest.TABLE_FILES["videos"], manifest.VIDEOS_SCHEMA)
    manifest.write_table(tubelets, out / manifest.TABLE_FILES["tubelets"], manifest.TUBELETS_SCHEMA)
    for name, frame in tables.items():
        manifest.write_table(frame, out / manifest.TABLE_FILES[name], manifest.TABLES[name])


def _counts(tubelets, videos, tables, dropped) -> dict:
    counts = {
        "videos": {status: int(n) for status, n in videos.status.value_counts().sort_index().items()},
        "tubelets": {s: int((tubelets.split == s).sum()) for s in ("train", "val", "test")},
        "labels": {s: int(tubelets.loc[tubelets.split == s, "label"].nunique())
                   for s in ("train", "val", "test")},
    }
    for split in ("val", "test"):
        gt = tables[f"groundtruth_{split}"]
        counts[f"pairs_{split}"] = len(tables[f"pairs_{split}"])
        counts[f"pairs_{split}_dropped_for_media"] = dropped[split]
        counts[f"images_{split}"] = int(gt[["pair_id", "timestamp"]].drop_duplicates().shape[0])
        counts[f"boxes_{split}"] = int(gt.x1.notna().sum())
    return counts


def _draw_samples_per_label(tubelets: pd.DataFrame, path: Path, *, title: str) -> None:
    """Bar chart of tubelets per combined label coloured by split (the paper's Figure 6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = (tubelets.groupby(["split", "label"]).size().rename("n").reset_index()
              .sort_values(["split", "n", "label"], ascending=[True, False, True]))
    order = {"train": 0, "val": 1, "test": 2}
    counts = counts.sort_values(by="split", key=lambda s: s.map(order), kind="stable")
    colours = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}
    width = min(max(6.0, 0.18 * len(counts)), 60.0)
    fig, ax = plt.subplots(figsize=(width, 4.5))
    ax.bar(np.arange(len(counts)), counts.n, color=counts.split.map(colours), width=0.85)
    if len(counts) and counts.n.max() > 50 * counts.n.min():  # AVA's long tail needs a log axis
        ax.set_yscale("log")
    ax.set_ylabel("tubelets")
    ax.set_xticks(np.arange(len(counts)), counts.label, rotation=90, fontsize=6)
    ax.set_xlim(-1, len(counts))
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    ax.legend(handles, [f"{s} ({(counts.split == s).sum()} labels)" for s in colours],
              loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    ax.set_title(title, pad=24)
    fig.tight_layout()
    tmp = manifest.atomic_path(path)
    fig.savefig(tmp, dpi=120, format="png", metadata={"Software": None})
    plt.close(fig)
    tmp.replace(path)


def summary(card: dict) -> str:
    """A few human lines about a built benchmark (printed by the CLI)."""
    counts = card.get("counts", {})
    lines = [f"{card.get('name')}: {json.dumps(counts.get('tubelets'))} tubelets, "
             f"labels {json.dumps(counts.get('labels'))}",
             f"pairs: val {counts.get('pairs_val')} ({counts.get('images_val')} images), "
             f"test {counts.get('pairs_test')} ({counts.get('images_test')} images)",
             f"videos: {json.dumps(counts.get('videos'))}"]
    return "\n".join(lines)
