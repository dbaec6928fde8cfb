"""How far each recurrent cell learns to carry a remembered cue across a sudden jump.

The mechanism behind Table 1's motion levels, in isolation and in minutes. On feature
maps of the size the detector's cell sees at 160 px (10x10), two compact blobs (rows 2
and 7) show opposite +-1 cues on the first step only, hold still for `--still` more
steps, then jump `d` cells sideways together; on that step a 1x1 readout of the cell's
hidden state must say each blob's cue. The cue is gone from the input after the first
step, so only the state can hold it, and the two opposite cues keep the map's statistics
(which the cells' layer norms see) from carrying it. Chance is 50 %.

What it shows: a ConvLSTM's 3x3 convs spread its state about a cell per step, so it
reaches a blob that jumped about as far as its state has spread; the warp LSTM can move
its state any distance, but learns only offsets the loss has a gradient for, and
bilinear resampling gives an offset a gradient only from features within a cell of
where it samples. The warp rows also give the learned flow at the blobs (cells, the
jump is +d). With `--curriculum` the jump of the training episodes grows from 2 cells
to `d` over the first three quarters of training (evaluation is always at `d`): small
jumps first give the offsets a gradient, then larger ones pull them further.

    python benchmarks/reach.py [--curriculum] [--results benchmarks/results] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # run as a script from the repository root
    sys.path.insert(0, str(HERE.parent))

from benchmarks.machine import describe, print_machine  # noqa: E402
from benchmarks.table1.report import Stat, format_stat, markdown_table, mean_std  # noqa: E402
from stvr_model.cells import build_cell  # noqa: E402

SIZE = 10  # feature cells across the map (160 px at stride 16)
ROWS = (2.0, 7.0)  # the two blobs' rows
CELLS = ("convlstm", "traj", "warp")


@dataclass(frozen=True)
class Setting:
    jumps: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
    seeds: tuple[int, ...] = (0, 1)
    steps: int = 400  # Adam steps per run
    batch: int = 16
    channels: int = 8
    still: int = 2  # steps the blobs hold still after the cue, before the jump
    sigma: float = 0.45  # blob radius (cells): compact, so nothing leaks a cell away
    lr: float = 3e-3
    max_offset: float = 8.0  # the warp's bound, above every jump tried
    curriculum: bool = False  # training jumps grow from CURRICULUM_START to the jump


SMOKE = Setting(jumps=(0.0, 2.0), seeds=(0,), steps=3, batch=4)
CURRICULUM_START = 2.0  # cells: a jump every cell learns to bridge without moving its state


def training_jump(jump: float, step: int, setting: Setting) -> float:
    """The jump of training step `step`: `jump`, or with the curriculum a linear ramp
    from CURRICULUM_START (or `jump` if smaller) reaching `jump` at 3/4 of training."""
    if not setting.curriculum or jump <= CURRICULUM_START:
        return jump
    return min(jump, CURRICULUM_START + (jump - CURRICULUM_START) * step / (0.75 * setting.steps))


def blob(cy: float, cx: float, sigma: float) -> torch.Tensor:
    y = torch.arange(SIZE, dtype=torch.float32).view(-1, 1)
    x = torch.arange(SIZE, dtype=torch.float32).view(1, -1)
    return torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))


def episodes(n: int, jump: float, setting: Setting, gen: torch.Generator):
    """(inputs [T, n, C, H, W], readout mask [n, H, W], cue targets [n, H, W] in {0, 1})."""
    steps = setting.still + 2
    x = torch.zeros(steps, n, setting.channels, SIZE, SIZE)
    mask, target = torch.zeros(n, SIZE, SIZE), torch.zeros(n, SIZE, SIZE)
    signs = torch.randint(0, 2, (n,), generator=gen).float() * 2 - 1
    for i in range(n):
        for row, sign in zip(ROWS, (signs[i], -signs[i]), strict=True):
            cx = 0.5 + float(torch.rand((), generator=gen)) * (SIZE - 2 - jump)
            before, after = blob(row, cx, setting.sigma), blob(row, cx + jump, setting.sigma)
            x[:-1, i, 0] += before
            x[0, i, 1] += before * sign
            x[-1, i, 0] += after
            mask[i] += (after > 0.5).float()
            target[i] += (after > 0.5).float() * (sign + 1) / 2
    return x, mask.clamp(max=1.0), target


def unroll(cell, read, x: torch.Tensor) -> torch.Tensor:
    state = None
    for step in x:
        state = cell(step, state)
    return read(state.h)[:, 0]


def run(kind: str, jump: float, seed: int, setting: Setting) -> dict:
    """Train `kind` on jumps of `jump` cells; its held-out accuracy and, for the warp,
    the mean horizontal flow at the blobs on the jump step."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cell = build_cell(kind, setting.channels, setting.channels, max_offset=setting.max_offset)
    read = torch.nn.Conv2d(setting.channels, 1, 1)
    optimizer = torch.optim.Adam([*cell.parameters(), *read.parameters()], lr=setting.lr)
    for step in range(setting.steps):
        x, mask, target = episodes(setting.batch, training_jump(jump, step, setting), setting, gen)
        loss = F.binary_cross_entropy_with_logits(unroll(cell, read, x), target, reduction="none")
        loss = (loss * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        x, mask, target = episodes(256, jump, setting, torch.Generator().manual_seed(10_000 + seed))
        right = ((unroll(cell, read, x) > 0).float() == target).float()
        accuracy = float((right * mask).sum() / mask.sum())
        flow = None
        if kind == "warp":
            flow = float((cell.last_flow[:, 1] * mask).sum() / mask.sum())
    return {"cell": kind, "jump": jump, "seed": seed, "accuracy": accuracy, "flow_dx": flow}


def summary(records: list[dict], kind: str, jump: float, key: str, scale: float = 1.0) -> Stat:
    """`key` (times `scale`) of `kind`'s runs at `jump`, over the seeds that report it."""
    return mean_std([scale * r[key] for r in records
                     if r["cell"] == kind and r["jump"] == jump and r[key] is not None])


def table(records: list[dict], setting: Setting) -> str:
    header = ["jump (cells)", *(f"{kind} accuracy (%)" for kind in CELLS), "warp flow at the blobs (cells)"]
    rows = [
        [f"{jump:g}", *(format_stat(summary(records, k, jump, "accuracy", 100.0)) for k in CELLS),
         format_stat(summary(records, "warp", jump, "flow_dx"), digits=2)]
        for jump in setting.jumps
    ]
    return markdown_table(header, rows)


def draw(records: list[dict], setting: Setting, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.8), dpi=120)
    for kind in CELLS:
        stats = [summary(records, kind, jump, "accuracy", 100.0) for jump in setting.jumps]
        ax.errorbar(setting.jumps, [s.mean for s in stats],
                    yerr=[0.0 if math.isnan(s.std) else s.std for s in stats], marker="o", capsize=3,
                    label=kind)
    ax.axhline(50.0, linestyle="--", color="gray", label="chance")
    ax.set_xlabel(f"jump after {setting.still + 1} still steps (feature cells)")
    ax.set_ylabel("cue read after the jump (%)")
    mode = ", curriculum" if setting.curriculum else ""
    ax.set_title(f"what each cell learns to carry across a jump ({len(setting.seeds)} seeds{mode})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="two jumps, one seed, a few steps")
    parser.add_argument("--curriculum", action="store_true",
                        help="training jumps grow from 2 cells to the evaluated one")
    parser.add_argument("--results", type=Path,
                        help="write reach.{md,json,png} (reach_curriculum.* with --curriculum) here")
    args = parser.parse_args(argv)
    setting = replace(SMOKE if args.smoke else Setting(), curriculum=args.curriculum)
    torch.set_num_threads(1)  # tiny maps: threads only add overhead
    print_machine()
    start, records = time.perf_counter(), []
    for jump in setting.jumps:
        for kind in CELLS:
            for seed in setting.seeds:
                records.append(run(kind, jump, seed, setting))
    seconds = time.perf_counter() - start
    text = table(records, setting)
    print(text, end="")
    print(f"{len(records)} trainings of {setting.steps} steps in {seconds:.1f} s")
    if args.results:
        args.results.mkdir(parents=True, exist_ok=True)
        name = "reach_curriculum" if setting.curriculum else "reach"
        raw = {"setting": asdict(setting), "machine": describe(), "seconds": round(seconds, 1),
               "records": records}
        (args.results / f"{name}.json").write_text(json.dumps(raw, indent=1) + "\n")
        (args.results / f"{name}.md").write_text(
            f"# What each cell learns to carry across a jump (`benchmarks/reach.py"
            f"{' --curriculum' if setting.curriculum else ''}`)\n\n"
            f"Accuracy of the cue read after the jump (chance 50 %), mean ± std over "
            f"{len(setting.seeds)} seeds; {setting.steps} Adam steps of batch {setting.batch}, "
            f"{setting.channels} channels, {SIZE}x{SIZE} maps, {setting.still} still steps after "
            f"the cue{'; training jumps grow from 2 cells to the evaluated one' if setting.curriculum else ''}; "
            f"{describe()}.\n\n" + text)
        draw(records, setting, args.results / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
