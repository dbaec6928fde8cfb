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

import pandas as pd
import pytest
from click.testing import CliRunner

from stvr_data import manifest, media, media_step, outdir
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


def fill_disk_when_cutting_mkv(monkeypatch):
    """Make cutting the sample's .mkv video fail as on a full disk (ENOSPC), the rest cut;
    returns the real `media.cut_clip` (to put back when the disk has room again)."""
    real = media.cut_clip

    def full_disk(src, dest, **kwargs):
        if MKV in str(src):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dest, **kwargs)

    monkeypatch.setattr(media, "cut_clip", full_disk)
    return real


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


def test_every_path_stays_under_the_output_directory(sample, tmp_path):
    assert outdir.within(tmp_path, "clips/Diving/v_a.mp4") == tmp_path / "clips/Diving/v_a.mp4"
    for hostile in ("../x.mp4", "clips/../../x.mp4", "/tmp/x.mp4", ".", "clips/..", ""):
        with pytest.raises(outdir.OutputDirectoryError, match="outside"):
            outdir.within(tmp_path, hostile)
    elsewhere = tmp_path / "big-disk"
    elsewhere.mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "clips").symlink_to(elsewhere)  # the user's choice: allowed
    assert outdir.within(tmp_path / "b", "clips/x.mp4") == tmp_path / "b" / "clips" / "x.mp4"
    # The media step writes through it: a hostile video id stops the build, nothing written.
    videos = pd.DataFrame({"video_id": ["../../escaped"], "source_file": [MKV]})
    with pytest.raises(outdir.OutputDirectoryError, match="outside"):
        media_step.prepare_media(videos, str(sample / "videos"), tmp_path / "c" / "d", start=900.0,
                                 end=901.0, size=(32, 32), progress=False)
    assert not list(tmp_path.rglob("escaped*"))


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


# With --skip-media the commit renames 7 files, the 2 generated from the card (README.md,
# croissant.json: renames 8 and 9), then the card (rename 10).
@pytest.mark.parametrize("point", ["before-commit", "rename:1", "rename:4", "rename:9", "rename:10"])
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


def test_a_bad_rows_report_goes_when_the_rows_are_fixed(sample, tmp_path):
    annotations = tmp_path / "annotations"
    shutil.copytree(sample / "annotations", annotations)
    csv = annotations / "ava_train_v2.2.csv"
    good = csv.read_text()
    csv.write_text(good + "xyz,not-a-second,0.1,0.1,0.2,0.2,12,0\n")
    out = tmp_path / "b"
    args = ["build-ava", "--annotations", str(annotations), "--out", str(out), "--skip-media",
            "--skip-bad-rows", *SMALL]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert "reports/bad_rows.csv" in manifest.read_dataset_card(out)["files"]
    csv.write_text(good)
    assert CliRunner().invoke(main, args).exit_code == 0
    assert not (out / "reports").exists() and outdir.verify(out).ok
    assert "reports/bad_rows.csv" not in manifest.read_dataset_card(out)["files"]


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
