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
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import ffmpeg
import imageio_ffmpeg
import numpy as np
from av.video.reformatter import VideoReformatter

from stvr_data.atomic import atomic_write
from stvr_data.errors import MediaError
from stvr_data.process import run_child

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
            return stream_info(container, container.streams.video[0])
    except av.error.FFmpegError as err:
        raise MediaError(f"{path}: cannot open video ({err})") from None


def stream_info(container, stream) -> VideoInfo:
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
