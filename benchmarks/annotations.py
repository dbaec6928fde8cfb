"""Annotation stages at AVA scale: parse + link + split + pairs, against a per-row loop.

    .venv/bin/python benchmarks/annotations.py [--workdir DIR] [--rows 1600000] [--repeat N] [--no-loop]
    .venv/bin/python benchmarks/annotations.py --smoke   # ~20k rows, 2+2 labels: a check that it runs

Generates (once, in a child process so the timed run's peak memory is its own) a
synthetic AVA v2.2 release with ~1.6M box rows over 300 videos (236 train, 64 val):
persons tracked for minutes, a pose (stand/sit/walk/...) plus a random subset of
interactions (watch, talk to, listen to, ...) per second, the set changing every
few seconds, occasional gaps, a few excluded keyframes per video. Then times the
library's vectorised steps with the paper's defaults (54 labels with > 100 val
tubelets), reports peak RSS (``resource.getrusage``), and times a straightforward
per-row Python implementation of the same steps on the same input, checking that
both find the same tubelets. Speed-ups are median library run against the loop.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import re
import resource
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
from machine import describe  # benchmarks/machine.py (the script's folder is on sys.path)

POSES = ([12, 11, 14, 8, 1], [0.45, 0.33, 0.12, 0.05, 0.05])
EXTRAS = ([80, 79, 74, 17, 59, 49, 64, 15, 9, 10], [0.5, 0.35, 0.3, 0.15, 0.1, 0.08, 0.06, 0.05, 0.04, 0.03])
VERSION = "2.2"


# ---------------------------------------------------------------------------- input


def _track(rng, person, first, last):
    """Seconds, boxes and action sets of one person track (gaps and label changes)."""
    start = int(rng.integers(first, last + 1))
    seconds = np.arange(start, min(last, start + int(rng.geometric(1 / 150))) + 1)
    seconds = seconds[rng.random(len(seconds)) > 0.02]  # missed detections leave gaps
    n = len(seconds)
    size = rng.uniform(0.08, 0.3, 2)
    centre = np.clip(rng.uniform(0.2, 0.8, 2) + np.cumsum(rng.normal(0, 0.01, (n, 2)), 0), 0.2, 0.8)
    boxes = np.round(np.hstack([centre - size / 2, centre + size / 2]), 3)
    segment = np.cumsum(rng.random(n) < 1 / 4)
    poses = rng.choice(POSES[0], size=segment[-1] + 1 if n else 0, p=POSES[1])
    extras = rng.random((len(poses), len(EXTRAS[0]))) < np.array(EXTRAS[1])
    sets = [[int(p), *np.array(EXTRAS[0])[e].tolist()] for p, e in zip(poses, extras, strict=True)]
    return seconds, boxes, [sets[s] for s in segment], person


def _video_rows(rng, video, person_seconds):
    rows, person, total = [], 0, 0
    while total < person_seconds:
        seconds, boxes, sets, _ = _track(rng, person, 902, 1798)
        for t, box, actions in zip(seconds, boxes, sets, strict=True):
            rows.extend((video, f"{t:04d}", *box, a, person) for a in actions)
        total += len(seconds)
        person += 1
    return rows


def generate(directory: Path, rows: int, seed: int = 0) -> None:
    """Write a synthetic AVA v2.2 release of about `rows` box rows to `directory`."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))
    videos = ["".join(rng.choice(alphabet, 11)) for _ in range(300)]
    per_video = rows / 300 / (1 + sum(EXTRAS[1]))  # mean actions per person-second
    for subset, ids in (("train", videos[:236]), ("val", videos[236:])):
        table = [r for v in ids for r in _video_rows(rng, v, per_video)]
        frame = pd.DataFrame(table)
        frame.to_csv(directory / f"ava_{subset}_v{VERSION}.csv", header=False, index=False,
                     float_format="%.3f")
        excluded = [(v, f"{t:04d}") for v in ids for t in rng.choice(np.arange(902, 1799), 3)]
        pd.DataFrame(excluded).to_csv(directory / f"ava_{subset}_excluded_timestamps_v{VERSION}.csv",
                                      header=False, index=False)
    labels = sorted(set(POSES[0]) | set(EXTRAS[0]))
    (directory / f"ava_action_list_v{VERSION}.pbtxt").write_text(
        "".join(f'label {{\n  name: "action {i}"\n  label_id: {i}\n}}\n' for i in labels))
    (directory / "ava_file_names_trainval_v2.1.txt").write_text("".join(f"{v}.mkv\n" for v in videos))


# ---------------------------------------------------------------------------- vectorised


def run_library(directory: Path, seed: int = 0, min_tubelets: int = 100, per_split: int = 27):
    from stvr_data import ava, pairs, splits, tubelets

    times, start = {}, time.perf_counter()
    release = ava.load_annotations(directory)
    times["parse"] = time.perf_counter() - start
    train = tubelets.link_tubelets(release.train)
    val = tubelets.link_tubelets(release.val)
    times["link"] = time.perf_counter() - start - sum(times.values())
    val_labels, test_labels = splits.choose_heldout_labels(
        val, seed=seed, min_tubelets=min_tubelets, num_val=per_split, num_test=per_split)
    table = tubelets.assign_ids(splits.assign_splits(train, val, val_labels, test_labels))
    times["split"] = time.perf_counter() - start - sum(times.values())
    counts = {}
    for offset, split in enumerate(("val", "test")):
        made = pairs.make_pairs(table, split=split, seed=seed + offset)
        counts[f"{split} pairs"] = len(made)
        counts[f"{split} groundtruth rows"] = len(pairs.groundtruth(made, table))
    counts["train pairs (one epoch)"] = len(pairs.draw_train_pairs(table, np.random.default_rng(seed)))
    times["pairs"] = time.perf_counter() - start - sum(times.values())
    counts["box rows"] = len(release.train) + len(release.val)
    counts.update({f"{s} tubelets": int((table.split == s).sum()) for s in ("train", "val", "test")})
    return times, counts, (train, val, table[table.split == "train"])


# ---------------------------------------------------------------------------- per-row loop

_ID = re.compile(r"[A-Za-z0-9_-]+")


def loop_parse(path: Path, action_ids: set[int], excluded: set) -> dict:
    """{(video, person): {second: (box, actions)}}, validating each row as read."""
    people = defaultdict(dict)
    with open(path, newline="") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if len(row) != 8 or not _ID.fullmatch(row[0]):
                raise ValueError(f"{path}:{line}: bad row")
            t, box, action, person = float(row[1]), tuple(float(x) for x in row[2:6]), int(row[6]), int(row[7])
            if not all(0 <= b <= 1 for b in box) or box[2] <= box[0] or box[3] <= box[1]:
                raise ValueError(f"{path}:{line}: bad box")
            if action not in action_ids:
                raise ValueError(f"{path}:{line}: unknown action")
            if (row[0], t) in excluded:
                continue
            entry = people[(row[0], person)].setdefault(int(t), (box, set()))
            if entry[0] != box:
                raise ValueError(f"{path}:{line}: conflicting box")
            entry[1].add(action)
    return people


def loop_link(people: dict) -> list:
    """[(video, person, label, [seconds], [boxes])] sorted by video, person, start."""
    tubes = []
    for (video, person), seconds in sorted(people.items()):
        current = None
        for t in sorted(seconds):
            box, actions = seconds[t]
            label = "+".join(str(a) for a in sorted(actions))
            if current and current[2] == label and current[3][-1] == t - 1:
                current[3].append(t)
                current[4].append(box)
            else:
                current = [video, person, label, [t], [box]]
                tubes.append(current)
    return tubes


def loop_split_and_pairs(train, val, seed: int, min_tubelets: int, per_split: int) -> dict:
    counts = Counter(t[2] for t in val)
    eligible = sorted((lab for lab, n in counts.items() if n > min_tubelets),
                      key=lambda s: [int(x) for x in s.split("+")])
    # The same draw as the library, so that both hold out the same labels.
    draw = np.random.default_rng(seed).choice(len(eligible), 2 * per_split, replace=False)
    chosen = [eligible[i] for i in draw]
    held = set(chosen)
    removed = {(t[0], s) for t in train if t[2] in held for s in t[3]}
    kept = []
    for video, person, label, seconds, boxes in train:
        if label in held:
            continue
        piece = None
        for s, box in zip(seconds, boxes, strict=True):
            if (video, s) in removed:
                piece = None
            elif piece is None:
                piece = [video, person, label, [s], [box]]
                kept.append(piece)
            else:
                piece[3].append(s)
                piece[4].append(box)
    sizes = Counter(t[2] for t in kept)
    kept = [t for t in kept if sizes[t[2]] > 1]
    result = {"train tubelets": len(kept)}
    rng = random.Random(seed)
    for split, labels in (("val", chosen[:per_split]), ("test", chosen[per_split:])):
        pool = [t for t in val if t[2] in labels]
        result[f"{split} pairs"], result[f"{split} groundtruth rows"] = _loop_pairs(pool, rng)
    result["train pairs (one epoch)"] = _loop_train_pairs(kept, rng)
    return result, kept


def _loop_train_pairs(kept: list, rng: random.Random) -> int:
    by_label = defaultdict(list)
    for t in kept:
        by_label[t[2]].append(t)
    made = []
    for query in kept:
        others = by_label[query[2]]
        if len(others) < 2:
            continue
        target = query
        while target is query:
            target = rng.choice(others)
        q = rng.randrange(max(1, len(query[3]) - 9))
        r = rng.randrange(max(1, len(target[3]) - 1))
        made.append((query[0], query[3][q:q + 10], query[4][q:q + 10], target[0], target[3][r:r + 2]))
    return len(made)


def _loop_pairs(pool: list, rng: random.Random) -> tuple[int, int]:
    by_label, by_place = defaultdict(list), defaultdict(list)
    for t in pool:
        by_label[t[2]].append(t)
        by_place[(t[2], t[0])].append(t)
    made = rows = 0
    for query in pool:
        valid = []
        for target in by_label[query[2]]:
            n = len(target[3])
            pad = n if n < 10 else 0
            start, end = max(target[3][0] - pad, 900), min(target[3][-1] + 1 + pad, 1800)
            inside = target[0] == query[0] and query[3][0] < end and query[3][-1] + 1 > start
            if target is not query and not inside:
                valid.append((target, start, end))
        if not valid:
            continue
        target, start, end = rng.choice(valid)
        made += 1
        for second in range(start, end):
            boxes = [t for t in by_place[(query[2], target[0])] if second in t[3]]
            rows += 3 * max(1, len(boxes))
    return made, rows


def run_loop(directory: Path, seed: int = 0, min_tubelets: int = 100, per_split: int = 27):
    from stvr_data import ava

    times, start = {}, time.perf_counter()
    actions = set(ava.read_action_list(directory / f"ava_action_list_v{VERSION}.pbtxt"))
    parsed = {}
    for subset in ("train", "val"):
        with open(directory / f"ava_{subset}_excluded_timestamps_v{VERSION}.csv") as handle:
            excluded = {(v, float(t)) for v, t in csv.reader(handle)}
        parsed[subset] = loop_parse(directory / f"ava_{subset}_v{VERSION}.csv", actions, excluded)
    times["parse"] = time.perf_counter() - start
    train, val = loop_link(parsed["train"]), loop_link(parsed["val"])
    times["link"] = time.perf_counter() - start - sum(times.values())
    counts, kept = loop_split_and_pairs(train, val, seed, min_tubelets, per_split)
    times["split + pairs"] = time.perf_counter() - start - sum(times.values())
    return times, counts, (train, val, kept)


# ---------------------------------------------------------------------------- report


def machine() -> str:
    usable = len(os.sched_getaffinity(0))
    return describe(f"{usable} usable", f"pandas {pd.__version__}", f"numpy {np.__version__}")


def same_tubelets(library, loop) -> bool:
    mine = [(r.video_id, r.person_id, r.label, r.start, r.end - 1.0) for r in library.itertuples()]  # [start, end)
    theirs = [(t[0], t[1], t[2], float(t[3][0]), float(t[3][-1])) for t in loop]
    return mine == theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the generated release is kept (default /tmp/stvr-annotation-bench-<rows>)")
    parser.add_argument("--rows", type=int, default=1_600_000)
    parser.add_argument("--min-tubelets", type=int, default=100, help="held-out labels need more val tubelets")
    parser.add_argument("--labels", type=int, default=27, help="held-out labels per split (val, test)")
    parser.add_argument("--no-loop", action="store_true", help="skip the per-row loop comparison")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the vectorised steps")
    parser.add_argument("--smoke", action="store_true",
                        help="a check that it runs: 20k rows, 2 labels per split with > 5 tubelets")
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.min_tubelets, args.labels = 20_000, 5, 2
    args.workdir = args.workdir or Path(f"/tmp/stvr-annotation-bench-{args.rows}")
    if args.generate_only:
        generate(args.workdir, args.rows)
        return
    if not (args.workdir / f"ava_train_v{VERSION}.csv").is_file():
        print(f"generating {args.rows} rows in {args.workdir} ...", flush=True)
        subprocess.run([sys.executable, __file__, "--generate-only", "--workdir", str(args.workdir),
                        "--rows", str(args.rows)], check=True)
    print("machine:", machine())
    runs, cpus = [], []
    for _ in range(args.repeat):
        cpu = time.process_time()
        times, counts, library = run_library(args.workdir, min_tubelets=args.min_tubelets, per_split=args.labels)
        cpus.append(time.process_time() - cpu)
        runs.append(times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    for name, pick in (("median", np.median), ("min", np.min)):
        stages = {k: float(pick([r[k] for r in runs])) for k in runs[0]}
        print(f"vectorised ({name} of {args.repeat}):", ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()),
              f"| total {pick([sum(r.values()) for r in runs]):.2f} s wall, {pick(cpus):.2f} s CPU")
    print(f"load average {os.getloadavg()[0]:.1f}")
    total, cpu = float(np.median([sum(r.values()) for r in runs])), float(np.median(cpus))
    print(f"peak RSS {peak:.2f} GiB |", ", ".join(f"{k}: {v}" for k, v in counts.items()))
    if args.no_loop:
        return
    loop_cpu = time.process_time()
    loop_times, loop_counts, loop = run_loop(args.workdir, min_tubelets=args.min_tubelets, per_split=args.labels)
    loop_cpu = time.process_time() - loop_cpu
    loop_total = sum(loop_times.values())
    print("per-row loop:", ", ".join(f"{k} {v:.2f} s" for k, v in loop_times.items()),
          f"| total {loop_total:.2f} s wall, {loop_cpu:.2f} s CPU |",
          ", ".join(f"{k}: {v}" for k, v in loop_counts.items()))
    same = all(same_tubelets(a.reset_index(drop=True), b) for a, b in zip(library, loop, strict=True))
    print(f"same linked and split tubelets: {same}; speed-up {loop_total / total:.1f}x wall, "
          f"{loop_cpu / cpu:.1f}x CPU")


if __name__ == "__main__":
    main()
