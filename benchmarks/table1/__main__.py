"""`python -m benchmarks.table1`: parse the flags and hand over to `runner.run_experiment`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.table1.plan import BUDGETS, CELL_NAMES, MOTIONS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.table1",
        description="Train and evaluate the five recurrent cells (Clip, ConvLSTM, Optical Flow, "
        "TrajLSTM, Warp LSTM) on two synthetic STVR benchmarks (moving / static "
        "actors) over several seeds, and write benchmarks/results/table1{.md,_motion.md,"
        ".png,.json}. Resumable: finished runs are skipped, partial training resumes.",
    )
    parser.add_argument(
        "--budget",
        choices=sorted(BUDGETS),
        default="cpu",
        help="cpu: ~60 min on 2 CPU cores; cpu4x: 4x the training of cpu; "
        "full: GPU sizes (not runnable on a CPU)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="work folder for data, checkpoints and evaluations "
        "(default runs/table1-<budget>, git-ignored)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("benchmarks/results"),
        help="where the table, chart and raw numbers go",
    )
    parser.add_argument(
        "--cells",
        default=",".join(CELL_NAMES),
        help="comma-separated subset of the cells (default all five)",
    )
    parser.add_argument(
        "--motions",
        default=",".join(MOTIONS),
        help="comma-separated subset of the motion settings (default both)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder of the two benchmarks (default <out>/data); budgets with "
        "the same data settings (cpu, cpu4x) can share one",
    )
    parser.add_argument(
        "--deadline-minutes",
        type=float,
        default=None,
        help="start no new run after this many minutes; the tables then say partial",
    )
    parser.add_argument(
        "--backbone-weights",
        default=None,
        help="I3D weights for --budget full (see `stvr-model convert-i3d`); "
        "without them the I3D backbone starts from random weights",
    )
    parser.add_argument("--fresh", action="store_true", help="delete the work folder first")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from benchmarks.table1 import runner

    budget = BUDGETS[args.budget]
    work = args.out or Path(f"runs/table1-{budget.name}")
    if args.fresh:
        runner.clean(work)
    print(
        f"[table1] budget {budget}\n[table1] work folder {work}, started "
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
        flush=True,
    )
    runner.run_experiment(
        budget,
        work,
        args.results,
        deadline_minutes=args.deadline_minutes,
        cells=tuple(c for c in args.cells.split(",") if c),
        motions=tuple(m for m in args.motions.split(",") if m),
        data_dir=args.data,
        backbone_weights=args.backbone_weights,
    )


if __name__ == "__main__":
    main()
