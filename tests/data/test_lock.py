"""The output-directory lock (stvr_data.lock)."""

from __future__ import annotations

import json
import os
import socket

import pytest

from stvr_data.lock import LOCK_FILE, OutputLock, OutputLockedError, describe, read_holder


def test_the_lock_names_its_holder_and_is_removed_on_release(tmp_path):
    out = tmp_path / "new" / "dir"
    with OutputLock(out, "build-ava") as lock:
        record = read_holder(out / LOCK_FILE)
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert record["command"] == "build-ava" and record["started"].endswith("Z")
        assert not lock.unclean and lock.previous is None
        with pytest.raises(OutputLockedError) as caught, OutputLock(out, "second"):
            pass
        message = str(caught.value)
        assert message == f"{out}: in use by {describe(record)}; wait for it to finish or stop it"
        assert f"pid {os.getpid()} on {socket.gethostname()}" in message
        assert read_holder(out / LOCK_FILE) == record  # the refused run did not touch it
    assert not (out / LOCK_FILE).exists()


def test_a_record_left_behind_marks_an_unclean_stop(tmp_path):
    left = {"pid": 12345, "host": "node7", "command": "build-ava", "started": "2026-01-01T00:00:00Z"}
    tmp_path.joinpath(LOCK_FILE).write_text(json.dumps(left) + "\n")  # its holder was killed
    with OutputLock(tmp_path, "build-ava") as lock:
        assert lock.unclean and lock.previous == left
        assert read_holder(tmp_path / LOCK_FILE)["pid"] == os.getpid()
    with OutputLock(tmp_path, "build-ava") as lock:
        assert not lock.unclean


def test_describe_a_holder_that_has_not_written_yet():
    assert describe(None) == "another run (which has not yet written its name)"
    assert describe({"command": "make-sample", "pid": 7, "host": "h", "started": "t"}) == \
        "make-sample (pid 7 on h, since t)"
