"""The one atomic-write helper: a final name holds a complete file or nothing, and a full
disk is one line from the command line, with no temporary file left behind."""

from __future__ import annotations

import errno
import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from stvr_data import atomic, manifest
from stvr_data.cli.main import main
from stvr_data.errors import OutputWriteError, StvrError


def test_the_final_name_appears_only_when_the_block_succeeds(tmp_path):
    path = tmp_path / "sub" / "table.txt"
    with atomic.atomic_write(path) as tmp:
        tmp.write_text("first")
        assert not path.exists() and tmp.read_text() == "first"
    assert path.read_text() == "first" and not atomic.atomic_path(path).exists()
    with pytest.raises(RuntimeError), atomic.atomic_write(path) as tmp:
        tmp.write_text("half of the second")
        raise RuntimeError("stopped while writing")
    assert path.read_text() == "first" and not atomic.atomic_path(path).exists()


def _disk_full(*args, **kwargs):
    where = args[1] if len(args) > 1 else kwargs.get("where")
    with open(where, "wb") as handle:
        handle.write(b"PAR1 and then the disk was full")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_writing_a_table_is_one_error_and_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "tubelets.parquet"
    frame = manifest.TUBELETS_SCHEMA.empty_table().to_pandas()
    monkeypatch.setattr(pq, "write_table", _disk_full)
    with pytest.raises(OutputWriteError) as caught:
        manifest.write_table(frame, path, manifest.TUBELETS_SCHEMA)
    assert str(caught.value) == f"{path}: cannot write (No space left on device)"
    assert caught.value.disk_full and isinstance(caught.value, StvrError)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_line_from_the_command_line(tmp_path, monkeypatch):
    records = [[{"id": "vidA", "frames": [902, 903], "label": [12], "boxes": [[0.1, 0.1, 0.5, 0.5]] * 2},
                {"id": "vidB", "start": 910, "end": 912, "gt": [[[0.1, 0.1, 0.5, 0.5]], []]}]]
    release = tmp_path / "stvr_val.json"
    release.write_text(json.dumps(records))
    monkeypatch.setattr(pq, "write_table", _disk_full)
    result = CliRunner().invoke(main, ["import-official", "--json", str(release), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2
    assert result.output == f"error: {tmp_path / 'b' / 'pairs_val.parquet'}: cannot write (No space left on device)\n"
    assert not any(p.name.endswith(".partial") for p in (tmp_path / "b").rglob("*"))
