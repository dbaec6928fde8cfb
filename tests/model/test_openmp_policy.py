"""`import stvr_model` sets OpenMP's wait policy before torch loads, unless the user did."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = "import stvr_model, os, torch; print(os.environ['OMP_WAIT_POLICY'])"


def _policy_seen(env: dict) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    return done.stdout.strip()


def test_passive_by_default_and_the_users_choice_kept():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy_seen(env) == "PASSIVE"
    assert _policy_seen({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
