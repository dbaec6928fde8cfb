import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from stvr_data import manifest
from stvr_data.errors import ManifestError


def _groundtruth():
    return pd.DataFrame({
        "pair_id": ["test-00000", "test-00000", "test-00001"],
        "label": ["11+17", "11+17", "80"],
        "timestamp": [902.0, 902 + 1 / 3, 902.0],
        "x1": np.array([0.1, np.nan, 0.2], np.float32),
        "y1": np.array([0.1, np.nan, 0.2], np.float32),
        "x2": np.array([0.5, np.nan, 0.6], np.float32),
        "y2": np.array([0.5, np.nan, 0.6], np.float32),
    })


def test_roundtrip_keeps_values_and_field_descriptions(tmp_path):
    path = manifest.write_table(_groundtruth(), tmp_path / "g.parquet", manifest.GROUNDTRUTH_SCHEMA)
    back = manifest.read_table(path, manifest.GROUNDTRUTH_SCHEMA)
    pd.testing.assert_frame_equal(back, _groundtruth(), check_dtype=False)
    schema = pq.read_schema(path)
    assert schema.field("timestamp").metadata[b"description"].startswith(b"Image")
    assert schema.metadata[b"stvr.schema_version"] == manifest.SCHEMA_VERSION.encode()
    assert not manifest.atomic_path(path).exists()


def test_same_frame_gives_identical_bytes(tmp_path):
    a = manifest.write_table(_groundtruth(), tmp_path / "a.parquet", manifest.GROUNDTRUTH_SCHEMA)
    b = manifest.write_table(_groundtruth(), tmp_path / "b.parquet", manifest.GROUNDTRUTH_SCHEMA)
    assert a.read_bytes() == b.read_bytes()


def test_write_rejects_missing_column_and_nulls(tmp_path):
    with pytest.raises(ManifestError, match="missing columns"):
        manifest.write_table(_groundtruth().drop(columns="label"), tmp_path / "g.parquet",
                             manifest.GROUNDTRUTH_SCHEMA)
    bad = _groundtruth()
    bad.loc[1, "pair_id"] = None
    with pytest.raises(ManifestError, match="'pair_id' has null"):
        manifest.write_table(bad, tmp_path / "g.parquet", manifest.GROUNDTRUTH_SCHEMA)
    assert not (tmp_path / "g.parquet").exists()


def test_read_rejects_other_table_and_garbage(tmp_path):
    path = manifest.write_table(_groundtruth(), tmp_path / "g.parquet", manifest.GROUNDTRUTH_SCHEMA)
    with pytest.raises(ManifestError, match="not a 'pairs' table"):
        manifest.read_table(path, manifest.PAIRS_SCHEMA)
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(ManifestError, match="not a readable Parquet"):
        manifest.read_table(junk, manifest.GROUNDTRUTH_SCHEMA)


def test_dataset_card_hashes_every_file(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"abc")
    (tmp_path / ".x.partial").write_bytes(b"ignored")
    manifest.write_dataset_card(tmp_path, {"source": "test"})
    card = json.loads((tmp_path / "dataset.json").read_text())
    # sha256("abc"), computed independently
    assert card["files"] == {
        "clips/a.mp4": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}
    assert card["source"] == "test" and card["schema_version"] == manifest.SCHEMA_VERSION


def test_schema_markdown_lists_every_field():
    text = manifest.schema_markdown()
    for schema in manifest.TABLES.values():
        for name in schema.names:
            assert f"`{name}`" in text


def test_committed_schema_doc_is_current():
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "manifests" / "SCHEMA.md"
    assert doc.read_text() == manifest.schema_markdown(), (
        "manifests/SCHEMA.md is stale: regenerate it with "
        "python -c 'from stvr_data import manifest; print(manifest.schema_markdown(), end=\"\")' > manifests/SCHEMA.md")
