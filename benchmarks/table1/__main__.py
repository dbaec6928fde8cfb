"""`python -m benchmarks.table1`: parse the flags and hand over to `runner.run_experiment`."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from benchmarks.table1.plan import BUDGETS, MOTIONS, SWEEP_CELLS


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(n) for n in text.split(",") if n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers, not {text!r}") from None


STAGES = ("stage1", "stage2")  # the stages whose iterations a flag overrides


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"iterations must be a positive integer, not {text!r}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.table1",
        description="Train and evaluate the five recurrent cells (Clip, ConvLSTM, Optical Flow, "
        "TrajLSTM, Warp LSTM) on two synthetic STVR benchmarks (static / moving "
        "actors) over several seeds, in two stages (Clip end to end, then each cell on its "
        "frozen backbone), and write benchmarks/results/table1{.md,_motion.md,.png,.json}; "
        "with --sweep, Clip, ConvLSTM and Warp LSTM at several speeds -> motion_sweep{.md,"
        ".png,.json}. Resumable: finished runs are skipped, partial training resumes.",
    )
    parser.add_argument(
        "--budget",
        choices=sorted(BUDGETS),
        default="cpu",
        help="cpu: the whole table in about 60-90 min on 2 CPU cores (actors swaying "
        "1.5 cells per clip around their boxes); cpu-leap: the same on 2 actors leaping "
        "2.5 cells sideways every second, with 2 s training references (slower); smoke: a "
        "few iterations on a tiny benchmark (a pipeline check); full: GPU sizes",
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
        default=None,
        help=f"comma-separated subset of the cells (default all five; with --sweep "
        f"{','.join(SWEEP_CELLS)})",
    )
    parser.add_argument(
        "--motions",
        default=",".join(MOTIONS),
        help="comma-separated subset of the motion levels (default both)",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="run the motion sweep (every speed of the budget) instead of the table",
    )
    parser.add_argument(
        "--sweep-seeds",
        type=_seeds,
        default=None,
        help="comma-separated seeds of the sweep (default: the budget's, one seed for cpu)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder of the benchmarks, one per speed (default <out>/data)",
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
        help="I3D weights for stage 1 of --budget full (see `stvr-model convert-i3d`); "
        "without them the I3D backbone starts from random weights",
    )
    parser.add_argument(
        "--shared-stage1",
        action="store_true",
        help="one stage 0 and stage 1 per speed (the first seed's) under every seed's stage 2: "
        "cheaper, but the seed spread then leaves out the backbone's and heads' variation",
    )
    for stage in STAGES:
        parser.add_argument(
            f"--{stage}-iterations",
            type=_positive,
            default=None,
            help=f"override the budget's {stage.replace('stage', 'stage ')} iterations (recorded "
            "in the results; use a new --out: finished runs are not retrained)",
        )
    parser.add_argument("--fresh", action="store_true", help="delete the work folder first")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rewrite the tables and charts in --results from their raw JSON "
        "(table1.json, or motion_sweep.json with --sweep)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from benchmarks.table1 import runner

    budget = BUDGETS[args.budget]
    changes = {"shared_stage1": True} if args.shared_stage1 else {}
    changes.update({f"{stage}_iterations": n for stage in STAGES
                    if (n := getattr(args, f"{stage}_iterations")) is not None})
    if changes:
        budget = dataclasses.replace(budget, training=dataclasses.replace(budget.training, **changes))
    if args.report_only:
        from benchmarks.table1.files import rewrite

        try:
            count = rewrite(args.results, budget, sweep=args.sweep)
        except (FileNotFoundError, ValueError) as err:
            raise SystemExit(f"python -m benchmarks.table1: {err}") from None
        print(f"[table1] rewrote the reports of {count} runs in {args.results}", flush=True)
        return
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
        cells=_names(args.cells),
        motions=_names(args.motions),
        sweep=args.sweep,
        sweep_seeds=args.sweep_seeds,
        data_dir=args.data,
        backbone_weights=args.backbone_weights,
    )


def _names(text: str | None) -> tuple[str, ...] | None:
    """A comma-separated list as a tuple (None when not given)."""
    return None if text is None else tuple(n for n in text.split(",") if n)


if __name__ == "__main__":
    main()
