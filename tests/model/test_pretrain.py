"""Action pretraining of the backbone on the training actors: what a batch holds, and a
run that writes weights `train --weights` loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stvr_data import manifest
from stvr_data.tubelets import label_atoms
from stvr_model.backbones import build_backbone, make_backbone
from stvr_model.cli import main
from stvr_model.pretrain import ActorBatches, actor_clips

pytestmark = pytest.mark.usefixtures("one_thread")


def test_actor_clips_are_the_training_split_only_with_its_atoms(tiny_benchmark):
    samples, atoms = actor_clips(tiny_benchmark)
    tubelets = manifest.read_benchmark_table(tiny_benchmark, "tubelets")
    train = tubelets[tubelets.split == "train"]
    assert len(samples) == 3 * sum(len(b) for b in train.boxes)  # 3 clips per keyframe second
    assert {s[3] for s in samples} == set(train.label)
    assert set(atoms) == {a for label in train.label for a in label_atoms(label)}
    held = set(tubelets[tubelets.split.isin(["val", "test"])].label)
    assert not held & {s[3] for s in samples}


def test_batches_hold_each_actors_atoms_and_flipped_boxes_inside_the_frame(tiny_benchmark):
    samples, atoms = actor_clips(tiny_benchmark)
    batches = ActorBatches(tiny_benchmark, samples, atoms, seed=4)
    clips, boxes, hot = batches.draw(12)
    assert clips.shape == (12, 8, 64, 64, 3) and clips.dtype == torch.uint8 and boxes.shape == (12, 4) and hot.shape == (12, len(atoms))
    assert (boxes[:, 2:] > boxes[:, :2]).all() and (boxes >= 0).all() and (boxes <= 64).all()
    # Every row has exactly the atoms of one training label.
    labels = {frozenset(label_atoms(s[3])) for s in samples}
    assert all(frozenset(atoms[i] for i in np.flatnonzero(row)) in labels for row in hot.numpy())
    # Same seed, same batch.
    again = ActorBatches(tiny_benchmark, samples, atoms, seed=4).draw(12)
    assert torch.equal(again[0], clips) and torch.equal(again[1], boxes) and torch.equal(again[2], hot)


def test_pretrain_command_writes_weights_that_train_loads(tiny_benchmark, tmp_path):
    out = tmp_path / "pre"
    result = CliRunner().invoke(main, ["pretrain", "--manifest", str(tiny_benchmark), "--out", str(out),
                                       "--feature-channels", "32", "--iterations", "3", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert "pretrained small on" in result.output
    record = json.loads((out / "pretrain.json").read_text())
    assert record["loss"][-1]["iteration"] == 3 and record["config"]["channels"] == 32
    torch.manual_seed(0)
    loaded = build_backbone("small", weights=out / "backbone.pt", channels=32)
    fresh = make_backbone("small", 32)
    assert any(not torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), fresh.state_dict().values(),
                                                     strict=True))


def test_pretrain_never_overwrites_an_earlier_backbone(tiny_benchmark, tmp_path):
    out = tmp_path / "pre"
    out.mkdir()
    (out / "backbone.pt").write_bytes(b"someone's weights")
    result = CliRunner().invoke(main, ["pretrain", "--manifest", str(tiny_benchmark), "--out", str(out),
                                       "--feature-channels", "32", "--iterations", "1", "--batch-size", "2"])
    assert result.exit_code != 0
    assert "backbone.pt exists" in result.output and len(result.output.strip().splitlines()) == 1
    assert (out / "backbone.pt").read_bytes() == b"someone's weights"
