"""Side effects of the Table-1 experiment: build one benchmark per speed, train stage 1
and every stage-2 run, evaluate, write the result files. Every step is skipped when its
output exists, so an interrupted experiment continues where it stopped (the same
command again): a finished stage 1 has `stage1.json`, a finished run `record.json`, and
a half-trained one resumes from its `last.pt`.

Layout under the work folder (git-ignored, e.g. ``runs/table1-cpu``), ``m<speed>`` the
speed in feature cells per clip (``m0``, ``m1.5``)::

    data/m<speed>/sample/        make-sample output (AVA layout, video files)
    data/m<speed>/benchmark/     build-ava output; READY.json when complete
    features/                    the frozen backbones' features (one folder per backbone)
    runs/m<speed>-pretrain-s<seed>/      stage 0: the small backbone's action pretraining
    runs/m<speed>-stage1-s<seed>/train/   stage 1: Clip trained end to end
    runs/m<speed>-<cell>-s<seed>/train/   stage 2: the cell on the frozen stage 1
    runs/m<speed>-<cell>-s<seed>/eval/    detections + metrics_test.json
    runs/m<speed>-<cell>-s<seed>/record.json   the finished run (skip marker)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from benchmarks.table1.files import machine_info, plain, write_results, write_sweep
from benchmarks.table1.offsets import measure_offsets
from benchmarks.table1.plan import (
    CELL_NAMES,
    MOTIONS,
    STAGE1_CELL,
    SWEEP_CELLS,
    Budget,
    Run,
    plan_runs,
    plan_sweep,
    sample_config,
    speed_tag,
    total_iterations,
)
from stvr_data.atomic import write_text

DATA_SEED = 0  # the synthetic content and the label split; training seeds vary per run
READY = "READY.json"
FEATURES = "features"  # the frozen backbones' features, shared by training and evaluation
QUERY_SWAP = 0.5  # the CPU recipe's share of training samples with a swapped query (README)


def ensure_benchmark(data_dir: Path, budget: Budget, speed: float) -> Path:
    """The benchmark at one speed, built unless READY.json records the same settings."""
    from stvr_data.ava_recipe import prepare_ava
    from stvr_data.build import BuildOptions
    from stvr_data.sample import make_sample

    root = data_dir / speed_tag(speed)
    bench = root / "benchmark"
    config = sample_config(budget, speed)
    settings = {
        "seed": DATA_SEED,
        "sample": plain(dataclasses.asdict(config)),
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
    summary = {"settings": settings, "seconds": round(seconds, 1), "counts": card.get("counts")}
    write_text(ready, json.dumps(summary, indent=1, default=str) + "\n")
    print(
        f"[table1] built the {speed:g}-cell benchmark in {seconds:.0f} s: {card.get('counts')}",
        flush=True,
    )
    return bench


def model_config(budget: Budget, cell: str):
    """The detector of `budget` with `cell` (stage 1 and every stage-2 run share it)."""
    from stvr_model.cells import CellConfig
    from stvr_model.config import ModelConfig
    from stvr_model.detector import DetectorConfig

    width, height = budget.resolution
    detector = DetectorConfig(
        image_size=(height, width),
        feature_channels=budget.hidden_channels,
        box_head_blocks=budget.box_head_blocks,
        box_head_width=budget.box_head_width,
        box_head_fc=budget.box_head_fc,
        match_product=budget.cpu_options,
        anchor_sizes=budget.anchor_sizes,
        anchor_aspect_ratios=budget.anchor_aspect_ratios,
        add_gt_to_proposals=budget.cpu_options,
        action_weight=budget.training.action_loss,
    )
    return ModelConfig(backbone=budget.backbone, cell=CellConfig(kind=cell), detector=detector)


def train_config(
    budget: Budget, seed: int, *, stage1: Path | None = None, cache: Path | None = None
):
    """Stage 1 (`stage1` None: end to end) or stage 2 (from `stage1`, frozen, cached)."""
    from stvr_model.config import TrainConfig

    plan = budget.training
    iterations = plan.stage1_iterations if stage1 is None else plan.stage2_iterations
    return TrainConfig(
        iterations=iterations,
        batch_size=plan.batch_size,
        lr=plan.lr,
        optimizer=plan.optimizer,
        milestones=plan.milestones(iterations),
        seed=seed,
        num_workers=1,
        device=budget.device,
        checkpoint_every=max(1, iterations // 4),
        init_from=None if stage1 is None else str(stage1),
        freeze_backbone=stage1 is not None,
        feature_cache=None if cache is None else str(cache),
    )


def data_config(budget: Budget):
    from stvr_model.data import DataConfig

    return DataConfig(
        reference_seconds=budget.reference_seconds,
        max_query_seconds=budget.max_query_seconds,
        query_clips_per_second=budget.query_clips_per_second,
        query_swap=QUERY_SWAP if budget.cpu_options else 0.0,
    )


def _train(bench: Path, folder: Path, model, training, budget: Budget, weights: str | None) -> float:
    """Train `model` (a ModelConfig) with `training` (a TrainConfig) into `folder/train`
    (resuming a partial run); the seconds it took."""
    from stvr_model.config import RunConfig
    from stvr_model.train import LAST, train

    start = time.perf_counter()
    train(
        bench,
        folder / "train",
        RunConfig(model=model, data=data_config(budget), training=training),
        resume=(folder / "train" / LAST).exists(),
        backbone_weights=weights,
        progress=False,
    )
    return round(time.perf_counter() - start, 1)


def ensure_pretrained(work: Path, bench: Path, budget: Budget, run: Run) -> str:
    """Stage 0: the backbone pretrained on the training actors' actions for `run`'s speed
    and stage-1 seed (`stvr_model.pretrain`); trained once, its weights file."""
    from stvr_model.pretrain import RECORD, WEIGHTS, PretrainConfig, pretrain

    folder = work / "runs" / run.pretrain_key
    if not (folder / RECORD).exists():
        config = PretrainConfig(backbone=budget.backbone, channels=budget.hidden_channels,
                                iterations=budget.training.pretrain_iterations, seed=run.stage1_seed,
                                device=budget.device)
        (folder / WEIGHTS).unlink(missing_ok=True)  # weights of a run stopped before its record
        record = pretrain(bench, folder, config, progress=False)
        print(f"[table1] stage 0 {run.pretrain_key}: {record['seconds']} s, action loss "
              f"{record['loss'][0]['loss']:.3f} -> {record['loss'][-1]['loss']:.3f}", flush=True)
    return str(folder / WEIGHTS)


def ensure_stage1(work: Path, bench: Path, budget: Budget, run: Run, weights: str | None) -> Path:
    """The stage-1 checkpoint (Clip, end to end) of `run`'s speed and seed; trained once,
    from the given backbone weights or else from stage 0 when the budget has one."""
    from stvr_model.train import LAST

    folder = work / "runs" / run.stage1_key
    done = folder / "stage1.json"
    if not done.exists():
        if weights is None and budget.training.pretrain_iterations:
            weights = ensure_pretrained(work, bench, budget, run)
        model = model_config(budget, STAGE1_CELL)
        seconds = _train(bench, folder, model, train_config(budget, run.seed), budget, weights)
        write_text(done, json.dumps({"train_seconds": seconds}) + "\n")
        print(f"[table1] stage 1 {run.stage1_key}: {seconds} s", flush=True)
    return folder / "train" / LAST


def run_one(
    work: Path, bench: Path, budget: Budget, run: Run, *, weights: str | None = None
) -> dict:
    """Stage 1 if needed, then train `run`'s cell on it and evaluate; its record."""
    from stvr_model.evaluate import evaluate
    from stvr_model.train import LAST

    folder = work / "runs" / run.key
    record_path = folder / "record.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    stage1 = ensure_stage1(work, bench, budget, run, weights)
    config = train_config(budget, run.seed, stage1=stage1, cache=work / FEATURES)
    train_seconds = _train(bench, folder, model_config(budget, run.cell), config, budget, None)
    start = time.perf_counter()
    checkpoint = folder / "train" / LAST
    # The cells share stage 1's frozen backbone: evaluation reads its features from the
    # same cache as training, so each test clip goes through the backbone once per stage 1.
    cache = work / FEATURES
    results = evaluate(
        checkpoint,
        bench,
        "test",
        folder / "eval",
        device=budget.device,
        max_pairs=budget.eval_pairs,
        pictures=0,
        progress=False,
        feature_cache=cache,
    )
    measured = None
    if run.cell == "warp":
        measured = measure_offsets(
            checkpoint,
            bench,
            run.speed,
            max_pairs=budget.eval_pairs,
            device=budget.device,
            feature_cache=cache,
            at_leaps=budget.movement == "leap",
        )
    stage1_seconds = json.loads((work / "runs" / run.stage1_key / "stage1.json").read_text())
    pretrained = work / "runs" / run.pretrain_key / "pretrain.json"
    record = make_record(run, results, measured, metrics=folder / "train" / "metrics.jsonl")
    record.update(
        train_seconds=train_seconds,
        eval_seconds=round(time.perf_counter() - start, 1),
        stage1_seconds=stage1_seconds["train_seconds"],
        pretrain_seconds=json.loads(pretrained.read_text())["seconds"] if pretrained.exists() else None,
    )
    write_text(record_path, json.dumps(record, indent=1) + "\n")
    return record


def make_record(run: Run, results: dict, offsets: dict | None, *, metrics: Path) -> dict:
    """One run's row of the JSON: frame-mAP, its floor and its shuffled-query score."""
    shuffled = results.get("shuffled_query_mAP")
    return {
        "speed": run.speed,
        "cell": run.cell,
        "seed": run.seed,
        "map": {iou: v["mAP"] for iou, v in results["frame_map"].items()},
        "chance": {k: results["chance_mAP"][k] for k in ("mAP", "std")},
        "shuffled": None
        if shuffled is None
        else {iou: v["mAP"] for iou, v in shuffled["frame_map"].items()},
        "offsets": offsets,
        "pairs": results["pairs"],
        "iterations": results["iteration"],
        "final_loss": _final_loss(metrics),
    }


def _final_loss(metrics: Path, last: int = 10) -> float | None:
    """Mean total loss of the last `last` iterations (one iteration is too noisy)."""
    if not metrics.exists():
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    tail = [r["loss"] for r in rows[-last:]]
    return round(sum(tail) / len(tail), 4) if tail else None


def run_experiment(
    budget: Budget,
    work: Path,
    results: Path,
    *,
    deadline_minutes: float | None = None,
    cells: tuple[str, ...] | None = None,
    motions: tuple[str, ...] | None = None,
    sweep: bool = False,
    sweep_seeds: tuple[int, ...] | None = None,
    data_dir: Path | None = None,
    backbone_weights: str | None = None,
) -> list[dict]:
    """Build the benchmarks (under `data_dir`, default `work/data`; one per speed), then
    every planned run in order (the table's, or with `sweep` the sweep's); the records.
    The table and the sweep share the work folder: a run both need is trained once."""
    start = time.perf_counter()
    machine = machine_info()
    print(f"[table1] machine: {machine}", flush=True)
    if sweep:
        runs = plan_sweep(budget, cells or SWEEP_CELLS, sweep_seeds)
        write = write_sweep
    else:
        runs = plan_runs(budget, cells or tuple(CELL_NAMES), motions or MOTIONS)
        write = write_results
    stage1, stage2 = total_iterations(runs, budget)
    print(f"[table1] {len(runs)} runs: {stage1} stage-1 + {stage2} stage-2 iterations", flush=True)
    data_dir = data_dir or work / "data"
    benches = {
        speed: ensure_benchmark(data_dir, budget, speed)
        for speed in sorted({r.speed for r in runs})
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
        record = run_one(work, benches[run.speed], budget, run, weights=backbone_weights)
        records.append(record)
        print(
            f"[table1] {index + 1}/{len(runs)} {run.key}: mAP@0.5 {100 * record['map']['0.5']:.1f} "
            f"(chance {100 * record['chance']['mAP']:.1f}; train {record['train_seconds']} s, "
            f"eval {record['eval_seconds']} s, {(time.perf_counter() - start) / 60:.1f} min so far)",
            flush=True,
        )
        write(results, budget, records, len(runs), machine, time.perf_counter() - start)
    wall = time.perf_counter() - start
    print(
        f"[table1] {len(records)}/{len(runs)} runs; wall time {wall / 60:.1f} min on "
        f"{machine['cpu']}, {machine['logical_cores']} logical cores, torch {machine['torch']}",
        flush=True,
    )
    return records


def clean(work: Path) -> None:
    """Remove the work folder (the `--fresh` flag)."""
    shutil.rmtree(work, ignore_errors=True)
