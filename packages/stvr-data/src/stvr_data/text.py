"""Reading the text files of a release (CSV, pbtxt, split lists, JSON) as UTF-8.

A binary or mis-encoded file is an `AnnotationError` naming the file and the line of
the first offending byte, instead of a decoder traceback from wherever the text is
first used.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from stvr_data.errors import AnnotationError


def check_text(data: bytes, path: str | os.PathLike) -> str:
    """`data` decoded as UTF-8; `AnnotationError(path, line, ...)` for a NUL byte (a
    binary file) or bytes that are not UTF-8."""
    nul = data.find(b"\0")
    if nul >= 0:
        raise AnnotationError(path, data.count(b"\n", 0, nul) + 1, "binary data (a NUL byte), not a text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise AnnotationError(path, line, f"not UTF-8 text (byte 0x{data[err.start]:02x})") from None


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of the file at `path` (see `check_text`); a missing file is an
    `AnnotationError` too."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(path, None, "file not found")
    return check_text(path.read_bytes(), path)


# Nesting deeper than any release file needs; deeper is refused before parsing, so
# that a hostile file cannot exhaust the parser's recursion.
MAX_JSON_DEPTH = 64


def read_json(path: str | os.PathLike):
    """The JSON value in the UTF-8 file at `path`. Malformed JSON, or nesting deeper than
    `MAX_JSON_DEPTH`, is an `AnnotationError` naming the file and line."""
    path = Path(path)
    text = read_text(path)
    _check_depth(text, path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise AnnotationError(path, err.lineno, f"not valid JSON ({err.msg})") from None


def _check_depth(text: str, path: Path) -> None:
    """Refuse brackets nested deeper than `MAX_JSON_DEPTH` (brackets inside strings are
    not counted)."""
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                line = text.count("\n", 0, match.start()) + 1
                raise AnnotationError(path, line, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        elif token in "]}":
            depth -= 1


# A JSON string (skipped whole) or one bracket.
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
