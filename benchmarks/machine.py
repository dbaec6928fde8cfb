"""One line describing the machine a benchmark ran on (imported by the scripts beside it)."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def describe() -> str:
    """Python, torch, CPU model, logical CPUs, torch threads, load average and the GPU."""
    import torch

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"Python {platform.python_version()}, torch {torch.__version__}, {cpu_model()}, "
            f"{os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}, "
            f"load average {os.getloadavg()[0]:.1f}, CUDA: {cuda}")
