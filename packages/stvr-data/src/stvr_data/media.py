"""Clip files: probe source videos, cut them to the annotated segment, read frames back.

AVA annotates the 900-1800 s segment of each video at 1 Hz (paper §5). The model reads
8-frame clips at 24 fps (1/3 s, three per keyframe second) at 320x320, so each source
video becomes ONE clip file ``clips/<video_id>.mp4`` covering ``[start, end)`` of the
source timeline (the authors' ``split_videos.py`` wrote one file per second instead).

Time convention: output frame ``k`` of a clip shows the source frame *on screen* at
source time ``start + k / fps``, i.e. the last source frame whose presentation time is
``<= start + k / fps`` (sample and hold). Source time is measured from the start of the
file, as ffmpeg's ``-ss`` measures it. The cut is one ffmpeg run, one decode of the
source: a fast seek to the keyframe before ``start``, then ffmpeg's ``fps`` filter with
``round=up`` (which is exactly sample and hold on the integer timestamps) and
``start_time=0`` (which drops the frames before ``start`` but keeps the one on screen
at ``start``), then ``scale``, then H.264 with a keyframe every 8 frames so that any
8-frame clip is reached by decoding at most 7 extra frames.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import ffmpeg
import imageio_ffmpeg
import numpy as np
import pandas as pd
from av.video.reformatter import VideoReformatter
from tqdm import tqdm

from stvr_data import atomic
from stvr_data.atomic import atomic_write
from stvr_data.errors import MediaError, OutputWriteError, TransientMediaError
from stvr_data.fetch import VideoMissingError, fetch_video
from stvr_data.manifest import sha256_file
from stvr_data.outdir import within
from stvr_data.process import is_transient_os_error, run_child
from stvr_data.youtube import ToolUnusableError, check_youtube_tool, download_youtube

CLIP_START = 900.0
CLIP_END = 1800.0
CLIP_FPS = 24
CLIP_SIZE = (320, 320)
KEYFRAME_INTERVAL = 8  # one 8-frame model clip per GOP: random access decodes <= 7 extra frames
# x264's bitstream depends on its thread count, so the count is fixed, not left to the
# machine; its cost against a free choice is measured in benchmarks/media.py.
ENCODER_THREADS = 2
CRF = 18  # visually lossless at 320x320; the detector should not learn the codec's artefacts


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds.

    duration: seconds of video from the start of the file (where the video stream ends).
    fps: average frame rate (frames/s). width, height: pixels. codec: decoder name.
    num_frames: frame count from the container index, None when the container has none.
    """

    duration: float
    fps: float
    width: int
    height: int
    codec: str
    num_frames: int | None = None


def probe_video(path) -> VideoInfo:
    """Read a video file's stream information with PyAV (no decoding).

    Raises `MediaError` naming the file if it cannot be opened or has no video stream.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            return _stream_info(container, container.streams.video[0])
    except av.error.FFmpegError as err:
        raise MediaError(f"{path}: cannot open video ({err})") from None


def _stream_info(container, stream) -> VideoInfo:
    file_start = (container.start_time or 0) / av.time_base
    if stream.duration is not None and stream.time_base is not None:
        stream_start = float((stream.start_time or 0) * stream.time_base)
        duration = stream_start - file_start + float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        raise MediaError(f"{container.name}: video has no duration")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return VideoInfo(
        duration=duration,
        fps=float(rate) if rate else 0.0,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        codec=stream.codec_context.name,
        num_frames=stream.frames or None,
    )


def clip_frame_count(start: float, end: float, fps: float) -> int:
    """Number of output frames k >= 0 with ``start + k / fps < end``."""
    if end <= start:
        return 0
    # The 1e-9 keeps an exact multiple (e.g. 900 s at 24 fps) from gaining a frame to float error.
    return math.ceil((end - start) * fps - 1e-9)


def clip_tag(start: float, end: float, fps: int, size: tuple[int, int]) -> str:
    """The options a clip was cut with, stored in its metadata so that a later run can tell
    a finished clip made with other options from one it may skip."""
    return f"stvr-clip start={float(start)} end={float(end)} fps={fps} size={size[0]}x{size[1]}"


def cut_command(src, dest, *, start: float, end: float, frames: int, fps: int,
                size: tuple[int, int], threads: int | None = None):
    """The ffmpeg-python graph `cut_clip` runs: `frames` output frames from `start` (s).

    `threads` sets the decoder's threads (None: ffmpeg's choice). The encoder always
    runs `ENCODER_THREADS` threads, whatever the machine or the parallelism, because
    x264's output depends on its thread count: so a clip's bytes (and the dataset
    card's hashes) do not depend on ``--workers``.
    """
    width, height = size
    decoder = {} if threads is None else {"threads": threads}
    # Absolute paths: AVA ids may start with '-', which ffmpeg would read as an option.
    src, dest = os.path.abspath(src), os.path.abspath(dest)
    video = (
        ffmpeg.input(src, ss=float(start), noaccurate_seek=None, **decoder)
        .video.filter("fps", fps=fps, start_time=0, round="up")
        .filter("scale", width, height)
    )
    return video.output(
        dest, format="mp4", vcodec="libx264", pix_fmt="yuv420p", crf=CRF, preset="veryfast",
        g=KEYFRAME_INTERVAL, keyint_min=KEYFRAME_INTERVAL, sc_threshold=0, threads=ENCODER_THREADS,
        fps_mode="passthrough", movflags="+faststart", an=None, sn=None,
        metadata=f"comment={clip_tag(start, end, fps, size)}", **{"frames:v": frames},
    ).global_args("-nostdin", "-loglevel", "error", "-y")


def cut_clip(src, dest, *, start: float = CLIP_START, end: float = CLIP_END, fps: int = CLIP_FPS,
             size: tuple[int, int] = CLIP_SIZE, threads: int | None = None) -> VideoInfo:
    """Cut ``[start, end)`` (s, source timeline) of `src` into a constant-`fps` clip `dest`.

    Output frame k shows source time ``start + k / fps`` (see the module docstring);
    `end` is clamped to the source's end. Frames are resized to `size` = (W, H) and
    encoded as H.264 mp4. `threads` is ffmpeg's decoder thread count (None: ffmpeg's
    choice, all cores). The clip is written to a temporary name and renamed
    when complete, so `dest` never holds a partial clip. Returns the clip's `VideoInfo`.

    Raises `MediaError` for an unreadable source, a source that ends before `start`, or
    an ffmpeg failure (with ffmpeg's last error line).
    """
    source = probe_video(src)
    frames = clip_frame_count(start, min(end, source.duration), fps)
    if frames == 0:
        raise MediaError(f"{src}: video ends at {source.duration:.2f} s, before the clip start {start} s")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A name unique to this run, so that two runs never write one file; a build removes
    # those of dead runs.
    with atomic_write(dest, unique=True) as tmp:
        command = cut_command(src, tmp, start=start, end=end, frames=frames, fps=fps, size=size,
                              threads=threads)
        run_child(command.compile(cmd=imageio_ffmpeg.get_ffmpeg_exe()), name=src)
        info = _probe_output(tmp, src, start)
        if not info.num_frames:
            raise MediaError(f"{src}: ffmpeg decoded no frame after {start} s")
    return info


def _probe_output(tmp: Path, src, start: float) -> VideoInfo:
    """The clip ffmpeg wrote; an unreadable one is reported under the source's name (the
    temporary file means nothing to the user)."""
    try:
        return probe_video(tmp)
    except MediaError:
        raise MediaError(f"{src}: ffmpeg wrote no readable clip from {start} s") from None


def read_frames(clip_path, start_time: float, num_frames: int, *, clip_start: float = CLIP_START,
                fps: int = CLIP_FPS) -> np.ndarray:
    """Decode `num_frames` consecutive frames of a clip made by `cut_clip`.

    Returns uint8 RGB ``[num_frames, H, W, 3]``: frame k shows source time
    ``start_time + k / fps``, i.e. clip frame ``round((start_time - clip_start) * fps) + k``.
    Frames outside the clip (before its start or past its end, e.g. a video shorter than
    1800 s) are returned black (all zero) rather than raising, so that a loader gets
    fixed-size input; the caller knows the clip's span from the videos table.
    Seeks to the keyframe before the first frame, so at most 7 extra frames decode.
    Decodes and converts to RGB in one thread (a data loader's processes are its
    parallelism; FFmpeg's default starts threads per core for each decoder and each
    converter), with one converter for all frames (PyAV's `to_ndarray` sets one up,
    threads included, for every frame).
    """
    first = round((start_time - clip_start) * fps)
    try:
        with av.open(str(clip_path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            out = np.zeros((num_frames, stream.codec_context.height, stream.codec_context.width, 3),
                           np.uint8)
            if first + num_frames <= 0:
                return out
            _decode_into(container, stream, out, first, fps)
            return out
    except av.error.FFmpegError as err:
        raise MediaError(f"{clip_path}: cannot read frames ({err})") from None


def _decode_into(container, stream, out: np.ndarray, first: int, fps: int) -> None:
    """Fill ``out[i]`` with clip frame ``first + i`` for every such frame that exists."""
    begin = max(first, 0)
    start_pts = stream.start_time or 0
    container.seek(start_pts + int(Fraction(begin, fps) / stream.time_base), stream=stream,
                   backward=True, any_frame=False)
    to_rgb = VideoReformatter()
    for frame in container.decode(stream):
        index = round((frame.pts - start_pts) * stream.time_base * fps)
        if index >= first + len(out):
            break
        if index >= begin:
            out[index - first] = to_rgb.reformat(frame, format="rgb24", threads=1).to_ndarray()


# ---------------------------------------------------------------------------------------
# The media step of a benchmark build: every video fetched, cut and accounted for.

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

    start: float = CLIP_START
    end: float = CLIP_END
    fps: int = CLIP_FPS
    size: tuple[int, int] = CLIP_SIZE
    threads: int | None = None
    force: bool = False
    youtube_fallback: bool = False


def default_download_dir() -> Path:
    """Where videos fetched over HTTP are kept: outside the benchmark directory, whose
    files are all hashed into the dataset card, and shared between builds."""
    cache = os.environ.get("STVR_CACHE") or Path.home() / ".cache" / "stvr"
    return Path(cache) / "videos"


def prepare_media(videos: pd.DataFrame, source: str, out_dir, *, workers: int = 1,
                  start: float = CLIP_START, end: float = CLIP_END, fps: int = CLIP_FPS,
                  size: tuple[int, int] = CLIP_SIZE, force: bool = False,
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
            info = cut_clip(src, dest, start=options.start, end=options.end, fps=options.fps,
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


def _row(clip_path, options: MediaOptions, info: VideoInfo | None, status: str, error,
         sha256: str | None = None) -> dict:
    frames = info.num_frames if info is not None else 0
    width, height = (info.width, info.height) if info is not None else options.size
    return {"clip_path": clip_path, "clip_start": float(options.start),
            "clip_end": float(options.start) + frames / options.fps, "fps": float(options.fps),
            "width": int(width), "height": int(height), "status": status, "error": error,
            "sha256": sha256}


def finished_clip(dest: Path, options: MediaOptions) -> VideoInfo | None:
    """The clip at `dest` if a previous run finished it with the same options, else None.

    A clip only gets its final name by an atomic rename after ffmpeg succeeded, so one
    that opens and carries the same `clip_tag` is complete.
    """
    if not dest.is_file():
        return None
    try:
        with av.open(str(dest)) as container:
            tag = container.metadata.get("comment")
            info = _stream_info(container, container.streams.video[0])
    except (av.error.FFmpegError, IndexError, MediaError):
        return None
    wanted = clip_tag(options.start, options.end, options.fps, options.size)
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
