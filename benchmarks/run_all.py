"""Run every benchmark in turn with its default settings (`make bench`).

Each script prints its own figures and the machine; see benchmarks/README.md for what
each measures and the figures recorded so far. The Table 1 experiment is not included
(it trains 30 models: run `python -m benchmarks.table1` on its own).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["annotations.py", "ucf24.py", "scorer.py", "media.py", "backbones.py", "cells.py", "train.py"]


def main() -> int:
    failed = []
    for script in SCRIPTS:
        path = HERE / script
        if not path.exists():
            continue
        print(f"\n===== {script}", flush=True)
        if subprocess.run([sys.executable, str(path)]).returncode != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
