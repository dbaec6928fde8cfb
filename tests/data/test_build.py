"""build-ava end to end, through the command line, on make-sample output."""

import json
import shutil

import pytest
from click.testing import CliRunner

from stvr_data import manifest
from stvr_data.cli.main import main
from stvr_data.sample import SampleConfig, make_sample

SMALL = ["--min-tubelets", "2", "--num-val-labels", "1", "--num-test-labels", "1"]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    make_sample(root, seed=1, config=SampleConfig(train_videos=2, val_videos=2))
    return root


def _build(sample, out, *extra, videos=None):
    args = ["build-ava", "--annotations", str(sample / "annotations"), "--out", str(out), *SMALL, *extra]
    if videos is not None:
        args += ["--videos", str(videos)]
    return CliRunner().invoke(main, args)


def test_manifests_card_and_figure_without_media(sample, tmp_path):
    result = _build(sample, tmp_path / "b", "--skip-media")
    assert result.exit_code == 0, result.output
    card = manifest.read_dataset_card(tmp_path / "b")
    for name in manifest.TABLES:
        frame = manifest.read_benchmark_table(tmp_path / "b", name)
        assert card["files"][manifest.TABLE_FILES[name]] == manifest.sha256_file(tmp_path / "b" / manifest.TABLE_FILES[name])
        assert len(frame) > 0 or name.startswith("pairs")
    assert card["counts"]["videos"] == {"skipped": 4}
    assert card["counts"]["pairs_test"] == len(manifest.read_benchmark_table(tmp_path / "b", "pairs_test"))
    assert set(card["labels"]["train"]).isdisjoint(card["labels"]["val"] + card["labels"]["test"])
    assert (tmp_path / "b" / "samples_per_label.png").read_bytes()[:4] == b"\x89PNG"
    assert card["source"]["dataset"] == "AVA" and card["options"]["seed"] == 0


def test_rerun_is_a_no_op_and_force_rebuilds(sample, tmp_path):
    assert _build(sample, tmp_path / "b", "--skip-media").exit_code == 0
    card = tmp_path / "b" / "dataset.json"
    stamp = card.stat().st_mtime_ns
    assert _build(sample, tmp_path / "b", "--skip-media").exit_code == 0
    assert card.stat().st_mtime_ns == stamp
    assert _build(sample, tmp_path / "b", "--skip-media", "--seed", "1").exit_code == 0
    assert card.stat().st_mtime_ns != stamp  # other options: rebuilt
    assert json.loads(card.read_text())["seed"] == 1


def test_tables_are_byte_identical_whatever_workers(sample, tmp_path):
    for workers in ("1", "2"):
        result = _build(sample, tmp_path / workers, "--resolution", "32x32", "--workers", workers,
                        videos=sample / "videos")
        assert result.exit_code == 0, result.output
    for name in [*manifest.TABLE_FILES.values(), "clips"]:
        one, two = tmp_path / "1" / name, tmp_path / "2" / name
        if one.is_dir():
            assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
            for clip in one.iterdir():
                assert clip.read_bytes() == (two / clip.name).read_bytes(), clip.name
        else:
            assert one.read_bytes() == two.read_bytes(), name
    videos = manifest.read_benchmark_table(tmp_path / "1", "videos")
    assert set(videos.status) == {"ok"} and set(videos.width) == {32}


def test_missing_and_corrupt_videos_are_reported_and_their_pairs_dropped(sample, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(sample / "videos", videos)
    files = sorted(videos.iterdir())
    files[0].unlink()
    files[1].write_bytes(files[1].read_bytes()[:2000])
    result = _build(sample, tmp_path / "b", "--resolution", "32x32", videos=videos)
    assert result.exit_code == 0, result.output
    table = manifest.read_benchmark_table(tmp_path / "b", "videos")
    status = dict(zip(table.source_file, table.status, strict=True))
    assert status[files[0].name] == "missing" and status[files[1].name] == "corrupt"
    report = (tmp_path / "b" / "reports" / "media.txt").read_text()
    assert files[0].name in report or files[0].stem in report
    bad = set(table.video_id[table.status != "ok"])
    for split in ("val", "test"):
        pairs = manifest.read_benchmark_table(tmp_path / "b", f"pairs_{split}")
        assert not (set(pairs.query_video_id) | set(pairs.ref_video_id)) & bad


def test_bad_row_is_one_line_with_file_and_line(sample, tmp_path):
    annotations = tmp_path / "annotations"
    shutil.copytree(sample / "annotations", annotations)
    csv = annotations / "ava_val_v2.2.csv"
    lines = csv.read_text().splitlines()
    lines[4] = lines[4].replace(",", ",1.7,", 1).split(",1.7,")[0] + ",902,0.1,0.1,1.7,0.5,12,0"
    csv.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["build-ava", "--annotations", str(annotations), "--out",
                                       str(tmp_path / "b"), "--skip-media", *SMALL])
    assert result.exit_code == 2
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("error: ") and f"{csv}:5:" in message
    assert not (tmp_path / "b" / "dataset.json").exists()
    skipped = CliRunner().invoke(main, ["build-ava", "--annotations", str(annotations), "--out",
                                        str(tmp_path / "c"), "--skip-media", "--skip-bad-rows", *SMALL])
    assert skipped.exit_code == 0, skipped.output
    report = (tmp_path / "c" / "reports" / "bad_rows.csv").read_text()
    assert "ava_val_v2.2.csv,5," in report


def test_videos_are_required_unless_skipping_media(sample, tmp_path):
    result = _build(sample, tmp_path / "b")
    assert result.exit_code != 0 and "--videos is required" in result.output


def test_split_file_whose_labels_are_absent_is_refused(sample, tmp_path, shared_dir):
    split_file = shared_dir / "data" / "stvr-official" / "val_test.json"
    result = _build(sample, tmp_path / "b", "--skip-media", "--split-file", str(split_file))
    assert result.exit_code == 2
    assert f"{split_file}: none of the val labels" in result.output


def test_videos_folder_may_be_a_path(sample, tmp_path):
    from stvr_data.ava_recipe import prepare_ava
    from stvr_data.build import BuildOptions

    card = prepare_ava(sample / "annotations", sample / "videos", tmp_path / "b",
                       options=BuildOptions(resolution=(32, 32)), min_tubelets=2,
                       num_val_labels=1, num_test_labels=1)
    assert card["counts"]["videos"] == {"ok": 4}
    assert card["fingerprint"]["videos"] == str(sample / "videos")
