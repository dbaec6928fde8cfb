"""Encode a synthetic scene into a real video file with PyAV.

AVA's media step cuts 900-1800 s of each source, so a sample video must really have
a timeline that long, yet a 15-minute file per sample video would be slow to make and
large. The file is therefore variable-frame-rate: the static backdrop at full rate
for the first second (probing tools infer the rate from the first frames), then one
backdrop frame every `prefix_step` seconds, then full frame rate from `lead` seconds
before the scene's onset to `tail` seconds after its actors leave. ``ffmpeg -ss 900
-i file`` and PyAV seeking see an ordinary file whose frames before 900 s are few.
Keyframes every two seconds keep seeks short. The container reports the nominal rate
(30) as its frame rate; only the *average* rate (frames / duration) is low.

Encoders (FFmpeg as bundled with PyAV): H.264 (libx264) in .mp4 and .mkv, VP8
(libvpx) in .webm, MPEG-4 part 2 in .avi. Muxers run with ``fflags=+bitexact`` and
encoders with one thread, so that the same scene gives the same bytes. libvpx needs a
*negative* cpu-used: a positive one adapts its speed to wall-clock time, and its
"good" deadline falls back to that mode for frames shown longer than 1 s (the
sparse prefix), which made the .webm bytes depend on the machine's load. Its
quality is set by the quantiser range; the bitrate is only a loose ceiling.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stvr_data.atomic import atomic_write
from stvr_data.errors import MediaError
from stvr_data.render import render_background, render_frame
from stvr_data.scene import Scene, present

# The cheapest motion search costs a few percent in size here and saves a third of
# the encoding time (flat colours and whole-pixel motion need no sub-pixel search).
_X264 = {"preset": "veryfast", "crf": "27", "x264-params": "me=dia:subme=1"}
# file suffix -> (FFmpeg muxer, encoder, encoder options)
CONTAINERS: dict[str, tuple[str, str, dict[str, str]]] = {
    ".mp4": ("mp4", "libx264", _X264),
    ".mkv": ("matroska", "libx264", _X264),
    ".webm": ("webm", "libvpx", {"deadline": "realtime", "cpu-used": "-8", "qmin": "28", "qmax": "44", "b": "20M"}),
    ".avi": ("avi", "mpeg4", {"qscale": "4"}),
}


def timeline(scene: Scene, fps: int, *, lead: int, tail: int, prefix_step: int) -> np.ndarray:
    """Presentation times of every frame, in units of 1/`fps` s (int64, increasing).

    The first second at full rate (probing tools such as ffprobe infer the frame rate
    from the first frames), then one frame every `prefix_step` s, then every frame
    from ``onset - lead`` to ``onset + seconds + tail`` (exclusive). `prefix_step` 0
    gives a plain constant-rate file from 0 s, as short clips (UCF101-24) have.
    """
    dense_start = max(0, scene.onset - lead)
    end = scene.onset + scene.seconds + tail
    if prefix_step > 0 and dense_start > 1:
        head = np.arange(0, fps, dtype=np.int64)
        sparse = np.arange(prefix_step, dense_start, prefix_step, dtype=np.int64) * fps
        prefix = np.concatenate([head, sparse])
    else:
        dense_start = 0
        prefix = np.zeros(0, dtype=np.int64)
    dense = np.arange(dense_start * fps, end * fps, dtype=np.int64)
    return np.concatenate([prefix, dense])


def encode_scene(path: Path, scene: Scene, fps: int, *, lead: int = 4, tail: int = 12,
                 prefix_step: int = 8) -> int:
    """Write `scene` to `path` (container chosen by suffix); returns the frame count.

    Written atomically (`stvr_data.atomic`), so an interrupted run never leaves a file
    that looks finished.
    """
    if path.suffix not in CONTAINERS:
        raise MediaError(f"{path}: cannot write '{path.suffix}' files (known: {', '.join(CONTAINERS)})")
    muxer, codec, options = CONTAINERS[path.suffix]
    pts = timeline(scene, fps, lead=lead, tail=tail, prefix_step=prefix_step)
    backdrop = render_background(scene)
    canvas = np.empty(backdrop.shape, dtype=np.uint8)  # C order, as PyAV needs
    with atomic_write(path) as partial, \
            av.open(str(partial), "w", format=muxer, options={"fflags": "+bitexact"}) as container:
        stream = _add_stream(container, codec, options, scene, fps)
        # The empty backdrop is converted once and re-sent with new timestamps.
        still = av.VideoFrame.from_ndarray(backdrop, format="rgb24").reformat(format="yuv420p")
        # `drawn` shares `canvas`'s memory: no allocation per frame. Reusing it is safe
        # because the encoder only ever sees the yuv420p copy made from it.
        drawn = av.VideoFrame.from_numpy_buffer(canvas, format="rgb24")
        for p in pts.tolist():
            t = p / fps
            frame = still
            if present(scene, t):
                render_frame(scene, t, backdrop, canvas)
                frame = drawn
            frame.pts, frame.time_base = p, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return int(len(pts))


def _add_stream(container, codec: str, options: dict[str, str], scene: Scene, fps: int):
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = scene.width, scene.height, "yuv420p"
    stream.codec_context.time_base = Fraction(1, fps)
    stream.codec_context.gop_size = 2 * fps
    # One thread: the files are tiny, and multi-threaded encoders slow down badly on
    # a busy machine while giving nothing back at 320x240.
    stream.codec_context.thread_count = 1
    stream.options = dict(options)
    return stream
