"""Errors raised on bad input or an output that cannot be written.

`StvrError` is the one base of every error either package (stvr-data, stvr-model)
reports to its user: both command lines print it as one line and exit non-zero.
`StvrDataError` and its subclasses are this package's; stvr-model's derive from
`StvrError` too.
"""

from __future__ import annotations

import errno

# A full disk or exhausted quota: the machine's state, not the input's (worth retrying).
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class StvrError(ValueError):
    """Base class of every problem the STVR tools report as one line (never a traceback)."""


class StvrDataError(StvrError):
    """Base class for every input problem this package reports."""


class AnnotationError(StvrDataError):
    """A malformed annotation file: names the file, the line (1-based) and the problem."""

    def __init__(self, path, line: int | None, problem: str):
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


class ManifestError(StvrDataError):
    """A manifest table that is missing, unreadable or does not match its schema."""


class MediaError(StvrDataError):
    """A video that cannot be fetched, decoded or written."""


class TransientMediaError(MediaError):
    """A video that could not be had for a reason that may pass (a mirror outage, a full
    disk, ffmpeg killed by a signal): recorded as retryable, and the same command retries it."""


class DetectionsError(StvrDataError):
    """A detections file that the scorer cannot accept."""


class OutputWriteError(StvrDataError):
    """An output file that could not be written (disk full, no permission, ...).

    `errno` is the operating system's error number; `disk_full` tells a full disk or
    exhausted quota (worth retrying once space is freed) from the rest.
    """

    def __init__(self, path, err: OSError):
        self.path = str(path)
        self.errno = err.errno
        reason = err.strerror or str(err)
        super().__init__(f"{self.path}: cannot write ({reason})")

    @property
    def disk_full(self) -> bool:
        return self.errno in DISK_FULL_ERRNOS


def one_line(err: BaseException) -> str:
    """`err`'s message on one line (line breaks in it become ' | ')."""
    return " | ".join(part.strip() for part in str(err).splitlines() if part.strip()) or type(err).__name__
