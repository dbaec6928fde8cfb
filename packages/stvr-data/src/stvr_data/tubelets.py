"""Link per-keyframe boxes into combined-label tubelets (paper §5; SPEC §1, step 1).

Two boxes at keyframes ``t`` and ``t + keyframe_interval`` of the same video and
person join one tubelet when their *full* action sets are identical; a tubelet's
combined label is its sorted action ids joined by ``+`` (``'11+17+74+80'``).

A tubelet frame has columns ``video_id`` (str), ``person_id`` (int32), ``label``
(str), ``start`` / ``end`` (float64 seconds: the span ``[start, end)``, from the first
keyframe to the last keyframe + the keyframe interval, as every span of the manifests) and
``boxes`` (one normalised ``[x1, y1, x2, y2]`` float32 box per keyframe in ``[start, end)``,
held as an Arrow list column), sorted by ``(video_id, person_id, start)``.

Everything here is vectorised: rows are sorted once with integer keys and runs are
found by comparing each row with the previous one.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from stvr_data.errors import AnnotationError, StvrDataError

BOX_COLUMNS = ["x1", "y1", "x2", "y2"]
BOX_TYPE = pa.list_(pa.float32(), 4)
BOXES_TYPE = pa.list_(BOX_TYPE)
TUBELET_COLUMNS = ["video_id", "person_id", "label", "start", "end", "boxes"]
# Keyframe times must sit on the grid t = k * interval up to float noise.
_GRID_TOLERANCE = 1e-6


def combined_label(action_ids: Iterable[int]) -> str:
    """Sorted, de-duplicated action ids joined by '+': ``[80, 11, 17]`` -> ``'11+17+80'``."""
    return "+".join(str(i) for i in sorted({int(a) for a in action_ids}))


def label_ids(label: str) -> tuple[int, ...]:
    """The action ids of a combined label: ``'11+17'`` -> ``(11, 17)``."""
    return tuple(int(part) for part in label.split("+"))


def label_atoms(label: str) -> tuple[str, ...]:
    """The atomic actions of a combined label as strings: ``'11+17'`` -> ``('11', '17')``;
    a label without '+' (a UCF101-24 class) is its own one atom."""
    return tuple(str(label).split("+"))


def atom_vocabulary(labels: Iterable[str]) -> tuple[str, ...]:
    """Every atomic action of `labels`, once, numbers in numeric order before names."""
    atoms = {atom for label in labels for atom in label_atoms(label)}
    return tuple(sorted(atoms, key=lambda a: (not a.isdigit(), int(a) if a.isdigit() else 0, a)))


def describe_label(label: str, action_names: dict) -> str:
    """A combined label with its action names, ``'11+79'`` -> ``'11+79 (sit + talk to)'``;
    `action_names` maps id strings to names. The label alone when a name is unknown."""
    names = [action_names.get(part) for part in label_atoms(label)]
    return f"{label} ({' + '.join(names)})" if all(names) else str(label)


def keyframe_index(times, keyframe_interval: float = 1.0) -> np.ndarray:
    """Integer keyframe number ``round(t / interval)`` of each time (int64).

    Raises `StvrDataError` for a time off the keyframe grid.
    """
    scaled = np.asarray(times, dtype=np.float64) / keyframe_interval
    index = np.rint(scaled)
    off = np.abs(scaled - index) > _GRID_TOLERANCE
    if off.any():
        bad = np.asarray(times)[off][0]
        raise StvrDataError(f"time {bad} s is not on the {keyframe_interval} s keyframe grid")
    return index.astype(np.int64)


def boxes_series(values: np.ndarray, offsets: np.ndarray, index=None) -> pd.Series:
    """An Arrow-backed Series of box lists: row r holds ``values[offsets[r]:offsets[r+1]]``.

    `values` is ``(N, 4)`` float32 ``[x1, y1, x2, y2]``; `offsets` has one more entry
    than there are rows.
    """
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
    inner = pa.FixedSizeListArray.from_arrays(flat, 4).cast(BOX_TYPE)
    outer = pa.ListArray.from_arrays(pa.array(np.asarray(offsets, dtype=np.int32)), inner)
    return pd.Series(outer, dtype=pd.ArrowDtype(BOXES_TYPE), index=index)


def boxes_arrow(boxes: pd.Series) -> pa.ListArray:
    """The box-list column of a tubelet/pair frame as one Arrow ListArray."""
    array = pa.array(boxes, type=BOXES_TYPE, from_pandas=True)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def boxes_values(array: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """``(values (N, 4) float32, lengths (rows,) int64)`` of a box-list array."""
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False).astype(np.int64)
    values = array.flatten().flatten().to_numpy(zero_copy_only=False)
    return values.reshape(-1, 4).astype(np.float32, copy=False), lengths


def take_strings(column: pd.Series, rows: np.ndarray) -> pd.Series:
    """``column[rows]`` as a fresh str Series (an Arrow take, no Python objects)."""
    return column.take(rows).astype(str).reset_index(drop=True)


def _sorted_codes(values: pd.Series) -> np.ndarray:
    """Integer codes whose order is the sort order of `values`."""
    codes, _ = pd.factorize(values, sort=True)
    return codes


def person_seconds(boxes: pd.DataFrame, *, keyframe_interval: float = 1.0,
                   source: str | None = None) -> pd.DataFrame:
    """Collapse AVA's one-row-per-action into one row per (video, keyframe, person).

    Returns columns ``video_id, person_id, timestamp, x1, y1, x2, y2, label`` sorted
    by ``(video_id, person_id, timestamp)``, `label` the combined label of the row's
    action set. A person whose rows at one keyframe disagree on the box raises an
    error naming the video, time and person (and `source`'s lines when the frame
    has a ``line`` column and `source` names its file).
    """
    video = _sorted_codes(boxes["video_id"])
    frame = keyframe_index(boxes["timestamp"].to_numpy(), keyframe_interval)
    person = boxes["person_id"].to_numpy(np.int64)
    action = boxes["action_id"].to_numpy(np.int64)
    order = np.lexsort((action, frame, person, video))
    video, frame, person, action = video[order], frame[order], person[order], action[order]
    coords = boxes[BOX_COLUMNS].to_numpy(np.float32)[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (video[1:] != video[:-1]) | (frame[1:] != frame[:-1]) | (person[1:] != person[:-1])
    differs = ~new[1:] & (coords[1:] != coords[:-1]).any(axis=1)
    if differs.any():
        _raise_conflict(boxes, order, int(np.flatnonzero(differs)[0]) + 1, source)
    starts = np.flatnonzero(new)
    rows = order[starts]
    return pd.DataFrame({
        "video_id": take_strings(boxes["video_id"], rows),
        "person_id": person[starts].astype(np.int32),
        "timestamp": boxes["timestamp"].to_numpy(np.float64)[rows],
        **{name: coords[starts, j] for j, name in enumerate(BOX_COLUMNS)},
        "label": _group_labels(action, new),
    })


def _group_labels(action: np.ndarray, new: np.ndarray) -> pd.Series:
    """Combined label per group of rows; `new` marks each group's first row and
    actions are sorted within a group. Built in Arrow: no Python string per row."""
    # The same action listed twice for one box counts once.
    unique = new.copy()
    unique[1:] |= action[1:] != action[:-1]
    group = np.cumsum(new) - 1
    offsets = np.searchsorted(group[unique], np.arange(int(new.sum()) + 1))
    ids = pc.cast(pa.array(action[unique]), pa.string())
    label = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), ids), "+")
    return label.to_pandas().astype(str)


def _raise_conflict(boxes: pd.DataFrame, order: np.ndarray, k: int, source: str | None):
    first, second = boxes.iloc[order[k - 1]], boxes.iloc[order[k]]
    where = (f"video {first['video_id']} at {first['timestamp']:g} s, "
             f"person {first['person_id']}")
    a = [round(float(first[c]), 6) for c in BOX_COLUMNS]
    b = [round(float(second[c]), 6) for c in BOX_COLUMNS]
    if source is not None and "line" in boxes.columns:
        raise AnnotationError(source, int(second["line"]),
                              f"{where}: box {b} differs from {a} on line {int(first['line'])}")
    raise StvrDataError(f"{where}: conflicting boxes {a} and {b} across its action rows")


def runs_to_tubelets(seconds: pd.DataFrame, *, keyframe_interval: float = 1.0,
                     run_key: np.ndarray | None = None) -> pd.DataFrame:
    """Link per-person keyframe rows into tubelets.

    `seconds` has columns ``video_id, person_id, timestamp, x1, y1, x2, y2, label``
    and must be sorted by ``(video_id, person_id, timestamp)`` with one row per
    person and keyframe. A run breaks where the video, person or label changes, the
    next keyframe is not ``timestamp + keyframe_interval``, or `run_key` (optional,
    one integer per row, e.g. the tubelet a row came from) changes.
    """
    n = len(seconds)
    video = _sorted_codes(seconds["video_id"]) if n else np.zeros(0, np.int64)
    label = pd.factorize(seconds["label"])[0] if n else np.zeros(0, np.int64)
    person = seconds["person_id"].to_numpy(np.int64)
    frame = keyframe_index(seconds["timestamp"].to_numpy(), keyframe_interval)
    new = np.ones(n, dtype=bool)
    new[1:] = ((video[1:] != video[:-1]) | (person[1:] != person[:-1])
               | (frame[1:] != frame[:-1] + 1) | (label[1:] != label[:-1]))
    if run_key is not None:
        new[1:] |= run_key[1:] != run_key[:-1]
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n)[: len(starts)] - 1
    time = seconds["timestamp"].to_numpy(np.float64)
    return pd.DataFrame({
        "video_id": take_strings(seconds["video_id"], starts),
        "person_id": seconds["person_id"].to_numpy(np.int32)[starts],
        "label": take_strings(seconds["label"], starts),
        "start": time[starts],
        "end": time[ends] + keyframe_interval,
        "boxes": boxes_series(seconds[BOX_COLUMNS].to_numpy(np.float32), np.append(starts, n)),
    })


def link_tubelets(boxes: pd.DataFrame, *, keyframe_interval: float = 1.0,
                  source: str | None = None) -> pd.DataFrame:
    """Link AVA-style box rows (one row per box and action, any order) into tubelets.

    `boxes` needs ``video_id, timestamp, x1, y1, x2, y2, action_id, person_id``
    (as `stvr_data.ava.read_boxes` returns). Returns the tubelet frame described in
    the module docstring. `keyframe_interval` is the annotation step in seconds
    (AVA: 1.0). `source` names the file for error messages.
    """
    seconds = person_seconds(boxes, keyframe_interval=keyframe_interval, source=source)
    return runs_to_tubelets(seconds, keyframe_interval=keyframe_interval)


def explode(tubelets: pd.DataFrame, *, keyframe_interval: float = 1.0) -> pd.DataFrame:
    """One row per tubelet keyframe: ``video_id, person_id, label, timestamp, x1, y1,
    x2, y2, tubelet`` where `tubelet` is the row position in `tubelets` (int64);
    rows come in tubelet order, then time order."""
    values, lengths = boxes_values(boxes_arrow(tubelets["boxes"]))
    rows = np.repeat(np.arange(len(tubelets)), lengths)
    first = np.cumsum(lengths) - lengths
    step = np.arange(len(rows)) - np.repeat(first, lengths)
    time = tubelets["start"].to_numpy(np.float64)[rows] + step * keyframe_interval
    return pd.DataFrame({
        "video_id": take_strings(tubelets["video_id"], rows),
        "person_id": tubelets["person_id"].to_numpy(np.int32)[rows],
        "label": take_strings(tubelets["label"], rows),
        "timestamp": time,
        **{name: values[:, j] for j, name in enumerate(BOX_COLUMNS)},
        "tubelet": rows.astype(np.int64),
    })


def sort_tubelets(tubelets: pd.DataFrame) -> pd.DataFrame:
    """`tubelets` in ``(video_id, person_id, start)`` order, index reset."""
    order = np.lexsort((tubelets["start"].to_numpy(), tubelets["person_id"].to_numpy(),
                        _sorted_codes(tubelets["video_id"])))
    return tubelets.iloc[order].reset_index(drop=True)


def assign_ids(tubelets: pd.DataFrame) -> pd.DataFrame:
    """A copy sorted by ``(video_id, person_id, start)`` with ``tubelet_id`` (int64)
    = position in that order, as the first column. Same rows -> same ids."""
    ordered = sort_tubelets(tubelets.drop(columns="tubelet_id", errors="ignore"))
    ordered.insert(0, "tubelet_id", np.arange(len(ordered), dtype=np.int64))
    return ordered
