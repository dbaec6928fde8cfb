"""Action pretraining of a backbone on the benchmark's own training actors.

The authors' I3D comes pretrained on Kinetics actions: its features already tell
actions apart, and re-localization training only has to learn to compare them. A
backbone trained from scratch (the small one, for CPU runs) has no such start, and
within a few hundred detector iterations it learns to find actors but not what they do,
so the query cannot be matched. This step plays Kinetics' part: it trains the backbone
alone, one 8-frame clip at a time, to classify the atomic actions of every annotated
actor of the *training* split (the crop of its keyframe box, `ActorActionHead`, binary
cross-entropy). Held-out labels never appear as labels; their atomic actions do, in
other combinations, as in AVA. The result is a plain backbone state dict, which
`stvr-model train --weights` loads like converted I3D weights.

Samples are (tubelet, keyframe, clip of that keyframe's second) triples of the training
split; batches are drawn with replacement from a seeded generator, with random
horizontal flips, so a run is fixed by its seed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from stvr_data import manifest
from stvr_data.atomic import atomic_write, write_text
from stvr_data.errors import ManifestError
from stvr_data.tubelets import atom_vocabulary
from stvr_model.backbones import make_backbone
from stvr_model.data import ClipReader, clip_tensor, clips_to_model, multi_hot
from stvr_model.detector import DetectorConfig, build_roi_pool
from stvr_model.errors import ModelError
from stvr_model.heads import ActorActionHead
from stvr_model.inference import resolve_device

logger = logging.getLogger(__name__)

WEIGHTS, RECORD = "backbone.pt", "pretrain.json"


@dataclass(frozen=True)
class PretrainConfig:
    backbone: str = "small"
    channels: int = 128  # backbone output channels (`--feature-channels` of train)
    iterations: int = 400
    batch_size: int = 16  # clips per step, one actor crop each
    lr: float = 1e-3  # Adam
    seed: int = 0
    device: str = "cpu"


def actor_clips(benchmark: str | Path, split: str = "train") -> tuple[list[tuple], tuple[str, ...]]:
    """Every annotated actor clip of `split`: (video_id, clip start s, box normalised xyxy,
    label), one per clip of each keyframe's second, and the atoms of the split's labels."""
    tubelets = manifest.read_benchmark_table(benchmark, "tubelets")
    chosen = tubelets[tubelets.split == split]
    card = manifest.read_dataset_card(benchmark)
    interval = float(card.get("keyframe_interval", 1.0))
    offsets = np.arange(manifest.images_per_keyframe(interval)) / manifest.CLIPS_PER_SECOND
    samples = [(row.video_id, float(row.start) + k * interval + offset, np.asarray(box, np.float32), row.label)
               for row in chosen.itertuples() for k, box in enumerate(row.boxes) for offset in offsets]
    if not samples:
        raise ManifestError(f"{benchmark}: no {split} tubelets to pretrain on")
    return samples, atom_vocabulary(chosen.label.unique())


class ActorBatches:
    """Seeded batches of (uint8 clips [N, 8, H, W, 3], boxes [N, 4] pixel xyxy, multi-hot [N, A])."""

    def __init__(self, benchmark: str | Path, samples: list[tuple], atoms: tuple[str, ...], seed: int):
        videos = manifest.read_benchmark_table(benchmark, "videos")
        self.reader = ClipReader(benchmark, videos)
        self.samples = [s for s in samples if self.reader.has(s[0])]
        if not self.samples:
            raise ManifestError(f"{benchmark}: none of the actors' videos has built clips")
        self.size = int(videos.height.iloc[0]), int(videos.width.iloc[0])
        self.index = {atom: i for i, atom in enumerate(atoms)}
        self.rng = np.random.default_rng(seed)

    def draw(self, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        height, width = self.size
        clips, boxes, labels = [], [], []
        for pick in self.rng.integers(len(self.samples), size=count):
            video, start, box, label = self.samples[pick]
            clip, box = self.reader.clip(video, start), box * (width, height, width, height)
            if self.rng.random() < 0.5:
                clip, box = clip[:, :, ::-1], np.array([width - box[2], box[1], width - box[0], box[3]])
            clips.append(clip)
            boxes.append(box)
            labels.append(label)
        return (clip_tensor(np.stack(clips)), torch.from_numpy(np.stack(boxes).astype(np.float32)),
                torch.from_numpy(multi_hot(labels, self.index)))


def pretrain(benchmark: str | Path, out: str | Path, config: PretrainConfig = PretrainConfig(), *,
             progress: bool = True) -> dict:
    """Pretrain `config.backbone` on the training actors of `benchmark`; writes
    `out/backbone.pt` (a state dict for `train --weights`) and `out/pretrain.json` (the
    settings, the atoms and the loss every 25 steps). Returns that record."""
    out = Path(out)
    existing = [str(out / name) for name in (WEIGHTS, RECORD) if (out / name).exists()]
    if existing:
        raise ModelError(f"{existing[0]} exists: pretrain writes a new backbone, so give another --out "
                         "or remove the old one")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    samples, atoms = actor_clips(benchmark)
    batches = ActorBatches(benchmark, samples, atoms, config.seed)
    backbone = make_backbone(config.backbone, config.channels).to(device)
    head = ActorActionHead(config.channels, len(atoms)).to(device)
    crop = build_roi_pool(DetectorConfig())  # the crops the detector's heads see
    optimizer = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=config.lr)
    curve, window, started = [], [], time.perf_counter()
    for step in range(config.iterations):
        clips, boxes, hot = batches.draw(config.batch_size)
        clips, boxes, hot = clips_to_model(clips, device), boxes.to(device), hot.to(device)
        index = torch.arange(len(boxes), device=device, dtype=boxes.dtype)[:, None]
        loss = head.loss(crop(backbone(clips), torch.cat([index, boxes], dim=1)), hot)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.append(loss.item())
        if (step + 1) % 25 == 0 or step + 1 == config.iterations:
            curve.append({"iteration": step + 1, "loss": float(np.mean(window))})
            window = []
            if progress:
                logger.info("pretrain step %d: action loss %.3f", step + 1, curve[-1]["loss"])
    with atomic_write(out / WEIGHTS) as tmp:
        torch.save({k: v.cpu() for k, v in backbone.state_dict().items()}, tmp)
    record = {"config": asdict(config), "atoms": list(atoms), "actor_clips": len(batches.samples),
              "benchmark": str(benchmark), "seconds": round(time.perf_counter() - started, 1),
              "loss": curve}
    write_text(out / RECORD, json.dumps(record, indent=2) + "\n")
    return record
