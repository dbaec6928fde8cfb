"""Errors raised on bad input. The CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class StvrDataError(ValueError):
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


class DetectionsError(StvrDataError):
    """A detections file that the scorer cannot accept."""


class TransientMediaError(MediaError):
    """A video that could not be had for a reason that may pass (a mirror outage, a full
    disk, ffmpeg killed by a signal): recorded as retryable, and the same command retries it."""
