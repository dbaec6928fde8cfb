"""Media faults in a build, through the command line: a full disk, an ffmpeg killed by a
signal and a mirror outage are retried by the same command; a split left without pairs is
an error; a source that decodes to less than its header says loses what it cannot serve;
a build killed while ffmpeg runs takes it along, and the rerun makes the same clips."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from test_build_safety import MKV, WEBM, _args, _build, _last_line, fill_disk_when_cutting_mkv
from test_process import _alive, _wait_for

from stvr_data import fetch, manifest, media
from stvr_data.build import trim_training_tubelets
from stvr_data.sample import SampleConfig, make_sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    make_sample(root, seed=1, config=SampleConfig(train_videos=2, val_videos=2))
    return root

# ------------------------------------------------------------------ transient failures

def test_a_full_disk_is_retryable_and_the_same_command_retries(sample, tmp_path, monkeypatch):
    real = fill_disk_when_cutting_mkv(monkeypatch)
    out = tmp_path / "b"
    first = _build(sample, out, "--resolution", "32x32", videos=sample / "videos")
    assert first.exit_code == 2
    assert "1 videos failed for a reason that may pass" in _last_line(first)
    videos = manifest.read_benchmark_table(out, "videos")
    assert dict(zip(videos.source_file, videos.status, strict=True))[MKV] == "retryable"
    assert "retryable" in (out / "reports" / "media.txt").read_text()
    monkeypatch.setattr(media, "cut_clip", real)
    again = _build(sample, out, "--resolution", "32x32", videos=sample / "videos")
    assert again.exit_code == 0, again.output
    assert set(manifest.read_benchmark_table(out, "videos").status) == {"ok"}
    assert not (out / "reports").exists()


def test_ffmpeg_killed_by_a_signal_is_retryable(sample, tmp_path, monkeypatch):
    killer = tmp_path / "ffmpeg"
    killer.write_text("#!/bin/sh\nkill -9 $$\n")
    killer.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(killer))
    out = tmp_path / "b"
    first = _build(sample, out, "--resolution", "32x32", videos=sample / "videos")
    # every video failed: no pairs, so nothing is committed, and the line says why
    assert first.exit_code == 2 and "0 val pairs" in _last_line(first) and "4 retryable" in _last_line(first)
    assert not (out / "dataset.json").exists()
    monkeypatch.delenv("IMAGEIO_FFMPEG_EXE")
    assert _build(sample, out, "--resolution", "32x32", videos=sample / "videos").exit_code == 0


class _Mirror(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.server.down:
            self.send_error(503)
            return
        data = (self.server.root / self.path.rsplit("/", 1)[-1]).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_a_mirror_outage_is_retried_by_the_same_command(sample, tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    server.root, server.down = sample / "videos", True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(fetch.time, "sleep", lambda seconds: None)
    monkeypatch.setenv("STVR_CACHE", str(tmp_path / "cache"))
    url, out = f"http://127.0.0.1:{server.server_address[1]}/trainval", tmp_path / "b"
    try:
        first = _build(sample, out, "--resolution", "32x32", videos=url)
        assert first.exit_code == 2 and "4 retryable" in _last_line(first)
        server.down = False
        again = _build(sample, out, "--resolution", "32x32", videos=url)
        assert again.exit_code == 0, again.output
    finally:
        server.shutdown()
    assert set(manifest.read_benchmark_table(out, "videos").status) == {"ok"}


def test_a_split_without_pairs_is_an_error(sample, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(sample / "videos", videos)
    for name in ("hVXnnggK5ze.mp4", WEBM):  # both val videos
        (videos / name).unlink()
    result = _build(sample, tmp_path / "b", "--resolution", "32x32", videos=videos)
    assert result.exit_code == 2
    assert "0 val pairs" in _last_line(result) and "2 missing" in _last_line(result)
    assert not (tmp_path / "b" / "dataset.json").exists()


# ------------------------------------------------------------------ media that is really there

def test_pairs_past_the_decodable_end_of_a_truncated_source_are_dropped(sample, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(sample / "videos", videos)
    for name in (WEBM, MKV):  # a val and a train video; their headers still say 944 s
        data = (videos / name).read_bytes()
        (videos / name).write_bytes(data[: int(len(data) * 0.6)])
        assert media.probe_video(videos / name).duration == 944.0
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _build(sample, full, "--resolution", "32x32", videos=sample / "videos").exit_code == 0
    result = _build(sample, cut, "--resolution", "32x32", videos=videos)
    assert result.exit_code == 0, result.output
    table = manifest.read_benchmark_table(cut, "videos")
    row = table[table.source_file == WEBM].iloc[0]
    assert row.status == "ok" and 905.0 < row.clip_end < 930.0  # measured by decoding
    card = manifest.read_dataset_card(cut)
    dropped = sum(card["counts"][f"pairs_{s}_dropped_for_media"] for s in ("val", "test"))
    assert dropped > 0
    assert dropped == sum(manifest.read_dataset_card(full)["counts"][f"pairs_{s}"] for s in ("val", "test")) - sum(
        card["counts"][f"pairs_{s}"] for s in ("val", "test"))
    report = (cut / "reports" / "media.txt").read_text()
    assert f"{row.video_id}\tshort\tdecodes to {row.clip_end:.2f} s only\t{dropped} val/test pairs" in report
    for split in ("val", "test"):
        pairs = manifest.read_benchmark_table(cut, f"pairs_{split}")
        gt = manifest.read_benchmark_table(cut, f"groundtruth_{split}").merge(pairs[["pair_id", "ref_video_id"]])
        mine = gt[gt.ref_video_id == row.video_id]
        assert (mine.timestamp + 1 / 3 <= row.clip_end + 1e-6).all()
        assert not (pairs[pairs.ref_video_id == row.video_id].ref_end > row.clip_end + 1e-6).any()
        assert not (pairs[pairs.query_video_id == row.video_id].query_end > row.clip_end + 1e-6).any()
    train = table[table.source_file == MKV].iloc[0]
    assert 905.0 < train.clip_end < 935.0
    tubelets = manifest.read_benchmark_table(cut, "tubelets")
    mine = tubelets[tubelets.video_id == train.video_id]
    assert len(mine) and (mine.end <= train.clip_end + 1e-6).all()
    assert all(len(b) == e - s for b, s, e in zip(mine.boxes, mine.start, mine.end, strict=True))  # [start, end)
    assert f"{train.video_id}\tshort\tdecodes to {train.clip_end:.2f} s only\t" in report
    assert "training tubelets cut at that end" in report


def test_training_tubelets_are_cut_at_the_decoded_end():
    box = [0.1, 0.1, 0.2, 0.2]
    tubelets = pd.DataFrame({
        "tubelet_id": [0, 1, 2, 3, 4], "video_id": ["a", "a", "a", "b", "c"], "person_id": [0, 1, 2, 0, 0],
        "label": ["5"] * 5, "start": [902.0, 905.0, 915.0, 902.0, 902.0], "end": [905.0, 913.0, 917.0, 931.0, 931.0],
        "split": ["train", "train", "train", "val", "train"],
        "boxes": [[box] * 3, [box] * 8, [box] * 2, [box] * 29, [box] * 29]})
    # a decodes to 909.5 s; b (val) is handled by the pairs; c has no clip (not in `decoded`)
    out, cut = trim_training_tubelets(tubelets, {"a": 909.5, "b": 903.0}, 1.0)
    assert cut == {"a": 2}
    assert out.tubelet_id.tolist() == [0, 1, 3, 4]  # 2 starts past the end: dropped, ids kept
    one = out.set_index("tubelet_id")
    # [905, 913) keeps the keyframes 905..908, whose seconds end by 909.5: [905, 909)
    assert (one.loc[1, "start"], one.loc[1, "end"], len(one.loc[1, "boxes"])) == (905.0, 909.0, 4)
    assert one.loc[0, "end"] == 905.0 and len(one.loc[0, "boxes"]) == 3  # inside: untouched
    assert one.loc[3, "end"] == 931.0 and one.loc[4, "end"] == 931.0
    assert trim_training_tubelets(tubelets, {}, 1.0)[0] is tubelets


def test_kill_9_of_a_build_takes_its_ffmpeg_along_and_a_rerun_makes_the_same_clips(sample, tmp_path):
    pid_file = tmp_path / "ffmpeg.pid"
    slow = tmp_path / "ffmpeg"
    slow.write_text(f"#!/bin/sh\necho $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 300\n")
    slow.chmod(0o755)
    out = tmp_path / "b"
    args = _args(sample, out, "--resolution", "32x32", "--workers", "2", videos=sample / "videos")
    build = subprocess.Popen([sys.executable, "-c", "import sys; from stvr_data.cli.main import main; "
                              "main(sys.argv[1:])", *args], env=dict(os.environ, IMAGEIO_FFMPEG_EXE=str(slow)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(pid_file.exists, "the build to start ffmpeg")
    ffmpeg_pid = int(pid_file.read_text())
    build.send_signal(signal.SIGKILL)
    assert build.wait() == -signal.SIGKILL
    _wait_for(lambda: not _alive(ffmpeg_pid), "the build's ffmpeg to die with it")
    assert _build(sample, out, "--resolution", "32x32", "--workers", "2", videos=sample / "videos").exit_code == 0
    fresh = tmp_path / "fresh"
    assert _build(sample, fresh, "--resolution", "32x32", videos=sample / "videos").exit_code == 0
    for clip in (fresh / "clips").iterdir():
        assert (out / "clips" / clip.name).read_bytes() == clip.read_bytes(), clip.name
    assert not list(out.rglob("*.partial")) and not (out / ".stvr-staging").exists()
