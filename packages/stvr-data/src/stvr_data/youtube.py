"""YouTube through yt-dlp: the opt-in fallback for AVA videos the mirror lacks.

Many AVA videos have since been taken down, and re-encodes may differ from the mirror's
copy, so this is a fallback only. Current yt-dlp must solve YouTube's JavaScript
challenges to get any format: it needs its ``yt-dlp-ejs`` scripts (the
``yt-dlp[default]`` extra) and a JavaScript runtime it supports (`JS_RUNTIMES`), checked
once before any download (`check_youtube_tool`). A failed download is told apart by its
cause (`youtube_failure`): the video is gone (`VideoMissingError`), the failure may pass
(`TransientMediaError`), or yt-dlp could not be used (`ToolUnusableError`: fix the
tool, then run again).
"""

from __future__ import annotations

from pathlib import Path

from stvr_data.errors import MediaError, TransientMediaError, one_line
from stvr_data.fetch import VideoMissingError


class ToolUnusableError(MediaError):
    """The download tool (yt-dlp) could not be used: no JavaScript runtime, its scripts
    missing, or a yt-dlp failure that says nothing about the video. Not a verdict on the
    video: once the tool is fixed, the same command tries it again."""


# The JavaScript runtimes yt-dlp can solve YouTube's challenges with, in its order of
# preference (yt-dlp enables only deno unless told; `youtube_options` enables them all).
JS_RUNTIMES = ("deno", "node", "quickjs", "bun")
# Words of YouTube's reasons for a video that is not there for anyone (lower case).
GONE_REASONS = ("video unavailable", "private video", "video is private", "has been removed",
                "no longer available", "has been terminated", "copyright", "members-only",
                "join this channel", "does not exist")


def _runtime_info(name: str):
    """yt-dlp's own finding of runtime `name`: its ``JsRuntimeInfo`` (``name``, ``version``,
    ``supported``), None when it is not installed."""
    import yt_dlp  # noqa: F401  (registers the runtimes)
    from yt_dlp.globals import supported_js_runtimes

    runtime = supported_js_runtimes.value.get(name)
    return runtime().info if runtime is not None else None


def _minimum(name: str) -> str:
    from yt_dlp.globals import supported_js_runtimes

    version = getattr(supported_js_runtimes.value.get(name), "MIN_SUPPORTED_VERSION", None)
    return f"{name} >= {'.'.join(map(str, version))}" if version else name


def check_youtube_tool() -> str:
    """The JavaScript runtime yt-dlp will use for YouTube (``'deno 2.5.0'``), found as
    yt-dlp finds it (on PATH or in Python's scripts folder).

    Raises `ToolUnusableError`, one line saying what to install, when yt-dlp's challenge
    scripts (``yt-dlp-ejs``) are missing or no supported runtime is found.
    """
    import importlib.util

    if importlib.util.find_spec("yt_dlp_ejs") is None:
        raise ToolUnusableError("--youtube-fallback: yt-dlp lacks its YouTube challenge scripts "
                                "(package yt-dlp-ejs): install yt-dlp[default]")
    too_old = []
    for name in JS_RUNTIMES:
        info = _runtime_info(name)
        if info is not None and info.supported:
            return f"{info.name} {info.version}"
        if info is not None:
            too_old.append(f"{info.name} {info.version}")
    found = f" ({', '.join(too_old)} too old)" if too_old else ""
    raise ToolUnusableError(
        f"--youtube-fallback: yt-dlp finds no JavaScript runtime for YouTube{found}: install one of "
        f"{', '.join(_minimum(n) for n in JS_RUNTIMES)} (e.g. pip install deno) and run again")


def youtube_failure(video_id: str, err: Exception) -> MediaError:
    """The error a failed yt-dlp download of `video_id` is reported as: `VideoMissingError`
    when YouTube says the video is gone (removed, private, terminated account, blocked in
    this country), `TransientMediaError` for a network failure or a rate limit, else
    `ToolUnusableError` (a yt-dlp failure unrelated to the video)."""
    from yt_dlp.networking.exceptions import TransportError
    from yt_dlp.utils import GeoRestrictedError

    original = (getattr(err, "exc_info", None) or (None, None, None))[1]
    text = f"youtube:{video_id}: {one_line(err).removeprefix('ERROR: ')}"
    lowered = text.lower()
    if isinstance(original, GeoRestrictedError) or any(reason in lowered for reason in GONE_REASONS):
        return VideoMissingError(text)
    if (isinstance(original, TransportError) or isinstance(getattr(original, "cause", None), TransportError)
            or "try again later" in lowered):
        return TransientMediaError(text)
    return ToolUnusableError(f"{text} (yt-dlp could not be used, not a verdict on the video: "
                             "upgrade yt-dlp or fix its setup, then run again)")


def youtube_options(video_id: str, dest_dir) -> dict:
    """yt-dlp options: video only (the benchmark never uses audio), at most 720p (clips
    are 320x320), the whole video so that AVA's 900-1800 s timeline is kept."""
    import imageio_ffmpeg

    return {
        "format": "bestvideo[height<=720][ext=mp4]/bestvideo[height<=720]/best[height<=720]/best",
        "outtmpl": str(Path(dest_dir) / f"{video_id}.%(ext)s"),
        "quiet": True,
        "noprogress": True,
        "noplaylist": True,
        "retries": 3,
        "ffmpeg_location": imageio_ffmpeg.get_ffmpeg_exe(),
        "js_runtimes": {name: {} for name in JS_RUNTIMES},
    }


def download_youtube(video_id: str, dest_dir) -> Path:
    """Download YouTube video `video_id` into `dest_dir` with yt-dlp; return its path.

    An opt-in fallback for AVA videos the mirror lacks: many AVA videos have since
    been taken down, and re-encodes may differ from the mirror's copy. Raises the error
    `youtube_failure` makes of yt-dlp's: `VideoMissingError`, `TransientMediaError` or
    `ToolUnusableError`.
    """
    import yt_dlp

    Path(dest_dir).mkdir(parents=True, exist_ok=True)
    url = f"https://www.youtube.com/watch?v={video_id}"
    try:
        with yt_dlp.YoutubeDL(youtube_options(video_id, dest_dir)) as ydl:
            info = ydl.extract_info(url, download=True)
            path = Path(ydl.prepare_filename(info))
    except yt_dlp.utils.YoutubeDLError as err:
        raise youtube_failure(video_id, err) from None
    if not path.is_file():
        raise VideoMissingError(f"youtube:{video_id}: yt-dlp reported {path}, which is not there")
    return path
