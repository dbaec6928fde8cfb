"""Benchmark: the UCF101-24 annotation stage on the real corrected annotations.

Stages, each timed separately on the real ``pyannot.pkl`` (3194 videos, 4458 tubes) and
``testlist01.txt``, repeated, medians reported:

    load       the restricted unpickler alone (next to plain ``pickle.load`` for the cost
               of admitting only numpy/builtin globals)
    read       `ucf24.read_annotations`: load + format detection + validation of every tube
    tubelets   `ucf24.tubes_to_tubelets`: uint cast, xywh -> xyxy, 25 fps -> clip grid
    split      `ucf24.split_classes` + `ucf24.assign_splits` with the test list
    pairs      tubelet ids + `pairs.make_pairs` + `pairs.groundtruth` for val and test,
               with the same options `prepare_ucf` gives `build_benchmark`

    .venv/bin/python benchmarks/ucf24.py [--repeat 5] [--data DIR] [--smoke]
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import time
from pathlib import Path

from machine import print_machine  # benchmarks/machine.py (the script's folder is on sys.path)

from stvr_data import pairs, pickles, tubelets, ucf24
from stvr_data.manifest import images_per_keyframe

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ucf101-24"


def timed(fn):
    begin = time.perf_counter()
    result = fn()
    return time.perf_counter() - begin, result


def make_pairs(chosen, bounds):
    with_ids = tubelets.assign_ids(chosen)
    out = {}
    for offset, split in enumerate(("val", "test")):
        table = pairs.make_pairs(with_ids, split=split, seed=offset, bounds=bounds,
                                 keyframe_interval=ucf24.KEYFRAME_INTERVAL,
                                 pad_below=round(ucf24.PAD_BELOW_SECONDS / ucf24.KEYFRAME_INTERVAL))
        # One image per 1/3 s keyframe (one 8-frame clip), as build_benchmark does.
        out[split] = (table, pairs.groundtruth(
            table, with_ids, keyframe_interval=ucf24.KEYFRAME_INTERVAL,
            clips_per_second=images_per_keyframe(ucf24.KEYFRAME_INTERVAL)))
    return out


def run_once(data: Path) -> tuple[dict, dict]:
    path, split_list = data / "pyannot.pkl", data / "testlist01.txt"
    times, counts = {}, {}

    def plain_load():
        with open(path, "rb") as handle:
            return pickle.load(handle, encoding="latin1")

    times["load (plain pickle)"], _ = timed(plain_load)
    times["load (restricted)"], _ = timed(lambda: pickles.load_restricted(path))
    times["read"], ann = timed(lambda: ucf24.read_annotations(path))
    times["tubelets"], every = timed(lambda: ucf24.tubes_to_tubelets(ann.videos))
    test_videos = ucf24.read_split_list(split_list)
    times["split"], chosen = timed(lambda: ucf24.assign_splits(
        every, ucf24.split_classes(seed=0), test_videos))
    videos = ucf24.videos_table(ann.videos, chosen, test_videos)
    bounds = {row.video_id: (row.clip_start, row.clip_end) for row in videos.itertuples()}
    times["pairs + ground truth"], made = timed(lambda: make_pairs(chosen, bounds))
    counts = {"videos": len(ann.videos), "tubes": ucf24.count_tubes(ann.videos),
              "tubelets": len(every), "kept tubelets": len(chosen),
              **{f"pairs {s}": len(made[s][0]) for s in made},
              **{f"ground-truth rows {s}": len(made[s][1]) for s in made}}
    return times, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--smoke", action="store_true", help="one run: a check that it runs")
    args = parser.parse_args()
    if args.smoke:
        args.repeat = 1
    print_machine()
    runs = [run_once(args.data) for _ in range(args.repeat)]
    counts = runs[0][1]
    print(f"{args.repeat} runs, medians")
    print("| stage | median s | min s |")
    print("|---|---|---|")
    stages = list(runs[0][0])
    for stage in stages:
        values = [r[0][stage] for r in runs]
        print(f"| {stage} | {statistics.median(values):.3f} | {min(values):.3f} |")
    total = [sum(r[0][s] for s in ("read", "tubelets", "split", "pairs + ground truth")) for r in runs]
    print(f"| read + tubelets + split + pairs | {statistics.median(total):.3f} | {min(total):.3f} |")
    print()
    print(", ".join(f"{k}: {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
