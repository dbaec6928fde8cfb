"""Media step throughput: seconds of source video turned into clips per wall second.

Compares, on the same generated source video (H.264, AVA-like resolution and frame
rate), one plain ffmpeg command doing the same cut / resample to 24 fps / resize to
320x320 / H.264 encode, with `stvr_data.media.cut_clip` and `prepare_media` (which add
probing, the atomic rename, the finished-clip check and per-video bookkeeping). Runs
are interleaved and repeated. Wall time on a shared machine swings with other jobs'
load, so the best wall time of each variant is compared, and the median CPU time
(this process plus its ffmpeg children) is given as the load-independent measure of
the work done. The tool's overhead goal is < 20%.

    .venv/bin/python benchmarks/media.py                 # 60 s 1280x720 30 fps source
    .venv/bin/python benchmarks/media.py --seconds 20 --videos 2 --repeat 1   # quick
    .venv/bin/python benchmarks/media.py --smoke     # 6 s 320x240 source: a check that it runs
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import imageio_ffmpeg
import pandas as pd
from machine import describe  # benchmarks/machine.py (the script's folder is on sys.path)

from stvr_data import media, media_step

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def make_source(path: Path, seconds: float, size: str, rate: int) -> Path:
    """A synthetic source with motion and detail (testsrc2), keyframes every ~8 s like
    typical YouTube uploads, so the seek to the cut start must decode a partial GOP."""
    if not path.exists():
        subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                        "-i", f"testsrc2=size={size}:rate={rate}", "-t", str(seconds),
                        "-c:v", "libx264", "-preset", "veryfast", "-g", str(8 * rate),
                        "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def plain_ffmpeg(src: Path, dest: Path, start: float, end: float) -> None:
    """What one would type by hand for the same clip: same filters and encoder settings."""
    subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-y", "-ss", str(start), "-i", str(src),
                    "-t", str(end - start), "-vf", "fps=24,scale=320:320", "-an",
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", str(media.CRF),
                    "-g", str(media.KEYFRAME_INTERVAL), "-pix_fmt", "yuv420p", str(dest)], check=True)


def timed(fn) -> tuple[float, float]:
    """Wall seconds and CPU seconds (this process and its ffmpeg children) of `fn()`.

    CPU time is the steadier figure on a shared machine: it does not grow when other
    jobs take the cores, only when the work does.
    """
    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    wall, used = time.perf_counter(), cpu()
    fn()
    return time.perf_counter() - wall, cpu() - used


def machine() -> str:
    version = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    return describe(f"PyAV {av.__version__}", version)


Timings = dict[str, list[tuple[float, float]]]


def interleaved(runs: dict, repeat: int) -> Timings:
    """Time every variant `repeat` times, rotating the order each round so that a burst
    of load from other jobs does not always fall on the same variant."""
    names = list(runs)
    times: Timings = {name: [] for name in names}
    for round_ in range(repeat):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(timed(runs[name]))
    return times


def bench_single(src: Path, work: Path, start: float, end: float, repeat: int) -> Timings:
    """One video: plain ffmpeg vs cut_clip vs prepare_media(workers=1)."""
    rows = pd.DataFrame({"video_id": ["v0"], "source_file": [src.name]})
    frames = media.clip_frame_count(start, min(end, media.probe_video(src).duration), media.CLIP_FPS)
    # cut_clip's own ffmpeg command line, run by hand: separates the cost of its ffmpeg
    # settings (fixed encoder threads, sample-and-hold fps) from the Python around it.
    tool_command = media.cut_command(src, work / "tool_command.mp4", start=start, end=end, frames=frames,
                                     fps=media.CLIP_FPS, size=media.CLIP_SIZE).compile(cmd=FFMPEG)
    return interleaved({
        "plain ffmpeg": lambda: plain_ffmpeg(src, work / "plain.mp4", start, end),
        "cut_clip's ffmpeg command alone": lambda: subprocess.run(tool_command, check=True),
        "cut_clip": lambda: media.cut_clip(src, work / "cut.mp4", start=start, end=end),
        "prepare_media": lambda: media_step.prepare_media(
            rows, str(src.parent), work / "bench1", start=start, end=end, force=True, progress=False),
    }, repeat)


def bench_many(src: Path, work: Path, start: float, end: float, videos: int,
               repeat: int) -> Timings:
    """Several videos: plain ffmpeg one after the other vs prepare_media with 1 and 2 workers."""
    library = work / "library"
    library.mkdir(exist_ok=True)
    for i in range(videos):
        link = library / f"v{i}.mp4"
        if not link.exists():
            link.symlink_to(src)
    rows = pd.DataFrame({"video_id": [f"v{i}" for i in range(videos)],
                         "source_file": [f"v{i}.mp4" for i in range(videos)]})

    def plain_all():
        for i in range(videos):
            plain_ffmpeg(library / f"v{i}.mp4", work / f"plain{i}.mp4", start, end)

    def tool(workers):
        out = media_step.prepare_media(rows, str(library), work / f"bench{workers}w", workers=workers,
                                       start=start, end=end, force=True, progress=False)
        assert (out["status"] == "ok").all(), out["error"].tolist()

    return interleaved({f"plain ffmpeg x{videos}, sequential": plain_all,
                        f"prepare_media x{videos}, workers=1": lambda: tool(1),
                        f"prepare_media x{videos}, workers=2": lambda: tool(2)}, repeat)


def bench_read(clip: Path, start: float, reads: int = 200) -> None:
    """Random access as the data loader does it: one 8-frame model clip (and one 2 s
    reference of 48 frames) at random 1/3 s positions of a cut clip."""
    import numpy as np

    frames = media.probe_video(clip).num_frames
    rng = np.random.default_rng(0)
    for count in (8, 48):
        positions = rng.integers(0, max(1, (frames - count) // 8), reads) * 8
        begin = time.perf_counter()
        for k in positions:
            media.read_frames(clip, start + k / media.CLIP_FPS, count, clip_start=start)
        wall = time.perf_counter() - begin
        print(f"  read_frames({count:2d} frames) at random positions: {reads / wall:7.1f} reads/s "
              f"({1000 * wall / reads:.1f} ms each)")


def report(times: Timings, source_seconds: float, baseline: str) -> None:
    """Per variant: best and median wall time, throughput and overhead against `baseline`
    (from the best wall time, the least disturbed by other jobs), median CPU time."""
    base_best = min(w for w, _ in times[baseline])
    base_cpu = statistics.median(c for _, c in times[baseline])
    for name, runs in times.items():
        best = min(w for w, _ in runs)
        median = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"  {name:34s} wall best {best:6.2f} s (median {median:6.2f}) "
              f"{source_seconds / best:6.1f} source-s/s {100 * (best / base_best - 1):+6.1f}% | "
              f"CPU {cpu:6.2f} s {100 * (cpu / base_cpu - 1):+6.1f}%")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the source video")
    parser.add_argument("--start", type=float, default=5.0, help="cut start (s); the cut runs to the end")
    parser.add_argument("--size", default="1280x720", help="source resolution")
    parser.add_argument("--rate", type=int, default=30, help="source frame rate")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--videos", type=int, default=4, help="videos in the parallel comparison")
    parser.add_argument("--reads", type=int, default=200, help="random reads of a cut clip")
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here (default: temp)")
    parser.add_argument("--smoke", action="store_true",
                        help="a 6 s 320x240 source, 2 videos, one round, 10 reads: a check that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.start, args.size, args.videos, args.repeat, args.reads = 6.0, 1.0, "320x240", 2, 1, 10
    work = args.workdir or Path(tempfile.mkdtemp(prefix="stvr-media-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    try:
        src = make_source(work / f"source_{args.size}_{args.rate}_{args.seconds:g}.mp4",
                          args.seconds, args.size, args.rate)
        span = args.seconds - args.start
        print(f"source: {args.size} {args.rate} fps H.264, cut [{args.start:g}, {args.seconds:g}) s "
              f"-> 24 fps 320x320 ({span:g} source-s per video)")
        print("one video:")
        report(bench_single(src, work, args.start, args.seconds, args.repeat), span, "plain ffmpeg")
        print(f"{args.videos} videos:")
        many = bench_many(src, work, args.start, args.seconds, args.videos, args.repeat)
        report(many, span * args.videos, next(iter(many)))
        print("reading a 320x320 clip back:")
        bench_read(work / "cut.mp4", args.start, args.reads)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
