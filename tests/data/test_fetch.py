"""Fetching source videos (stvr_data.fetch) from a directory and from a real HTTP server
on 127.0.0.1 that misbehaves on purpose: drops connections, ignores Range, fails."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from stvr_data import fetch, media, media_step
from stvr_data.atomic import atomic_path
from stvr_data.cli.main import main
from stvr_data.errors import MediaError
from stvr_data.fetch import VideoMissingError


def tiny_video(path: Path, frames: int = 60, seed: int = 0) -> Path:
    """A real 64x64 H.264 video (2 s by default, container by suffix) of changing noise
    (so it does not compress to nothing)."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "10"}
        for _ in range(frames):
            image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


class Mirror(ThreadingHTTPServer):
    """An AVA-style mirror: `files` maps name -> (bytes, behaviour); logs every request.

    Behaviours: ok | drop_once (first response stops halfway) | ignore_range_drop_once
    (never honours Range, and drops the first response) | always_drop | error500 |
    long_length / short_length (Content-Length 100 bytes more / fewer than the body) |
    changes_after_drop (drops the first response, then serves `replacements[name]`).
    `etags` names each file's ETag; a Range request whose If-Range does not match it gets
    the whole file, and a Range past the end gets 416, as real servers do.
    """

    def __init__(self):
        super().__init__(("127.0.0.1", 0), MirrorHandler)
        self.files: dict[str, tuple[bytes, str]] = {}
        self.etags: dict[str, str] = {}
        self.replacements: dict[str, tuple[bytes, str]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.if_range: list[str | None] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/ava/trainval"


class MirrorHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        self.server.requests.append((name, self.headers.get("Range")))
        self.server.if_range.append(self.headers.get("If-Range"))
        if name not in self.server.files:
            self.send_error(404)
            return
        first_time = sum(n == name for n, _ in self.server.requests) == 1
        if not first_time and name in self.server.replacements:
            self.server.files[name] = self.server.replacements.pop(name)
            self.server.etags[name] = '"v2"'
        data, behaviour = self.server.files[name]
        if behaviour == "error500":
            self.send_error(500)
            return
        drop = behaviour == "always_drop" or (behaviour.endswith("drop_once") and first_time) or (
            behaviour == "changes_after_drop" and first_time)
        offset = self._range_start(behaviour, name)
        if offset and offset >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = data[offset:]
        self.send_response(206 if offset else 200)
        if offset:
            self.send_header("Content-Range", f"bytes {offset}-{len(data) - 1}/{len(data)}")
        declared = len(body) + {"long_length": 100, "short_length": -100}.get(behaviour, 0)
        self.send_header("Content-Length", str(declared))
        if name in self.server.etags:
            self.send_header("ETag", self.server.etags[name])
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if drop else body)
        self.close_connection = True

    def _range_start(self, behaviour: str, name: str) -> int:
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if_range = self.headers.get("If-Range")
        if if_range is not None and if_range != self.server.etags.get(name):
            return 0  # the file changed since: send all of it
        return int(match.group(1)) if match and not behaviour.startswith("ignore_range") else 0


@pytest.fixture
def mirror():
    server = Mirror()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def video_bytes(tmp_path) -> bytes:
    return tiny_video(tmp_path / "made.mp4").read_bytes()


def test_local_directory_is_used_in_place(tmp_path):
    src = tiny_video(tmp_path / "abc.mp4")
    got = fetch.fetch_video(str(tmp_path), "abc.mp4", tmp_path / "downloads")
    assert got == src and not (tmp_path / "downloads").exists()
    with pytest.raises(VideoMissingError, match="nope.mkv"):
        fetch.fetch_video(str(tmp_path), "nope.mkv", tmp_path / "downloads")


def test_http_download_is_complete_and_atomic(tmp_path, mirror, video_bytes):
    mirror.files["v1.mp4"] = (video_bytes, "ok")
    seen = []
    got = fetch.fetch_video(mirror.url, "v1.mp4", tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert got == tmp_path / "v1.mp4" and got.read_bytes() == video_bytes
    assert seen[-1] == (len(video_bytes), len(video_bytes))
    assert not atomic_path(got).exists()
    fetch.fetch_video(mirror.url, "v1.mp4", tmp_path)
    assert len(mirror.requests) == 1  # a finished download is not fetched again


def test_dropped_connection_is_resumed_byte_identical(tmp_path, mirror, video_bytes):
    mirror.files["v1.mp4"] = (video_bytes, "drop_once")
    got = fetch.fetch_video(mirror.url, "v1.mp4", tmp_path, backoff=0)
    assert got.read_bytes() == video_bytes
    half = len(video_bytes) // 2
    assert mirror.requests == [("v1.mp4", None), ("v1.mp4", f"bytes={half}-")]


def test_server_ignoring_range_restarts_from_zero(tmp_path, mirror, video_bytes):
    mirror.files["v1.mp4"] = (video_bytes, "ignore_range_drop_once")
    got = fetch.fetch_video(mirror.url, "v1.mp4", tmp_path, backoff=0)
    assert got.read_bytes() == video_bytes
    assert len(mirror.requests) == 2 and mirror.requests[1][1] is not None


def test_missing_video_is_not_retried(tmp_path, mirror):
    with pytest.raises(VideoMissingError, match=r"gone\.mkv.*HTTP 404"):
        fetch.fetch_video(mirror.url, "gone.mkv", tmp_path, retries=5, backoff=0)
    assert len(mirror.requests) == 1


@pytest.mark.parametrize("behaviour", ["error500", "always_drop"])
def test_retries_are_bounded(tmp_path, mirror, video_bytes, behaviour):
    mirror.files["v1.mp4"] = (video_bytes, behaviour)
    with pytest.raises(MediaError, match=r"v1\.mp4: download failed after 2 retries"):
        fetch.fetch_video(mirror.url, "v1.mp4", tmp_path, retries=2, backoff=0)
    # always_drop sends half of what is left each time: every such attempt makes progress
    # and resets the count, until there is 1 byte left and only failures remain.
    progressing, left = 0, len(video_bytes)
    while left // 2:
        progressing, left = progressing + 1, left - left // 2
    expected = 3 + (progressing if behaviour == "always_drop" else 0)
    assert len(mirror.requests) == expected
    assert not (tmp_path / "v1.mp4").exists()


def test_undecodable_download_is_rejected_and_cleaned(tmp_path, mirror):
    mirror.files["bad.mp4"] = (b"\x00\x00\x00\x18ftypmp42" + bytes(5000), "ok")
    with pytest.raises(MediaError, match=r"bad\.mp4: not a decodable video"):
        fetch.fetch_video(mirror.url, "bad.mp4", tmp_path)
    assert not (tmp_path / "bad.mp4").exists() and not atomic_path(tmp_path / "bad.mp4").exists()


def test_prepare_media_over_http_reports_missing_and_corrupt(tmp_path, mirror, video_bytes):
    mirror.files["good.mp4"] = (video_bytes, "ok")
    mirror.files["bad.mp4"] = (b"garbage" * 1000, "ok")
    videos = pd.DataFrame({"video_id": ["good", "bad", "gone"],
                           "source_file": ["good.mp4", "bad.mp4", "gone.mp4"]})
    out = media_step.prepare_media(videos, mirror.url, tmp_path / "bench", start=0.5, end=1.5,
                                   size=(32, 32), download_dir=tmp_path / "dl", progress=False, workers=2)
    assert list(out["status"]) == ["ok", "corrupt", "missing"]
    assert (tmp_path / "dl" / "good.mp4").read_bytes() == video_bytes
    assert media.probe_video(tmp_path / "bench" / out["clip_path"][0]).num_frames == 24
    assert "HTTP 404" in out["error"][2]


def _nothing_kept(folder: Path, name: str) -> bool:
    dest = folder / name
    return not dest.exists() and not atomic_path(dest).exists() and not fetch.resume_record(dest).exists()


def test_content_length_above_the_body_does_not_loop(tmp_path, mirror, video_bytes):
    # The GET ends short of its Content-Length; the resume asks past the end and the 416
    # says the file is what we hold, which the whole-file check then accepts.
    mirror.files["v1.mp4"] = (video_bytes, "long_length")
    got = fetch.fetch_video(mirror.url, "v1.mp4", tmp_path, backoff=0)
    assert got.read_bytes() == video_bytes
    assert [r for _, r in mirror.requests] == [None, f"bytes={len(video_bytes)}-"]


def test_content_length_above_a_cut_body_never_saves_it(tmp_path, mirror):
    whole = tiny_video(tmp_path / "long.mkv", frames=240).read_bytes()  # 8 s
    mirror.files["cut.mkv"] = (whole[: len(whole) // 2], "long_length")
    with pytest.raises(MediaError, match=r"cut\.mkv: (truncated|not a decodable)"):
        fetch.fetch_video(mirror.url, "cut.mkv", tmp_path / "dl", backoff=0)
    assert len(mirror.requests) == 2 and _nothing_kept(tmp_path / "dl", "cut.mkv")


def test_attempts_per_file_are_bounded_in_all(tmp_path, mirror, video_bytes):
    mirror.files["v1.mp4"] = (video_bytes, "always_drop")  # progresses every time
    with pytest.raises(MediaError, match=r"download failed after 3 attempts"):
        fetch.fetch_video(mirror.url, "v1.mp4", tmp_path, retries=2, attempts=3, backoff=0)
    assert len(mirror.requests) == 3 and not (tmp_path / "v1.mp4").exists()


def test_content_length_below_the_body_never_saves_a_short_file(tmp_path, mirror, video_bytes):
    mirror.files["v1.mp4"] = (video_bytes, "short_length")
    with pytest.raises(MediaError, match=rf"sent more than the {len(video_bytes) - 100} bytes it declared"):
        fetch.fetch_video(mirror.url, "v1.mp4", tmp_path, backoff=0)
    assert _nothing_kept(tmp_path, "v1.mp4")


def test_resume_sends_if_range_and_takes_the_new_file_when_it_changed(tmp_path, mirror, video_bytes):
    newer = tiny_video(tmp_path / "newer.mp4", seed=1).read_bytes()
    mirror.files["v1.mp4"] = (video_bytes, "changes_after_drop")
    mirror.etags["v1.mp4"] = '"v1"'
    mirror.replacements["v1.mp4"] = (newer, "ok")
    got = fetch.fetch_video(mirror.url, "v1.mp4", tmp_path / "dl", backoff=0)
    assert got.read_bytes() == newer  # not half of the old file spliced with the new one
    assert mirror.if_range == [None, '"v1"'] and mirror.requests[1][1] == f"bytes={len(video_bytes) // 2}-"
    assert not fetch.resume_record(got).exists()


@pytest.mark.parametrize("record", [None, '{"url": "http://elsewhere/other.mp4", "validator": null}'])
def test_a_leftover_partial_of_another_file_is_never_spliced_in(tmp_path, mirror, video_bytes, record):
    mirror.files["v1.mp4"] = (video_bytes, "ok")
    atomic_path(tmp_path / "v1.mp4").write_bytes(b"bytes of some other download" * 100)
    if record is not None:
        fetch.resume_record(tmp_path / "v1.mp4").write_text(record)
    got = fetch.fetch_video(mirror.url, "v1.mp4", tmp_path, backoff=0)
    assert got.read_bytes() == video_bytes and mirror.requests == [("v1.mp4", None)]


def test_truncated_video_with_an_intact_header_is_refused_and_not_cached(tmp_path, mirror):
    whole = tiny_video(tmp_path / "long.mkv", frames=240).read_bytes()  # 8 s
    mirror.files["cut.mkv"] = (whole[: len(whole) // 2], "ok")  # the server's copy is cut short
    with pytest.raises(MediaError, match=r"cut\.mkv: (truncated|not a decodable)"):
        fetch.fetch_video(mirror.url, "cut.mkv", tmp_path / "dl", backoff=0)
    assert _nothing_kept(tmp_path / "dl", "cut.mkv")


def test_download_ava_exits_non_zero_when_a_video_failed(tmp_path, mirror, video_bytes):
    from click.testing import CliRunner

    from stvr_data.sample import make_sample

    make_sample(tmp_path / "s", seed=1, videos=False)
    names = (tmp_path / "s" / "annotations" / "ava_file_names_trainval_v2.1.txt").read_text().split()
    for name in names[1:]:
        mirror.files[name] = (video_bytes, "ok")  # the first video is missing from the mirror
    args = ["download-ava", "--annotations", str(tmp_path / "s" / "annotations"), "--source", mirror.url,
            "--dest", str(tmp_path / "dl"), "--workers", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert f"missing {names[0]}" in result.output
    assert pd.read_csv(tmp_path / "dl" / "failed.csv").file_name.tolist() == [names[0]]
    mirror.files[names[0]] = (video_bytes, "ok")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "dl" / "failed.csv").exists()
