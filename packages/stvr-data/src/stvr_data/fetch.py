"""Getting source videos onto disk: a local directory, an HTTP(S) mirror, or YouTube.

AVA publishes its videos on a plain HTTP mirror, one file per video named as in
``ava_file_names_trainval_v2.1.txt`` (``<base>/<file name>``, mixed .mp4/.mkv/.webm,
tens to hundreds of MB each). Downloads there are long and get interrupted, so
`fetch_video` writes to ``<dest>/.<name>.partial``, resumes it with HTTP Range requests
(with If-Range on the ETag or Last-Modified date, and only bytes recorded as this URL's),
checks the size against what the server announced and that the whole file demuxes to
its announced end, and only then renames it into place: a file under its final name is
always complete, and a file that failed a check is deleted.
YouTube (through yt-dlp, `stvr_data.youtube`) is an opt-in fallback for videos the
mirror lacks.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

import av

from stvr_data.atomic import atomic_path, publish, write_text
from stvr_data.errors import DISK_FULL_ERRNOS, MediaError, OutputWriteError, TransientMediaError

CHUNK_BYTES = 1 << 20
# Statuses that no retry will fix: the file is simply not there.
GONE_STATUSES = {401, 403, 404, 410}
# Requests per file in all, progressing or not: a server whose Content-Length exceeds
# the body makes progress on every try and would otherwise be retried forever.
MAX_ATTEMPTS = 24
# Seconds by which a video's last packet may end before its container's duration.
END_TOLERANCE = 1.0
Progress = Callable[[int, "int | None"], None]


class VideoMissingError(MediaError):
    """The video could not be had at all (no such file, HTTP 404, ...), as opposed to a
    file that exists but is corrupt."""


class _Dropped(Exception):
    """A transfer that ended early or failed in a way worth retrying."""


def is_url(source: str) -> bool:
    return str(source).startswith(("http://", "https://"))


def fetch_video(source: str, file_name: str, dest_dir, *, retries: int = 3,
                attempts: int = MAX_ATTEMPTS, timeout: float = 30.0,
                progress: Progress | None = None, backoff: float = 1.0) -> Path:
    """Return the local path of video `file_name` from `source`.

    `source` is a local directory (the file is used in place, not copied) or an
    http(s) base URL, fetched as ``<source>/<file_name>`` into `dest_dir`. A file already
    under its final name in `dest_dir` is complete (it only gets there by rename) and is
    returned as is. `retries` bounds the consecutive attempts that make no progress (an
    attempt that receives bytes resets the count, since resuming it is cheap) and
    `attempts` the requests for the file in all. Waits ``backoff * 2**n`` seconds before
    retry n. `timeout` is per socket operation (s). `progress(bytes_done, total_or_None)`
    is called as bytes arrive.

    The received size must equal the declared one, and the whole result must demux to
    the end its container announces; a file failing either check is deleted, never kept.

    Raises `VideoMissingError` when the video is not there, `MediaError` for a transfer
    that keeps failing or a file that fails a check; both name the file and reason.
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
    download = _Download(url, atomic_path(dest), resume_record(dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        _download(download, retries=retries, attempts=attempts, timeout=timeout, progress=progress,
                  backoff=backoff)
        verify_video(download.partial, name=url)
    except MediaError as err:
        if not isinstance(err, _TransferFailed):  # a check failed: retry from byte 0, never resume it
            download.discard()
        raise
    publish(download.partial, dest)
    download.record.unlink(missing_ok=True)
    return dest


def resume_record(dest: Path) -> Path:
    """Where the URL and validator of `dest`'s partial download are kept, so that a
    resume appends only to bytes of the same file (the name ends in .partial: it is
    temporary)."""
    return dest.with_name(f".{dest.name}.resume.partial")


class _TransferFailed(TransientMediaError):
    """Retries or attempts used up; the partial file is kept for a later resume. An
    outage, not a verdict on the video: the same command retries it later."""


class _CheckFailed(Exception):
    """The bytes received cannot be the file: the partial file must be discarded."""


@dataclass
class _Download:
    """One file's transfer: `partial` holds its first bytes; `record` says whose bytes
    they are (URL, ETag/Last-Modified validator, total size)."""

    url: str
    partial: Path
    record: Path

    def have(self) -> int:
        """Bytes that may be resumed: 0 unless the record says they are this URL's."""
        if not self.partial.exists():
            return 0
        try:
            ours = json.loads(self.record.read_text()).get("url") == self.url
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:  # left by another file or an older version of this tool: never splice it
            self.discard()
            return 0
        return self.partial.stat().st_size

    def validator(self) -> str | None:
        try:
            return json.loads(self.record.read_text()).get("validator")
        except (OSError, ValueError, AttributeError):
            return None

    def start(self, response) -> None:
        """Record whose bytes a new full (200) response writes into `partial`."""
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        if validator and response.headers.get("ETag", "").startswith("W/"):
            validator = response.headers.get("Last-Modified")  # If-Range needs a strong validator
        write_text(self.record, json.dumps({"url": self.url, "validator": validator}))

    def discard(self) -> None:
        self.partial.unlink(missing_ok=True)
        self.record.unlink(missing_ok=True)


def _download(download: _Download, *, retries: int, attempts: int, timeout: float,
              progress: Progress | None, backoff: float) -> None:
    """Fill `download.partial` with the whole of its URL, resuming what is already there."""
    failures = 0
    for attempt in range(1, attempts + 1):
        before = download.have()
        try:
            _attempt(download, timeout=timeout, progress=progress)
            return
        except _CheckFailed as err:
            raise MediaError(f"{download.url}: {err}") from None
        except _Dropped as err:
            after = download.partial.stat().st_size if download.partial.exists() else 0
            failures = 0 if after > before else failures + 1
            if failures > retries or attempt == attempts:
                tries = f"{retries} retries" if failures > retries else f"{attempts} attempts"
                raise _TransferFailed(f"{download.url}: download failed after {tries} ({err})") from None
            time.sleep(backoff * 2 ** max(failures - 1, 0))


def _attempt(download: _Download, *, timeout: float, progress: Progress | None) -> None:
    """One request: resume from the partial file's size, append, check the total size."""
    have = download.have()
    headers = {}
    if have:
        headers["Range"] = f"bytes={have}-"
        if validator := download.validator():
            headers["If-Range"] = validator  # the server sends the whole file if it changed
    try:
        response = urllib.request.urlopen(urllib.request.Request(download.url, headers=headers),
                                          timeout=timeout)
    except urllib.error.HTTPError as err:
        if have and _holds_whole_file(err, have):
            return  # e.g. a run stopped between the last byte and the rename: verified next
        _refused(download, err)
    except (urllib.error.URLError, OSError, HTTPException) as err:
        raise _Dropped(str(getattr(err, "reason", err))) from None
    with response:
        offset, total = _resume_point(response, have, download.url)
        if offset == 0:
            download.start(response)
        _copy_body(response, download.partial, offset, total, progress)


def _holds_whole_file(err: urllib.error.HTTPError, have: int) -> bool:
    """A 416 whose Content-Range says the file is exactly the `have` bytes we hold (the
    range asked for starts at its end)."""
    size = re.fullmatch(r"bytes \*/(\d+)", err.headers.get("Content-Range", "") or "")
    return err.code == 416 and size is not None and int(size.group(1)) == have


def _refused(download: _Download, err: urllib.error.HTTPError):
    url = download.url
    if err.code in GONE_STATUSES:
        raise VideoMissingError(f"{url}: not available (HTTP {err.code})") from None
    if err.code == 416:  # our partial file is not a prefix of the server's file
        download.discard()
        raise _Dropped("HTTP 416, restarting from byte 0") from None
    if 400 <= err.code < 500:
        raise MediaError(f"{url}: refused (HTTP {err.code})") from None
    raise _Dropped(f"HTTP {err.code}") from None


def _resume_point(response, have: int, url: str) -> tuple[int, int | None]:
    """Where the body starts in the file and the file's total size (None if unknown).

    A 206 continues at ``have``; a 200 means the server ignored the Range header (or
    the file changed since, by If-Range) and sends the whole file again, so the partial
    file is restarted from byte 0.
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
    """Append the body to `partial` at `offset`; the file must end up `total` bytes.

    The body is read to the end of the connection, not only as far as Content-Length
    says (urllib asks the server to close after the response), so a server declaring
    fewer bytes than it sends is caught rather than leaving a short file.
    """
    if not response.chunked:
        response.length = None  # http.client then reads until the server closes
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
                if total is not None and done > total:
                    raise _CheckFailed(f"the server sent more than the {total} bytes it declared")
    except OSError as err:
        if err.errno in DISK_FULL_ERRNOS:
            raise OutputWriteError(partial, err) from None
        if isinstance(err, TimeoutError) and total is not None and done == total:
            return  # a server keeping the connection open after the whole body
        raise _Dropped(f"connection lost at byte {done}: {err}") from None
    except HTTPException as err:
        raise _Dropped(f"connection lost at byte {done}: {err}") from None
    if total is not None and done != total:
        raise _Dropped(f"got {done} of {total} bytes")


def verify_video(path, *, name: str | None = None) -> None:
    """Check that `path` opens with PyAV, decodes a first frame, and that its video
    packets reach (within `END_TOLERANCE` s) the duration its container announces, so a
    truncated file whose header survived is refused.

    Raises `MediaError` naming `name` (default: the path) otherwise.
    """
    name = name or str(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{name}: no video stream")
            stream = container.streams.video[0]
            if next(container.decode(stream), None) is None:
                raise MediaError(f"{name}: video stream has no decodable frame")
            container.seek(0)
            end = _last_packet_end(container, stream)
            announced = container.duration / av.time_base if container.duration else None
    except av.error.FFmpegError as err:
        raise MediaError(f"{name}: not a decodable video ({err})") from None
    if announced is not None and end is not None and end < announced - END_TOLERANCE:
        raise MediaError(f"{name}: truncated, its video ends at {end:.2f} s of the {announced:.2f} s "
                         "its container announces")


def _last_packet_end(container, stream) -> float | None:
    """Seconds from the start where the last video packet ends (None without timestamps)."""
    end = None
    for packet in container.demux(stream):
        if packet.pts is not None and packet.time_base is not None:
            end = max(end or 0.0, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    start = stream.start_time * stream.time_base if stream.start_time is not None else 0
    return None if end is None else end - float(start)
