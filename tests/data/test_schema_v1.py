"""Version-1 benchmarks (inclusive ends, no clip hashes) still open, in today's conventions;
and an image without target is a null box in the files, not NaN."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from stvr_data import manifest, official
from stvr_data.errors import ManifestError

V1 = Path(__file__).parent / "fixtures" / "benchmark_v1"


def raw(name: str) -> pd.DataFrame:
    table = pq.read_table(V1 / manifest.TABLE_FILES[name])
    assert table.schema.metadata[b"stvr.schema_version"] == b"1.0"
    return table.to_pandas()


def test_v1_tubelets_and_pairs_get_half_open_spans():
    tubelets = manifest.read_benchmark_table(V1, "tubelets")
    assert (tubelets.end == raw("tubelets").end + 1.0).all()
    assert (tubelets.end - tubelets.start == tubelets.boxes.map(len)).all()
    for name in ("pairs_val", "pairs_test"):
        pairs = manifest.read_benchmark_table(V1, name)
        assert len(pairs) > 0 and (pairs.query_end == raw(name).query_end + 1.0).all()
        assert (pairs.query_end - pairs.query_start == pairs.query_boxes.map(len)).all()
        assert pairs.drop(columns="query_end").equals(raw(name).drop(columns="query_end"))


def test_v1_videos_read_with_unknown_hashes_and_groundtruth_unchanged():
    videos = manifest.read_benchmark_table(V1, "videos")
    assert videos.sha256.isna().all() and list(videos.columns) == manifest.VIDEOS_SCHEMA.names
    assert videos.drop(columns="sha256").equals(raw("videos"))
    for name in ("groundtruth_val", "groundtruth_test"):
        assert manifest.read_benchmark_table(V1, name).equals(raw(name))


def test_v1_benchmark_exports_in_the_release_format(tmp_path):
    records = official.official_records(manifest.read_benchmark_table(V1, "pairs_test"),
                                        manifest.read_benchmark_table(V1, "groundtruth_test"))
    old = raw("pairs_test")
    assert [r[0]["frames"][-1] for r in records] == old.sort_values("pair_id").query_end.astype(int).tolist()


def test_v1_table_needs_its_card_and_unknown_versions_are_refused(tmp_path):
    shutil.copy(V1 / "tubelets.parquet", tmp_path / "tubelets.parquet")
    with pytest.raises(ManifestError, match="dataset.json"):
        manifest.read_table(tmp_path / "tubelets.parquet", manifest.TUBELETS_SCHEMA)
    table = pq.read_table(V1 / "videos.parquet")
    future = table.replace_schema_metadata({**table.schema.metadata, b"stvr.schema_version": b"3.0"})
    pq.write_table(future, tmp_path / "videos.parquet")
    with pytest.raises(ManifestError, match="schema version 3.0"):
        manifest.read_table(tmp_path / "videos.parquet", manifest.VIDEOS_SCHEMA)


def test_an_image_without_target_is_null_not_nan(tmp_path):
    truth = pd.DataFrame({"pair_id": ["val-00000"] * 2, "label": ["5"] * 2, "timestamp": [900.0, 900 + 1 / 3],
                          "x1": np.float32([0.1, np.nan]), "y1": np.float32([0.1, np.nan]),
                          "x2": np.float32([0.5, np.nan]), "y2": np.float32([0.5, np.nan])})
    path = manifest.write_table(truth, tmp_path / "groundtruth_val.parquet", manifest.GROUNDTRUTH_SCHEMA)
    stored = pq.read_table(path)
    for column in ("x1", "y1", "x2", "y2"):
        assert stored[column].null_count == 1
        assert pc.sum(pc.is_nan(stored[column])).as_py() == 0  # NaN is never written
    back = manifest.read_table(path, manifest.GROUNDTRUTH_SCHEMA)
    assert back.x1.isna().tolist() == [False, True]  # pandas shows the null as NaN
    assert pa.types.is_float32(stored.schema.field("x1").type)
