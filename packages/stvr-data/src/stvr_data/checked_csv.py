"""Headerless CSV files read fast and validated row by row, with bad rows named.

The annotation readers (`stvr_data.ava`) describe a file by its column types and a
`validate(checks, columns)` function; `parse_rows` returns the typed columns. A clean
file takes one multithreaded pyarrow pass; otherwise every line is re-read so that the
first bad row raises `AnnotationError(path, line, problem)`, or, with `skip_bad_rows`,
every bad row is dropped and listed in a report frame (``file, line, problem, text``).
`Checks` records the first failing check per row and formats messages only for bad rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from stvr_data.errors import AnnotationError
from stvr_data.text import check_text, read_text

REPORT_COLUMNS = ("file", "line", "problem", "text")
PLAIN_ID = r"^[A-Za-z0-9_-]+$"
_FLOAT = r"^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$"
# At most 9 digits, so that every accepted id fits int32.
_INT = r"^[-+]?[0-9]{1,9}$"


def empty_report() -> pd.DataFrame:
    """A bad-row report with no rows."""
    return pd.DataFrame({name: pd.Series([], dtype="int64" if name == "line" else str)
                         for name in REPORT_COLUMNS})


class Checks:
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


def _csv_options(names, types: dict | None, on_invalid=None):
    # No quoting: AVA files never quote, and a stray '"' must not swallow lines.
    return dict(
        read_options=pa_csv.ReadOptions(column_names=list(names)),
        parse_options=pa_csv.ParseOptions(delimiter="\x1f" if types is None else ",",
                                          quote_char=False, escape_char=False,
                                          ignore_empty_lines=types is not None,
                                          invalid_row_handler=on_invalid),
        convert_options=pa_csv.ConvertOptions(column_types=types or {"text": pa.string()},
                                              strings_can_be_null=False),
    )


def _read_clean(path: Path, types: dict) -> dict | None:
    """Typed columns in one multithreaded pass when every line is a clean row (right
    field count, no blank line, finite numbers, ids in int32); None otherwise, so
    that the exact line-by-line path finds and names the problem."""
    if not path.is_file():
        raise AnnotationError(path, None, "file not found")
    data = path.read_bytes()
    check_text(data, path)
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    invalid: list = []
    try:
        table = pa_csv.read_csv(pa.BufferReader(data),
                                **_csv_options(types, types, lambda row: invalid.append(row) or "skip"))
    except pa.ArrowInvalid:
        return None
    if invalid or table.num_rows != lines:
        return None
    columns = {}
    for name, type_ in types.items():
        column = table.column(name).combine_chunks()
        if column.null_count:
            return None
        if not pa.types.is_string(type_):
            column = column.to_numpy()
            limit = np.inf if pa.types.is_floating(type_) else 1e9
            if not (np.abs(column) < limit).all():
                return None
        columns[name] = column
    return columns


def read_lines(path: Path) -> pa.Array:
    """Every line of a text file as a string array, blank lines kept (line = index + 1)."""
    data = read_text(path).encode("utf-8")
    if not data:  # an empty exclusion list is valid; Arrow refuses it
        return pa.array([], type=pa.string())
    try:
        table = pa_csv.read_csv(pa.BufferReader(data), **_csv_options(["text"], None))
    except pa.ArrowInvalid as err:
        raise AnnotationError(path, None, f"not readable as CSV text ({err})") from None
    return table.column("text").combine_chunks()


def _at(column, i: int):
    value = column[i]
    return value.as_py() if isinstance(value, pa.Scalar) else value


def _exact_fields(path: Path, types: dict):
    """``(columns, checks, line, text)`` of every non-blank line, flagging wrong field
    counts, non-plain ids and bad numbers."""
    names = tuple(types)
    lines = read_lines(path)
    blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(lines)), 0)
    keep = np.flatnonzero(~blank.to_numpy(zero_copy_only=False))
    lines = lines.take(pa.array(keep))
    count = pc.add(pc.count_substring(lines, ","), 1).to_numpy(zero_copy_only=False)
    wrong = count != len(names)
    # Rows with the wrong field count are blanked so that every row splits evenly;
    # they are reported by the first check, which takes precedence.
    parts = pc.split_pattern(pc.if_else(pa.array(wrong), pa.scalar("," * (len(names) - 1)), lines), ",")
    checks = Checks(len(lines))
    checks.add(wrong, lambda i: f"expected {len(names)} comma-separated fields "
                                f"({', '.join(names)}), found {count[i]}")
    strings = {name: pc.utf8_trim_whitespace(pc.list_element(parts, i)) for i, name in enumerate(names)}
    columns = {name: strings[name] for name, type_ in types.items() if pa.types.is_string(type_)}
    _check_ids(checks, columns)
    for name, type_ in types.items():
        if not pa.types.is_string(type_):
            columns[name] = _check_number(checks, name, strings[name], type_)
    return columns, checks, keep + 1, lines


def _check_ids(checks: Checks, columns: dict) -> None:
    for name, column in columns.items():
        if isinstance(column, pa.Array) and pa.types.is_string(column.type):
            ok = pc.match_substring_regex(column, PLAIN_ID).to_numpy(zero_copy_only=False)
            checks.add(~ok, lambda i, n=name, c=column: f"{n} {_at(c, i)!r} is not a plain id ([A-Za-z0-9_-]+)")


def _check_number(checks: Checks, name: str, column: pa.Array, type_: pa.DataType) -> np.ndarray:
    integer = pa.types.is_integer(type_)
    ok = pc.match_substring_regex(column, _INT if integer else _FLOAT).to_numpy(zero_copy_only=False)
    checks.add(~ok, lambda i: f"{name} {_at(column, i)!r} is not {'an integer' if integer else 'a number'}")
    return pc.cast(pc.if_else(pa.array(ok), column, pa.scalar("0")), type_).to_numpy(zero_copy_only=False)


def parse_rows(path, types: dict, validate, skip_bad_rows: bool):
    """``(columns, line, report)`` of a headerless CSV with `types` fields.

    `validate(checks, columns)` adds value checks. Clean files take the fast path;
    otherwise every line is re-read to name the first bad one (or, with
    `skip_bad_rows`, to drop and report all of them).
    """
    path = Path(path)
    columns = _read_clean(path, types)
    if columns is not None:
        checks = Checks(len(next(iter(columns.values()))))
        _check_ids(checks, columns)
        validate(checks, columns)
        if not checks.bad.any():
            return columns, np.arange(1, len(checks.first) + 1), empty_report()
    columns, checks, line, text = _exact_fields(path, types)
    validate(checks, columns)
    rows = np.flatnonzero(checks.bad)
    if len(rows) and not skip_bad_rows:
        raise AnnotationError(path, int(line[rows[0]]), checks.problem(rows[0]))
    report = pd.DataFrame({
        "file": pd.Series([str(path)] * len(rows), dtype=str), "line": line[rows].astype(np.int64),
        "problem": pd.Series([checks.problem(i) for i in rows], dtype=str),
        "text": pd.Series(text.take(pa.array(rows)).to_pylist(), dtype=str),
    })
    keep = np.flatnonzero(~checks.bad)
    columns = {name: (c.take(pa.array(keep)) if isinstance(c, pa.Array) else c[keep])
               for name, c in columns.items()}
    return columns, line[keep], report
