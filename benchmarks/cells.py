"""Benchmark of the recurrent cells and of the warp op (paper §3 and §6.2).

1. Each cell at the paper's shape (batch 8, 1024 channels, 20x20, 6 steps from a zero
   state, forward and backward): time per step and the peak memory of the whole 6-step
   sequence. The cells are timed in rounds, every cell once per round, and the ratio to
   ConvLSTM is the median of the per-round ratios, so that a shared machine's changing
   load hits all cells alike. Memory: on CPU each cell runs once in a fresh process and
   the peak is the growth of the resident set; on CUDA it is `max_memory_allocated` above
   the baseline. The first step starts from zeros, which the warp, traj and flow cells do
   not resample (warping zeros gives zeros), as in training.
2. `sparse_image_warp` alone at batch 8, 128 channels, 20x20, 9 control points and
   num_boundary_points=4 (16 border points), order 2: forward, and forward + backward,
   on NCHW-contiguous and on channels-last images (TensorFlow's NHWC layout).

Parts 1 and 2 (and TensorFlow's warp, when asked for) run quiet, then beside `--busy`
processes (default 1) that the script starts and each keep one CPU busy, and print CPU
time over wall time:
a ratio above the number of cores' worth of work means threads spinning, and the loaded
median over the quiet one says how badly other processes hurt. OpenMP's wait policy in
effect (`stvr_model` sets PASSIVE unless `OMP_WAIT_POLICY` is set) is printed.
3. `clip_flows`, the optical flow the `flow` cell needs, for one batch of 8 references
   of 6 clips of 8 frames at 320x320.

    .venv/bin/python benchmarks/cells.py [--repeat 5] [--device cpu|cuda|all] [--threads N]
        [--memory-format nchw|channels_last] [--skip-cells] [--tensorflow PYTHON_WITH_TFA]
        [--busy N] [--cells convlstm,warp]
    .venv/bin/python benchmarks/cells.py --smoke   # tiny shapes, one round, one process: a check

Wall times suffer on a shared machine; CPU time (process time, all threads) is printed
beside them as the steadier figure.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager

import stvr_model  # noqa: F401  first: it sets OpenMP's wait policy, read when torch loads

# isort: split
import torch
from machine import print_machine  # benchmarks/machine.py (the script's folder is on sys.path)

from stvr_model.cells import build_cell, control_points
from stvr_model.flow import clip_flows
from stvr_model.warp import sparse_image_warp

KINDS = ["none", "convlstm", "warp", "traj", "flow"]
MEMORY_FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _memory_baseline(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return _resident_bytes()


def _memory_peak(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class CellRun:
    """One cell at the benchmark's shape, with its inputs: `sequence()` runs one timed unit."""

    def __init__(self, kind: str, device: torch.device, args: argparse.Namespace):
        torch.manual_seed(0)
        layout = MEMORY_FORMATS[args.memory_format]
        self.cell = build_cell(kind, args.channels, args.channels).to(device, memory_format=layout)
        # One leaf per step, as the backbone's features of successive clips would arrive
        # (one [steps, ...] leaf indexed per step would add a full-size gradient fill).
        shape = (args.batch, args.channels, args.size, args.size)
        self.x = [
            torch.randn(shape, device=device).contiguous(memory_format=layout).requires_grad_()
            for _ in range(args.steps)
        ]
        self.flows = torch.randn(args.steps, args.batch, 2, args.size, args.size, device=device)

    def sequence(self) -> None:
        state, total = None, 0
        for step, x in enumerate(self.x):
            state = self.cell(x, state, flow=self.flows[step])
            total = total + state.h.mean()
        total.backward()
        self.cell.zero_grad(set_to_none=True)
        for leaf in self.x:
            leaf.grad = None


def peak_memory(kind: str, device_name: str, args: argparse.Namespace) -> int:
    """Peak bytes of one sequence above the baseline (a fresh process per cell on CPU)."""
    device = torch.device(device_name)
    if args.threads:  # a spawned child starts with the default
        torch.set_num_threads(args.threads)
    run = CellRun(kind, device, args)
    baseline = _memory_baseline(device)
    run.sequence()
    _sync(device)
    return _memory_peak(device) - baseline


def _peak_in_child(kind: str, device_name: str, args: argparse.Namespace) -> int:
    # On CPU the peak is the growth of the resident set, which needs a process of its own.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(peak_memory, (kind, device_name, args))


def bench_cells(device_name: str, args: argparse.Namespace) -> None:
    """Time the cells in rounds (each round runs every cell once, in turn) so that the load
    of a shared machine hits all of them alike; ratios to ConvLSTM are taken per round.
    Quiet, then beside `args.busy` busy processes."""
    print(
        f"\ncells on {device_name}: batch {args.batch}, {args.channels} channels, "
        f"{args.size}x{args.size}, {args.steps} steps from a zero state, forward+backward, "
        f"{args.repeat} rounds, {args.memory_format} maps"
    )
    device = torch.device(device_name)
    in_child = device_name == "cpu" and not args.smoke  # smoke: one process, cumulative peaks
    peaks = {
        kind: _peak_in_child(kind, device_name, args)
        if in_child
        else peak_memory(kind, device_name, args)
        for kind in args.kinds
    }
    runs = {kind: CellRun(kind, device, args) for kind in args.kinds}
    for run in runs.values():  # warm-up
        run.sequence()
    for busy in sorted({0, args.busy}):
        with competing(busy):
            load = os.getloadavg()[0]
            wall, cpu = _cell_rounds(runs, device, args)
        condition = "quiet" if busy == 0 else f"beside {busy} busy process(es)"
        print(f"{condition}, load average {load:.1f} at the start")
        _print_cells(wall, cpu, peaks)


def _cell_rounds(runs: dict, device: torch.device, args: argparse.Namespace) -> tuple[dict, dict]:
    """Wall and CPU seconds per step of every cell, one list entry per round."""
    wall = {kind: [] for kind in runs}
    cpu = {kind: [] for kind in runs}
    for _ in range(args.repeat):
        for kind, run in runs.items():
            _sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            run.sequence()
            _sync(device)
            wall[kind].append((time.perf_counter() - start) / args.steps)
            cpu[kind].append((time.process_time() - cpu_start) / args.steps)
    return wall, cpu


def _print_cells(wall: dict, cpu: dict, peaks: dict) -> None:
    print(
        f"{'cell':<9} {'median ms/step':>15} {'min ms/step':>12} {'CPU ms/step':>12} "
        f"{'x convlstm':>11} {'CPU x conv':>11} {'CPU/wall':>9} {'peak MiB':>9}"
    )
    for kind in wall:
        ratio = statistics.median(w / c for w, c in zip(wall[kind], wall["convlstm"], strict=True))
        cpu_ratio = statistics.median(
            c / b for c, b in zip(cpu[kind], cpu["convlstm"], strict=True)
        )
        print(
            f"{kind:<9} {statistics.median(wall[kind]) * 1e3:>15.1f} "
            f"{min(wall[kind]) * 1e3:>12.1f} {statistics.median(cpu[kind]) * 1e3:>12.1f} "
            f"{ratio:>11.2f} {cpu_ratio:>11.2f} {sum(cpu[kind]) / sum(wall[kind]):>9.2f} "
            f"{peaks[kind] / 2**20:>9.0f}"
        )


def _timed(function, device: torch.device, calls: int) -> dict[str, float]:
    """Median and min wall seconds per call, CPU seconds per call (process time, all
    threads) and CPU time over wall time for the whole series."""
    for _ in range(3):
        function()
    times, cpu_times = [], []
    for _ in range(calls):
        _sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        function()
        _sync(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return {
        "median": statistics.median(times),
        "min": min(times),
        "cpu": sum(cpu_times) / calls,
        "cpu_per_wall": sum(cpu_times) / sum(times),
    }


@contextmanager
def competing(busy: int):
    """Run the block beside `busy` processes that each keep one CPU busy (a Python loop)."""
    processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        time.sleep(0.2 if busy else 0)  # let them start spinning
        yield
    finally:
        for process in processes:
            process.kill()
            process.wait()


def _warp_calls(layout, device: torch.device) -> dict:
    """The warp at the benchmark's shape: `{"forward": f, "forward+backward": g}`."""
    torch.manual_seed(0)
    image = torch.randn(8, 128, 20, 20, device=device).contiguous(memory_format=layout)
    source = control_points(20, 20).float().to(device).expand(8, 9, 2).contiguous()
    dest = source + torch.randn(8, 9, 2, device=device)
    image_grad = image.clone().requires_grad_()
    dest_grad = dest.clone().requires_grad_()

    def forward() -> None:
        with torch.no_grad():
            sparse_image_warp(image, source, dest, 2, 0.0, 4)

    def forward_backward() -> None:
        # The gradients are returned, not accumulated into `.grad`: TensorFlow's
        # `tape.gradient` in the side-by-side run does the same.
        warped, _ = sparse_image_warp(image_grad, source, dest_grad, 2, 0.0, 4)
        torch.autograd.grad(warped.sum(), [image_grad, dest_grad])

    return {"forward": forward, "forward+backward": forward_backward}


def bench_warp(device_name: str, args: argparse.Namespace) -> None:
    """The warp op alone, quiet and beside `args.busy` busy processes, in one process;
    "x quiet" is the loaded median over the quiet one of the same layout and pass."""
    device = torch.device(device_name)
    print(
        f"\nsparse_image_warp on {device_name}: batch 8, 128 channels, 20x20, 9 control "
        f"points, 4 boundary points, order 2, {args.warp_calls} calls, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY') or 'unset (libgomp spins)'}"
    )
    quiet = {}
    for busy in sorted({0, args.busy}):
        condition = "quiet" if busy == 0 else f"beside {busy} busy process(es)"
        with competing(busy):
            load = os.getloadavg()[0]
            for name, layout in MEMORY_FORMATS.items():
                for kind, function in _warp_calls(layout, device).items():
                    figures = _timed(function, device, args.warp_calls)
                    quiet.setdefault((name, kind), figures["median"])
                    ratio = figures["median"] / quiet[(name, kind)]
                    print(
                        f"{name:<14} {kind:<18} median {figures['median'] * 1e3:.2f} ms  "
                        f"min {figures['min'] * 1e3:.2f} ms  CPU {figures['cpu'] * 1e3:.2f} ms  "
                        f"CPU/wall {figures['cpu_per_wall']:.2f}  x quiet {ratio:.2f}  "
                        f"({condition}, load {load:.1f})"
                    )


# Run by a separate interpreter that has TensorFlow and TensorFlow Addons (they cannot
# share this project's environment): the same warp through tfa in graph mode.
TENSORFLOW_SNIPPET = """
import statistics, sys, time
import numpy as np, tensorflow as tf, tensorflow_addons as tfa
calls = int(sys.argv[1])
rng = np.random.default_rng(0)
image = tf.constant(rng.standard_normal((8, 20, 20, 128)), tf.float32)
grid = np.array([(y, x) for y in (5, 10, 15) for x in (5, 10, 15)], np.float32)
source = tf.constant(np.broadcast_to(grid, (8, 9, 2)))
dest = tf.constant(grid + rng.standard_normal((8, 9, 2)).astype(np.float32))

@tf.function
def forward(image, source, dest):
    return tfa.image.sparse_image_warp(image, source, dest, 2, 0.0, 4)[0]

@tf.function
def forward_backward(image, source, dest):
    with tf.GradientTape() as tape:
        tape.watch([image, dest])
        loss = tf.reduce_sum(tfa.image.sparse_image_warp(image, source, dest, 2, 0.0, 4)[0])
    return tape.gradient(loss, [image, dest])

for name, function in (("forward", forward), ("forward+backward", forward_backward)):
    for _ in range(3):
        [t.numpy() for t in tf.nest.flatten(function(image, source, dest))]
    times = []
    cpu_start = time.process_time()
    for _ in range(calls):
        start = time.perf_counter()
        [t.numpy() for t in tf.nest.flatten(function(image, source, dest))]
        times.append(time.perf_counter() - start)
    cpu = (time.process_time() - cpu_start) / calls
    print(f"{name:<18} median {statistics.median(times) * 1e3:.2f} ms  "
          f"min {min(times) * 1e3:.2f} ms  CPU {cpu * 1e3:.2f} ms")
"""


def bench_tensorflow(python: str, args: argparse.Namespace) -> None:
    """TensorFlow Addons' warp, quiet and beside `args.busy` busy processes, as ours."""
    print(
        f"\ntfa.image.sparse_image_warp (TensorFlow graph mode, CPU), same shapes, "
        f"{args.warp_calls} calls, run by {python}"
    )
    for busy in sorted({0, args.busy}):
        condition = "quiet" if busy == 0 else f"beside {busy} busy process(es)"
        with competing(busy):
            load = os.getloadavg()[0]
            done = subprocess.run(
                [python, "-c", TENSORFLOW_SNIPPET, str(args.warp_calls)],
                capture_output=True,
                text=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            )
        lines = [
            f"{line}  ({condition}, load {load:.1f})"
            for line in done.stdout.splitlines()
            if line.strip()
        ]
        print("\n".join(lines) if done.returncode == 0 else f"failed: {done.stderr[-500:]}")


def bench_optical_flow(device_name: str, batch: int = 8, clips: int = 6, size: int = 320) -> None:
    device = torch.device(device_name)
    references = torch.rand(batch, clips, 3, 8, size, size, device=device) * 2 - 1
    _sync(device)
    start = time.perf_counter()
    clip_flows(references)
    _sync(device)
    elapsed = time.perf_counter() - start
    print(
        f"\nclip_flows on {device_name}: {batch} references x {clips} clips x 8 frames at "
        f"{size}x{size}, one run: {elapsed:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds of all cells")
    parser.add_argument("--warp-calls", type=int, default=50)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=1024)
    parser.add_argument("--size", type=int, default=20)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--skip-optical-flow", action="store_true")
    parser.add_argument(
        "--memory-format",
        choices=sorted(MEMORY_FORMATS),
        default="nchw",
        help="layout of the cells' inputs and weights (the warp op is timed in both)",
    )
    parser.add_argument("--skip-cells", action="store_true", help="time the warp op only")
    parser.add_argument(
        "--cells",
        default=",".join(KINDS),
        help="comma-separated cells to time (convlstm, the reference, is always timed)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--busy",
        type=int,
        default=1,
        help="busy processes started beside the loaded runs of the warp op and the cells (0: none)",
    )
    parser.add_argument(
        "--tensorflow",
        metavar="PYTHON",
        help="an interpreter with tensorflow and tensorflow-addons, to time tfa's warp too",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="batch 1, 32 channels, 2 steps, one round, 2 warp calls, a tiny flow: a check that it runs",
    )
    args = parser.parse_args()
    chosen = [k for k in args.cells.split(",") if k.strip()]
    if set(chosen) - set(KINDS):
        parser.error(f"--cells: unknown {sorted(set(chosen) - set(KINDS))}; known: {KINDS}")
    args.kinds = ["convlstm", *(k for k in chosen if k != "convlstm")]
    if args.smoke:
        args.batch, args.channels, args.steps, args.repeat, args.warp_calls = 1, 32, 2, 1, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    print_machine()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    if args.tensorflow:
        bench_tensorflow(args.tensorflow, args)
    for device in devices:
        bench_warp(device, args)
        if not args.skip_cells:
            bench_cells(device, args)
        if not args.skip_optical_flow:
            bench_optical_flow(device, *((1, 2, 64) if args.smoke else ()))


if __name__ == "__main__":
    main()
