"""Every benchmark script of `make bench` runs at its `--smoke` size and prints the
machine line and its figures, parsed here and checked to be positive numbers: an import
break, a renamed function or a broken figure fails the suite."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # benchmarks/ is run from the repository root, not installed
    sys.path.insert(0, str(REPO))

from benchmarks import run_all  # noqa: E402

NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
# Per script: patterns of the figures its output must hold; every group is a number > 0.
FIGURES = {
    "annotations.py": [rf"box rows: {NUMBER}", rf"val pairs: {NUMBER}",
                       rf"same linked and split tubelets: True; speed-up {NUMBER}x wall"],
    "ucf24.py": [rf"^\| read \+ tubelets \+ split \+ pairs \| {NUMBER} \| {NUMBER} \|$",
                 rf"pairs test: {NUMBER}"],
    "scorer.py": [rf"input: {NUMBER} pairs, {NUMBER} images, {NUMBER} ground-truth boxes, {NUMBER} detections",
                  rf"^frame_map: +{NUMBER} s wall, .* mAP@0\.5 = {NUMBER}$"],
    "media.py": [rf"^  plain ffmpeg +wall best +{NUMBER} s .* {NUMBER} source-s/s",
                 rf"^  prepare_media x2, workers=2 +wall best +{NUMBER} s .* {NUMBER} source-s/s",
                 rf"read_frames\( 8 frames\) at random positions: +{NUMBER} reads/s"],
    "backbones.py": [rf"^\| {name} \| 64 \| 1 \| {mode} \| {NUMBER} \| {NUMBER} \| .* \| {NUMBER} \| {NUMBER} \|$"
                     for name, mode in (("small", "eval"), ("small", "train"), ("i3d", "eval"))],
    "cells.py": [rf"^{layout} +forward\+backward +median {NUMBER} ms" for layout in ("nchw", "channels_last")]
    + [rf"^{kind} +{NUMBER} +{NUMBER} +{NUMBER} " for kind in ("convlstm", "warp", "traj", "flow")],
    "train.py": [rf"^\| {name} \| cpu \| 1 \| 1 \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \|"
                 for name in ("loader alone 128x128", r"small 128x128 \([^)]*\)")],
    "loader.py": [rf"^{kind} samples: {NUMBER} clips/s per worker, decoding {NUMBER}% of the loading time$"
                  for kind in ("training", "evaluation")]
    + [rf"^\| {kind} samples \| 1 \| {NUMBER} \| {NUMBER} \| {NUMBER} \|" for kind in ("training", "evaluation")],
    "reach.py": [rf"^\| 2 \| {NUMBER} \| {NUMBER} \| {NUMBER} \| -?[0-9.]+ \|$",
                 rf"^{NUMBER} trainings of {NUMBER} steps in {NUMBER} s$"],
}


@pytest.fixture(scope="module")
def sample_workdir(tmp_path_factory) -> Path:
    """One tiny sample benchmark for the scripts that build one (built by the first)."""
    return tmp_path_factory.mktemp("bench-sample")


def _extra_args(script: str, request, workdir: Path, tmp_path: Path) -> list[str]:
    """The arguments that keep a script's files in the test's folders and point it at the
    real reference data (scripts that need it are skipped without it)."""
    if script == "annotations.py":
        return ["--workdir", str(tmp_path / "release")]
    if script in ("train.py", "loader.py"):
        return ["--workdir", str(workdir)]
    if script == "ucf24.py":
        return ["--data", str(request.getfixturevalue("shared_dir") / "data" / "ucf101-24")]
    if script == "scorer.py":
        release = request.getfixturevalue("shared_dir") / "data" / "stvr-official" / "stvr_test.json"
        return ["--release", str(release)]
    return []


def test_every_script_has_its_figures_checked():
    assert sorted(FIGURES) == sorted(run_all.SCRIPTS)


@pytest.mark.parametrize("script", run_all.SCRIPTS)
def test_benchmark_runs_at_smoke_size(script, request, sample_workdir, tmp_path):
    command = [sys.executable, str(REPO / "benchmarks" / script), "--smoke",
               *_extra_args(script, request, sample_workdir, tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    machine = re.search(r"^machine: (.*)$", out, re.M)
    assert machine, out[:2000]
    assert "logical CPUs" in machine.group(1) and "load average" in machine.group(1)
    for pattern in FIGURES[script]:
        found = re.search(pattern, out, re.M)
        assert found, f"{script}: no line matches {pattern!r} in:\n{out[-3000:]}"
        values = [float(v) for v in found.groups()]
        assert values and all(v > 0 for v in values), (pattern, found.group(0))
