"""Getting source videos onto disk: a local directory, an HTTP(S) mirror, or YouTube.

AVA publishes its videos on a plain HTTP mirror, one file per video named as in
``ava_file_names_trainval_v2.1.txt`` (``<base>/<file name>``, mixed .mp4/.mkv/.webm,
tens to hundreds of MB each). Downloads there are long and get interrupted, so
`fetch_video` writes to ``<dest>/.<name>.partial``, resumes it with HTTP Range requests,
checks the size against what the server announced and that the file decodes, and only
then renames it into place: a file under its final name is always complete.
YouTube (through yt-dlp) is an opt-in fallback for videos the mirror lacks.
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.client import HTTPException
from pathlib import Path

import av

from stvr_data.errors import MediaError, TransientMediaError
from stvr_data.manifest import atomic_path

CHUNK_BYTES = 1 << 20
# Statuses that no retry will fix: the file is simply not there.
GONE_STATUSES = {401, 403, 404, 410}
Progress = Callable[[int, "int | None"], None]


class VideoMissingError(MediaError):
    """The video could not be had at all (no such file, HTTP 404, ...), as opposed to a
    file that exists but is corrupt."""


class _Dropped(Exception):
    """A transfer that ended early or failed in a way worth retrying."""


def is_url(source: str) -> bool:
    return str(source).startswith(("http://", "https://"))


def fetch_video(source: str, file_name: str, dest_dir, *, retries: int = 3,
                timeout: float = 30.0, progress: Progress | None = None,
                backoff: float = 1.0) -> Path:
    """Return the local path of video `file_name` from `source`.

    `source` is a local directory (the file is used in place, not copied) or an
    http(s) base URL, fetched as ``<source>/<file_name>`` into `dest_dir`. A file already
    under its final name in `dest_dir` is complete (it only gets there by rename) and is
    returned as is. `retries` bounds the consecutive attempts that make no progress;
    an attempt that receives bytes resets the count, since resuming it is cheap. Waits
    ``backoff * 2**n`` seconds before retry n. `timeout` is per socket operation (s).
    `progress(bytes_done, total_or_None)` is called as bytes arrive.

    Raises `VideoMissingError` when the video is not there, `MediaError` for a transfer
    that keeps failing or a file that does not decode; both name the file and reason.
    """
    if not is_url(source):
        path = Path(source) / file_name
        if not path.is_file():
            raise VideoMissingError(f"{path}: no such video file")
        return path
    dest = Path(dest_dir) / file_name
    if dest.is_file():
        return dest
    url = source.rstrip("/") + "/" + urllib.parse.quote(file_name)
    partial = atomic_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _download(url, partial, retries=retries, timeout=timeout, progress=progress, backoff=backoff)
    try:
        verify_video(partial, name=url)
    except MediaError:
        partial.unlink(missing_ok=True)  # a retry must start clean, not resume garbage
        raise
    os.replace(partial, dest)
    return dest


def _download(url: str, partial: Path, *, retries: int, timeout: float,
              progress: Progress | None, backoff: float) -> None:
    """Fill `partial` with the whole of `url`, resuming what is already there."""
    failures = 0
    while True:
        before = partial.stat().st_size if partial.exists() else 0
        try:
            _attempt(url, partial, timeout=timeout, progress=progress)
            return
        except _Dropped as err:
            after = partial.stat().st_size if partial.exists() else 0
            failures = 0 if after > before else failures + 1
            if failures > retries:
                # An outage, not a verdict on the video: the same command retries it later.
                raise TransientMediaError(f"{url}: download failed after {retries} retries ({err})") from None
            time.sleep(backoff * 2 ** max(failures - 1, 0))


def _attempt(url: str, partial: Path, *, timeout: float, progress: Progress | None) -> None:
    """One request: resume from the partial file's size, append, check the total size."""
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code in GONE_STATUSES:
            raise VideoMissingError(f"{url}: not available (HTTP {err.code})") from None
        if err.code == 416:  # our partial file is not a prefix the server knows: start over
            partial.unlink(missing_ok=True)
            raise _Dropped("HTTP 416, restarting from byte 0") from None
        if 400 <= err.code < 500:
            raise MediaError(f"{url}: refused (HTTP {err.code})") from None
        raise _Dropped(f"HTTP {err.code}") from None
    except (urllib.error.URLError, OSError, HTTPException) as err:
        raise _Dropped(str(getattr(err, "reason", err))) from None
    with response:
        offset, total = _resume_point(response, have, url)
        _copy_body(response, partial, offset, total, progress)


def _resume_point(response, have: int, url: str) -> tuple[int, int | None]:
    """Where the body starts in the file and the file's total size (None if unknown).

    A 206 continues at ``have``; a 200 means the server ignored the Range header and
    sends the whole file again, so the partial file is restarted from byte 0.
    """
    if response.status == 206:
        match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != have:
            raise MediaError(f"{url}: server resumed at the wrong offset "
                             f"({response.headers.get('Content-Range')!r}, wanted {have})")
        total = None if match.group(2) == "*" else int(match.group(2))
        return have, total
    length = response.headers.get("Content-Length")
    return 0, int(length) if length is not None else None


def _copy_body(response, partial: Path, offset: int, total: int | None,
               progress: Progress | None) -> None:
    done = offset
    try:
        with open(partial, "r+b" if offset and partial.exists() else "wb") as out:
            out.seek(offset)
            out.truncate()
            while block := response.read(CHUNK_BYTES):
                out.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
    except (OSError, HTTPException) as err:
        raise _Dropped(f"connection lost at byte {done}: {err}") from None
    if total is not None and done != total:
        raise _Dropped(f"got {done} of {total} bytes")


def verify_video(path, *, name: str | None = None) -> None:
    """Check that `path` opens with PyAV, has a video stream and decodes a first frame.

    Raises `MediaError` naming `name` (default: the path) otherwise.
    """
    name = name or str(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{name}: no video stream")
            for _ in container.decode(video=0):
                return
    except av.error.FFmpegError as err:
        raise MediaError(f"{name}: not a decodable video ({err})") from None
    raise MediaError(f"{name}: video stream has no decodable frame")


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
    }


def download_youtube(video_id: str, dest_dir) -> Path:
    """Download YouTube video `video_id` into `dest_dir` with yt-dlp; return its path.

    An opt-in fallback for AVA videos the mirror lacks: many AVA videos have since
    been taken down, and re-encodes may differ from the mirror's copy. Raises
    `VideoMissingError` when yt-dlp cannot get it.
    """
    import yt_dlp

    Path(dest_dir).mkdir(parents=True, exist_ok=True)
    url = f"https://www.youtube.com/watch?v={video_id}"
    try:
        with yt_dlp.YoutubeDL(youtube_options(video_id, dest_dir)) as ydl:
            info = ydl.extract_info(url, download=True)
            path = Path(ydl.prepare_filename(info))
    except yt_dlp.utils.DownloadError as err:
        raise VideoMissingError(f"youtube:{video_id}: {err}") from None
    if not path.is_file():
        raise VideoMissingError(f"youtube:{video_id}: yt-dlp reported {path}, which is not there")
    return path
