"""Writing files so that a final name only ever holds a complete file.

Every output of both packages (tables, cards, clips, downloads, checkpoints, pictures)
is written to a temporary sibling (`atomic_path`) and renamed into place when complete:
a run killed or stopped by a full disk leaves the previous file, or none, never half
of one. An `OSError` while writing (ENOSPC, EACCES, ...) becomes one `OutputWriteError`
naming the file, and the temporary file is removed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stvr_data.errors import OutputWriteError


def atomic_path(path: str | os.PathLike, *, unique: bool = False) -> Path:
    """The temporary sibling a file is written to before being renamed into place.

    By default the same name on every run (a download resumes from it). `unique` adds
    this process's id and a random tag, so that two runs never write one file (clips);
    a build removes the ``.*.partial`` files that dead runs left.
    """
    path = Path(path)
    tag = f".{os.getpid()}-{secrets.token_hex(4)}" if unique else ""
    return path.with_name(f".{path.name}{tag}.partial")


@contextmanager
def atomic_write(path: str | os.PathLike, *, unique: bool = False) -> Iterator[Path]:
    """Yield the temporary path to write `path` to; rename it onto `path` when the block
    ends normally, remove it when the block raises (`unique`: see `atomic_path`).

    Creates `path`'s folder. Raises `OutputWriteError` for an `OSError` in the block or
    the rename (a full disk, a read-only folder), with no temporary file left behind.
    """
    path = Path(path)
    tmp = atomic_path(path, unique=unique)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise OutputWriteError(path, err) from None
    finally:
        tmp.unlink(missing_ok=True)


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Rename the complete temporary file `tmp` onto `path` (for files filled over several
    calls, such as resumed downloads); `OutputWriteError` if the rename fails."""
    try:
        os.replace(tmp, path)
    except OSError as err:
        raise OutputWriteError(path, err) from None
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8, '\\n' line ends on every platform) to `path` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")
    return Path(path)
