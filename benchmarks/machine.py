"""One line describing the machine a benchmark ran on (imported by the scripts beside it).

Every script prints it first as ``machine: ...`` so that a figure is never read without
the machine, the load and the versions it was measured with.
"""

from __future__ import annotations

import os
import platform
import sys


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def describe(*extras: str) -> str:
    """Python, CPU model, logical CPUs, load average, `extras` (library versions), and,
    when the script has imported torch, its version, threads and GPU. Torch is never
    imported here: the torch-free benchmarks stay torch-free."""
    parts = [f"Python {platform.python_version()}", cpu_model(), f"{os.cpu_count()} logical CPUs",
             "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()), *extras]
    torch = sys.modules.get("torch")
    if torch is not None:
        cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
        parts += [f"torch {torch.__version__}", f"torch threads {torch.get_num_threads()}", f"CUDA: {cuda}"]
    return ", ".join(parts)


def print_machine(*extras: str) -> None:
    print(f"machine: {describe(*extras)}", flush=True)
