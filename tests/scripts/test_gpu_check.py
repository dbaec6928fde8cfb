"""scripts/gpu_check.sh: valid bash, and without a GPU torch can use it runs nothing and
says so in one line (its GPU steps run only on a machine with one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def test_gpu_check_parses():
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_gpu_check_without_a_gpu_says_so_and_runs_nothing(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "BIN": str(Path(sys.executable).parent)}
    work = tmp_path / "work"
    done = subprocess.run(["bash", str(SCRIPT), str(work)], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"gpu_check: no CUDA GPU usable by torch on this machine (or {env['BIN']}/python missing): nothing run"]
    assert done.stderr == ""
    assert not work.exists()  # no log, no benchmark: nothing was started
