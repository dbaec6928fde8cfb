"""AVA annotations: read and validate the published files (SPEC §1, step 1).

Corpus facts (AVA v2.1 / v2.2, Gu et al. CVPR 2018):

- 430 fifteen-minute movie segments; the benchmark uses the 235 training and 64
  validation videos. Each video is annotated on its 900-1800 s segment at 1 Hz:
  keyframes 902..1798 (the 1.5 s around a keyframe must lie inside the segment).
- ``ava_{train,val}_v2.X.csv``: no header, 8 columns ``video_id,
  middle_frame_timestamp, x1, y1, x2, y2, action_id, person_id``; one row per box
  *and* action, so a person with three actions at one keyframe has three rows with
  the same box. Boxes are normalised ``[x1, y1, x2, y2]`` in ``[0, 1]`` (the
  convention of this whole package). Timestamps are whole seconds written ``0902``.
- ``ava_action_list_v2.X.pbtxt``: the label map, in one of two styles,
  ``label { name: "..." label_id: N label_type: PERSON_MOVEMENT }`` (v2.1 full list)
  or ``item { name: "..." id: N }`` (v2.2, and the 60-class
  ``ava_action_list_v2.1_for_activitynet_2018.pbtxt``). The CSVs use all 80 ids;
  the 60-class list is only the challenge's evaluation subset, so the full list is
  preferred when both are present.
- ``ava_{train,val}_excluded_timestamps_v2.X.csv``: ``video_id,timestamp`` keyframes
  that were not annotated; their boxes must not be used.
- ``ava_file_names_trainval_v2.1.txt``: one video file name per line, with its real
  extension (mixed .mp4 / .mkv / .webm). v2.2 ships none: the v2.1 list is reused.

Every reader is vectorised with pyarrow (`stvr_data.checked_csv`; the 1.6M-row
training CSV parses in about a second) and validates every row. A bad row raises `AnnotationError` naming the file,
the 1-based line and the problem; with ``skip_bad_rows=True`` bad rows are dropped
and returned in a report frame (``file, line, problem, text``) instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from stvr_data.checked_csv import PLAIN_ID, Checks, empty_report, parse_rows, read_lines
from stvr_data.errors import AnnotationError
from stvr_data.text import read_text

AVA_SEGMENT = (900.0, 1800.0)
# Annotated keyframes: whole seconds whose 1.5 s context lies inside the segment.
KEYFRAMES = (int(AVA_SEGMENT[0]) + 2, int(AVA_SEGMENT[1]) - 2)
BOX_COLUMNS = ("x1", "y1", "x2", "y2")

# ---------------------------------------------------------------------------- readers

_BOX_TYPES = {"video_id": pa.string(), "timestamp": pa.float64(),
              **{name: pa.float64() for name in BOX_COLUMNS},
              "action_id": pa.int64(), "person_id": pa.int64()}


def read_boxes(path, *, action_ids: set[int] | None = None,
               skip_bad_rows: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read an ``ava_{train,val}_v2.X.csv`` box file.

    Returns ``(boxes, report)``. `boxes` keeps file order with columns ``video_id``
    (str), ``timestamp`` (float64, seconds on the source video), ``x1, y1, x2, y2``
    (float32, normalised, x right / y down), ``action_id`` (int32), ``person_id``
    (int32) and ``line`` (int64, 1-based line in the file). `report` lists dropped
    bad rows (``file, line, problem, text``); it is empty unless `skip_bad_rows`.

    A row is bad when it has not 8 fields, a video id outside ``[A-Za-z0-9_-]+``,
    a field that is not a number, a timestamp that is not a whole second in
    ``KEYFRAMES`` (902..1798), a negative person id, a box
    coordinate outside ``[0, 1]``, ``x2 <= x1`` or ``y2 <= y1``, or an action id not
    in `action_ids` (when given). Blank lines are ignored. The first bad row raises
    `AnnotationError(path, line, problem)` unless `skip_bad_rows`.
    """
    columns, line, report = parse_rows(path, _BOX_TYPES, partial(_check_values, action_ids=action_ids),
                                   skip_bad_rows)
    frame = pd.DataFrame({
        "video_id": columns["video_id"].to_pandas().astype(str),
        "timestamp": columns["timestamp"],
        **{name: columns[name].astype(np.float32) for name in BOX_COLUMNS},
        "action_id": columns["action_id"].astype(np.int32),
        "person_id": columns["person_id"].astype(np.int32),
        "line": line.astype(np.int64),
    })
    return frame, report


def _check_values(checks: Checks, columns: dict, action_ids: set[int] | None,
                  boxes: bool = True) -> None:
    """Range checks on parsed rows (rows already failing keep their first problem)."""
    time = columns["timestamp"]
    checks.add(~np.isfinite(time), lambda i: f"timestamp {time[i]:g} is not a finite number")
    checks.add(time != np.floor(time), lambda i: f"timestamp {time[i]:g} is not a whole second (AVA keyframes are)")
    low, high = KEYFRAMES
    checks.add((time < low) | (time > high),
               lambda i: f"timestamp {time[i]:g} outside the annotated keyframes {low}..{high}")
    if not boxes:
        return
    for name in BOX_COLUMNS:
        value = columns[name]
        outside = (value < 0) | (value > 1)
        checks.add(outside, lambda i, n=name, v=value: f"box {n}={v[i]:g} outside [0, 1]")
    x1, y1, x2, y2 = (columns[name] for name in BOX_COLUMNS)
    checks.add(x2 <= x1, lambda i: f"empty box: x2={x2[i]:g} <= x1={x1[i]:g}")
    checks.add(y2 <= y1, lambda i: f"empty box: y2={y2[i]:g} <= y1={y1[i]:g}")
    person = columns["person_id"]
    checks.add(person < 0, lambda i: f"person_id {person[i]} is negative")
    if action_ids is not None:
        action = columns["action_id"]
        known = np.isin(action, np.fromiter(action_ids, dtype=np.int64, count=len(action_ids)))
        checks.add(~known, lambda i: f"unknown action id {action[i]} (not in the action list)")


def read_excluded_timestamps(path, *, skip_bad_rows: bool = False) -> pd.DataFrame:
    """Read ``ava_*_excluded_timestamps_v2.X.csv``: columns ``video_id`` (str) and
    ``timestamp`` (float64 seconds). Bad rows raise `AnnotationError` (or are
    dropped with `skip_bad_rows`; `read_excluded_timestamps_report` also returns
    the report)."""
    return read_excluded_timestamps_report(path, skip_bad_rows=skip_bad_rows)[0]


def read_excluded_timestamps_report(path, *, skip_bad_rows: bool = False):
    """`read_excluded_timestamps` plus its bad-row report: ``(excluded, report)``."""
    types = {"video_id": pa.string(), "timestamp": pa.float64()}
    columns, _, report = parse_rows(path, types, partial(_check_values, action_ids=None, boxes=False),
                                skip_bad_rows)
    return pd.DataFrame({"video_id": columns["video_id"].to_pandas().astype(str),
                         "timestamp": columns["timestamp"]}), report


def drop_conflicts(boxes: pd.DataFrame, path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of a `read_boxes` frame whose person has one box per keyframe, and a report
    of the rest: every row of a (video, timestamp, person) whose action rows disagree on
    the box (which of them is right cannot be told)."""
    key = ["video_id", "timestamp", "person_id"]
    distinct = boxes.groupby(key, sort=False)[list(BOX_COLUMNS)].transform("nunique")
    bad = (distinct > 1).any(axis=1).to_numpy()
    if not bad.any():
        return boxes, empty_report()
    rows = boxes[bad]
    first_line = rows.groupby(key, sort=False)["line"].transform("min").to_numpy()
    report = pd.DataFrame({
        "file": pd.Series([str(path)] * len(rows), dtype=str), "line": rows["line"].to_numpy(np.int64),
        "problem": pd.Series([f"person {p} at {t:g} s has another box (line {f})" for p, t, f
                              in zip(rows.person_id, rows.timestamp, first_line, strict=True)], dtype=str),
        "text": pd.Series([",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in r)
                           for r in rows[["video_id", "timestamp", *BOX_COLUMNS, "action_id", "person_id"]]
                           .itertuples(index=False)], dtype=str),
    })
    return boxes[~bad].reset_index(drop=True), report


def drop_excluded(boxes: pd.DataFrame, excluded: pd.DataFrame) -> pd.DataFrame:
    """Rows of `boxes` whose ``(video_id, timestamp)`` is not in `excluded`; order kept."""
    if excluded.empty:
        return boxes.reset_index(drop=True)
    # Integer video codes: matching on codes is much faster than on strings.
    codes, videos = pd.factorize(boxes["video_id"])
    theirs = pd.Index(videos).get_indexer(excluded["video_id"])
    keys = pd.MultiIndex.from_arrays([theirs, excluded["timestamp"].to_numpy()])
    mine = pd.MultiIndex.from_arrays([codes, boxes["timestamp"].to_numpy()])
    return boxes[~mine.isin(keys)].reset_index(drop=True)


_PBTXT_BLOCK = re.compile(r"\b(label|item)\s*\{([^}]*)\}", re.S)
_PBTXT_NAME = re.compile(r"\bname\s*:\s*\"((?:[^\"\\]|\\.)*)\"")
_PBTXT_ID = re.compile(r"\b(?:label_id|id)\s*:\s*(-?\d+)")


def read_action_list(path) -> dict[int, str]:
    """Read an AVA label map in either pbtxt style -> ``{action_id: name}``.

    Accepts ``label { name: "..." label_id: N label_type: ... }`` and
    ``item { name: "..." id: N }``. A block without a name or id, a repeated id,
    or a file without blocks raises `AnnotationError` with the block's line.
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(path, None, "file not found")
    text = read_text(path)
    names: dict[int, str] = {}
    for block in _PBTXT_BLOCK.finditer(text):
        line = text.count("\n", 0, block.start()) + 1
        name, ident = _PBTXT_NAME.search(block.group(2)), _PBTXT_ID.search(block.group(2))
        if name is None or ident is None:
            missing = "name" if name is None else "id"
            raise AnnotationError(path, line, f"{block.group(1)} block without a {missing}")
        action = int(ident.group(1))
        if action in names:
            raise AnnotationError(path, line, f"action id {action} defined twice")
        names[action] = name.group(1)
    if not names:
        raise AnnotationError(path, None, "no 'label { ... }' or 'item { ... }' blocks")
    return dict(sorted(names.items()))


def read_file_names(path) -> dict[str, str]:
    """Read ``ava_file_names_trainval_v2.1.txt`` -> ``{video_id: file name}``.

    The video id is the name without its extension (``-5KQ66BBWC4.mkv`` ->
    ``-5KQ66BBWC4``). A name without an extension, a non-plain id or a repeated id
    raises `AnnotationError` with its line.
    """
    path = Path(path)
    lines = read_lines(path).to_pylist()
    names: dict[str, str] = {}
    for number, raw in enumerate(lines, start=1):
        name = raw.strip()
        if not name:
            continue
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem or not ext:
            raise AnnotationError(path, number, f"file name {name!r} has no extension")
        if not re.fullmatch(PLAIN_ID, stem):
            raise AnnotationError(path, number, f"video id {stem!r} is not a plain id ([A-Za-z0-9_-]+)")
        if stem in names:
            raise AnnotationError(path, number, f"video id {stem!r} listed twice")
        names[stem] = name
    return names


# ---------------------------------------------------------------------------- release


@dataclass(frozen=True, eq=False)
class AvaAnnotations:
    """One AVA release, validated, with excluded keyframes already removed.

    `train` / `val` are `read_boxes` frames; `bad_rows` is the combined report of
    skipped rows (empty unless loaded with ``skip_bad_rows=True``); `files` maps
    each role (``train``, ``val``, ``action_list``, ``train_excluded``,
    ``val_excluded``, ``file_names``) to the file that was read.
    """

    version: str
    train: pd.DataFrame
    val: pd.DataFrame
    action_names: dict[int, str]
    file_names: dict[str, str]
    bad_rows: pd.DataFrame
    files: dict[str, Path]
    excluded_rows: int = 0


def find_version(directory) -> str:
    """The newest ``X.Y`` for which ``ava_train_vX.Y.csv`` exists in `directory`."""
    directory = Path(directory)
    found = [m.group(1) for p in directory.glob("ava_train_v*.csv")
             if (m := re.fullmatch(r"ava_train_v(\d+\.\d+)\.csv", p.name))]
    if not found:
        raise AnnotationError(directory, None, "no ava_train_v2.X.csv annotation file found")
    return max(found, key=lambda v: tuple(int(x) for x in v.split(".")))


def release_files(directory, version: str) -> dict[str, Path]:
    """The files of release `version` in `directory`; a missing one raises naming it."""
    directory = Path(directory)
    candidates = {
        "train": [f"ava_train_v{version}.csv"],
        "val": [f"ava_val_v{version}.csv"],
        # The full (80-class) list is preferred: the CSVs use all 80 ids.
        "action_list": [f"ava_action_list_v{version}.pbtxt",
                        f"ava_action_list_v{version}_for_activitynet_2018.pbtxt"],
        "train_excluded": [f"ava_train_excluded_timestamps_v{version}.csv"],
        "val_excluded": [f"ava_val_excluded_timestamps_v{version}.csv"],
        # v2.2 ships no file list; its videos are those of v2.1.
        "file_names": [f"ava_file_names_trainval_v{version}.txt", "ava_file_names_trainval_v2.1.txt"],
    }
    files = {}
    for role, names in candidates.items():
        found = [directory / name for name in names if (directory / name).is_file()]
        if not found:
            raise AnnotationError(directory / names[0], None, f"missing AVA {role} file")
        files[role] = found[0]
    return files


def load_annotations(directory, version: str | None = None, skip_bad_rows: bool = False) -> AvaAnnotations:
    """Read and validate one AVA release from `directory` (the newest when `version`
    is None), dropping the excluded keyframes. See the module docstring for files."""
    version = version or find_version(directory)
    files = release_files(directory, version)
    action_names = read_action_list(files["action_list"])
    reports, subsets, excluded_rows = [], {}, 0
    for subset in ("train", "val"):
        boxes, report = read_boxes(files[subset], action_ids=set(action_names),
                                   skip_bad_rows=skip_bad_rows)
        if skip_bad_rows:
            boxes, conflicts = drop_conflicts(boxes, files[subset])
            report = pd.concat([report, conflicts], ignore_index=True)
        excluded, ex_report = read_excluded_timestamps_report(files[f"{subset}_excluded"],
                                                              skip_bad_rows=skip_bad_rows)
        subsets[subset] = drop_excluded(boxes, excluded)
        if subsets[subset].empty:
            raise AnnotationError(files[subset], None, "no usable annotation rows"
                                  + (" (all were bad or excluded)" if len(boxes) or len(report) else ""))
        excluded_rows += len(boxes) - len(subsets[subset])
        reports += [report, ex_report]
    return AvaAnnotations(
        version=version, train=subsets["train"], val=subsets["val"], action_names=action_names,
        file_names=read_file_names(files["file_names"]),
        bad_rows=pd.concat(reports, ignore_index=True), files=files, excluded_rows=excluded_rows,
    )
