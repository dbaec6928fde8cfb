"""Corrupted copies of real inputs give one-line `StvrError`s, never another exception,
and never more memory than a bound.

Seeded mutations (flipped, inserted, deleted, duplicated bytes, cuts, 0xff runs that read
as huge lengths and indices, absurd numbers in text) of: the real UCF101-24
`pyannot.pkl` (a slice of it, and the whole file), the real AVA label map, an AVA box
CSV the sample writes, the official STVR release and a detections file (CSV and
Parquet). Every file is read in a child process whose address space is capped at what
it had after reading the originals plus `HEADROOM`, so an allocation bomb fails there
instead of exhausting the machine.
"""

from __future__ import annotations

import json
import pickle
import random
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from stvr_data import ucf24
from stvr_data.errors import AnnotationError
from stvr_data.pickles import PickleFormatError, load_restricted
from stvr_data.sample import make_sample

SEED = 12
HEADROOM = 1 << 30  # bytes the readers may allocate beyond what reading the originals took
NUMBER_SWAPS = [b"1e400", b"nan", b"-7", b"99999999999999999999", b"902.5", b"-0", b"inf"]

RUNNER = r"""
import json, re, resource, sys
from pathlib import Path
from stvr_data import ava, evaluation, official, ucf24
from stvr_data.errors import StvrError

def detections(path):
    return evaluation.validate_detections(evaluation.read_detections(path), source=str(path))

READERS = {"pkl": ucf24.read_annotations, "csv": ava.read_boxes, "pbtxt": ava.read_action_list,
           "json": official.read_official, "det": detections}
plan = json.loads(Path(sys.argv[1]).read_text())
for kind, path in plan["originals"]:
    READERS[kind](path)  # warm up: imports, thread pools, caches
size = int(re.search(r"VmSize:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
limit = size + int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
outcome = {"ok": 0, "stvr": 0, "other": [], "multiline": []}
for kind, path in plan["mutants"]:
    try:
        READERS[kind](path)
        outcome["ok"] += 1
    except StvrError as err:
        outcome["stvr"] += 1
        if "\n" in str(err):
            outcome["multiline"].append([path, str(err)[:300]])
    except BaseException as err:
        outcome["other"].append([path, type(err).__name__, str(err)[:300]])
print(json.dumps(outcome))
"""


def mutate(data: bytes, rng: random.Random, text: bool) -> bytes:
    """One seeded corruption of `data` (never the identity for non-empty data)."""
    out = bytearray(data)
    at = rng.randrange(len(out))
    kind = rng.randrange(7 if text else 6)
    if kind == 0:
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
    elif kind == 1:
        del out[at:]
    elif kind == 2:
        out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == 3:
        out[at:at] = out[rng.randrange(len(out)):][: rng.randint(1, 1024)]
    elif kind == 4:
        del out[at:at + rng.randint(1, 256)]
    elif kind == 5:
        out[at:at + 4] = b"\xff\xff\xff\x7f"
    else:
        digits = [i for i in range(len(out)) if 48 <= out[i] <= 57]
        at = rng.choice(digits) if digits else at
        out[at:at + 1] = rng.choice(NUMBER_SWAPS)
    return bytes(out)


# Hand-made allocation bombs for the restricted unpickler: 1 TiB bytearray, a huge empty
# array, a memo index of 2**32 - 1 (a table that size in the C unpickler), BYTEARRAY8 of
# 1 TiB, and a 1 TiB-long dtype'd scalar.
BOMBS = [
    b"c__builtin__\nbytearray\n(\x8a\x06\x00\x00\x00\x00\x00\x01tR.",
    b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(\x8a\x06\x00\x00\x00\x00\x00\x01tVb\ntR.",
    b"\x80\x02]r\xff\xff\xff\xff0j\xff\xff\xff\xff.",
    b"\x80\x05\x96\x00\x00\x00\x00\x00\x01\x00\x00.",
    b"cnumpy.core.multiarray\nscalar\n(cnumpy\ndtype\n(VV1099511627776\ntRC\x01xtR.",
]


@pytest.fixture(scope="module")
def originals(shared_dir, tmp_path_factory) -> dict[str, list]:
    """kind -> [(name, bytes)] of the real inputs the mutants are made from."""
    root = tmp_path_factory.mktemp("originals")
    real_pickle = shared_dir / "data" / "ucf101-24" / "pyannot.pkl"
    videos = load_restricted(real_pickle)
    part = {v: videos[v] for v in sorted(videos)[:40]}
    release = json.loads((shared_dir / "data" / "stvr-official" / "stvr_test.json").read_text())[:200]
    make_sample(root / "sample", seed=SEED, videos=False)
    csv = (root / "sample" / "annotations" / "ava_val_v2.2.csv").read_bytes()
    rng = np.random.default_rng(SEED)
    n = 300
    x1, y1 = rng.uniform(0, 0.6, n), rng.uniform(0, 0.6, n)
    dets = pd.DataFrame({"pair_id": [f"test-{i % 7:05d}" for i in range(n)],
                         "timestamp": 902 + np.arange(n) / 3, "x1": x1, "y1": y1,
                         "x2": x1 + 0.3, "y2": y1 + 0.3, "score": rng.random(n)})
    dets.to_parquet(root / "dets.parquet", index=False)
    return {
        "pkl": [("part.pkl", pickle.dumps(part, protocol=2)), ("pyannot.pkl", real_pickle.read_bytes())],
        "pbtxt": [("actions.pbtxt",
                   (shared_dir / "data" / "ava" / "ava_action_list_v2.1_for_activitynet_2018.pbtxt").read_bytes())],
        "csv": [("ava_val_v2.2.csv", csv[: csv.rfind(b"\n", 0, 20_000) + 1])],  # whole lines
        "json": [("stvr_test.json", json.dumps(release).encode())],
        "det": [("dets.csv", dets.to_csv(index=False).encode()),
                ("dets.parquet", (root / "dets.parquet").read_bytes())],
    }


def _plan(originals: dict, folder) -> dict:
    """Write the originals and their seeded mutants; the child's reading plan."""
    rng = random.Random(SEED)
    counts = {"part.pkl": 60, "pyannot.pkl": 2}
    plan = {"originals": [], "mutants": []}
    for kind, files in originals.items():
        for name, data in files:
            original = folder / name
            original.write_bytes(data)
            plan["originals"].append([kind, str(original)])
            text = kind in ("csv", "pbtxt", "json") or name.endswith(".csv")
            for i in range(counts.get(name, 40)):
                mutant = folder / f"{i:03d}-{name}"
                mutant.write_bytes(mutate(data, rng, text))
                plan["mutants"].append([kind, str(mutant)])
    for i, bomb in enumerate(BOMBS):
        (folder / f"bomb{i}.pkl").write_bytes(bomb)
        plan["mutants"].append(["pkl", str(folder / f"bomb{i}.pkl")])
    return plan


def test_corrupted_real_inputs_give_one_line_errors_in_bounded_memory(originals, tmp_path):
    plan = _plan(originals, tmp_path)
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    done = subprocess.run([sys.executable, "-c", RUNNER, str(tmp_path / "plan.json"), str(HEADROOM)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert outcome["other"] == [], outcome["other"][:5]
    assert outcome["multiline"] == [], [m[1][-150:] for m in outcome["multiline"]][:8]
    assert outcome["ok"] + outcome["stvr"] == len(plan["mutants"])
    assert outcome["stvr"] >= len(plan["mutants"]) // 2  # the mutations do break the files


def test_the_bombs_are_refused_as_corrupt_pickles(tmp_path):
    for i, bomb in enumerate(BOMBS):
        path = tmp_path / f"bomb{i}.pkl"
        path.write_bytes(bomb)
        # the memo bomb is harmless to this unpickler: it loads as [], not an annotation file
        with pytest.raises(AnnotationError if i == 2 else PickleFormatError) as caught:
            ucf24.read_annotations(path)
        assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)
