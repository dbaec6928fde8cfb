"""The Table-1 result files: the raw JSON, the markdown tables and the charts of the table
and of the motion sweep, each replaced whole (written beside, then renamed), and the
machine they were measured on."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from pathlib import Path

from benchmarks.table1 import paired, report
from benchmarks.table1.plan import MOTIONS, MOVEMENTS, Budget
from stvr_data.atomic import write_text


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


def _raw(budget: Budget, records: list[dict], planned: int, machine: dict, wall: float) -> str:
    raw = {
        "budget": plain(dataclasses.asdict(budget)),
        "machine": machine,
        "planned_runs": planned,
        "completed_runs": len(records),
        "wall_seconds_this_invocation": round(wall, 1),
        "run_seconds_total": round(sum(r["train_seconds"] + r["eval_seconds"] for r in records), 1),
        "runs": sorted(records, key=lambda r: (r["speed"], r["cell"], r["seed"])),
    }
    return json.dumps(raw, indent=1) + "\n"


def setting_line(budget: Budget) -> str:
    plan = budget.training
    stage0 = (f"stage 0 (action pretraining of the backbone) {plan.pretrain_iterations} steps of "
              f"16 actor clips, action loss weight {plan.action_loss:g} after it; "
              if plan.pretrain_iterations else "")
    shared = ("; one stage 0 and 1 per speed (seed 0's) under every seed's stage 2, so the "
              "spread leaves out the backbone's and heads' variation" if plan.shared_stage1 else "")
    return (
        f"`--budget {budget.name}`: {stage0}stage 1 (Clip, end to end) {plan.stage1_iterations} and "
        f"stage 2 (each cell, frozen backbone) {plan.stage2_iterations} iterations of batch "
        f"{plan.batch_size}, {plan.optimizer} lr {plan.lr:g}; {budget.resolution[0]}x"
        f"{budget.resolution[1]}, backbone `{budget.backbone}`; {budget.actors} lookalike actors "
        f"per video, speeds in {budget.unit}: the {MOVEMENTS[budget.movement][1]}; "
        f"training references of {budget.reference_seconds:g} s; "
        f"{'every test pair' if budget.eval_pairs is None else _count(budget.eval_pairs, 'test pair')} "
        f"per run{shared}"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _write_raw(path: Path, budget: Budget, records: list[dict], planned: int, machine: dict,
               wall_seconds: float) -> dict:
    """Write the raw JSON at `path` (creating its folder); the fields every report shares."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, _raw(budget, records, planned, machine, wall_seconds))
    return {"done": len(records), "planned": planned, "setting": setting_line(budget), "unit": budget.unit}


def write_results(
    results: Path,
    budget: Budget,
    records: list[dict],
    planned: int,
    machine: dict,
    wall_seconds: float,
) -> None:
    """table1.json (raw), table1.md, table1_motion.md, table1.png; rewritten after every run."""
    common = _write_raw(results / "table1.json", budget, records, planned, machine, wall_seconds)
    levels = [(m, budget.speed(m)) for m in MOTIONS]
    write_text(results / "table1.md", report.table1_markdown(records, levels, **common) + "\n"
               + paired.paired_markdown(records, levels, budget.unit))
    write_text(results / "table1_motion.md", report.motion_markdown(records, levels, **common))
    report.draw_chart(
        records,
        levels,
        results / "table1.png",
        title=f"synthetic STVR, frame-mAP@0.5, mean ± std over seeds "
        f"({len(records)}/{planned} runs, budget {budget.name})",
        unit=budget.unit,
    )


def write_sweep(
    results: Path,
    budget: Budget,
    records: list[dict],
    planned: int,
    machine: dict,
    wall_seconds: float,
) -> None:
    """motion_sweep.json, motion_sweep.md and motion_sweep.png; rewritten after every run."""
    common = _write_raw(results / "motion_sweep.json", budget, records, planned, machine, wall_seconds)
    speeds = [("", speed) for speed in sorted({float(r["speed"]) for r in records})]
    write_text(results / "motion_sweep.md", report.sweep_markdown(records, **common) + "\n"
               + paired.paired_markdown(records, speeds, budget.unit))
    report.draw_sweep(
        records,
        results / "motion_sweep.png",
        title=f"synthetic STVR, frame-mAP@0.5 against actor speed "
        f"({len(records)}/{planned} runs, budget {budget.name})",
        axis=MOVEMENTS[budget.movement][1],
    )


def plain(value):
    """Tuples as lists, recursively: dataclass values as JSON keeps them."""
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def rewrite(results: Path, budget: Budget, *, sweep: bool = False) -> int:
    """Rewrite the tables and charts from the raw JSON in `results` (the table's, or with
    `sweep` the sweep's) without running anything, e.g. after a change to the reports.
    `budget` must be the one the JSON was measured with (it writes the setting line).
    Returns the number of runs."""
    name = "motion_sweep.json" if sweep else "table1.json"
    path = results / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results to rewrite (run the experiment first)")
    try:
        raw = json.loads(path.read_text())
        runs, planned, machine = raw["runs"], raw["planned_runs"], raw["machine"]
        wall, measured = raw["wall_seconds_this_invocation"], dict(raw["budget"])
    except (ValueError, KeyError, TypeError) as err:  # ValueError: JSON and UTF-8 decoding too
        raise ValueError(f"{path}: not a Table-1 result file ({type(err).__name__}: {err})") from None
    given = plain(dataclasses.asdict(budget))
    changed = sorted(k for k in set(measured) | set(given) if measured.get(k) != given.get(k))
    if changed:
        raise ValueError(f"{path}: measured with budget {measured.get('name')!r}, which differs from "
                         f"{budget.name!r} in {', '.join(changed)}")
    write = write_sweep if sweep else write_results
    write(results, budget, runs, planned, machine, wall)
    return len(runs)
