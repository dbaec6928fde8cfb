"""Child processes (ffmpeg) that never outlive the build that started them.

On Linux a child asks the kernel for SIGKILL when its parent dies (``prctl
PR_SET_PDEATHSIG``, set between fork and exec), so even a ``kill -9`` of the build takes
its ffmpegs with it; elsewhere, and on any exception in the parent (Ctrl-C included),
the child is killed before the exception goes on. A child that dies of a signal is a
`TransientMediaError`: running the same command again may well succeed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

from stvr_data.errors import DISK_FULL_ERRNOS, MediaError, TransientMediaError

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# ffmpeg's own words for failures that are about the machine, not the video.
_TRANSIENT_MESSAGES = ("No space left on device", "Disk quota exceeded", "Cannot allocate memory")


def _death_signal_setter():
    """A function for `preexec_fn` that sets SIGKILL-on-parent-death, or None off Linux.

    The libc function is looked up here, in the parent, so the child only makes one call.
    The kernel sends the signal when the *thread* that started the child ends; `run_child`
    waits for the child in that same thread, so this is when the build dies.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return set_death_signal


def run_child(args: list[str], *, name) -> bytes:
    """Run `args`, returning its stderr; the child dies with this process.

    Raises `TransientMediaError` when the child is killed by a signal or reports a full
    disk, `MediaError` (with the child's last stderr line) for any other failure; both
    name `name` (the file being processed).
    """
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, preexec_fn=_death_signal_setter())
    try:
        _, stderr = process.communicate()
    except BaseException:
        process.kill()
        process.wait()
        raise
    code = process.returncode
    if code < 0:
        raise TransientMediaError(f"{name}: {os.path.basename(args[0])} was killed by "
                                  f"{signal.Signals(-code).name}; run again to retry")
    if code > 0:
        last = last_line(stderr)
        if any(message in last for message in _TRANSIENT_MESSAGES):
            raise TransientMediaError(f"{name}: {last}")
        raise MediaError(f"{name}: ffmpeg failed: {last}")
    return stderr


def last_line(stderr: bytes | None) -> str:
    lines = (stderr or b"").decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no error message"


def is_transient_os_error(err: OSError) -> bool:
    """A full disk or quota: the machine's state, not the input's."""
    return err.errno in DISK_FULL_ERRNOS
