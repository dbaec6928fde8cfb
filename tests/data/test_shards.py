"""Media shards (stvr_data.shards), through the command line: N shards and a merge make the
benchmark an unsharded build makes, byte for byte; shards never redo each other's videos,
a running shard blocks the merge, and bad values or a missing shard are one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from test_build_safety import _last_line, fill_disk_when_cutting_mkv

from stvr_data import manifest, media, sample_ucf
from stvr_data.cli.main import main
from stvr_data.lock import OutputLock
from stvr_data.sample import SampleConfig, make_sample
from stvr_data.shards import SHARDS_DIR, STATUS_FILE, Shard, parse_shard

SMALL = ["--min-tubelets", "2", "--num-val-labels", "1", "--num-test-labels", "1", "--resolution", "32x32"]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    make_sample(root, seed=1, config=SampleConfig(train_videos=2, val_videos=2))
    return root


@pytest.fixture(scope="module")
def plain(sample, tmp_path_factory):
    """The unsharded build every sharded one is compared with."""
    out = tmp_path_factory.mktemp("plain") / "b"
    result = _build(sample, out)
    assert result.exit_code == 0, result.output
    return out


def _build(sample, out, *extra):
    return CliRunner().invoke(main, ["build-ava", "--annotations", str(sample / "annotations"),
                                     "--videos", str(sample / "videos"), "--out", str(out), *SMALL, *extra])


def _files(root) -> dict:
    """Every file of a benchmark (relative path -> bytes), hidden folders included."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _status(out, shard: str) -> dict:
    return json.loads((out / SHARDS_DIR / shard / STATUS_FILE).read_text())


def test_shard_values_are_one_based_k_of_n():
    assert parse_shard("2/4") == Shard(2, 4) and parse_shard(" 1 / 1 ") == Shard(1, 1)
    assert str(Shard(3, 8)) == "3/8" and Shard(3, 8).folder == "3-of-8"


def test_two_shards_and_a_merge_give_the_unsharded_benchmark_byte_for_byte(sample, plain, tmp_path):
    out = tmp_path / "b"
    for shard in ("2/2", "1/2"):
        result = _build(sample, out, "--shard", shard)
        assert result.exit_code == 0, result.output
        assert f"shard {shard}:" in result.output
    assert not (out / manifest.DATASET_CARD).exists()  # nothing of the benchmark before the merge
    ids = sorted(manifest.read_benchmark_table(plain, "videos").video_id)
    assert [r["video_id"] for r in _status(out, "1-of-2")["videos"]] == ids[0::2]
    assert [r["video_id"] for r in _status(out, "2-of-2")["videos"]] == ids[1::2]
    merged = _build(sample, out, "--merge")
    assert merged.exit_code == 0, merged.output
    assert not (out / SHARDS_DIR).exists()
    assert _files(out) == _files(plain)  # tables, clips, reports, card and the files it generates


def test_shards_running_at_once_in_separate_processes_merge_to_the_same_benchmark(sample, plain, tmp_path):
    out = tmp_path / "b"
    runs = [subprocess.Popen([sys.executable, "-c", "from stvr_data.cli.main import main; main()",
                              "build-ava", "--annotations", str(sample / "annotations"), "--videos",
                              str(sample / "videos"), "--out", str(out), *SMALL, "--shard", shard],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for shard in ("1/3", "2/3", "3/3")]
    for run in runs:
        output, _ = run.communicate(timeout=600)
        assert run.returncode == 0, output
    merged = _build(sample, out, "--merge")
    assert merged.exit_code == 0, merged.output
    assert _files(out) == _files(plain)


def test_merge_cuts_nothing_and_a_plain_run_takes_the_shards_clips_over(sample, plain, tmp_path, monkeypatch):
    out = tmp_path / "b"
    for shard in ("1/2", "2/2"):
        assert _build(sample, out, "--shard", shard).exit_code == 0
    cuts = []
    real = media.cut_clip
    monkeypatch.setattr(media, "cut_clip", lambda *a, **k: cuts.append(a) or real(*a, **k))
    result = _build(sample, out)  # no --shard, no --merge: the shards' clips are used as they are
    assert result.exit_code == 0, result.output
    assert cuts == []
    assert _files(out) == _files(plain)


def test_a_shard_reuses_its_own_clips_and_those_of_the_benchmark(sample, tmp_path, monkeypatch):
    out = tmp_path / "b"
    assert _build(sample, out, "--shard", "1/2").exit_code == 0
    cuts = []
    real = media.cut_clip
    monkeypatch.setattr(media, "cut_clip", lambda *a, **k: cuts.append(a) or real(*a, **k))
    assert _build(sample, out, "--shard", "1/2").exit_code == 0  # rerun: nothing cut again
    assert _build(sample, out, "--shard", "2/2").exit_code == 0
    assert len(cuts) == len(_status(out, "2-of-2")["videos"])
    assert _build(sample, out, "--merge").exit_code == 0
    cuts.clear()
    assert _build(sample, out, "--shard", "1/3").exit_code == 0  # clips committed in the benchmark
    assert cuts == [] and {r["status"] for r in _status(out, "1-of-3")["videos"]} == {"ok"}
    verify = CliRunner().invoke(main, ["verify", str(out)])
    assert verify.exit_code == 0  # the benchmark in place is whole; the shard is noted, not counted
    assert f"note: {SHARDS_DIR}: clips of media shards not merged yet (run the build with --merge)" in verify.output


@pytest.mark.parametrize("value", ["0/2", "3/2", "2", "a/b", "1/0", "-1/2"])
def test_a_bad_shard_value_is_one_line(sample, tmp_path, value):
    result = _build(sample, tmp_path / "b", "--shard", value)
    assert result.exit_code == 2
    assert _last_line(result) == (f"error: --shard {value!r}: expected K/N with 1 <= K <= N "
                                  "(1-based: 1/4, 2/4, 3/4, 4/4)")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("extra", [["--shard", "1/2", "--merge"], ["--merge", "--skip-media"]])
def test_shard_options_that_exclude_each_other_are_one_line(sample, tmp_path, extra):
    result = _build(sample, tmp_path / "b", *extra)
    assert result.exit_code == 2 and _last_line(result).startswith("error: --shard and --merge ")


def test_a_merge_with_a_missing_shard_is_one_line_and_writes_nothing(sample, tmp_path):
    out = tmp_path / "b"
    assert _build(sample, out, "--shard", "2/3").exit_code == 0
    result = _build(sample, out, "--merge")
    assert result.exit_code == 2
    assert _last_line(result) == (f"error: {out / SHARDS_DIR}: shard 1/3, 3/3 has not finished (no "
                                  f"{STATUS_FILE}); run it with --shard, then --merge again")
    assert not (out / manifest.DATASET_CARD).exists()
    assert _status(out, "2-of-3")["shard"] == "2/3"  # its work is kept for the next merge
    none = _build(sample, tmp_path / "empty", "--merge")
    assert none.exit_code == 2 and "no media shards to merge" in _last_line(none)


def test_a_running_shard_blocks_the_merge_and_a_second_copy_of_itself(sample, tmp_path):
    out = tmp_path / "b"
    for shard in ("1/2", "2/2"):
        assert _build(sample, out, "--shard", shard).exit_code == 0
    with OutputLock(out / SHARDS_DIR / "2-of-2", command="build-ava --shard 2/2"):
        for extra in (["--merge"], ["--shard", "2/2"], []):
            result = _build(sample, out, *extra)
            assert result.exit_code == 2
            assert _last_line(result).startswith(f"error: {out / SHARDS_DIR / '2-of-2'}: in use by "
                                                 "build-ava --shard 2/2 (pid ")
        assert _build(sample, out, "--shard", "1/2").exit_code == 0  # other shards run meanwhile
    assert not (out / manifest.DATASET_CARD).exists()
    assert _build(sample, out, "--merge").exit_code == 0


def test_a_shard_of_another_build_is_not_merged(sample, tmp_path):
    out = tmp_path / "b"
    assert _build(sample, out, "--shard", "1/2").exit_code == 0
    assert _build(sample, out, "--shard", "2/2", "--seed", "1").exit_code == 0
    result = _build(sample, out, "--merge")
    assert result.exit_code == 2
    assert _last_line(result) == (f"error: {out / SHARDS_DIR / '2-of-2'}: shard 2/2 was cut for another "
                                  "build (options differ); run it again with the merge's options")


def test_a_shard_refuses_a_folder_that_is_not_a_benchmark(sample, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = _build(sample, out, "--shard", "1/2")
    assert result.exit_code == 2 and "not a benchmark built by stvr-data" in _last_line(result)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_build_ucf_shards_and_merges_to_the_unsharded_benchmark(tmp_path):
    sample = tmp_path / "ucf"
    sample_ucf.make_ucf_sample(sample, seed=2, config=sample_ucf.UcfSampleConfig(
        classes=("Basketball", "Biking", "Diving", "Surfing"), groups=3, test_groups=2,
        action_seconds=(2, 3), background_seconds=(0, 1)))
    args = ["build-ucf", "--annotations", str(sample / "pyannot.pkl"), "--videos", str(sample / "videos"),
            "--split-list", str(sample / "testlist01.txt"), "--class-split", str(sample / "class_split.json"),
            "--resolution", "32x32", "--out"]
    assert CliRunner().invoke(main, [*args, str(tmp_path / "plain")]).exit_code == 0
    for extra in (["--shard", "1/2"], ["--shard", "2/2"], ["--merge"]):
        result = CliRunner().invoke(main, [*args, str(tmp_path / "sharded"), *extra])
        assert result.exit_code == 0, result.output
    assert _files(tmp_path / "sharded") == _files(tmp_path / "plain")


def test_a_build_without_media_leaves_the_shards_alone(sample, plain, tmp_path):
    out = tmp_path / "b"
    for shard in ("1/2", "2/2"):
        assert _build(sample, out, "--shard", shard).exit_code == 0
    before = _files(out / SHARDS_DIR)
    assert _build(sample, out, "--skip-media").exit_code == 0
    assert _files(out / SHARDS_DIR) == before
    assert _build(sample, out, "--merge").exit_code == 0
    assert _files(out) == _files(plain)


def test_a_shard_with_videos_to_retry_fails_and_its_rerun_retries_them(sample, tmp_path, monkeypatch):
    real = fill_disk_when_cutting_mkv(monkeypatch)
    out = tmp_path / "b"
    shard = next(s for s in ("1/2", "2/2") if _build(sample, out, "--shard", s).exit_code != 0)
    folder = Shard(*map(int, shard.split("/"))).folder
    assert {r["status"] for r in _status(out, folder)["videos"]} == {"ok", "retryable"}
    result = _build(sample, out, "--shard", shard)
    assert result.exit_code == 2
    assert _last_line(result).startswith(f"error: {out}: shard {shard}: 1 videos failed for a reason that "
                                         "may pass")
    monkeypatch.setattr(media, "cut_clip", real)
    assert _build(sample, out, "--shard", shard).exit_code == 0
    assert {r["status"] for r in _status(out, folder)["videos"]} == {"ok"}
