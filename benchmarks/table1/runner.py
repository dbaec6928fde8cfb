"""Side effects of the Table-1 experiment: build the two benchmarks, train and evaluate
every run, write the result files. Every step is skipped when its output exists, so an
interrupted experiment continues where it stopped (`python -m benchmarks.table1` again).

Layout under the work folder (git-ignored, e.g. ``runs/table1-cpu``)::

    data/<motion>/sample/        make-sample output (AVA layout, video files)
    data/<motion>/benchmark/     build-ava output; READY.json when complete
    runs/<motion>-<cell>-s<seed>/train/   checkpoints (resumed if interrupted)
    runs/<motion>-<cell>-s<seed>/eval/    detections + metrics_test.json
    runs/<motion>-<cell>-s<seed>/record.json   the finished run (skip marker)
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import time
from pathlib import Path

from benchmarks.table1 import report
from benchmarks.table1.plan import CELL_NAMES, MOTIONS, Budget, Run, plan_runs, sample_config

DATA_SEED = 0  # the synthetic content and the label split; training seeds vary per run
READY = "READY.json"


def machine_info() -> dict:
    """CPU model, logical cores, load, Python and torch versions of this machine."""
    import torch

    model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        model = names[0] if names else model
    return {
        "cpu": model,
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.is_available(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def ensure_benchmark(data_dir: Path, budget: Budget, motion: str) -> Path:
    """The benchmark of one motion setting, built unless READY.json records the same settings."""
    from stvr_data.ava_recipe import prepare_ava
    from stvr_data.build import BuildOptions
    from stvr_data.sample import make_sample

    root = data_dir / motion
    bench = root / "benchmark"
    config = sample_config(budget, motion)
    settings = {
        "seed": DATA_SEED,
        "sample": _plain(dataclasses.asdict(config)),
        "resolution": list(budget.resolution),
        "min_tubelets": budget.min_tubelets,
        "num_val_labels": budget.num_val_labels,
        "num_test_labels": budget.num_test_labels,
    }
    ready = bench / READY
    if ready.exists() and json.loads(ready.read_text())["settings"] == settings:
        return bench
    start = time.perf_counter()
    make_sample(root / "sample", seed=DATA_SEED, config=config, force=True, workers=2)
    # Strings, not Paths: the dataset card records the videos source as given, in JSON.
    card = prepare_ava(
        str(root / "sample" / "annotations"),
        str(root / "sample" / "videos"),
        bench,
        options=BuildOptions(seed=DATA_SEED, resolution=budget.resolution, workers=2, force=True),
        min_tubelets=budget.min_tubelets,
        num_val_labels=budget.num_val_labels,
        num_test_labels=budget.num_test_labels,
    )
    seconds = time.perf_counter() - start
    ready.write_text(
        json.dumps(
            {"settings": settings, "seconds": round(seconds, 1), "counts": card.get("counts")},
            indent=1,
            default=str,
        )
        + "\n"
    )
    print(
        f"[table1] built the {motion} benchmark in {seconds:.0f} s: {card.get('counts')}",
        flush=True,
    )
    return bench


def run_one(
    work: Path, bench: Path, budget: Budget, run: Run, *, backbone_weights: str | None = None
) -> dict:
    """Train (resuming a partial checkpoint) and evaluate one run; its record."""
    from stvr_model.checkpoint import ModelSpec
    from stvr_model.data import DataConfig
    from stvr_model.evaluate import evaluate
    from stvr_model.train import LAST, TrainConfig, train

    folder = work / "runs" / run.key
    record_path = folder / "record.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    width, height = budget.resolution
    spec = ModelSpec(
        cell=run.cell,
        backbone=budget.backbone,
        image_size=(height, width),
        box_head_blocks=budget.box_head_blocks,
    )
    config = TrainConfig(
        iterations=budget.iterations,
        batch_size=budget.batch_size,
        lr=budget.lr,
        milestones=budget.milestones,
        seed=run.seed,
        num_workers=1,
        device=budget.device,
        checkpoint_every=max(1, budget.iterations // 4),
    )
    data = DataConfig(
        reference_seconds=budget.reference_seconds,
        max_query_seconds=budget.max_query_seconds,
        query_clips_per_second=budget.query_clips_per_second,
    )
    start = time.perf_counter()
    summary = train(
        bench,
        folder / "train",
        spec,
        config,
        data,
        resume=(folder / "train" / LAST).exists(),
        backbone_weights=backbone_weights,
        progress=False,
    )
    trained = time.perf_counter()
    results = evaluate(
        folder / "train" / LAST,
        bench,
        "test",
        folder / "eval",
        device=budget.device,
        max_pairs=budget.eval_pairs,
        pictures=0,
        progress=False,
    )
    record = {
        "motion": run.motion,
        "cell": run.cell,
        "seed": run.seed,
        "map": {iou: v["mAP"] for iou, v in results["frame_map"].items()},
        "pairs": results["pairs"],
        "iterations": results["iteration"],
        "final_loss": _final_loss(folder / "train" / "metrics.jsonl"),
        "train_seconds": round(trained - start, 1),
        "eval_seconds": round(time.perf_counter() - trained, 1),
        "train_clips_per_second": round(summary.get("clips_per_second", 0.0), 2),
    }
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def _final_loss(metrics: Path, last: int = 10) -> float | None:
    """Mean total loss of the last `last` iterations (one iteration is too noisy)."""
    if not metrics.exists():
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    tail = [r["loss"] for r in rows[-last:]]
    return round(sum(tail) / len(tail), 4) if tail else None


def write_results(
    results: Path,
    budget: Budget,
    records: list[dict],
    planned: int,
    machine: dict,
    wall_seconds: float,
) -> None:
    """table1.json (raw), table1.md, table1_motion.md, table1.png; rewritten after every run."""
    results.mkdir(parents=True, exist_ok=True)
    stats = report.aggregate(records)
    setting = (
        f"`--budget {budget.name}`: {budget.iterations} iterations of batch {budget.batch_size}, "
        f"{budget.resolution[0]}x{budget.resolution[1]}, backbone `{budget.backbone}`, "
        f"{budget.eval_pairs or 'all'} test pairs per run"
    )
    common = {
        "done": len(records),
        "planned": planned,
        "seeds": len(budget.seeds),
        "setting": setting,
    }
    raw = {
        "budget": _plain(dataclasses.asdict(budget)),
        "machine": machine,
        "planned_runs": planned,
        "completed_runs": len(records),
        "wall_seconds_this_invocation": round(wall_seconds, 1),
        "run_seconds_total": round(sum(r["train_seconds"] + r["eval_seconds"] for r in records), 1),
        "runs": sorted(records, key=lambda r: (r["motion"], r["cell"], r["seed"])),
    }
    _replace(results / "table1.json", json.dumps(raw, indent=1) + "\n")
    _replace(results / "table1.md", report.table1_markdown(stats, **common))
    _replace(results / "table1_motion.md", report.motion_markdown(stats, **common))
    report.draw_chart(
        stats,
        records,
        results / "table1.png",
        title=f"synthetic STVR, frame-mAP@0.5, mean ± std over seeds "
        f"({len(records)}/{planned} runs, budget {budget.name})",
    )


def run_experiment(
    budget: Budget,
    work: Path,
    results: Path,
    *,
    deadline_minutes: float | None = None,
    cells: tuple[str, ...] | None = None,
    motions: tuple[str, ...] | None = None,
    data_dir: Path | None = None,
    backbone_weights: str | None = None,
) -> list[dict]:
    """Build both benchmarks (under `data_dir`, default `work/data`; budgets with the same
    data settings can share it), then every planned run in order; returns the records."""
    start = time.perf_counter()
    machine = machine_info()
    print(f"[table1] machine: {machine}", flush=True)
    runs = plan_runs(budget, cells or tuple(CELL_NAMES), motions or MOTIONS)
    data_dir = data_dir or work / "data"
    benches = {
        motion: ensure_benchmark(data_dir, budget, motion)
        for motion in sorted({r.motion for r in runs})
    }
    records = []
    for index, run in enumerate(runs):
        minutes = (time.perf_counter() - start) / 60
        finished = (work / "runs" / run.key / "record.json").exists()
        if deadline_minutes is not None and minutes >= deadline_minutes and not finished:
            print(
                f"[table1] deadline of {deadline_minutes} min reached: {run.key} not started",
                flush=True,
            )
            continue
        record = run_one(work, benches[run.motion], budget, run, backbone_weights=backbone_weights)
        records.append(record)
        print(
            f"[table1] {index + 1}/{len(runs)} {run.key}: mAP@0.5 {100 * record['map']['0.5']:.1f} "
            f"(train {record['train_seconds']} s, eval {record['eval_seconds']} s, "
            f"{(time.perf_counter() - start) / 60:.1f} min so far)",
            flush=True,
        )
        write_results(results, budget, records, len(runs), machine, time.perf_counter() - start)
    wall = time.perf_counter() - start
    print(
        f"[table1] {len(records)}/{len(runs)} runs; wall time {wall / 60:.1f} min on "
        f"{machine['cpu']}, {machine['logical_cores']} logical cores, torch {machine['torch']}",
        flush=True,
    )
    return records


def _replace(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text)
    os.replace(partial, path)


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def clean(work: Path) -> None:
    """Remove the work folder (the `--fresh` flag)."""
    shutil.rmtree(work, ignore_errors=True)
