"""Training benchmark: throughput, peak memory and data waiting of `train()`.

Builds the synthetic sample (`stvr-data make-sample`) into benchmarks at 160x160 and
320x320 once (kept in `--workdir`), then trains the warp LSTM for a few iterations per
configuration, each in a fresh process so that its peak memory is its own:

- `small` at 160x160 with 1 and 2 DataLoader workers (a few dozen iterations, CPU);
- `i3d` (random init) at 320x320 (a handful of iterations; on CUDA when available).

Figures, from the `metrics.jsonl` the training loop writes (one row per iteration):
- clips/s: real reference + query clips (padding not counted) per second of step time;
- data wait: share of step time spent waiting for the next batch (`data_wait_s / step_s`);
- both over all iterations and over the steady state (the first `--warmup` iterations,
  which start the loader workers and fill the clip cache, left out);
- peak memory: `ru_maxrss` of the training process (and the largest loader worker) on
  CPU; `torch.cuda.max_memory_allocated` on CUDA.

    .venv/bin/python benchmarks/train.py [--workdir /tmp/stvr-train-bench] [--device auto]
        [--small-iterations 30] [--i3d-iterations 4] [--workers 1,2]
    .venv/bin/python benchmarks/train.py --smoke   # a tiny sample at 128x128, 1-4 iterations: a check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from machine import print_machine  # benchmarks/machine.py (the script's folder is on sys.path)
from sample_data import build_benchmarks  # benchmarks/sample_data.py

# Data settings: the demo's (queries up to 4 s at 1 clip/s), or the paper's (DataConfig's
# defaults: queries up to 10 s at 3 clips/s).
DATA = {"demo": {"query_clips_per_second": 1, "max_query_seconds": 4.0}, "paper": {}}
# Detector settings (`DetectorConfig`) beside the frame size. `small` runs the CPU head the CLI
# suggests (one second-stage unit at 256 channels); `i3d` the authors' (3 units at 2C).
SMALL = {"box_head_blocks": 1, "box_head_width": 256}
I3D = {"box_head_blocks": 3}
# --smoke: the lightest networks that still run every part.
SMOKE_SMALL = {"feature_channels": 32, "box_head_blocks": 1, "box_head_width": 16}


def load() -> str:
    return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def summarise(rows: list[dict], warmup: int) -> dict:
    """Throughput and data-wait share over `rows`, and over the rows after `warmup`."""
    def figures(part):
        step = sum(r["step_s"] for r in part)
        clips = sum(r["ref_clips"] + r["query_clips"] for r in part)
        return {"iterations": len(part), "clips": clips, "step_s": step,
                "clips_per_s": clips / step if step else 0.0,
                "wait_share": sum(r["data_wait_s"] for r in part) / step if step else 0.0}

    return {"all": figures(rows), "steady": figures(rows[warmup:] or rows)}


def loader_only(args: argparse.Namespace) -> dict:
    """The training loader alone (same sampler, collate and workers, no model): how many
    clips per second it can deliver, i.e. the step rate above which training would wait."""
    from torch.utils.data import DataLoader

    from stvr_model.data import DataConfig, PairDataset, collate
    from stvr_model.train import BatchWindow

    dataset = PairDataset(args.bench, "train", DataConfig(**DATA[args.data]), seed=0)
    loader = DataLoader(dataset, batch_sampler=BatchWindow(0, args.iterations, args.batch_size),
                        collate_fn=collate, num_workers=args.workers_one)
    rows, waited = [], time.perf_counter()
    for batch in loader:
        now = time.perf_counter()
        rows.append({"step_s": now - waited, "data_wait_s": now - waited,
                     "ref_clips": int(batch["ref_valid"].sum()), "query_clips": int(batch["query_valid"].sum())})
        waited = now
    return summarise(rows, args.warmup)


def run_one(args: argparse.Namespace) -> None:
    """Child process: train one configuration, print one JSON line of results."""
    from stvr_model.config import ModelConfig, RunConfig, TrainConfig
    from stvr_model.data import DataConfig
    from stvr_model.detector import DetectorConfig
    from stvr_model.train import METRICS, train

    size = args.size
    if args.backbone == "loader":
        result = loader_only(args)
        rusage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print("RESULT " + json.dumps({**result, "wall_s": result["all"]["step_s"], "maxrss_gib": rusage,
                                      "worker_maxrss_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20}))
        return
    detector = DetectorConfig(image_size=(size, size), **json.loads(args.spec))
    model = ModelConfig(backbone=args.backbone, detector=detector)  # the warp cell
    config = TrainConfig(iterations=args.iterations, batch_size=args.batch_size, lr=0.01,
                         num_workers=args.workers_one, device=args.device, seed=0,
                         checkpoint_every=10**9)  # the final checkpoint only
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    train(args.bench, args.out, RunConfig(model=model, data=DataConfig(**DATA[args.data]), training=config),
          progress=False)
    wall = time.perf_counter() - started
    rows = [json.loads(line) for line in (Path(args.out) / METRICS).read_text().splitlines()]
    result = {**summarise(rows, args.warmup), "wall_s": wall,
              "maxrss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
              "worker_maxrss_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20}
    if args.device == "cuda":
        result["cuda_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print("RESULT " + json.dumps(result))


def launch(label: str, bench: Path, out: Path, *, backbone: str, size: int, iterations: int,
           batch_size: int, workers: int, device: str, warmup: int, spec: dict | None = None,
           data: str = "demo") -> dict:
    command = [sys.executable, __file__, "--run", "--bench", str(bench), "--out", str(out),
               "--backbone", backbone, "--size", str(size), "--iterations", str(iterations),
               "--batch-size", str(batch_size), "--workers-one", str(workers), "--device", device,
               "--warmup", str(warmup), "--spec", json.dumps(spec or {}), "--data", data]
    before = load()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{label} failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return {"label": label, "device": device, "workers": workers, "batch": batch_size,
            "load": f"{before} -> {load()}", **json.loads(line[len("RESULT "):])}


def _head(spec: dict) -> str:
    """The spec settings of a table row's label, e.g. 'box_head_blocks 1, box_head_width 256'."""
    return ", ".join(f"{k} {v}" for k, v in spec.items())


def row(result: dict) -> str:
    memory = (f"{result['cuda_peak_gib']:.2f} (CUDA)" if "cuda_peak_gib" in result
              else f"{result['maxrss_gib']:.2f} (+ worker {result['worker_maxrss_gib']:.2f})")
    every, steady = result["all"], result["steady"]
    wait = [f"{100 * part['wait_share']:.1f}" for part in (every, steady)]
    if result["label"].startswith("loader"):  # no model: the whole time is waiting for data
        wait = ["n/a", "n/a"]
    return (f"| {result['label']} | {result['device']} | {result['batch']} | {result['workers']} "
            f"| {every['iterations']} | {every['clips'] / every['iterations']:.1f} "
            f"| {every['step_s'] / every['iterations']:.2f} | {every['clips_per_s']:.2f} "
            f"| {steady['clips_per_s']:.2f} | {wait[0]} | {wait[1]} | {memory} | {result['load']} |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stvr-train-bench"))
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where i3d runs (small always runs on the CPU)")
    parser.add_argument("--small-iterations", type=int, default=24)
    parser.add_argument("--i3d-iterations", type=int, default=3, help="0 leaves i3d out")
    parser.add_argument("--small-batch", type=int, default=1)
    parser.add_argument("--loader-iterations", type=int, default=40)
    parser.add_argument("--i3d-batch", type=int, default=0, help="0: 8 on CUDA, 1 on the CPU")
    parser.add_argument("--workers", default="1,2", help="loader workers to compare for small")
    parser.add_argument("--i3d-workers", type=int, default=2, help="loader workers of the i3d run")
    parser.add_argument("--i3d-only", action="store_true",
                        help="the i3d row alone (bf16 on CUDA): the GPU throughput figure")
    parser.add_argument("--data", choices=sorted(DATA), default="demo",
                        help="demo: queries up to 4 s at 1 clip/s; paper: up to 10 s at 3 clips/s")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--smoke", action="store_true",
                        help="a 2 + 2 video sample at 128x128, 1 worker, a few iterations of a light "
                             "small model, no i3d: a check that it runs")
    # one configuration, in a child process
    parser.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    for name in ("--bench", "--out", "--backbone", "--spec"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    for name in ("--size", "--iterations", "--batch-size", "--workers-one"):
        parser.add_argument(name, type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def cpu_rows(args: argparse.Namespace, benches: dict[int, Path], runs: Path, sizes, small_spec) -> list[dict]:
    """The loader alone at both sizes and `small` at the smaller, per worker count."""
    results = []
    workers = [int(w) for w in args.workers.split(",")]
    for size in sorted(set(sizes)):
        for count in workers:
            results.append(launch(f"loader alone {size}x{size}", benches[size], runs / f"loader{size}-w{count}",
                                  backbone="loader", size=size, iterations=args.loader_iterations,
                                  batch_size=args.small_batch, workers=count, device="cpu",
                                  warmup=args.warmup, data=args.data))
            print(row(results[-1]), flush=True)
    small = sizes[0]
    for count in workers:
        results.append(launch(f"small {small}x{small} ({_head(small_spec)})",
                              benches[small], runs / f"small-w{count}", backbone="small", size=small,
                              iterations=args.small_iterations, batch_size=args.small_batch,
                              workers=count, device="cpu", warmup=args.warmup, spec=small_spec, data=args.data))
        print(row(results[-1]), flush=True)
    return results


def i3d_row(args: argparse.Namespace, bench: Path, runs: Path, size: int, device: str) -> dict:
    """`i3d` with the authors' head (bf16 autocast on CUDA), and its iterations per second."""
    batch = args.i3d_batch or (8 if device == "cuda" else 1)
    result = launch(f"i3d {size}x{size} ({_head(I3D)}, {args.data} data)", bench, runs / "i3d", backbone="i3d",
                    size=size, iterations=args.i3d_iterations, batch_size=batch, workers=args.i3d_workers,
                    device=device, warmup=min(args.warmup, args.i3d_iterations - 1), spec=I3D, data=args.data)
    print(row(result), flush=True)
    steady = result["steady"]
    memory = f"{result['cuda_peak_gib']:.2f} GiB GPU" if "cuda_peak_gib" in result else \
        f"{result['maxrss_gib']:.2f} GiB RSS"
    print(f"{result['label']} on {device}, batch {batch}: "
          f"{steady['iterations'] / steady['step_s']:.3f} iterations/s steady, "
          f"{steady['clips_per_s']:.1f} clips/s, data wait {100 * steady['wait_share']:.1f}%, peak {memory}",
          flush=True)
    return result


def main() -> None:
    args = parse_args()
    if args.run:
        return run_one(args)
    sizes, small_spec = (160, 320), SMALL
    if args.smoke:
        sizes, small_spec = (128, 128), SMOKE_SMALL
        args.small_iterations, args.i3d_iterations, args.loader_iterations = 2, 0, 4
        args.workers, args.warmup = "1", 1
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    print_machine()
    print(f"start: {load()}")
    benches = build_benchmarks(args.workdir, [sizes[1]] if args.i3d_only else sorted(set(sizes)), tiny=args.smoke)
    print(f"benchmarks ready in {args.workdir}: {load()}")
    runs = args.workdir / "runs"
    subprocess.run(["rm", "-rf", str(runs)], check=True)
    results = [] if args.i3d_only else cpu_rows(args, benches, runs, sizes, small_spec)
    if args.i3d_iterations:
        results.append(i3d_row(args, benches[sizes[1]], runs, sizes[1], device))
    print()
    print("| model | device | batch | workers | iterations | clips / it | s / it | clips/s | "
          "clips/s steady | data wait % | data wait % steady | peak GiB | load average (1/5/15 min) before -> after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        print(row(result))
    print(f"end: {load()}")


if __name__ == "__main__":
    main()
