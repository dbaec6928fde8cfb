"""The media step of a benchmark build: every video fetched, cut and accounted for.

`prepare_media` gets each video's source file (a local folder or an http(s) mirror,
`stvr_data.fetch`; opt-in, YouTube through yt-dlp, `stvr_data.youtube`), cuts its clip
with `stvr_data.media.cut_clip`, and returns one row per video with the clip's times,
size, hash and a status (`STATUSES`); one bad video never stops the others. Clips a
previous run finished with the same options are kept.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import pandas as pd
from tqdm import tqdm

from stvr_data import atomic, media
from stvr_data.errors import MediaError, OutputWriteError, TransientMediaError
from stvr_data.fetch import VideoMissingError, fetch_video
from stvr_data.manifest import sha256_file
from stvr_data.outdir import within
from stvr_data.process import is_transient_os_error
from stvr_data.youtube import ToolUnusableError, check_youtube_tool, download_youtube

CLIP_DIR = "clips"
# retryable: failed for a reason that may pass (mirror outage, full disk, ffmpeg killed);
# tool_unusable: the download tool could not be used (yt-dlp without a JavaScript runtime,
# a yt-dlp failure unrelated to the video). For both the build exits non-zero and the same
# command tries these videos again.
STATUSES = ("ok", "missing", "corrupt", "retryable", "tool_unusable")
RETRY_STATUSES = ("retryable", "tool_unusable")
MEDIA_COLUMNS = ("clip_path", "clip_start", "clip_end", "fps", "width", "height", "status", "error",
                 "sha256")


@dataclass(frozen=True)
class MediaOptions:
    """How `prepare_media` cuts clips: times in seconds, fps in frames/s, size (W, H)."""

    start: float = media.CLIP_START
    end: float = media.CLIP_END
    fps: int = media.CLIP_FPS
    size: tuple[int, int] = media.CLIP_SIZE
    threads: int | None = None
    force: bool = False
    youtube_fallback: bool = False


def default_download_dir() -> Path:
    """Where videos fetched over HTTP are kept: outside the benchmark directory, whose
    files are all hashed into the dataset card, and shared between builds."""
    cache = os.environ.get("STVR_CACHE") or Path.home() / ".cache" / "stvr"
    return Path(cache) / "videos"


def prepare_media(videos: pd.DataFrame, source: str, out_dir, *, workers: int = 1,
                  start: float = media.CLIP_START, end: float = media.CLIP_END, fps: int = media.CLIP_FPS,
                  size: tuple[int, int] = media.CLIP_SIZE, force: bool = False,
                  youtube_fallback: bool = False, download_dir=None,
                  progress: bool = True, stage_dir=None) -> pd.DataFrame:
    """Fetch every video and cut its clip ``<out_dir>/clips/<video_id>.mp4``.

    `videos` needs columns ``video_id`` and ``source_file`` (the file name at `source`, a
    local directory or an http(s) base URL; null when unknown); other columns are kept.
    Returns a copy with ``clip_path`` (relative to `out_dir`, null unless ok),
    ``clip_start``/``clip_end`` (s, source timeline; ``clip_end`` is where the clip's
    last frame ends, ``== clip_start`` when there is no clip), ``fps``, ``width``,
    ``height``, ``status`` (see `STATUSES`), ``error`` (null when ok) and ``sha256``
    (of the clip file, null unless ok).

    One bad video never stops the others: it is reported in its row. Clips already
    finished with the same options are kept unless `force`. With `stage_dir`, new clips
    are cut there (same relative path) and finished clips are looked for there first, then
    in `out_dir`; ``clip_path`` is always relative. Videos run in `workers`
    threads, each driving its own ffmpeg; rows and clip bytes do not depend on `workers`.
    HTTP downloads are kept in `download_dir` (default `default_download_dir()`).
    With `youtube_fallback`, yt-dlp's setup is checked first (`youtube.check_youtube_tool`:
    `ToolUnusableError` before any video when it cannot work).
    """
    for column in ("video_id", "source_file"):
        if column not in videos.columns:
            raise MediaError(f"videos table: missing column '{column}'")
    if youtube_fallback:
        check_youtube_tool()
    options = MediaOptions(start=start, end=end, fps=fps, size=tuple(size),
                           threads=_decoder_threads(workers), force=force,
                           youtube_fallback=youtube_fallback)
    out_dir = Path(out_dir)
    stage_dir = Path(stage_dir) if stage_dir is not None else out_dir
    download_dir = Path(download_dir) if download_dir is not None else default_download_dir()
    jobs = list(zip(videos["video_id"], videos["source_file"], strict=True))

    def one(job):
        return _media_row(job[0], job[1], source, (stage_dir, out_dir), download_dir, options)

    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        # pool.map keeps input order, so the table is the same whatever the finishing order.
        rows = list(tqdm(pool.map(one, jobs), total=len(jobs), desc="clips", unit="video",
                         disable=not progress))
    finally:
        # On Ctrl-C, start no further video; running ffmpegs got the same SIGINT.
        pool.shutdown(wait=True, cancel_futures=True)
    return media_table(videos, rows)


def media_table(videos: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    """`videos` with the `MEDIA_COLUMNS` of `rows` (one dict per video, in the same order):
    the one place the media step's result is assembled, so a table made from rows read
    back (a merge of media shards) is the table `prepare_media` makes."""
    result = videos.reset_index(drop=True).copy()
    for column in MEDIA_COLUMNS:
        result[column] = [row[column] for row in rows]
    return result


def _decoder_threads(workers: int) -> int | None:
    # One worker: let ffmpeg use every core. Several: share the cores out so that the
    # ffmpeg processes do not fight over them (measured in benchmarks/media.py).
    if workers <= 1:
        return None
    return max(1, (os.cpu_count() or 1) // workers)


def _media_row(video_id: str, source_file, source: str, dirs: tuple[Path, Path], download_dir: Path,
               options: MediaOptions) -> dict:
    relative = f"{CLIP_DIR}/{video_id}.mp4"
    dest = within(dirs[0], relative)
    try:
        path, info = _finished(dirs, relative, options)
        if info is None:
            path = dest
            src = _obtain(video_id, source_file, source, download_dir, options.youtube_fallback)
            info = media.cut_clip(src, dest, start=options.start, end=options.end, fps=options.fps,
                                  size=options.size, threads=options.threads)
    except VideoMissingError as err:
        return _row(None, options, None, "missing", str(err))
    except TransientMediaError as err:
        return _row(None, options, None, "retryable", str(err))
    except ToolUnusableError as err:
        return _row(None, options, None, "tool_unusable", str(err))
    except MediaError as err:
        return _row(None, options, None, "corrupt", str(err))
    except OutputWriteError as err:  # a full disk while downloading or cutting
        if not err.disk_full:
            raise
        return _row(None, options, None, "retryable", f"{video_id}: {err}")
    except OSError as err:
        if not is_transient_os_error(err):
            raise
        return _row(None, options, None, "retryable", f"{video_id}: {err}")
    return _row(relative, options, info, "ok", None, sha256=sha256_file(path))


def _finished(dirs: tuple[Path, Path], relative: str, options: MediaOptions):
    """(path, info) of a clip a previous run finished with the same options, looked for in
    each of `dirs`; (None, None) when there is none or with `force`."""
    for folder in dirs if not options.force else ():
        path = within(folder, relative)
        info = finished_clip(path, options)
        if info is not None:
            return path, info
    return None, None


def _row(clip_path, options: MediaOptions, info: media.VideoInfo | None, status: str, error,
         sha256: str | None = None) -> dict:
    frames = info.num_frames if info is not None else 0
    width, height = (info.width, info.height) if info is not None else options.size
    return {"clip_path": clip_path, "clip_start": float(options.start),
            "clip_end": float(options.start) + frames / options.fps, "fps": float(options.fps),
            "width": int(width), "height": int(height), "status": status, "error": error,
            "sha256": sha256}


def finished_clip(dest: Path, options: MediaOptions) -> media.VideoInfo | None:
    """The clip at `dest` if a previous run finished it with the same options, else None.

    A clip only gets its final name by an atomic rename after ffmpeg succeeded, so one
    that opens and carries the same `clip_tag` is complete.
    """
    if not dest.is_file():
        return None
    try:
        with av.open(str(dest)) as container:
            tag = container.metadata.get("comment")
            info = media.stream_info(container, container.streams.video[0])
    except (av.error.FFmpegError, IndexError, MediaError):
        return None
    wanted = media.clip_tag(options.start, options.end, options.fps, options.size)
    return info if tag == wanted and info.num_frames else None


def _obtain(video_id: str, source_file, source: str, download_dir: Path,
            youtube_fallback: bool) -> Path:
    """The local source video: from `source`, else (opt-in) from YouTube."""
    try:
        if source_file is None or pd.isna(source_file) or not str(source_file):
            raise VideoMissingError(f"{video_id}: no file name in the video list")
        return fetch_video(source, str(source_file), download_dir)
    except VideoMissingError as err:
        if not youtube_fallback:
            raise
        try:
            return download_youtube(video_id, download_dir / "youtube")
        except (VideoMissingError, TransientMediaError, ToolUnusableError) as fallback:
            # The fallback's verdict decides the status; the message keeps both.
            raise type(fallback)(f"{err}; YouTube fallback: {fallback}") from None


def write_media_report(frame: pd.DataFrame, path, extra: list[str] = ()) -> Path:
    """Write a plain-text list of the videos whose status is not ok, with the reason.

    `frame` is `prepare_media`'s result, whole or only its failed rows (the text counts
    only what it is given); `extra` lines (tab-separated like the rows) are appended.
    Written atomically; returns `path`.
    """
    path = Path(path)
    bad = frame[frame["status"] != "ok"]
    counts = bad["status"].value_counts()
    detail = ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES[1:]
                       if s not in RETRY_STATUSES or counts.get(s, 0))
    lines = [f"Videos that could not be had: {len(bad)} ({detail}); their pairs are left out."]
    if len(bad) < len(frame):
        lines.append(f"Videos with clips: {len(frame) - len(bad)}.")
    lines += ["", "video_id\tstatus\tsource_file\treason"]
    for row in bad.sort_values("video_id").itertuples(index=False):
        lines.append(f"{row.video_id}\t{row.status}\t{row.source_file}\t{row.error}")
    lines += list(extra)
    return atomic.write_text(path, "\n".join(lines) + "\n")
