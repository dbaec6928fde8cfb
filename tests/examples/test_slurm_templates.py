"""The SLURM templates in examples/slurm/: valid bash, and every `stvr-data` / `stvr-model`
(and `torchrun`) command line they run parses with the real command line of today.

Each template is run by bash outside SLURM, with the SLURM variables set and `srun`,
`scontrol`, `torchrun`, `stvr-data` and `stvr-model` replaced by stubs that record their
arguments; the recorded command lines are then parsed by the tools' own parsers (click's
for ours, torch's for torchrun), so a renamed or removed option fails here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from stvr_data.cli.main import main as stvr_data
from stvr_model.cli import main as stvr_model

SLURM = Path(__file__).resolve().parents[2] / "examples" / "slurm"
TEMPLATES = ("evaluate.sbatch", "media_shards.sbatch", "merge.sbatch", "train.sbatch")
ENV = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_CPUS_PER_TASK": "8",
       "SLURM_JOB_NODELIST": "node[01-02]", "SLURM_NNODES": "2", "SLURM_JOB_ID": "1234"}
RECORDER = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps([name, *sys.argv[1:]]) + "\\n")
if name == "torchrun":  # run the command after --no-python, as torchrun would on each rank
    rest = sys.argv[sys.argv.index("--no-python") + 1:]
    os.execvp(rest[0], rest)
"""


def test_the_templates_are_the_documented_ones():
    assert sorted(p.name for p in SLURM.glob("*.sbatch")) == sorted(TEMPLATES)
    readme = (SLURM.parents[1] / "README.md").read_text()
    assert all(f"examples/slurm/{name}" in readme for name in TEMPLATES)


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_is_valid_bash(name):
    result = subprocess.run(["bash", "-n", str(SLURM / name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --job-name=" in (SLURM / name).read_text()


def _run(name: str, tmp_path: Path) -> list[list[str]]:
    """Run template `name` with stub tools; the command lines it ran, in order."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for tool in ("stvr-data", "stvr-model", "torchrun"):
        (stubs / tool).write_text(RECORDER.format(python=sys.executable))
        (stubs / tool).chmod(0o755)
    (stubs / "srun").write_text('#!/bin/sh\nexec "$@"\n')
    (stubs / "scontrol").write_text("#!/bin/sh\nprintf 'node01\\nnode02\\n'\n")
    for tool in ("srun", "scontrol"):
        (stubs / tool).chmod(0o755)
    log = tmp_path / "calls.jsonl"
    env = dict(os.environ, **ENV, STUB_LOG=str(log), PATH=f"{stubs}:{os.environ['PATH']}")
    result = subprocess.run(["bash", str(SLURM / name)], env=env, cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


def _check_ours(argv: list[str]) -> None:
    """Parse `argv` (``stvr-data build-ava ...``) as the real command would, short of
    checking that the template's example paths exist."""
    group = {"stvr-data": stvr_data, "stvr-model": stvr_model}[argv[0]]
    assert argv[1] in group.commands, f"{argv[0]} has no command {argv[1]}"
    command = group.commands[argv[1]]
    ctx = click.Context(command, info_name=argv[1])
    values, extra, _ = command.make_parser(ctx).parse_args(list(argv[2:]))  # unknown options raise
    assert extra == [], f"{' '.join(argv)}: stray arguments {extra}"
    for param in command.params:
        if param.required:
            assert values.get(param.name) is not None, f"{' '.join(argv)}: {param.name} missing"
        if param.name in values and not isinstance(param.type, click.Path):
            param.process_value(ctx, values[param.name])  # choices, ranges, our callbacks


def _check_torchrun(argv: list[str]) -> dict:
    from torch.distributed.run import get_args_parser

    args = get_args_parser().parse_args(argv[1:])
    assert args.no_python
    return vars(args)


@pytest.mark.parametrize("name, commands", [
    ("media_shards.sbatch", [("stvr-data", "build-ava")]),
    ("merge.sbatch", [("stvr-data", "build-ava"), ("stvr-data", "verify")]),
    ("train.sbatch", [("torchrun",), ("stvr-model", "train")]),
    ("evaluate.sbatch", [("torchrun",), ("stvr-model", "evaluate")]),
])
def test_template_command_lines_parse_with_the_real_tools(name, commands, tmp_path):
    calls = _run(name, tmp_path)
    assert [tuple(call[:len(want)]) for call, want in zip(calls, commands, strict=False)] == commands
    assert len(calls) == len(commands)
    for call in calls:
        if call[0] == "torchrun":
            _check_torchrun(call)
        else:
            _check_ours(call)


def test_array_task_k_of_n_becomes_the_shard_and_the_merge_matches_it(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shard = _run("media_shards.sbatch", tmp_path / "a")[0]
    merge = _run("merge.sbatch", tmp_path / "b")[0]
    assert shard[shard.index("--shard") + 1] == "3/8"
    assert "--merge" in merge
    common = [a for a in shard if a not in ("--shard", "3/8", "--workers", "8")]
    assert common == [a for a in merge if a != "--merge"]  # the merge refuses shards of other options


def test_training_runs_one_torchrun_per_node_with_a_shared_rendezvous(tmp_path):
    torchrun = _check_torchrun(_run("train.sbatch", tmp_path)[0])
    assert torchrun["nnodes"] == "2" and torchrun["rdzv_endpoint"].startswith("node01:")
    assert torchrun["rdzv_id"] == "1234" and torchrun["rdzv_backend"] == "c10d"


def test_a_failing_command_fails_the_job(tmp_path):
    """The templates stop at the first failing command (set -e): a merge that finds a shard
    unfinished fails its job and does not go on to verify."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "stvr-data").write_text(f'#!/bin/sh\necho "$1" >> {tmp_path}/calls\nexit 2\n')
    (stubs / "stvr-data").chmod(0o755)
    env = dict(os.environ, **ENV, PATH=f"{stubs}:{os.environ['PATH']}")
    result = subprocess.run(["bash", str(SLURM / "merge.sbatch")], env=env, cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert (tmp_path / "calls").read_text() == "build-ava\n"
