"""Several processes as users run them: `torchrun --standalone --nproc_per_node 2
stvr-model train|evaluate ...` on the CPU (gloo backend), on the tiny benchmark."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stvr_data import manifest
from stvr_model.cells import CellConfig
from stvr_model.checkpoint import model_from_checkpoint, run_config
from stvr_model.config import ModelConfig, RunConfig, TrainConfig
from stvr_model.data import DataConfig
from stvr_model.detector import DetectorConfig
from stvr_model.distributed import Ranks, shard
from stvr_model.train import train

CLI = Path(sys.executable).parent / "stvr-model"
# one thread per process: two processes share the machine's cores
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _run(command: list[str], logs: Path | None = None) -> subprocess.CompletedProcess:
    """`stvr-model <command>` in one process, or under torchrun in 2 when `logs` is given."""
    assert CLI.is_file(), f"{CLI}: the stvr-model entry point is not installed"
    launcher = [] if logs is None else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "--log-dir", str(logs), "--redirects", "3", "--no-python"]
    return subprocess.run([*launcher, str(CLI), *command], capture_output=True, text=True, timeout=300, env=ENV)


def _torchrun(bench: Path, out: Path, logs: Path, iterations: int = 2, *extra: str) -> subprocess.CompletedProcess:
    return _run(["train", "--manifest", str(bench), "--cell", "convlstm", "--backbone", "small",
                 "--out", str(out), "--iterations", str(iterations), "--batch-size", "1", "--workers", "0",
                 "--device", "cpu", "--reference-seconds", "1", "--max-query-seconds", "2",
                 "--query-clips-per-second", "1", "--checkpoint-every", "2", *extra], logs)


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shards_cover_every_pair_once_in_turn(world):
    for count in range(8):
        shards = [list(shard(count, Ranks(rank, world))) for rank in range(world)]
        assert sorted(i for s in shards for i in s) == list(range(count))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
        assert all(i % world == rank for rank, s in enumerate(shards) for i in s)


def test_torchrun_evaluate_writes_what_one_process_writes(tiny_benchmark, tmp_path):
    """2 gloo processes with a loader worker each, 3 test pairs (uneven shards): the same
    detections, byte for byte, and the same metrics as one process without workers."""
    spec = ModelConfig(backbone="small", cell=CellConfig(kind="convlstm"),
                       detector=DetectorConfig(image_size=(64, 64), feature_channels=32, box_head_blocks=1,
                                               box_head_width=16))
    config = TrainConfig(iterations=1, batch_size=1, num_workers=0, device="cpu", checkpoint_every=1)
    data = DataConfig(query_clips_per_second=1, max_query_seconds=2, reference_seconds=1.0)
    train(tiny_benchmark, tmp_path / "run", RunConfig(model=spec, data=data, training=config), progress=False)
    common = ["evaluate", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--manifest", str(tiny_benchmark),
              "--split", "test", "--device", "cpu", "--pictures", "2"]
    one = _run([*common, "--out", str(tmp_path / "one"), "--workers", "0"])
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run([*common, "--out", str(tmp_path / "two"), "--workers", "1"], tmp_path / "logs")
    assert two.returncode == 0, two.stderr[-3000:]
    detections = [(tmp_path / run / "detections_test.parquet").read_bytes() for run in ("one", "two")]
    assert detections[0] == detections[1]
    table = manifest.read_table(tmp_path / "one" / "detections_test.parquet", manifest.DETECTIONS_SCHEMA)
    assert table.pair_id.nunique() == 3 and len(table) > 3  # every pair, in order
    assert list(table.pair_id.drop_duplicates()) == sorted(table.pair_id.unique())
    metrics = [json.loads((tmp_path / run / "metrics_test.json").read_text()) for run in ("one", "two")]
    assert metrics[0] == metrics[1] and metrics[0]["pairs"] == 3
    # each rank drew the pictures of its own pairs (index 0 on rank 0, index 1 on rank 1)
    assert sorted(p.name for p in (tmp_path / "two" / "pictures").iterdir()) == sorted(
        p.name for p in (tmp_path / "one" / "pictures").iterdir())
    outputs = {p.parent.name: p.read_text() for p in (tmp_path / "logs").rglob("stdout.log")}
    assert sorted(outputs) == ["0", "1"]
    assert "frame-mAP" in outputs["0"] and outputs["1"] == ""  # rank 0 alone reports


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
    assert run_config(state).model.cell.kind == "convlstm"
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
