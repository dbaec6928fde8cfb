"""An exclusive lock on an output directory, so that two runs never write into it at once.

The lock is an ``flock`` on ``<dir>/.stvr.lock``. While held, the file names its holder
(pid, host, command, start time, one JSON line); a run that finds the lock taken fails at
once with one line naming the holder. A run that ends normally removes the file; one that
was killed leaves it behind, so the next holder learns that the directory may hold the
half-written output of an unclean stop (`OutputLock.unclean`). The kernel drops an
``flock`` when its holder dies, so a stale file never blocks anyone.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from stvr_data.errors import StvrDataError

LOCK_FILE = ".stvr.lock"


class OutputLockedError(StvrDataError):
    """Another run holds the output directory."""


class OutputLock:
    """Context manager: hold ``<directory>/.stvr.lock`` exclusively (the directory is created).

    Attributes once entered: `unclean` (True when an earlier holder died without
    releasing, its record left behind) and `previous` (that record, a dict, or None).
    """

    def __init__(self, directory, command: str):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.command = command
        self.unclean = False
        self.previous: dict | None = None
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputLockedError(f"{self.directory}: in use by {describe(read_holder(self.path))}; "
                                        "wait for it to finish or stop it") from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder released and removed the file between our open and lock
        self._fd = fd
        left = os.read(fd, 1 << 16)
        self.previous = _parse(left)
        self.unclean = bool(left.strip())
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        return self

    def __exit__(self, *exc) -> None:
        # Removed before unlocking: a waiting run re-opens the path and checks it is the
        # file it locked (`_same_file`), so it never holds a lock on a removed file.
        self.path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (here.st_dev, here.st_ino)


def _parse(data: bytes) -> dict | None:
    try:
        record = json.loads(data.decode("utf-8", "replace") or "null")
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def read_holder(path) -> dict | None:
    """The record in a lock file, None when there is none (or it cannot be read)."""
    try:
        return _parse(Path(path).read_bytes())
    except OSError:
        return None


def describe(holder: dict | None) -> str:
    """``'build-ava (pid 123 on host-a, since 2026-01-01T00:00:00Z)'`` for a lock record."""
    if not holder:
        return "another run (which has not yet written its name)"
    return (f"{holder.get('command', 'another run')} (pid {holder.get('pid')} on "
            f"{holder.get('host')}, since {holder.get('started')})")
