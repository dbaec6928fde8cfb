"""What a build guarantees (stvr_data.build + stvr_data.outdir), through the command line:
it never touches files that are not its own, commits by writing its card last, checks and
repairs what it built, retries transient failures and never keeps pairs its media cannot
serve. Faults are real: other processes, SIGKILL, full-disk errors, a mirror on 127.0.0.1."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from stvr_data import fetch, manifest, media, outdir
from stvr_data.cli.main import main
from stvr_data.sample import SampleConfig, make_sample

SMALL = ["--min-tubelets", "2", "--num-val-labels", "1", "--num-test-labels", "1"]
WEBM = "Xyok-lq3IgN.webm"  # the sample's second val video (seed 1)
MKV = "-sxOwzqMMUB.mkv"  # its second train video: without it, val and test keep their pairs


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    make_sample(root, seed=1, config=SampleConfig(train_videos=2, val_videos=2))
    return root


def _args(sample, out, *extra, videos=None):
    args = ["build-ava", "--annotations", str(sample / "annotations"), "--out", str(out), *SMALL, *extra]
    return args + (["--videos", str(videos)] if videos is not None else [])


def _build(sample, out, *extra, videos=None):
    return CliRunner().invoke(main, _args(sample, out, *extra, videos=videos))


def _last_line(result) -> str:
    return result.output.strip().splitlines()[-1]


# ------------------------------------------------------------------ never lose what is not ours

def test_a_directory_that_is_not_a_benchmark_is_refused_and_left_alone(sample, tmp_path):
    out = tmp_path / "mine"
    (out / "clips").mkdir(parents=True)
    (out / "clips" / "holiday.mp4").write_bytes(b"my own video")
    (out / "notes.txt").write_text("keep me")
    for extra in ([], ["--force"]):
        result = _build(sample, out, "--skip-media", *extra)
        assert result.exit_code == 2
        assert "not a benchmark built by stvr-data" in _last_line(result)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "clips", "clips/holiday.mp4", "notes.txt"]
    (out / "notes.txt").unlink()
    (out / "clips" / "holiday.mp4").unlink()
    (out / "dataset.json").write_text('{"name": "my own card"}')
    result = _build(sample, out, "--skip-media")
    assert result.exit_code == 2 and "not a benchmark card written by stvr-data" in _last_line(result)
    assert (out / "dataset.json").read_text() == '{"name": "my own card"}'


def test_force_replaces_only_what_the_card_lists(sample, tmp_path):
    out = tmp_path / "b"
    assert _build(sample, out, "--resolution", "32x32", videos=sample / "videos").exit_code == 0
    (out / "clips" / "mine.mp4").write_bytes(b"a user's file beside the clips")
    forced = _build(sample, out, "--resolution", "32x32", "--force", videos=sample / "videos")
    assert forced.exit_code == 0, forced.output
    assert (out / "clips" / "mine.mp4").read_bytes() == b"a user's file beside the clips"
    card = manifest.read_dataset_card(out)
    assert "clips/mine.mp4" not in card["files"]
    assert outdir.verify(out).notes == ["clips/mine.mp4: not listed in the card"]
    # A file the card does not list, at a path the build would now write: refused whole.
    card_files = dict(card["files"])
    (out / "reports").mkdir()
    (out / "reports" / "media.txt").write_text("the user's own notes")
    missing = tmp_path / "videos"
    shutil.copytree(sample / "videos", missing)
    (missing / MKV).unlink()
    refused = _build(sample, out, "--resolution", "48x48", videos=missing)  # clips cut again
    assert refused.exit_code == 2 and "reports/media.txt: exists and is not part of the benchmark" in _last_line(refused)
    assert (out / "reports" / "media.txt").read_text() == "the user's own notes"
    assert manifest.read_dataset_card(out)["files"] == card_files and outdir.verify(out).ok


def test_every_path_stays_under_the_output_directory(tmp_path):
    assert outdir.within(tmp_path, "clips/Diving/v_a.mp4") == tmp_path / "clips/Diving/v_a.mp4"
    for hostile in ("../x.mp4", "clips/../../x.mp4", "/tmp/x.mp4", "."):
        with pytest.raises(outdir.OutputDirectoryError, match="outside"):
            outdir.within(tmp_path, hostile)


# ------------------------------------------------------------------ one build at a time

HOLD = """
import sys
from stvr_data.lock import OutputLock
with OutputLock(sys.argv[1], "holder-of-the-lock"):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_second_build_fails_at_once_naming_the_holder(sample, tmp_path):
    out = tmp_path / "b"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        result = _build(sample, out, "--skip-media")
        assert result.exit_code == 2
        line = _last_line(result)
        assert "in use by holder-of-the-lock" in line and f"pid {holder.pid}" in line
        assert not (out / "dataset.json").exists()
    finally:
        holder.communicate("")
    assert holder.returncode == 0
    assert _build(sample, out, "--skip-media").exit_code == 0  # released: free again
    assert not (out / ".stvr.lock").exists()


# ------------------------------------------------------------------ the card commits

KILL = """
import os, signal, sys
from stvr_data import outdir

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

point = sys.argv[1]
if point == "before-commit":
    outdir.Output.commit = die
else:  # "rename:N": killed at the N-th rename of the commit
    limit, calls, real = int(point.split(":")[1]), [], os.replace

    class Os:
        def __getattr__(self, name):
            return getattr(os, name)

        def replace(self, src, dst):
            calls.append(src)
            if len(calls) == limit:
                die()
            real(src, dst)

    outdir.os = Os()
from stvr_data.cli.main import main
main(sys.argv[2:])
"""


def _killed_build(point: str, args: list[str]) -> int:
    return subprocess.run([sys.executable, "-c", KILL, point, *args], capture_output=True).returncode


@pytest.mark.parametrize("point", ["before-commit", "rename:1", "rename:4", "rename:9"])
def test_kill_9_during_a_rebuild_never_leaves_a_mix(sample, tmp_path, point):
    out = tmp_path / "b"
    assert _build(sample, out, "--skip-media").exit_code == 0
    seed0 = manifest.read_dataset_card(out)
    assert _killed_build(point, _args(sample, out, "--skip-media", "--seed", "1")) == -signal.SIGKILL
    if (out / "dataset.json").exists():  # killed before the commit point: the old benchmark, whole
        assert manifest.read_dataset_card(out)["files"] == seed0["files"] and outdir.verify(out).ok
    else:  # after it: no card (nobody reads a mix) until the next run finishes the commit
        with pytest.raises(outdir.OutputDirectoryError, match="stopped while committing"):
            outdir.verify(out)
    again = _build(sample, out, "--skip-media", "--seed", "1")
    assert again.exit_code == 0, again.output
    card = manifest.read_dataset_card(out)
    assert card["seed"] == 1 and outdir.verify(out).ok and outdir.verify(out).notes == []
    fresh = tmp_path / "fresh"
    assert _build(sample, fresh, "--skip-media", "--seed", "1").exit_code == 0
    assert card["files"] == manifest.read_dataset_card(fresh)["files"]


def test_a_rebuild_with_other_options_says_what_changed(sample, tmp_path, caplog):
    out = tmp_path / "b"
    assert _build(sample, out, "--skip-media").exit_code == 0
    with caplog.at_level(logging.WARNING, logger="stvr_data.build"):
        assert _build(sample, out, "--skip-media", "--seed", "3").exit_code == 0
    lines = [r.getMessage() for r in caplog.records if "replacing the benchmark" in r.getMessage()]
    assert len(lines) == 1 and "options.seed 0 -> 3" in lines[0] and "\n" not in lines[0]


def test_stale_reports_are_removed_and_not_hashed(sample, tmp_path):
    missing = tmp_path / "videos"
    shutil.copytree(sample / "videos", missing)
    moved = tmp_path / MKV
    (missing / MKV).rename(moved)
    out = tmp_path / "b"
    assert _build(sample, out, "--resolution", "32x32", videos=missing).exit_code == 0
    assert MKV in (out / "reports" / "media.txt").read_text()
    moved.rename(missing / MKV)
    assert _build(sample, out, "--resolution", "32x32", "--force", videos=missing).exit_code == 0
    assert not (out / "reports").exists()
    assert not any(name.startswith("reports/") for name in manifest.read_dataset_card(out)["files"])


# ------------------------------------------------------------------ checks, repairs, verify

def test_a_deleted_clip_or_garbage_table_is_rebuilt_not_trusted(sample, tmp_path):
    out = tmp_path / "b"
    assert _build(sample, out, "--resolution", "32x32", videos=sample / "videos").exit_code == 0
    good = manifest.read_dataset_card(out)
    clip = sorted((out / "clips").iterdir())[0]
    clip.unlink()
    (out / "pairs_val.parquet").write_bytes(b"garbage")
    verdict = CliRunner().invoke(main, ["verify", str(out)])
    assert verdict.exit_code == 1
    assert f"bad: clips/{clip.name}: missing" in verdict.output
    assert "bad: pairs_val.parquet: size" in verdict.output
    result = _build(sample, out, "--resolution", "32x32", videos=sample / "videos")
    assert result.exit_code == 0, result.output
    assert manifest.read_dataset_card(out)["files"] == good["files"] and outdir.verify(out).ok


def test_after_an_unclean_stop_the_hashes_are_checked(sample, tmp_path):
    out = tmp_path / "b"
    assert _build(sample, out, "--skip-media").exit_code == 0
    table = out / "pairs_test.parquet"
    good = table.read_bytes()
    table.write_bytes(bytes(len(good)))  # same size, other bytes: only a hash can tell
    stamp = (out / "dataset.json").stat().st_mtime_ns
    assert _build(sample, out, "--skip-media").exit_code == 0
    assert table.read_bytes() != good  # a clean stop before: the cheap size check passes
    assert (out / "dataset.json").stat().st_mtime_ns == stamp
    (out / ".stvr.lock").write_text('{"pid": 1, "host": "elsewhere", "command": "build"}\n')  # left by a kill
    assert _build(sample, out, "--skip-media").exit_code == 0
    assert table.read_bytes() == good and outdir.verify(out).ok


def test_verify_checks_sha256_and_notes_extra_files(sample, tmp_path):
    out = tmp_path / "b"
    assert _build(sample, out, "--skip-media").exit_code == 0
    ok = CliRunner().invoke(main, ["verify", str(out)])
    assert ok.exit_code == 0 and ok.output.strip().endswith(", ok")
    figure = out / "samples_per_label.png"
    data = bytearray(figure.read_bytes())
    data[-20] ^= 0xFF
    figure.write_bytes(bytes(data))
    (out / "extra.txt").write_text("x")
    bad = CliRunner().invoke(main, ["verify", str(out)])
    assert bad.exit_code == 1
    assert "bad: samples_per_label.png: sha256" in bad.output
    assert "note: extra.txt: not listed in the card" in bad.output
    assert "1 bad files" in bad.output


# ------------------------------------------------------------------ transient failures

def test_a_full_disk_is_retryable_and_the_same_command_retries(sample, tmp_path, monkeypatch):
    real = media.cut_clip

    def full_disk(src, dest, **kwargs):
        if MKV in str(src):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dest, **kwargs)

    monkeypatch.setattr(media, "cut_clip", full_disk)
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
    train = table[table.source_file == MKV].iloc[0]
    assert 905.0 < train.clip_end < 935.0
    tubelets = manifest.read_benchmark_table(cut, "tubelets")
    mine = tubelets[tubelets.video_id == train.video_id]
    assert len(mine) and (mine.end + 1 <= train.clip_end + 1e-6).all()
    assert all(len(b) == e - s + 1 for b, s, e in zip(mine.boxes, mine.start, mine.end, strict=True))
    assert f"{train.video_id}\tshort\tdecodes to {train.clip_end:.2f} s only\t" in report
    assert "training tubelets cut at that end" in report


def test_partial_files_of_dead_runs_are_removed(sample, tmp_path):
    out = tmp_path / "b"
    assert _build(sample, out, "--skip-media").exit_code == 0
    leftover = out / "clips" / f".x.mp4.{os.getpid() + 1}-deadbeef.partial"
    leftover.parent.mkdir()
    leftover.write_bytes(b"half a clip from a killed run")
    (out / ".stvr.lock").write_text(json.dumps({"pid": 1}))
    (out / ".stvr-staging").mkdir()
    (out / ".stvr-staging" / "replaces.json").write_text("[]\n")  # a run killed after its commit
    assert "note: .stvr-staging: files of a build that stopped" in CliRunner().invoke(main, ["verify", str(out)]).output
    stamp = (out / "dataset.json").stat().st_mtime_ns
    assert _build(sample, out, "--skip-media").exit_code == 0
    assert (out / "dataset.json").stat().st_mtime_ns == stamp  # checked by hash, found whole
    assert not leftover.exists() and not (out / ".stvr-staging").exists()
    assert outdir.verify(out).notes == []


def test_training_tubelets_are_cut_at_the_decoded_end():
    import pandas as pd

    from stvr_data.build import trim_training_tubelets

    box = [0.1, 0.1, 0.2, 0.2]
    tubelets = pd.DataFrame({
        "tubelet_id": [0, 1, 2, 3, 4], "video_id": ["a", "a", "a", "b", "c"], "person_id": [0, 1, 2, 0, 0],
        "label": ["5"] * 5, "start": [902.0, 905.0, 915.0, 902.0, 902.0], "end": [904.0, 912.0, 916.0, 930.0, 930.0],
        "split": ["train", "train", "train", "val", "train"],
        "boxes": [[box] * 3, [box] * 8, [box] * 2, [box] * 29, [box] * 29]})
    # a decodes to 909.5 s; b (val) is handled by the pairs; c has no clip (not in `decoded`)
    out, cut = trim_training_tubelets(tubelets, {"a": 909.5, "b": 903.0}, 1.0)
    assert cut == {"a": 2}
    assert out.tubelet_id.tolist() == [0, 1, 3, 4]  # 2 starts past the end: dropped, ids kept
    one = out.set_index("tubelet_id")
    assert (one.loc[1, "start"], one.loc[1, "end"], len(one.loc[1, "boxes"])) == (905.0, 908.0, 4)
    assert one.loc[0, "end"] == 904.0 and len(one.loc[0, "boxes"]) == 3  # inside: untouched
    assert one.loc[3, "end"] == 930.0 and one.loc[4, "end"] == 930.0
    assert trim_training_tubelets(tubelets, {}, 1.0)[0] is tubelets
