"""Assemble a benchmark directory from linked tubelets: pairs, ground truth, media, manifests.

The corpus modules (`ava.py`, `ucf24.py`) turn their dataset's own formats into a
`Corpus`: tubelets with a split, the videos they lie in, and the facts the generic steps
need (keyframe interval, per-video time bounds). Everything after that is shared, so the
trainer and the scorer read AVA and UCF101-24 benchmarks the same way (paper §5).

Re-running is cheap and safe: annotation steps are deterministic and recomputed; the
media step skips clips already finished. The output directory is locked, and everything
is staged and committed by writing `dataset.json` last (`stvr_data.outdir`), so a killed
build never leaves a mix of two builds. A build whose card records the same inputs and
options, whose files pass their checks and which has no video left to retry is left as it
is unless `force`. Videos that failed for a reason that may pass, or a split left without
pairs, make the build raise after (respectively instead of) its commit.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from stvr_data import atomic, build_report, manifest, outdir, pairs, shards
from stvr_data.errors import StvrDataError
from stvr_data.shards import Shard

log = logging.getLogger(__name__)

REPORTS_DIR = "reports"
FIGURE_FILE = "samples_per_label.png"
MEDIA_REPORT = f"{REPORTS_DIR}/media.txt"


class IncompleteBuildError(StvrDataError):
    """A build that could not make everything: videos to retry, or a split without pairs."""


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
    shard: Shard | None = None  # do the media of this shard only (`stvr_data.shards`)
    merge: bool = False  # assemble the benchmark from the finished shards

    def __post_init__(self):
        if self.shard is not None and self.merge:
            raise shards.ShardError("--shard and --merge exclude each other: run the shards, then --merge")
        if (self.shard is not None or self.merge) and self.skip_media:
            raise shards.ShardError("--shard and --merge share out the media step: drop --skip-media")

    def card(self) -> dict:
        out = dataclasses.asdict(self)
        for name in ("workers", "force", "shard", "merge"):  # they do not change the result
            out.pop(name)
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
    reports: dict = field(default_factory=dict)  # file name under reports/ -> text (e.g. bad rows)


def build_benchmark(corpus: Corpus, videos_source: str | None, out: str | Path,
                    options: BuildOptions, *, extra_options: dict | None = None) -> dict:
    """Write the benchmark for `corpus` into `out` and return its dataset card.

    With `options.shard`, only that shard's media is done and its status returned
    (`stvr_data.shards.run_shard`); with `options.merge`, the media rows come from the
    shards' statuses. Raises `OutputLockedError` when another build (or a shard) holds
    `out`, `OutputDirectoryError` for a directory that is not a benchmark, `ShardError`
    for shards that cannot be merged, and `IncompleteBuildError` when a split has no
    pairs (nothing committed) or videos are left to retry (committed without them).
    """
    out = Path(out)
    fingerprint = {"inputs": corpus.input_hashes, "options": options.card(),
                   "corpus_options": extra_options or {},
                   "videos": None if videos_source is None else str(videos_source),
                   "schema_version": manifest.SCHEMA_VERSION}  # a newer format rebuilds
    command = f"build {corpus.name}" + (" --merge" if options.merge else "")
    if options.shard is not None:
        status = shards.run_shard(
            corpus.videos, out, options.shard, fingerprint, command=f"{command} --shard {options.shard}",
            cut=lambda videos, stage: _cut(videos, videos_source, out, stage, options, corpus.media_span))
        retry = _retry_reason(Counter(row["status"] for row in status["videos"]))
        if retry:
            raise IncompleteBuildError(f"{out}: shard {options.shard}: {retry}: run the same command "
                                       "again to retry them, then --merge")
        return status
    media_built = not options.skip_media and videos_source is not None  # else shards are left alone
    with (outdir.open_output(out, command=command) as output,
          shards.claim(out, command=command, media=media_built) as claimed):
        if _up_to_date(output, fingerprint, options) and not (claimed.statuses or options.merge):
            log.info("%s is already built with these inputs and options", out)
            output.drop_stage()
            return output.previous
        card, files = _build_staged(corpus, videos_source, output, options, extra_options or {},
                                    fingerprint, claimed)
        card = output.commit(card, files)
        claimed.remove()
    retry = _retry_reason(card["counts"]["videos"])
    if retry:
        again = "the shards and --merge again" if options.merge else "the same command again"
        raise IncompleteBuildError(
            f"{out}: {retry} (see {out / MEDIA_REPORT}); the benchmark was written without their "
            f"pairs: run {again} to retry them")
    return card


def _retry_reason(counts: dict) -> str:
    """What the same command tries again, given media status -> videos (`media_step.RETRY_STATUSES`);
    empty when nothing."""
    reasons = {"retryable": "failed for a reason that may pass",
               "tool_unusable": "failed because the download tool (yt-dlp) could not be used"}
    return " and ".join(f"{counts[status]} videos {why}" for status, why in reasons.items()
                        if counts.get(status))


def _up_to_date(output: outdir.Output, fingerprint: dict, options: BuildOptions) -> bool:
    """Whether the benchmark in place is this build, whole; says why not when it is not."""
    previous = output.previous
    if previous is None:
        return False
    problems = outdir.check_files(output.root, previous, deep=output.unclean)
    if problems:
        log.warning("%s: %d files fail their check (%s); they are made again", output.root,
                    len(problems), "; ".join(str(p) for p in problems[:3]))
        output.discard(problems)
    same = previous.get("fingerprint") == fingerprint
    if not same:
        log.warning("%s: replacing the benchmark there, which differs in %s", output.root,
                    describe_changes(previous.get("fingerprint") or {}, fingerprint))
    retry = _retry_reason(previous.get("counts", {}).get("videos", {}))
    if same and retry:
        log.warning("%s: retrying what failed before: %s", output.root, retry)
    return same and not problems and not retry and not options.force


def describe_changes(old: dict, new: dict) -> str:
    """``'options.seed 0 -> 1, inputs.ava_val_v2.2.csv changed'``: what differs, in one line."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    parts = []
    for key in sorted(set(flat_old) | set(flat_new)):
        before, after = flat_old.get(key, "(none)"), flat_new.get(key, "(none)")
        if before != after:
            parts.append(f"{key} changed" if key.startswith("inputs.")
                         else f"{key} {json.dumps(before)} -> {json.dumps(after)}")
    if not parts:
        return "the same options"
    return ", ".join(parts[:6]) + (f" and {len(parts) - 6} more" if len(parts) > 6 else "")


def _flatten(value, prefix: str = "") -> dict:
    if not isinstance(value, dict):
        return {prefix: value}
    flat = {}
    for key, item in value.items():
        flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _build_staged(corpus: Corpus, videos_source, output: outdir.Output, options: BuildOptions,
                  extra_options: dict, fingerprint: dict,
                  claimed: shards.Claimed) -> tuple[dict, list[str]]:
    """Write every file of the new benchmark into the staging folder; its card and files."""
    videos = _media(corpus, videos_source, output, options, claimed, fingerprint)
    tubelets, cut = trim_training_tubelets(_with_ids(corpus.tubelets), _decoded_ends(videos),
                                           corpus.keyframe_interval)
    tables, dropped, short = _pair_tables(tubelets, videos, corpus, options)
    _require_pairs(tables, dropped, videos, output.root)
    files = _write_tables(output, tubelets, videos, tables)
    files += _write_reports(output, corpus, videos, short, cut)
    build_report.draw_samples_per_label(tubelets, output.staged(FIGURE_FILE),
                            title=f"{corpus.name}: samples per combined label")
    files += [FIGURE_FILE, *videos.clip_path[videos.status == "ok"].tolist()]
    counts = build_report.counts(tubelets, videos, tables, dropped)
    card = dict(corpus.card, name=corpus.name, seed=options.seed, options=options.card(),
                corpus_options=extra_options, keyframe_interval=corpus.keyframe_interval,
                clip={"fps": options.fps, "frames": manifest.CLIP_FRAMES,
                      "clips_per_second": manifest.CLIPS_PER_SECOND,
                      "size": list(options.resolution)},
                labels={s: sorted(tubelets.loc[tubelets.split == s, "label"].unique().tolist())
                        for s in ("train", "val", "test")},
                counts=counts, chance_mAP=build_report.chance_floors(tables, tubelets, corpus.keyframe_interval),
                fingerprint=fingerprint)
    return card, files


def _require_pairs(tables: dict, dropped: dict, videos: pd.DataFrame, out: Path) -> None:
    for split in ("val", "test"):
        if len(tables[f"pairs_{split}"]):
            continue
        bad = videos.status.value_counts().drop(["ok", "skipped"], errors="ignore")
        why = (f"{dropped[split]} dropped because their videos could not be had "
               f"({', '.join(f'{n} {s}' for s, n in bad.items())})" if dropped[split]
               else "the annotations give none")
        raise IncompleteBuildError(f"{out}: the build has 0 {split} pairs ({why}); nothing was "
                                   "written: fix the input, or run again to retry failed videos")


def _with_ids(tubelets: pd.DataFrame) -> pd.DataFrame:
    ordered = tubelets.sort_values(["video_id", "person_id", "start"], kind="stable")
    ordered = ordered.reset_index(drop=True)
    ordered.insert(0, "tubelet_id", np.arange(len(ordered), dtype=np.int64))
    return ordered


def _media(corpus: Corpus, source: str | None, output: outdir.Output, options: BuildOptions,
           claimed: shards.Claimed, fingerprint: dict) -> pd.DataFrame:
    """The videos table: clips cut (or taken over from finished shards) when media is
    built, status 'skipped' otherwise."""
    videos = corpus.videos.sort_values("video_id", kind="stable").reset_index(drop=True)
    width, height = options.resolution
    if options.skip_media or source is None:
        return videos.assign(clip_path=None, fps=float(options.fps), width=width, height=height,
                             status="skipped", sha256=None)
    from stvr_data import media_step  # ffmpeg is only needed when clips are made

    claimed.adopt(output.stage)
    if options.merge:
        done = media_step.media_table(videos, claimed.merged_rows(videos, fingerprint, output.stage))
    else:
        done = _cut(videos, source, output.root, output.stage, options, corpus.media_span)
    failed = done[done.status != "ok"]
    if len(failed):
        log.warning("%d of %d videos could not be had; their pairs are dropped (see %s)",
                    len(failed), len(done), output.root / MEDIA_REPORT)
    return done


def _cut(videos: pd.DataFrame, source: str, root, stage, options: BuildOptions,
         span: tuple[float, float]) -> pd.DataFrame:
    """The media step proper (`media_step.prepare_media`): new clips under `stage`."""
    from stvr_data import media_step

    return media_step.prepare_media(
        videos, source, root, workers=options.workers, fps=options.fps, size=options.resolution,
        force=options.force, youtube_fallback=options.youtube_fallback, start=span[0], end=span[1],
        stage_dir=stage)


def _pair_tables(tubelets, videos, corpus, options):
    """Fixed val/test pairs and their ground truth; pairs touching a video without media,
    or reaching past the end of what its clip decodes to, are dropped (ids keep their
    index so a partial build names pairs like a full one). Returns the tables, the
    dropped count per split and the videos too short for some pair (id -> pairs lost)."""
    # Bounds come from the annotations, not from the media step, so that pairs do not
    # depend on which videos could be fetched.
    bounds = {row.video_id: (row.clip_start, row.clip_end) for row in corpus.videos.itertuples()}
    unavailable = set(videos.loc[~videos.status.isin(["ok", "skipped"]), "video_id"])
    decoded = _decoded_ends(videos)
    tables, dropped, short = {}, {}, {}
    for offset, split in enumerate(("val", "test")):
        chosen = tubelets[tubelets.split == split]
        table = pairs.make_pairs(chosen, split=split, seed=options.seed + offset, bounds=bounds,
                                 keyframe_interval=corpus.keyframe_interval,
                                 pad_below=options.pad_below)
        lost = table.query_video_id.isin(unavailable) | table.ref_video_id.isin(unavailable)
        ref_past, query_past = _past_media_end(table, decoded)
        past = (ref_past | query_past) & ~lost
        culprits = table.ref_video_id.where(ref_past, table.query_video_id)[past]
        for video, n in culprits.value_counts().items():
            short[video] = short.get(video, 0) + int(n)
        dropped[split] = int((lost | past).sum())
        table = table[~(lost | past)].reset_index(drop=True)
        tables[f"pairs_{split}"] = table
        tables[f"groundtruth_{split}"] = pairs.groundtruth(
            table, tubelets, keyframe_interval=corpus.keyframe_interval,
            clips_per_second=manifest.images_per_keyframe(corpus.keyframe_interval))
    return tables, dropped, short


_EPS = 1e-6  # seconds: float slack when comparing times


def _decoded_ends(videos: pd.DataFrame) -> dict:
    """video id -> where its clip ends (s, source time): measured by decoding, see `media`."""
    ok = videos.status == "ok"
    return dict(zip(videos.video_id[ok], videos.clip_end[ok], strict=True))


def trim_training_tubelets(tubelets: pd.DataFrame, decoded: dict,
                           keyframe_interval: float) -> tuple[pd.DataFrame, dict]:
    """Cut training tubelets at the decoded end of their clip (a truncated source), so that
    no box is kept on frames the clip does not have; a tubelet left empty is dropped.

    `decoded` maps video id -> clip end (s). Returns the tubelets (ids kept) and
    video id -> number of tubelets cut or dropped.
    """
    ends = tubelets.video_id.map(decoded)
    over = ((tubelets.split == "train") & ends.notna()
            & (tubelets.end > ends + _EPS))
    if not over.any():
        return tubelets, {}
    out = tubelets.copy()
    keep = np.floor((ends[over] - out.start[over]) / keyframe_interval + _EPS).astype(int)
    out.loc[over, "end"] = out.start[over] + keep * keyframe_interval  # [start, end): keep keyframes
    out.loc[over, "boxes"] = pd.Series([list(b)[:max(k, 0)] for b, k in zip(out.boxes[over], keep, strict=True)],
                                       index=keep.index, dtype=object)
    out = out[~over | (out.end > out.start)].reset_index(drop=True)
    cut = tubelets.video_id[over].value_counts()
    return out, {str(video): int(n) for video, n in cut.items()}


def _past_media_end(table: pd.DataFrame, decoded: dict):
    """Masks of the pairs whose reference, and whose query, reach past the decoded end of
    their clip (a truncated source): their images would be black frames with ground truth."""
    ref_ends = table.ref_video_id.map(decoded)
    query_ends = table.query_video_id.map(decoded)
    ref_past = ref_ends.notna() & (table.ref_end > ref_ends + _EPS)
    query_past = query_ends.notna() & (table.query_end > query_ends + _EPS)
    return ref_past, query_past


def _write_tables(output: outdir.Output, tubelets, videos, tables) -> list[str]:
    frames = {"videos": videos, "tubelets": tubelets, **tables}
    for name, frame in frames.items():
        manifest.write_table(frame, output.staged(manifest.TABLE_FILES[name]), manifest.TABLES[name])
    return [manifest.TABLE_FILES[name] for name in frames]


def _write_reports(output: outdir.Output, corpus: Corpus, videos: pd.DataFrame, short: dict,
                   cut: dict) -> list[str]:
    """Reports of this build only: one that is no longer true is not written, and the
    commit deletes its old copy."""
    written = []
    for name, text in sorted(corpus.reports.items()):
        atomic.write_text(output.staged(f"{REPORTS_DIR}/{name}"), text)
        written.append(f"{REPORTS_DIR}/{name}")
    if videos.status.isin(["ok", "skipped"]).all() and not short and not cut:
        return written
    from stvr_data import media_step

    ends = dict(zip(videos.video_id, videos.clip_end, strict=True))
    lines = [f"{video}\tshort\tdecodes to {ends[video]:.2f} s only\t{n} val/test pairs reaching past "
             "that end are left out" for video, n in sorted(short.items())]
    lines += [f"{video}\tshort\tdecodes to {ends[video]:.2f} s only\t{n} training tubelets cut at "
              "that end" for video, n in sorted(cut.items())]
    media_step.write_media_report(videos[videos.status != "skipped"], output.staged(MEDIA_REPORT), extra=lines)
    return [*written, MEDIA_REPORT]
