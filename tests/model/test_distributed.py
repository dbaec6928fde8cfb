"""Multi-process training as users run it: `torchrun --standalone --nproc_per_node 2
stvr-model train ...` on the CPU (gloo backend), two iterations on the tiny benchmark."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stvr_model.checkpoint import ModelSpec, model_from_checkpoint


def _torchrun(bench: Path, out: Path, logs: Path, iterations: int = 2, *extra: str) -> subprocess.CompletedProcess:
    cli = Path(sys.executable).parent / "stvr-model"
    assert cli.is_file(), f"{cli}: the stvr-model entry point is not installed"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "--log-dir", str(logs), "--redirects", "3", "--no-python", str(cli),
               "train", "--manifest", str(bench), "--cell", "convlstm", "--backbone", "small",
               "--out", str(out), "--iterations", str(iterations), "--batch-size", "1", "--workers", "0",
               "--device", "cpu", "--reference-seconds", "1", "--max-query-seconds", "2",
               "--query-clips-per-second", "1", "--checkpoint-every", "2", *extra]
    # one thread per process: two processes share the machine's cores
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tiny_benchmark, tmp_path):
    run = _torchrun(tiny_benchmark, tmp_path / "run", tmp_path / "logs")
    assert run.returncode == 0, run.stderr[-3000:]
    outputs = {p.parent.name: p.read_text() for p in (tmp_path / "logs").rglob("stdout.log")}
    assert sorted(outputs) == ["0", "1"]  # one log folder per rank
    for rank, text in outputs.items():
        assert "trained convlstm for 2 iterations" in text, (rank, text)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["iteration"] == 2
    assert ModelSpec.from_dict(state["spec"]).cell == "convlstm"
    model, _ = model_from_checkpoint(tmp_path / "run" / "last.pt")
    assert sum(p.numel() for p in model.parameters()) > 0 and not model.training
    assert not any(k.startswith("module.") for k in state["model"])  # saved unwrapped from DDP
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1]  # rank 0 alone writes the log
    assert all(r["ref_clips"] == 3 for r in rows)  # batch 1 per process, 1 s references
    assert not list((tmp_path / "run").glob(".*.partial"))


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_torchrun_resume_continues_exactly(tiny_benchmark, tmp_path):
    for args in [("straight", 4), ("split", 2), ("split", 4, "--resume")]:
        run = _torchrun(tiny_benchmark, tmp_path / args[0], tmp_path / "logs", *args[1:])
        assert run.returncode == 0, run.stderr[-3000:]
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert len(resumed["rng"]["ranks"]) == 2  # each rank's random state is kept
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    assert _losses(tmp_path / "split") == _losses(tmp_path / "straight")
