"""Clip cutting and reading (stvr_data.media) on small real videos made here.

Every source frame j carries its index as a 4x4 grid of black/white blocks (16 bits),
which survives H.264 at small sizes, so a decoded clip frame tells which source frame
it shows.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from stvr_data import media, media_step, youtube
from stvr_data.errors import MediaError
from stvr_data.manifest import atomic_path

GRID = 4


def index_image(j: int, size: int) -> np.ndarray:
    """RGB image whose 4x4 blocks spell the bits of `j` (white = 1)."""
    bits = np.array([(j >> b) & 1 for b in range(GRID * GRID)], np.uint8).reshape(GRID, GRID)
    block = size // GRID
    return np.repeat(np.repeat(bits * 255, block, 0), block, 1)[..., None].repeat(3, 2)


def read_index(image: np.ndarray) -> int:
    """Inverse of `index_image` (at any size), reading the centre half of each block."""
    bh, bw = image.shape[0] // GRID, image.shape[1] // GRID
    value = 0
    for b in range(GRID * GRID):
        r, c = divmod(b, GRID)
        centre = image[r * bh + bh // 4:(r + 1) * bh - bh // 4, c * bw + bw // 4:(c + 1) * bw - bw // 4]
        value |= int(centre.mean() > 128) << b
    return value


def write_video(path: Path, times, *, size: int = 64, codec: str = "libx264") -> Path:
    """Encode frames showing their index at the given presentation `times` (s)."""
    time_base = Fraction(1, 90000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=30)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = time_base
        stream.time_base = time_base
        stream.options = {"preset": "ultrafast"} if codec == "libx264" else {"deadline": "realtime"}
        for j, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(index_image(j, size), format="rgb24")
            frame.pts = round(Fraction(t) / time_base)
            frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def source_times(path: Path) -> list[Fraction]:
    """Presentation time of each source frame as stored in the file, from the file start."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        zero = Fraction(container.start_time or 0, av.time_base)
        return sorted(Fraction(p.pts) * stream.time_base - zero
                      for p in container.demux(stream) if p.pts is not None)


def expected_indices(times: list[Fraction], start, fps: int, count: int) -> list[int]:
    """Sample and hold: the last source frame with time <= start + k / fps."""
    start = Fraction(start)
    return [max(j for j, t in enumerate(times) if t <= start + Fraction(k, fps)) for k in range(count)]


def decoded_indices(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        return [read_index(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


@pytest.fixture
def video30(tmp_path) -> Path:
    """5 s at 30 fps, 64x64."""
    return write_video(tmp_path / "src30.mp4", [Fraction(j, 30) for j in range(150)])


def test_read_index_round_trips():
    assert [read_index(index_image(j, 64)) for j in (0, 1, 5, 1234, 65535)] == [0, 1, 5, 1234, 65535]


def test_probe_video_reports_stream(video30):
    info = media.probe_video(video30)
    assert (info.width, info.height, info.codec, info.num_frames) == (64, 64, "h264", 150)
    assert info.fps == pytest.approx(30.0)
    assert info.duration == pytest.approx(5.0)


def test_probe_video_rejects_garbage_and_truncated_files(tmp_path, video30):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(video30.read_bytes()[: video30.stat().st_size // 2])  # moov atom lost
    for bad in (garbage, truncated, tmp_path / "absent.mp4"):
        with pytest.raises(MediaError, match=bad.name):
            media.probe_video(bad)


@pytest.mark.parametrize("rate, start, codec, suffix", [
    (Fraction(30), 1.0, "libx264", "mp4"),
    (Fraction(30000, 1001), 1.0, "libx264", "mp4"),  # the frame on screen at 1.0 s is at 0.968 s
    (Fraction(25), 0.55, "libx264", "mp4"),
    (Fraction(30), 0.5, "libvpx-vp9", "webm"),  # millisecond timestamps, as in AVA's .webm files
])
def test_cut_clip_frame_k_shows_source_time_start_plus_k_over_fps(tmp_path, rate, start, codec, suffix):
    src = write_video(tmp_path / f"src.{suffix}", [j / rate for j in range(int(4 * rate))], codec=codec)
    info = media.cut_clip(src, tmp_path / "clip.mp4", start=start, end=start + 2.0, size=(32, 48))
    assert (info.num_frames, info.fps, info.width, info.height) == (48, 24.0, 32, 48)
    got = decoded_indices(tmp_path / "clip.mp4")
    assert got == expected_indices(source_times(src), Fraction(start).limit_denominator(100), 24, 48)


def test_cut_clip_on_the_ava_timeline_of_a_variable_rate_video(tmp_path):
    # Sparse frames from 0 s, dense 30 fps around the cut, a tail to 930 s: AVA's layout, cheaply.
    times = ([Fraction(t) for t in range(0, 895, 10)] + [895 + Fraction(j, 30) for j in range(300)]
             + [Fraction(t) for t in (906, 915, 925, 930)])
    src = write_video(tmp_path / "vfr.mp4", times)
    info = media.cut_clip(src, tmp_path / "clip.mp4", start=900.0, end=903.0, size=(32, 32))
    assert info.num_frames == 72
    assert decoded_indices(tmp_path / "clip.mp4") == expected_indices(source_times(src), 900, 24, 72)


def test_cut_clip_clamps_to_the_video_end(tmp_path, video30):
    info = media.cut_clip(video30, tmp_path / "clip.mp4", start=3.0, end=1800.0, size=(32, 32))
    assert info.num_frames == 48  # [3, 5) s at 24 fps
    assert decoded_indices(tmp_path / "clip.mp4") == expected_indices(source_times(video30), 3, 24, 48)


def test_cut_clip_rejects_a_video_ending_before_the_start(tmp_path, video30):
    with pytest.raises(MediaError, match="before the clip start"):
        media.cut_clip(video30, tmp_path / "clip.mp4", start=900.0)
    assert not (tmp_path / "clip.mp4").exists()


def test_interrupted_cut_leaves_no_file_a_later_run_trusts(tmp_path, video30, monkeypatch):
    real = media.run_child

    def interrupted(args, **kwargs):
        """Runs ffmpeg to the end, then is interrupted before the rename."""
        real(args, **kwargs)
        raise KeyboardInterrupt

    dest = tmp_path / "clips" / "v.mp4"
    monkeypatch.setattr(media, "run_child", interrupted)
    with pytest.raises(KeyboardInterrupt):
        media.cut_clip(video30, dest, start=1.0, end=2.0, size=(32, 32))
    assert list(dest.parent.iterdir()) == []  # neither the clip nor its partial copy


def test_cut_clip_takes_relative_paths_that_look_like_options(tmp_path, video30, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("-5KQ66BBWC4.mp4").write_bytes(video30.read_bytes())  # AVA ids may start with '-'
    info = media.cut_clip("-5KQ66BBWC4.mp4", "-out.mp4", start=1.0, end=2.0, size=(32, 32))
    assert info.num_frames == 24 and Path("-out.mp4").is_file()


def test_ffmpeg_failure_is_a_media_error_with_ffmpeg_message(tmp_path, video30):
    with pytest.raises(MediaError, match="ffmpeg failed: .*"):
        media.cut_clip(video30, tmp_path / "clip.mp4", start=1.0, end=2.0, size=(31, 32))  # odd width
    assert not (tmp_path / "clip.mp4").exists()


def _videos(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["video_id", "source_file", "subset"])


@pytest.fixture
def library(tmp_path) -> Path:
    """A source directory with two good videos, one corrupt one; 'gone' has no file."""
    src = tmp_path / "videos"
    src.mkdir()
    write_video(src / "a.mp4", [Fraction(j, 30) for j in range(120)])
    write_video(src / "b.webm", [Fraction(j, 25) for j in range(100)], codec="libvpx-vp9")
    (src / "c.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(2000))
    return src


VIDEOS = _videos(("a", "a.mp4", "val"), ("gone", "gone.mkv", "val"), ("b", "b.webm", "train"),
                 ("c", "c.mp4", "train"), ("nofile", None, "train"))
OPTIONS = {"start": 1.0, "end": 3.0, "size": (32, 32), "progress": False}


def test_prepare_media_reports_each_video_and_goes_on(tmp_path, library):
    out = media_step.prepare_media(VIDEOS, str(library), tmp_path / "bench", **OPTIONS)
    assert list(out["status"]) == ["ok", "missing", "ok", "corrupt", "missing"]
    assert list(out["subset"]) == list(VIDEOS["subset"])  # other columns kept
    assert list(out["clip_path"].fillna("-")) == ["clips/a.mp4", "-", "clips/b.mp4", "-", "-"]
    assert list(out["clip_end"]) == [3.0, 1.0, 3.0, 1.0, 1.0]
    assert pd.isna(out["error"][0]) and "gone.mkv" in out["error"][1] and "c.mp4" in out["error"][3]
    assert media.probe_video(tmp_path / "bench" / "clips" / "b.mp4").num_frames == 48
    report = media_step.write_media_report(out, tmp_path / "bench" / "media_report.txt").read_text()
    assert report.startswith("Videos that could not be had: 3 (2 missing, 1 corrupt)")
    assert "Videos with clips: 2." in report
    assert [line.split("\t")[0] for line in report.splitlines()[4:]] == ["c", "gone", "nofile"]
    only_failed = media_step.write_media_report(out[out.status != "ok"], tmp_path / "failed.txt").read_text()
    assert "Videos with clips" not in only_failed and "c\tcorrupt\tc.mp4\t" in only_failed


def test_prepare_media_is_the_same_whatever_workers(tmp_path, library):
    one = media_step.prepare_media(VIDEOS, str(library), tmp_path / "w1", workers=1, **OPTIONS)
    two = media_step.prepare_media(VIDEOS, str(library), tmp_path / "w2", workers=2, **OPTIONS)
    pd.testing.assert_frame_equal(one, two)
    for name in ("a.mp4", "b.mp4"):
        assert (tmp_path / "w1/clips" / name).read_bytes() == (tmp_path / "w2/clips" / name).read_bytes()


def test_prepare_media_skips_finished_clips_and_redoes_the_rest(tmp_path, library, monkeypatch):
    bench = tmp_path / "bench"
    first = media_step.prepare_media(VIDEOS, str(library), bench, **OPTIONS)
    clip_a, clip_b = bench / "clips/a.mp4", bench / "clips/b.mp4"
    stamp = clip_a.stat().st_mtime_ns
    clip_b.write_bytes(clip_b.read_bytes()[:300])  # a damaged clip must not be trusted
    atomic_path(clip_a).write_bytes(b"left over by a killed run")
    calls = []
    real = media.cut_clip

    def counting_cut(src, dest, **kwargs):
        calls.append(dest)
        return real(src, dest, **kwargs)

    monkeypatch.setattr(media, "cut_clip", counting_cut)
    again = media_step.prepare_media(VIDEOS, str(library), bench, **OPTIONS)
    assert calls == [clip_b, bench / "clips/c.mp4"]  # not a, nor the videos without a file
    assert clip_a.stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(first, again)
    calls.clear()
    media_step.prepare_media(VIDEOS, str(library), bench, **dict(OPTIONS, size=(48, 48)))
    assert calls[:2] == [clip_a, clip_b]  # other options: the clips are cut again
    calls.clear()
    media_step.prepare_media(VIDEOS, str(library), bench, force=True, **dict(OPTIONS, size=(48, 48)))
    assert calls[:2] == [clip_a, clip_b]


def test_prepare_media_youtube_fallback_is_opt_in(tmp_path, library, monkeypatch):
    fetched = []

    def fake_download(video_id, dest_dir):
        fetched.append(video_id)
        return library / "a.mp4"

    monkeypatch.setattr(media_step, "download_youtube", fake_download)
    monkeypatch.setattr(media_step, "check_youtube_tool", lambda: "deno 2.5.0")  # no runtime needed here
    rows = _videos(("gone", "gone.mkv", "val"))
    assert media_step.prepare_media(rows, str(library), tmp_path / "b1", **OPTIONS)["status"][0] == "missing"
    assert fetched == []
    out = media_step.prepare_media(rows, str(library), tmp_path / "b2", youtube_fallback=True,
                                   download_dir=tmp_path / "dl", **OPTIONS)
    assert fetched == ["gone"] and out["status"][0] == "ok"


def test_download_youtube_passes_video_only_options(tmp_path, monkeypatch):
    import yt_dlp

    seen = {}

    class FakeYoutubeDL:
        def __init__(self, options):
            seen.update(options)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def extract_info(self, url, download):
            seen["url"], seen["download"] = url, download
            Path(seen["outtmpl"].replace("%(ext)s", "mp4")).write_bytes(b"video")
            return {"ext": "mp4"}

        def prepare_filename(self, info):
            return seen["outtmpl"].replace("%(ext)s", info["ext"])

    monkeypatch.setattr(yt_dlp, "YoutubeDL", FakeYoutubeDL)
    path = youtube.download_youtube("abcdefghijk", tmp_path)
    assert path == tmp_path / "abcdefghijk.mp4" and path.is_file()
    assert seen["url"] == "https://www.youtube.com/watch?v=abcdefghijk" and seen["download"]
    assert seen["format"].startswith("bestvideo[height<=720]") and seen["noplaylist"]
    assert "download_ranges" not in seen  # the whole video, so AVA's timeline is kept
    assert seen["js_runtimes"] == {name: {} for name in ("deno", "node", "quickjs", "bun")}  # not deno only


@pytest.fixture
def clip(tmp_path, video30) -> Path:
    media.cut_clip(video30, tmp_path / "clip.mp4", start=1.0, end=3.0, size=(32, 32))
    return tmp_path / "clip.mp4"


def _indices(frames: np.ndarray) -> list[int]:
    return [read_index(f) for f in frames]


def test_read_frames_seeks_to_the_right_frames(clip):
    everything = media.read_frames(clip, 1.0, 48, clip_start=1.0)
    assert everything.shape == (48, 32, 32, 3) and everything.dtype == np.uint8
    middle = media.read_frames(clip, 1.0 + 1 / 3 + 1 / 24, 8, clip_start=1.0)  # frames 9..16
    np.testing.assert_array_equal(middle, everything[9:17])
    assert _indices(middle) == _indices(everything)[9:17]
    assert _indices(everything) == expected_indices([Fraction(j, 30) for j in range(150)], 1, 24, 48)


def test_read_frames_outside_the_clip_are_black(clip):
    everything = media.read_frames(clip, 1.0, 48, clip_start=1.0)
    tail = media.read_frames(clip, 1.0 + 45 / 24, 8, clip_start=1.0)  # frames 45..52
    np.testing.assert_array_equal(tail[:3], everything[45:])
    assert not tail[3:].any()
    assert not media.read_frames(clip, 5.0, 4, clip_start=1.0).any()
    head = media.read_frames(clip, 1.0 - 2 / 24, 4, clip_start=1.0)  # frames -2..1
    assert not head[:2].any()
    np.testing.assert_array_equal(head[2:], everything[:2])


def test_read_frames_names_an_unreadable_clip(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"junk")
    with pytest.raises(MediaError, match="bad.mp4"):
        media.read_frames(bad, 900.0, 8)


def test_a_cut_that_yields_nothing_names_the_source_not_the_temporary_file(tmp_path):
    whole = write_video(tmp_path / "whole.mkv", [Fraction(j, 30) for j in range(240)])  # header says 8 s
    cut = tmp_path / "query.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])  # frames end near 2.7 s
    with pytest.raises(MediaError) as caught:
        media.cut_clip(cut, tmp_path / "work" / "query.mp4", start=6.0, end=7.0, size=(32, 32))
    message = str(caught.value)
    assert message.startswith(f"{cut}: ") and ".partial" not in message
    assert not (tmp_path / "work" / "query.mp4").exists()
    assert not atomic_path(tmp_path / "work" / "query.mp4").exists()


def test_read_frames_gives_pyav_s_own_rgb_of_every_frame(tmp_path):
    path, size = tmp_path / "colour.mp4", 48
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(30):  # noise: every colour the conversion may meet
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    with av.open(str(path)) as container:
        expected = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    assert len(expected) == 30
    np.testing.assert_array_equal(media.read_frames(path, 0.0, 30, clip_start=0.0, fps=24), expected)
    np.testing.assert_array_equal(media.read_frames(path, 0.5, 8, clip_start=0.0, fps=24), expected[12:20])
