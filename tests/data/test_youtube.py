"""The YouTube fallback (stvr_data.fetch): refused up front, in one line saying what to
install, when yt-dlp cannot work; a failed download reported as "video gone", "may pass" or
"tool not usable" by its cause. No network: yt-dlp's runtime lookup and downloader are
replaced by stand-ins, its exceptions are the real ones."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass

import pytest
import yt_dlp
from test_build_safety import MKV, _build, _last_line
from yt_dlp.networking.exceptions import TransportError
from yt_dlp.utils import DownloadError, ExtractorError, GeoRestrictedError

from stvr_data import manifest, media, media_step, youtube
from stvr_data.errors import TransientMediaError
from stvr_data.fetch import VideoMissingError
from stvr_data.sample import SampleConfig, make_sample
from stvr_data.youtube import ToolUnusableError

NO_RUNTIME = ("--youtube-fallback: yt-dlp finds no JavaScript runtime for YouTube{found}: install one of "
              "deno >= 2.3.0, node >= 22.0.0, quickjs >= 2023.12.9, bun >= 1.2.11 (e.g. pip install deno) "
              "and run again")


@dataclass(frozen=True)
class Info:  # the fields of yt-dlp's JsRuntimeInfo that are read
    name: str
    version: str
    supported: bool = True


def _runtimes(monkeypatch, **installed: Info) -> None:
    monkeypatch.setattr(youtube, "_runtime_info", lambda name: installed.get(name))


def test_the_first_supported_runtime_in_yt_dlp_order_is_used(monkeypatch):
    _runtimes(monkeypatch, node=Info("node", "22.3.0"), bun=Info("bun", "1.2.20"))
    assert youtube.check_youtube_tool() == "node 22.3.0"
    _runtimes(monkeypatch, node=Info("node", "22.3.0"), deno=Info("deno", "2.5.1"))
    assert youtube.check_youtube_tool() == "deno 2.5.1"


def test_no_runtime_is_refused_saying_what_to_install(monkeypatch):
    _runtimes(monkeypatch)
    with pytest.raises(ToolUnusableError) as err:
        youtube.check_youtube_tool()
    assert str(err.value) == NO_RUNTIME.format(found="")
    _runtimes(monkeypatch, node=Info("node", "20.20.2", supported=False))
    with pytest.raises(ToolUnusableError) as err:
        youtube.check_youtube_tool()
    assert str(err.value) == NO_RUNTIME.format(found=" (node 20.20.2 too old)")


def test_yt_dlp_without_its_challenge_scripts_is_refused(monkeypatch):
    _runtimes(monkeypatch, deno=Info("deno", "2.5.1"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "yt_dlp_ejs" else real(name, *a))
    with pytest.raises(ToolUnusableError, match=r"install yt-dlp\[default\]$"):
        youtube.check_youtube_tool()


def test_the_runtime_lookup_is_yt_dlps_own():
    """Without stand-ins: whatever this machine has, the answer is a runtime yt-dlp
    supports or the one-line refusal (never a traceback)."""
    try:
        found = youtube.check_youtube_tool()
    except ToolUnusableError as err:
        assert str(err).startswith("--youtube-fallback: ") and "\n" not in str(err)
    else:
        assert found.split()[0] in ("deno", "node", "quickjs", "quickjs-ng", "bun")


def _download_error(message: str, original: Exception | None = None) -> DownloadError:
    """A DownloadError as yt-dlp raises it: the message, and the exception that caused it."""
    original = original or ExtractorError(message, expected=True)
    return DownloadError(f"ERROR: [youtube] abcdefghijk: {message}", (type(original), original, None))


@pytest.mark.parametrize("message, original, kind", [
    ("Video unavailable. This video has been removed by the uploader", None, VideoMissingError),
    ("Private video. Sign in if you've been granted access to this video", None, VideoMissingError),
    ("Video unavailable. This video is no longer available because the YouTube account "
     "associated with this video has been terminated.", None, VideoMissingError),
    ("The uploader has not made this video available in your country",
     GeoRestrictedError("The uploader has not made this video available in your country"), VideoMissingError),
    ("Unable to download webpage: timed out", TransportError("timed out"), TransientMediaError),
    ("This content isn't available, try again later.", None, TransientMediaError),
    ("Requested format is not available. Use --list-formats for a list of available formats", None,
     ToolUnusableError),
    ("Sign in to confirm you're not a bot. Use --cookies-from-browser or --cookies", None, ToolUnusableError),
    ("n challenge solving failed: Some formats may be missing.", None, ToolUnusableError),
])
def test_a_failed_download_is_told_apart_by_its_cause(message, original, kind):
    err = youtube.youtube_failure("abcdefghijk", _download_error(message, original))
    assert type(err) is kind
    assert str(err).startswith(f"youtube:abcdefghijk: [youtube] abcdefghijk: {message}")
    if kind is ToolUnusableError:
        assert "not a verdict on the video" in str(err)


def test_download_youtube_raises_what_the_failure_was(tmp_path, monkeypatch):
    class Failing:
        def __init__(self, options):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def extract_info(self, url, download):
            raise _download_error("Requested format is not available")

    monkeypatch.setattr(yt_dlp, "YoutubeDL", Failing)
    with pytest.raises(ToolUnusableError):
        youtube.download_youtube("abcdefghijk", tmp_path)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    make_sample(root, seed=1, config=SampleConfig(train_videos=2, val_videos=2))
    return root


@pytest.fixture
def one_gone(sample, tmp_path):
    """The sample's videos with one (the second train video) missing from the folder."""
    videos = tmp_path / "videos"
    shutil.copytree(sample / "videos", videos)
    (videos / MKV).unlink()
    return videos


def test_a_build_with_youtube_fallback_and_no_runtime_stops_before_any_video(sample, one_gone, tmp_path,
                                                                             monkeypatch):
    _runtimes(monkeypatch)
    fetched = []
    monkeypatch.setattr(media_step, "download_youtube", lambda video_id, dest: fetched.append(video_id))
    monkeypatch.setattr(media, "cut_clip", lambda *a, **k: pytest.fail("no clip is cut"))
    result = _build(sample, tmp_path / "b", "--youtube-fallback", "--resolution", "32x32", videos=one_gone)
    assert result.exit_code == 2
    assert _last_line(result) == "error: " + NO_RUNTIME.format(found="")
    assert fetched == [] and not (tmp_path / "b" / manifest.DATASET_CARD).exists()


def test_a_tool_failure_is_reported_apart_from_a_gone_video_and_retried(sample, one_gone, tmp_path,
                                                                        monkeypatch):
    _runtimes(monkeypatch, deno=Info("deno", "2.5.1"))

    def broken_tool(video_id, dest):
        raise youtube.youtube_failure(video_id, _download_error("Requested format is not available"))

    monkeypatch.setattr(media_step, "download_youtube", broken_tool)
    out = tmp_path / "b"
    first = _build(sample, out, "--youtube-fallback", "--resolution", "32x32", videos=one_gone)
    assert first.exit_code == 2
    assert "1 videos failed because the download tool (yt-dlp) could not be used" in _last_line(first)
    videos = manifest.read_benchmark_table(out, "videos")
    row = videos[videos.source_file == MKV].iloc[0]
    assert row.status == "tool_unusable"
    report = (out / "reports" / "media.txt").read_text()
    assert "(0 missing, 0 corrupt, 1 tool_unusable)" in report
    line = next(line for line in report.splitlines() if line.startswith(f"{row.video_id}\t"))
    assert "no such video file; YouTube fallback: youtube:" in line
    assert "Requested format is not available" in line and "not a verdict on the video" in line

    def gone(video_id, dest):
        raise youtube.youtube_failure(video_id, _download_error("Video unavailable"))

    monkeypatch.setattr(media_step, "download_youtube", gone)
    again = _build(sample, out, "--youtube-fallback", "--resolution", "32x32", videos=one_gone)
    assert again.exit_code == 0, again.output  # tried again; now a verdict on the video
    videos = manifest.read_benchmark_table(out, "videos")
    assert videos[videos.source_file == MKV].iloc[0].status == "missing"
    assert manifest.read_dataset_card(out)["counts"]["videos"] == {"missing": 1, "ok": 3}

