"""Child processes (stvr_data.process): they die with the build, however it ends."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stvr_data import process
from stvr_data.errors import MediaError, TransientMediaError


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "child.sh"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has died already


def _wait_for(predicate, what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_exit_codes_signals_and_full_disks(tmp_path):
    assert process.run_child([str(_script(tmp_path, "echo fine >&2"))], name="v.mp4") == b"fine\n"
    with pytest.raises(TransientMediaError, match=r"v\.mp4: child\.sh was killed by SIGKILL"):
        process.run_child([str(_script(tmp_path, "kill -9 $$"))], name="v.mp4")
    with pytest.raises(TransientMediaError, match="No space left on device"):
        process.run_child([str(_script(tmp_path, "echo 'out.mp4: No space left on device' >&2; exit 1"))],
                          name="v.mp4")
    with pytest.raises(MediaError, match="ffmpeg failed: Invalid data") as caught:
        process.run_child([str(_script(tmp_path, "echo 'x\nInvalid data' >&2; exit 1"))], name="v.mp4")
    assert not isinstance(caught.value, TransientMediaError)


ORPHAN = """
import sys
from stvr_data.process import run_child
run_child([sys.argv[1]], name="source.mp4")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_kill_9_of_the_parent_kills_the_child(tmp_path):
    pid_file = tmp_path / "child.pid"
    child = _script(tmp_path, f"echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 300")
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN, str(child)])
    _wait_for(pid_file.exists, "the child to start")
    pid = int(pid_file.read_text())
    assert _alive(pid)
    parent.send_signal(signal.SIGKILL)
    assert parent.wait() == -signal.SIGKILL
    _wait_for(lambda: not _alive(pid), "the orphaned child to die")


def test_an_exception_in_the_parent_kills_the_child(tmp_path, monkeypatch):
    pid_file = tmp_path / "child.pid"
    child = _script(tmp_path, f"echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 300")
    started = []

    def interrupted(self, *args, **kwargs):  # Ctrl-C while ffmpeg runs
        started.append(self)
        _wait_for(pid_file.exists, "the child to start")
        raise KeyboardInterrupt

    monkeypatch.setattr(subprocess.Popen, "communicate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        process.run_child([str(child)], name="v.mp4")
    assert started[0].returncode == -signal.SIGKILL
    assert not _alive(int(pid_file.read_text()))


def test_transient_os_errors():
    import errno

    assert process.is_transient_os_error(OSError(errno.ENOSPC, "full"))
    assert not process.is_transient_os_error(OSError(errno.EACCES, "denied"))
    assert not process.is_transient_os_error(FileNotFoundError(errno.ENOENT, "gone"))


