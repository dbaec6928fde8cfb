"""The sharing files of a built benchmark, read with the libraries other groups use:
Hugging Face `datasets` (README.md card) and `mlcroissant` (croissant.json)."""

import json
import logging
import shutil

import datasets
import mlcroissant as mlc
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from stvr_data import card, manifest, official
from stvr_data.cli.main import main
from stvr_data.sample import SampleConfig, make_sample

SMALL = ["--min-tubelets", "2", "--num-val-labels", "1", "--num-test-labels", "1"]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    make_sample(root, seed=1, config=SampleConfig(train_videos=2, val_videos=2))
    return root


def _build(sample, out, *extra):
    args = ["build-ava", "--annotations", str(sample / "annotations"), "--out", str(out), *SMALL, *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def bench(sample, tmp_path_factory):
    return _build(sample, tmp_path_factory.mktemp("bench") / "b", "--videos", str(sample / "videos"),
                  "--resolution", "32x32")


def _front_matter(path):
    text = path.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1]), text


def test_every_table_loads_with_datasets(bench, tmp_path):
    expected = {"videos": {"full": "videos"}, "tubelets": {"full": "tubelets"},
                "pairs": {"validation": "pairs_val", "test": "pairs_test"},
                "groundtruth": {"validation": "groundtruth_val", "test": "groundtruth_test"}}
    for config, splits in expected.items():
        loaded = datasets.load_dataset(str(bench), config, cache_dir=str(tmp_path / "hf"))
        assert set(loaded) == set(splits)
        for split, table in splits.items():
            frame = manifest.read_benchmark_table(bench, table)
            assert loaded[split].num_rows == len(frame) > 0
            assert loaded[split].column_names == manifest.TABLES[table].names
    default = datasets.load_dataset(str(bench), split="test", cache_dir=str(tmp_path / "hf"))
    assert default.column_names == manifest.PAIRS_SCHEMA.names  # one line, no config name: the pairs
    truth = datasets.load_dataset(str(bench), "groundtruth", split="test", cache_dir=str(tmp_path / "hf"))
    empty = [row for row in truth if row["x1"] is None]
    assert empty and all(row["y2"] is None for row in empty)  # null, not NaN, marks no target


def test_card_front_matter_and_prose(bench):
    meta, text = _front_matter(bench / "README.md")
    assert meta["license"] == "cc-by-4.0" and meta["pretty_name"] == "STVR-AVA v2.2"
    assert meta["configs"] == card.hf_configs(set(manifest.TABLES))
    assert {"object-detection"} <= set(meta["task_categories"])
    assert "@inproceedings{feng2019stvr" in text and "Warp {LSTM}" in text
    for heading in ("## How it was built", "## Known limitations", "## Format", "## Licence"):
        assert heading in text
    for field in manifest.PAIRS_SCHEMA:  # the conventions and every field, from the schema
        assert f"| `{field.name}` |" in text
    counts = manifest.read_dataset_card(bench)["counts"]
    assert f"test: {counts['pairs_test']} pairs, {counts['images_test']} images" in text


def test_croissant_validates_and_reads_every_table(bench):
    dataset = mlc.Dataset(jsonld=bench / "croissant.json")  # raises on validation errors
    for table in manifest.TABLES:
        records = list(dataset.records(table))
        assert len(records) == len(manifest.read_benchmark_table(bench, table))
    doc = json.loads((bench / "croissant.json").read_text())
    files = {f["contentUrl"]: f["sha256"] for f in doc["distribution"]}
    on_disk = sorted(p.relative_to(bench).as_posix() for p in bench.rglob("*") if p.is_file())
    assert sorted(files) == [p for p in on_disk if p not in ("README.md", "croissant.json")]
    for path, digest in files.items():
        assert manifest.sha256_file(bench / path) == digest, path
    boxes = {f["name"]: f for f in next(r for r in doc["recordSet"] if r["name"] == "tubelets")["field"]}
    assert boxes["boxes"]["isArray"] is True and boxes["boxes"]["arrayShape"] == "-1,4"
    assert all(key in doc for key in ("rai:dataCollection", "rai:dataBiases", "rai:personalSensitiveInformation"))


def test_card_records_tool_versions_and_clip_hashes(bench):
    info = manifest.read_dataset_card(bench)
    tools = info["tools"]
    assert set(tools) == {"stvr-data", "python", "ffmpeg", "pyav", "pyarrow", "pandas"}
    assert tools["ffmpeg"]["version"].startswith("ffmpeg version")
    assert tools["pandas"] == pd.__version__
    assert "README.md" not in info["files"] and "croissant.json" not in info["files"]
    videos = manifest.read_benchmark_table(bench, "videos")
    for row in videos.itertuples():
        assert row.sha256 == manifest.sha256_file(bench / row.clip_path)


def test_sharing_files_are_reproducible(sample, bench, tmp_path):
    again = _build(sample, tmp_path / "again", "--videos", str(sample / "videos"), "--resolution", "32x32")
    for name in ("README.md", "croissant.json"):
        assert (again / name).read_bytes() == (bench / name).read_bytes(), name


def test_ava_version_is_explicit_or_the_newest_said_so(sample, tmp_path, caplog):
    annotations = tmp_path / "annotations"
    shutil.copytree(sample / "annotations", annotations)
    for path in list(annotations.glob("*v2.2*")):
        shutil.copy(path, annotations / path.name.replace("v2.2", "v2.1"))
    with caplog.at_level(logging.WARNING):
        newest = CliRunner().invoke(main, ["build-ava", "--annotations", str(annotations), "--skip-media",
                                           "--out", str(tmp_path / "new"), *SMALL])
    assert newest.exit_code == 0, newest.output
    assert "using AVA v2.2, the newest release" in caplog.text
    assert manifest.read_dataset_card(tmp_path / "new")["source"]["version"] == "2.2"
    chosen = CliRunner().invoke(main, ["build-ava", "--annotations", str(annotations), "--skip-media",
                                       "--out", str(tmp_path / "old"), "--ava-version", "2.1", *SMALL])
    assert chosen.exit_code == 0, chosen.output
    assert manifest.read_dataset_card(tmp_path / "old")["source"]["version"] == "2.1"
    missing = CliRunner().invoke(main, ["build-ava", "--annotations", str(annotations), "--skip-media",
                                        "--out", str(tmp_path / "x"), "--ava-version", "2.0", *SMALL])
    assert missing.exit_code != 0 and "ava_train_v2.0.csv" in missing.output


def test_an_official_import_of_one_split_loads(tmp_path):
    box = [0.1, 0.2, 0.5, 0.6]  # [y1, x1, y2, x2]
    records = [[{"id": "vid_a", "frames": [1000, 1001], "label": [11, 80], "boxes": [box, box]},
                {"id": "vid_b", "start": 999, "end": 1002, "gt": [[], [box], [box]]}],
               [{"id": "vid_b", "frames": [1100], "label": [11, 80], "boxes": [box]},
                {"id": "vid_a", "start": 998, "end": 1001, "gt": [[box], [], []]}]]
    release = tmp_path / "stvr_test.json"
    release.write_text(json.dumps(records))
    out = tmp_path / "official"
    official.import_official(release, out)
    meta, text = _front_matter(out / "README.md")
    assert [c["config_name"] for c in meta["configs"]] == ["videos", "tubelets", "pairs", "groundtruth"]
    pairs = datasets.load_dataset(str(out), "pairs", cache_dir=str(tmp_path / "hf"))
    assert set(pairs) == {"test"} and pairs["test"].num_rows == 2
    assert "official STVR release" in text
    dataset = mlc.Dataset(jsonld=out / "croissant.json")
    assert len(list(dataset.records("groundtruth_test"))) == 2 * 3 * 3


def test_a_benchmark_of_an_older_schema_is_rebuilt_with_its_sharing_files(sample, tmp_path):
    out = _build(sample, tmp_path / "b", "--skip-media")
    card_path = out / "dataset.json"
    old = json.loads(card_path.read_text())
    old["fingerprint"]["schema_version"] = "1.0"
    card_path.write_text(json.dumps(old))
    (out / "README.md").unlink()
    _build(sample, out, "--skip-media")
    assert manifest.read_dataset_card(out)["fingerprint"]["schema_version"] == manifest.SCHEMA_VERSION
    assert (out / "README.md").is_file()


def test_sharing_files_are_named_by_the_card_checked_by_verify_and_remade(sample, tmp_path):
    from stvr_data import outdir

    out = _build(sample, tmp_path / "b", "--skip-media")
    written = manifest.read_dataset_card(out)
    assert written["generated"] == [manifest.HF_CARD, manifest.CROISSANT]
    assert not set(written["generated"]) & set(written["files"])  # generated from the card, not hashed in it
    result = outdir.verify(out)
    assert result.ok and result.notes == []  # listed as generated, so not "not listed"
    (out / manifest.HF_CARD).write_text((out / manifest.HF_CARD).read_text() + "edited\n")
    (out / manifest.CROISSANT).unlink()
    bad = {(p.path, p.kind) for p in outdir.verify(out).problems}
    assert bad == {(manifest.HF_CARD, "content"), (manifest.CROISSANT, "missing")}
    _build(sample, out, "--skip-media")  # the same command makes them again
    assert outdir.verify(out).ok and not (out / ".stvr-staging").exists()
    fresh = _build(sample, tmp_path / "fresh", "--skip-media")
    for name in written["generated"]:
        assert (out / name).read_bytes() == (fresh / name).read_bytes()


def test_a_readme_of_the_user_is_not_replaced(sample, tmp_path):
    out = tmp_path / "b"
    _build(sample, out, "--skip-media")
    card_path = out / manifest.DATASET_CARD
    stored = json.loads(card_path.read_text())
    del stored["generated"]  # a benchmark whose card does not own README.md
    card_path.write_text(json.dumps(stored))
    (out / manifest.HF_CARD).write_text("my notes\n")
    args = ["build-ava", "--annotations", str(sample / "annotations"), "--out", str(out), *SMALL,
            "--skip-media", "--seed", "4"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "README.md: exists and is not part of the benchmark" in result.output
    assert (out / manifest.HF_CARD).read_text() == "my notes\n"
