"""Data loader throughput: clips per second per DataLoader worker, for training samples
and for evaluation samples, at the paper's setting (§6.2: 320x320, references of 2 s =
6 clips for training and whole references for evaluation, queries up to 10 s at 3 clips
per second: `stvr_model.data.DataConfig`'s defaults).

Builds its benchmark itself from the synthetic sample (`stvr-data make-sample` +
`build-ava --resolution 320x320`, into a temporary folder unless `--workdir` keeps it),
then runs `stvr_model.data.PairDataset` through a `DataLoader` exactly as training
(`BatchWindow` batches, `collate`) and evaluation (the val and test pairs, one per batch)
do, with `--workers` processes and no model:

- clips/s = real reference + query clips (padding not counted) per wall second, over the
  batches after the first `--workers` (worker start-up left out); per worker = that / workers;
- in this process (no workers) over the same samples: clips/s, and the shares of the
  loading time spent in `read_frames` (decoding the clip files) and, after the loader,
  in `batch_to_model` on the CPU (uint8 [T, 8, H, W, 3] -> float32 [T, 3, 8, H, W] in
  [-1, 1], which training and evaluation do on the model's device; on a GPU it costs
  next to nothing, on a CPU it is work of the training process, not of the workers);
  the rest is reading clips from the cache, flipping, targets and `collate`. The rate
  with workers leaves that conversion out (the workers hand over uint8 clips), this one
  includes it.

Each worker keeps `--cache-seconds` decoded seconds (default 16, about one training
sample's seconds): on AVA, 235 videos of 900 s, a worker's cache almost never serves
another sample, while on this small sample the default 512 s would hold every video and
measure the cache instead of the decoder.

    .venv/bin/python benchmarks/loader.py [--size 320] [--workers 1] [--train-samples 60]
        [--eval-samples 20] [--cache-seconds 16] [--workdir DIR]
    .venv/bin/python benchmarks/loader.py --smoke   # a tiny sample at 128x128: a check that it runs
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from pathlib import Path

import torch
from machine import print_machine  # benchmarks/machine.py (the script's folder is on sys.path)
from sample_data import build_benchmarks  # benchmarks/sample_data.py
from torch.utils.data import ConcatDataset, DataLoader, Subset

from stvr_model import data as data_module
from stvr_model.data import DataConfig, PairDataset, batch_to_model, collate
from stvr_model.inference import inference_data
from stvr_model.train import BatchWindow


def training_loader(bench: Path, samples: int, workers: int, batch: int, cache: int) -> DataLoader:
    """The training loader of `stvr_model.train` (paper data settings) for `samples` samples."""
    dataset = PairDataset(bench, "train", DataConfig(cache_seconds=cache), seed=0, training=True)
    return DataLoader(dataset, batch_sampler=BatchWindow(0, max(1, samples // batch), batch),
                      collate_fn=collate, num_workers=workers)


def evaluation_loader(bench: Path, samples: int, workers: int, cache: int) -> DataLoader:
    """Whole references of the val and test pairs, one pair per batch, as `evaluate` reads them."""
    config = inference_data(DataConfig(cache_seconds=cache))
    splits = ConcatDataset([PairDataset(bench, split, config, training=False) for split in ("val", "test")])
    return DataLoader(Subset(splits, range(min(samples, len(splits)))), batch_size=1, collate_fn=collate,
                      num_workers=workers)


def clip_rate(loader: DataLoader, skip: int, convert: dict | None = None) -> dict:
    """Samples, real clips and clips per wall second over the batches after the first
    `skip`; with `convert`, each batch also goes through `batch_to_model` on the CPU and
    `convert["batch_to_model"]` adds up the seconds it took."""
    samples = clips = 0
    start = time.perf_counter()
    for done, batch in enumerate(loader):
        if done == skip:
            start, samples, clips = time.perf_counter(), 0, 0
        if convert is not None:
            begin = time.perf_counter()
            batch_to_model(batch, "cpu")
            convert["batch_to_model"] += time.perf_counter() - begin
        samples += len(batch["ref_valid"])
        clips += int(batch["ref_valid"].sum()) + int(batch["query_valid"].sum())
    wall = time.perf_counter() - start
    return {"samples": samples, "clips": clips, "wall_s": wall, "clips_per_s": clips / wall if wall else 0.0}


@contextlib.contextmanager
def timed_decoding():
    """{"read_frames": seconds spent decoding} in this process, while the block runs."""
    spent = {"read_frames": 0.0}
    original = data_module.read_frames

    def timed(*args, **kwargs):
        begin = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent["read_frames"] += time.perf_counter() - begin

    data_module.read_frames = timed
    try:
        yield spent
    finally:
        data_module.read_frames = original


def in_process(make_loader) -> dict:
    """The same samples in this process (a loader without workers), each batch converted
    for the model on the CPU: clips/s and the shares of that time spent decoding and
    converting to float."""
    convert = {"batch_to_model": 0.0}
    with timed_decoding() as spent:
        rate = clip_rate(make_loader(), skip=0, convert=convert)
    wall = rate["wall_s"] or 1.0
    return {**rate, "decode": spent["read_frames"] / wall, "convert": convert["batch_to_model"] / wall}


def report(name: str, rate: dict, workers: int, alone: dict) -> None:
    per_worker = rate["clips_per_s"] / max(1, workers)
    print(f"| {name} | {workers} | {rate['samples']} | {rate['clips']} | {rate['clips'] / max(1, rate['samples']):.1f} "
          f"| {rate['wall_s']:.2f} | {rate['clips_per_s']:.1f} | {per_worker:.1f} | {alone['clips_per_s']:.1f} "
          f"| {100 * alone['decode']:.0f} | {100 * alone['convert']:.0f} |")
    print(f"{name}: {per_worker:.1f} clips/s per worker, decoding {100 * alone['decode']:.0f}% of the loading time",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=320, help="square clip size of the built benchmark")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader processes")
    parser.add_argument("--batch-size", type=int, default=1, help="training samples per batch")
    parser.add_argument("--train-samples", type=int, default=60)
    parser.add_argument("--eval-samples", type=int, default=20)
    parser.add_argument("--cache-seconds", type=int, default=16, help="decoded seconds kept per worker")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the sample and benchmark here")
    parser.add_argument("--smoke", action="store_true",
                        help="a 2 + 2 video sample at 128x128, a few samples: a check that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.train_samples, args.eval_samples, args.workers = 128, 4, 2, 1
    print_machine()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="stvr-loader-bench-"))
    try:
        bench = build_benchmarks(work, [args.size], tiny=args.smoke)[args.size]
        config = DataConfig()
        print(f"benchmark {bench} ({args.size}x{args.size}); training: {config.reference_seconds:g} s "
              f"references, queries up to {config.max_query_seconds:g} s at {config.query_clips_per_second} "
              f"clips/s, batch {args.batch_size}; evaluation: whole references; cache {args.cache_seconds} s "
              f"per worker; torch threads {torch.get_num_threads()}")
        print("| samples | workers | samples timed | clips | clips / sample | wall s | clips/s | clips/s per worker "
              "| clips/s without workers | decode % | to float on CPU % |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        skip = args.workers
        train = clip_rate(training_loader(bench, args.train_samples + skip * args.batch_size, args.workers,
                                          args.batch_size, args.cache_seconds), skip)
        alone = in_process(lambda: training_loader(bench, args.train_samples, 0, args.batch_size,
                                                   args.cache_seconds))
        report("training samples", train, args.workers, alone)
        evaluation = clip_rate(evaluation_loader(bench, args.eval_samples + skip, args.workers,
                                                 args.cache_seconds), skip)
        alone = in_process(lambda: evaluation_loader(bench, args.eval_samples, 0, args.cache_seconds))
        report("evaluation samples", evaluation, args.workers, alone)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
