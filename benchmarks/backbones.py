"""Benchmark of the two backbones: one forward, or forward + backward of a dummy
loss, on random clips [B, 3, 8, S, S] with random initialisation: parameters, FLOPs per
clip (`torch.utils.flop_counter`; the `train` rows include the backward), wall seconds per
batch (median and minimum after one warm-up), CPU seconds, clips per second and peak RSS.
Each configuration runs in its own process so that peak memory is its own.

    .venv/bin/python benchmarks/backbones.py [--repeat 5] [--device cpu|cuda]
    .venv/bin/python benchmarks/backbones.py --smoke   # 64x64, batch 1, one run, one process: a check
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = [("small", 160, 8, "eval"), ("small", 160, 8, "train"), ("small", 320, 8, "eval"),
           ("small", 320, 8, "train"), ("i3d", 320, 1, "eval"), ("i3d", 320, 1, "train")]
SMOKE_CONFIGS = [("small", 64, 1, "eval"), ("small", 64, 1, "train"), ("i3d", 64, 1, "eval")]


def measure(name: str, size: int, batch: int, mode: str, repeat: int, device: str) -> str:
    """One table row for one configuration (run inside a child process)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from stvr_model.backbones import build_backbone

    torch.manual_seed(0)
    model = build_backbone(name).to(device).train(mode == "train")
    clips = (torch.rand(batch, 3, 8, size, size) * 2 - 1).to(device)

    def step():
        if mode == "train":
            model(clips).square().mean().backward()
        else:
            with torch.no_grad():
                model(clips)
        if device == "cuda":
            torch.cuda.synchronize()

    with FlopCounterMode(display=False) as counter:
        step()
    wall, cpu = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return (f"| {name} | {size} | {batch} | {mode} | {params:.2f} | {counter.get_total_flops() / batch / 1e9:.1f} "
            f"| {statistics.median(wall):.2f} | {min(wall):.2f} | {statistics.median(cpu):.2f} "
            f"| {batch / min(wall):.1f} | {peak:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny clips, one run: a check that it runs")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.repeat = 1
    if args.one:
        name, size, batch, mode = args.one
        print(measure(name, int(size), int(batch), mode, args.repeat, args.device), flush=True)
        return

    import torch  # noqa: F401  (the machine line reports its version, threads and GPU)
    from machine import print_machine  # benchmarks/machine.py (the script's folder is on sys.path)

    print_machine(f"device {args.device}")
    print("| backbone | S | B | mode | params M | GFLOP / clip | wall s median | wall s min | CPU s "
          "| clips/s (min) | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    if args.smoke:  # in this process: a check that it runs (the peaks are then cumulative)
        for config in SMOKE_CONFIGS:
            print(measure(*config, repeat=args.repeat, device=args.device), flush=True)
        return
    for config in CONFIGS:
        subprocess.run([sys.executable, __file__, "--repeat", str(args.repeat), "--device", args.device,
                        "--one", *map(str, config)], check=True)


if __name__ == "__main__":
    main()
