"""Run every benchmark in turn (`make bench`), each at its full default size, or with
`--smoke` at its small size (a check that each still runs: tests/benchmarks/test_smoke.py
runs them so in the default test suite).

Each script prints the machine first (`machine: ...`, benchmarks/machine.py), then its
figures; see benchmarks/README.md for what each measures and the figures recorded so
far. The Table 1 experiment is not included (it trains 30 models: run `python -m
benchmarks.table1` on its own; its `smoke` budget runs in tests/benchmarks/test_table1.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["annotations.py", "ucf24.py", "scorer.py", "media.py", "backbones.py", "cells.py", "train.py",
           "loader.py", "reach.py"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="every script at its small size")
    args = parser.parse_args(argv)
    failed = []
    for script in SCRIPTS:
        print(f"\n===== {script}", flush=True)
        command = [sys.executable, str(HERE / script), *(["--smoke"] if args.smoke else [])]
        if subprocess.run(command).returncode != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
