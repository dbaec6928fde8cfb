"""Staged training: backbone features kept on disk for a frozen backbone."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from stvr_data.errors import StvrDataError
from stvr_model.backbones import make_backbone
from stvr_model.cells import CellConfig
from stvr_model.checkpoint import load_checkpoint
from stvr_model.config import ModelConfig, RunConfig, TrainConfig
from stvr_model.data import DataConfig
from stvr_model.detector import DetectorConfig
from stvr_model.feature_cache import FeatureCache
from stvr_model.train import train

pytestmark = pytest.mark.usefixtures("one_thread")


class CountingBackbone(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, clips):
        self.calls += len(clips)
        return self.inner(clips)


def test_cache_computes_each_clip_once_and_gives_the_backbones_features(tmp_path):
    torch.manual_seed(0)
    backbone = CountingBackbone(make_backbone("small", 32))
    clips = torch.rand(3, 3, 8, 32, 32) * 2 - 1
    cache = FeatureCache(tmp_path, backbone)
    first = cache(backbone, clips)
    again = FeatureCache(tmp_path, backbone)(backbone, clips[[2, 0]])  # a new process reads the disk
    assert backbone.calls == 3 and first.shape == (3, 32, 2, 2)
    with torch.no_grad():
        direct = backbone.inner(clips)
    torch.testing.assert_close(first, direct, atol=2e-3, rtol=2e-3)  # stored as float16
    assert torch.equal(again, first[[2, 0]])
    # another clip, or the same clip once the backbone changed, is computed anew
    FeatureCache(tmp_path, backbone)(backbone, clips.flip(-1)[:1])
    assert backbone.calls == 4
    with torch.no_grad():
        next(backbone.parameters()).add_(1.0)
    changed = FeatureCache(tmp_path, backbone)
    assert changed.folder != cache.folder
    changed(backbone, clips[:1])
    assert backbone.calls == 5


def test_a_damaged_entry_is_recomputed(tmp_path):
    backbone = make_backbone("small", 32)
    clips = torch.rand(1, 3, 8, 32, 32)
    cache = FeatureCache(tmp_path, backbone)
    good = cache(backbone, clips)
    (entry,) = cache.folder.rglob("*.npy")
    entry.write_bytes(b"garbage")
    assert torch.equal(cache(backbone, clips), good) and np.load(entry).shape == (32, 2, 2)


def test_staged_training_freezes_the_backbone_and_fills_the_cache(tiny_benchmark, tmp_path, caplog):
    spec = ModelConfig(backbone="small", cell=CellConfig(kind="none"),
                       detector=DetectorConfig(image_size=(64, 64), feature_channels=32, box_head_blocks=1,
                                               box_head_width=16))
    data = DataConfig(query_clips_per_second=1, max_query_seconds=1, reference_seconds=1.0)
    base = dict(batch_size=1, num_workers=0, device="cpu", checkpoint_every=2, iterations=2)
    with caplog.at_level(logging.WARNING, logger="stvr_model.backbones"):
        train(tiny_benchmark, tmp_path / "stage1", RunConfig(model=spec, data=data, training=TrainConfig(**base)),
              progress=False)
    assert [r.getMessage() for r in caplog.records] == [
        "backbone 'small' uses random initialisation (no weights file given)"]
    first = load_checkpoint(tmp_path / "stage1" / "last.pt")["model"]
    cell_spec = dataclasses.replace(spec, cell=CellConfig(kind="convlstm"))
    staged = TrainConfig(**base, init_from=str(tmp_path / "stage1" / "last.pt"), freeze_backbone=True,
                         feature_cache=str(tmp_path / "cache"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stvr_model.backbones"):  # its backbone is stage 1's
        train(tiny_benchmark, tmp_path / "stage2", RunConfig(model=cell_spec, data=data, training=staged),
              progress=False)
    assert not caplog.records
    second = load_checkpoint(tmp_path / "stage2" / "last.pt")["model"]
    for name, value in first.items():
        if name.startswith("backbone."):
            assert torch.equal(second[name], value), name
    changed = [n for n, v in first.items() if n.startswith("rpn.") and not torch.equal(second[n], v)]
    assert changed  # the heads go on learning
    assert any(n.startswith("cell.") for n in second) and list((tmp_path / "cache").rglob("*.npy"))
    with pytest.raises(Exception, match="frozen backbone"):
        train(tiny_benchmark, tmp_path / "bad",
              RunConfig(model=cell_spec, data=data, training=TrainConfig(**base, feature_cache=str(tmp_path / "cache"))),
              progress=False)
    with pytest.raises(StvrDataError, match="both --weights and --init-from"):
        train(tiny_benchmark, tmp_path / "both", RunConfig(model=cell_spec, data=data, training=staged),
              backbone_weights=str(tmp_path / "stage1" / "last.pt"), progress=False)
