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

Every reader is vectorised with pyarrow (the 1.6M-row training CSV parses in about a
second) and validates every row. A bad row raises `AnnotationError` naming the file,
the 1-based line and the problem; with ``skip_bad_rows=True`` bad rows are dropped
and returned in a report frame (``file, line, problem, text``) instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from stvr_data.errors import AnnotationError

AVA_SEGMENT = (900.0, 1800.0)
AVA_VERSIONS = ("2.1", "2.2")
BOX_COLUMNS = ("x1", "y1", "x2", "y2")
BOX_FIELDS = ("video_id", "timestamp", *BOX_COLUMNS, "action_id", "person_id")
REPORT_COLUMNS = ("file", "line", "problem", "text")

_PLAIN_ID = r"^[A-Za-z0-9_-]+$"
_FLOAT = r"^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$"
# At most 9 digits, so that every accepted id fits int32.
_INT = r"^[-+]?[0-9]{1,9}$"


def empty_report() -> pd.DataFrame:
    """A bad-row report with no rows."""
    return pd.DataFrame({"file": pd.Series([], dtype=str), "line": pd.Series([], dtype="int64"),
                         "problem": pd.Series([], dtype=str), "text": pd.Series([], dtype=str)})


# ---------------------------------------------------------------------------- CSV core


class _Checks:
    """The first failing check per row; messages are only formatted for bad rows."""

    def __init__(self, n: int):
        self.first = np.full(n, -1, dtype=np.int16)
        self.messages: list = []

    def add(self, failed: np.ndarray, message) -> None:
        """`message(i)` formats the problem of row `i`; earlier checks take precedence."""
        failed = np.asarray(failed, dtype=bool) & (self.first < 0)
        self.first[failed] = len(self.messages)
        self.messages.append(message)

    @property
    def bad(self) -> np.ndarray:
        return self.first >= 0

    def problem(self, i: int) -> str:
        return self.messages[self.first[i]](i)


def _read_lines(path: Path) -> pa.Array:
    """Every line of a text file as a string array, blank lines kept (line = index + 1)."""
    if not path.is_file():
        raise AnnotationError(path, None, "file not found")
    if path.stat().st_size == 0:  # an empty exclusion list is valid; Arrow refuses it
        return pa.array([], type=pa.string())
    try:
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(column_names=["text"]),
            # One column: the unit separator never occurs in AVA text, and no quoting.
            parse_options=pa_csv.ParseOptions(delimiter="\x1f", quote_char=False,
                                               escape_char=False, ignore_empty_lines=False),
            convert_options=pa_csv.ConvertOptions(column_types={"text": pa.string()},
                                                  strings_can_be_null=False),
        )
    except pa.ArrowInvalid as err:
        raise AnnotationError(path, None, f"not readable as CSV text ({err})") from None
    return table.column("text").combine_chunks()


def _numeric(column: pa.Array, pattern: str, type_: pa.DataType) -> tuple[np.ndarray, np.ndarray]:
    """(values, valid) for a string column; invalid entries become 0."""
    valid = pc.match_substring_regex(column, pattern).to_numpy(zero_copy_only=False)
    safe = pc.if_else(pa.array(valid), column, pa.scalar("0"))
    return pc.cast(safe, type_).to_numpy(zero_copy_only=False), valid


@dataclass(frozen=True)
class _Parsed:
    """Columns of a comma-separated file, parsed but not yet filtered."""

    path: Path
    text: np.ndarray  # raw line text (object), for reports
    line: np.ndarray  # 1-based line numbers
    strings: dict[str, pa.Array]
    checks: _Checks = field(repr=False)


def _split_fields(path: Path, names: tuple[str, ...]) -> _Parsed:
    """Split every non-blank line into `names`; rows with another field count are flagged."""
    lines = _read_lines(path)
    blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(lines)), 0)
    keep = np.flatnonzero(~blank.to_numpy(zero_copy_only=False))
    lines = lines.take(pa.array(keep))
    count = pc.add(pc.count_substring(lines, ","), 1).to_numpy(zero_copy_only=False)
    wrong = count != len(names)
    # Rows with the wrong field count are blanked so that every row splits evenly;
    # they are reported by the first check, which takes precedence.
    even = pc.if_else(pa.array(wrong), pa.scalar("," * (len(names) - 1)), lines)
    parts = pc.split_pattern(even, ",")
    strings = {name: pc.utf8_trim_whitespace(pc.list_element(parts, i))
               for i, name in enumerate(names)}
    checks = _Checks(len(lines))
    checks.add(wrong, lambda i: f"expected {len(names)} comma-separated fields "
                                f"({', '.join(names)}), found {count[i]}")
    text = lines.to_numpy(zero_copy_only=False)
    return _Parsed(path, text, keep + 1, strings, checks)


def _check_plain_id(parsed: _Parsed, name: str) -> np.ndarray:
    column = parsed.strings[name]
    ok = pc.match_substring_regex(column, _PLAIN_ID).to_numpy(zero_copy_only=False)
    values = column.to_numpy(zero_copy_only=False)
    parsed.checks.add(~ok, lambda i: f"{name} {values[i]!r} is not a plain id ([A-Za-z0-9_-]+)")
    return values


def _check_number(parsed: _Parsed, name: str, type_: pa.DataType) -> np.ndarray:
    pattern = _INT if pa.types.is_integer(type_) else _FLOAT
    values, ok = _numeric(parsed.strings[name], pattern, type_)
    raw = parsed.strings[name].to_numpy(zero_copy_only=False)
    kind = "an integer" if pa.types.is_integer(type_) else "a number"
    parsed.checks.add(~ok, lambda i: f"{name} {raw[i]!r} is not {kind}")
    return values


def _finish(parsed: _Parsed, frame: pd.DataFrame, skip_bad_rows: bool):
    """Raise on the first bad row, or drop bad rows and report them."""
    bad = parsed.checks.bad
    if not bad.any():
        return frame.assign(line=parsed.line).reset_index(drop=True), empty_report()
    rows = np.flatnonzero(bad)
    if not skip_bad_rows:
        first = rows[0]
        raise AnnotationError(parsed.path, int(parsed.line[first]), parsed.checks.problem(first))
    report = pd.DataFrame({
        "file": str(parsed.path), "line": parsed.line[rows].astype(np.int64),
        "problem": [parsed.checks.problem(i) for i in rows],
        "text": parsed.text[rows].astype(str),
    })
    keep = ~bad
    return frame[keep].assign(line=parsed.line[keep]).reset_index(drop=True), report


# ---------------------------------------------------------------------------- readers


def read_boxes(path, *, action_ids: set[int] | None = None,
               skip_bad_rows: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read an ``ava_{train,val}_v2.X.csv`` box file.

    Returns ``(boxes, report)``. `boxes` keeps file order with columns ``video_id``
    (str), ``timestamp`` (float64, seconds on the source video), ``x1, y1, x2, y2``
    (float32, normalised, x right / y down), ``action_id`` (int32), ``person_id``
    (int32) and ``line`` (int64, 1-based line in the file). `report` lists dropped
    bad rows (``file, line, problem, text``); it is empty unless `skip_bad_rows`.

    A row is bad when it has not 8 fields, a video id outside ``[A-Za-z0-9_-]+``,
    a field that is not a number, a negative timestamp, a box coordinate outside
    ``[0, 1]``, ``x2 <= x1`` or ``y2 <= y1``, or an action id not in `action_ids`
    (when given). Blank lines are ignored. The first bad row raises
    `AnnotationError(path, line, problem)` unless `skip_bad_rows`.
    """
    parsed = _split_fields(Path(path), BOX_FIELDS)
    columns = {"video_id": _check_plain_id(parsed, "video_id"),
               "timestamp": _check_number(parsed, "timestamp", pa.float64())}
    for name in BOX_COLUMNS:
        columns[name] = _check_number(parsed, name, pa.float64())
    for name in ("action_id", "person_id"):
        columns[name] = _check_number(parsed, name, pa.int64())
    _check_values(parsed, columns, action_ids)
    frame = pd.DataFrame({
        "video_id": pd.Series(columns["video_id"], dtype=str),
        "timestamp": columns["timestamp"],
        **{name: columns[name].astype(np.float32) for name in BOX_COLUMNS},
        "action_id": columns["action_id"].astype(np.int32),
        "person_id": columns["person_id"].astype(np.int32),
    })
    return _finish(parsed, frame, skip_bad_rows)


def _check_values(parsed: _Parsed, columns: dict, action_ids: set[int] | None) -> None:
    """Range checks on parsed box rows (rows already failing keep their first problem)."""
    time = columns["timestamp"]
    parsed.checks.add(time < 0, lambda i: f"timestamp {time[i]:g} is negative")
    for name in BOX_COLUMNS:
        value = columns[name]
        outside = (value < 0) | (value > 1)
        parsed.checks.add(outside, lambda i, n=name, v=value: f"box {n}={v[i]:g} outside [0, 1]")
    x1, y1, x2, y2 = (columns[name] for name in BOX_COLUMNS)
    parsed.checks.add(x2 <= x1, lambda i: f"empty box: x2={x2[i]:g} <= x1={x1[i]:g}")
    parsed.checks.add(y2 <= y1, lambda i: f"empty box: y2={y2[i]:g} <= y1={y1[i]:g}")
    person = columns["person_id"]
    parsed.checks.add(person < 0, lambda i: f"person_id {person[i]} is negative")
    if action_ids is not None:
        action = columns["action_id"]
        known = np.isin(action, np.fromiter(action_ids, dtype=np.int64, count=len(action_ids)))
        parsed.checks.add(~known, lambda i: f"unknown action id {action[i]} (not in the action list)")


def read_excluded_timestamps(path, *, skip_bad_rows: bool = False) -> pd.DataFrame:
    """Read ``ava_*_excluded_timestamps_v2.X.csv``: columns ``video_id`` (str) and
    ``timestamp`` (float64 seconds). Bad rows raise `AnnotationError` (or are
    dropped with `skip_bad_rows`; the report is then available via
    `read_excluded_timestamps_report`)."""
    return read_excluded_timestamps_report(path, skip_bad_rows=skip_bad_rows)[0]


def read_excluded_timestamps_report(path, *, skip_bad_rows: bool = False):
    """`read_excluded_timestamps` plus its bad-row report: ``(excluded, report)``."""
    parsed = _split_fields(Path(path), ("video_id", "timestamp"))
    video = _check_plain_id(parsed, "video_id")
    time = _check_number(parsed, "timestamp", pa.float64())
    parsed.checks.add(time < 0, lambda i: f"timestamp {time[i]:g} is negative")
    frame = pd.DataFrame({"video_id": pd.Series(video, dtype=str), "timestamp": time})
    excluded, report = _finish(parsed, frame, skip_bad_rows)
    return excluded.drop(columns="line"), report


def drop_excluded(boxes: pd.DataFrame, excluded: pd.DataFrame) -> pd.DataFrame:
    """Rows of `boxes` whose ``(video_id, timestamp)`` is not in `excluded`; order kept."""
    if excluded.empty:
        return boxes.reset_index(drop=True)
    keys = pd.MultiIndex.from_arrays([excluded["video_id"].astype(str), excluded["timestamp"]])
    mine = pd.MultiIndex.from_arrays([boxes["video_id"].astype(str), boxes["timestamp"]])
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
    text = path.read_text(encoding="utf-8")
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
    lines = _read_lines(path).to_pylist()
    names: dict[str, str] = {}
    for number, raw in enumerate(lines, start=1):
        name = raw.strip()
        if not name:
            continue
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem or not ext:
            raise AnnotationError(path, number, f"file name {name!r} has no extension")
        if not re.fullmatch(_PLAIN_ID, stem):
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
        excluded, ex_report = read_excluded_timestamps_report(files[f"{subset}_excluded"],
                                                              skip_bad_rows=skip_bad_rows)
        subsets[subset] = drop_excluded(boxes, excluded)
        excluded_rows += len(boxes) - len(subsets[subset])
        reports += [report, ex_report]
    return AvaAnnotations(
        version=version, train=subsets["train"], val=subsets["val"], action_names=action_names,
        file_names=read_file_names(files["file_names"]),
        bad_rows=pd.concat(reports, ignore_index=True), files=files, excluded_rows=excluded_rows,
    )
