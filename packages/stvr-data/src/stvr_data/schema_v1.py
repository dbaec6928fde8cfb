"""Reading benchmarks written with manifest schema version 1.

Version 1 differed from the current schema in two ways, both fixed here on read so that
every reader sees one convention (`stvr_data.manifest`):

- ``tubelets.end`` and ``pairs.query_end`` were the *last* keyframe (inclusive); they are
  now the end of the half-open span ``[start, end)``: last keyframe + keyframe interval.
  The interval is the ``keyframe_interval`` of the benchmark's `dataset.json` beside the
  table (1 s for AVA, 1/3 s for UCF101-24).
- ``videos`` had no ``sha256`` column; it reads as null (unknown).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from stvr_data.errors import ManifestError

INCLUSIVE_ENDS = {"tubelets": "end", "pairs": "query_end"}


def keyframe_interval(path: Path) -> float:
    """The keyframe interval recorded in the `dataset.json` beside table `path`."""
    card = path.parent / "dataset.json"
    try:
        return float(json.loads(card.read_text())["keyframe_interval"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ManifestError(f"{path}: a version-1 table is read with its benchmark's dataset.json "
                            "(for the keyframe interval), which is missing or has none") from None


def upgrade(table: pa.Table, name: str, path: Path) -> pa.Table:
    """Table `name` ('videos', 'tubelets', 'pairs', 'groundtruth') of version 1 in the
    current schema's conventions."""
    if name in INCLUSIVE_ENDS:
        column = INCLUSIVE_ENDS[name]
        index = table.schema.get_field_index(column)
        if index < 0:
            raise ManifestError(f"{path}: missing columns ['{column}']")
        shifted = pc.add(table[column], pa.scalar(keyframe_interval(path), pa.float64()))
        table = table.set_column(index, table.schema.field(index), shifted)
    if name == "videos" and "sha256" not in table.schema.names:
        table = table.append_column(pa.field("sha256", pa.string()), pa.nulls(len(table), pa.string()))
    return table
