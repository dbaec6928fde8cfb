"""Backbone features kept on disk, for training recurrent cells on a frozen backbone.

Staged training (README, "Training on a CPU") trains the backbone, RPN and second stage
once, then each recurrent cell on top of the frozen backbone. With the backbone frozen,
a clip always gives the same features, so they are computed once and read back after:
the backbone is most of a CPU step, and a cell's training then costs a fraction of it.

A clip's features are stored under the hash of its pixels (so a changed clip, a flipped
clip or another benchmark can never hit a stale entry) in a folder named after the hash
of the backbone's weights (so a changed backbone starts a fresh folder). Entries are
float16 `.npy` files written atomically; a corrupt entry is recomputed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from stvr_data.atomic import atomic_write


def weights_digest(module: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of a module's parameters and buffers, in name order."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def clip_key(clip: Tensor) -> str:
    """Hash of one clip's values [3, 8, H, W] and shape."""
    data = clip.detach().cpu().contiguous()
    digest = hashlib.blake2b(str(tuple(data.shape)).encode(), digest_size=16)
    digest.update(data.numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """`cache(backbone, clips [N, 3, 8, H, W]) -> features [N, C, h, w]` for a frozen
    backbone, reading the clips already seen from `root/<backbone digest>/`."""

    def __init__(self, root: str | Path, backbone: nn.Module) -> None:
        self.folder = Path(root) / weights_digest(backbone)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def _read(self, key: str) -> Tensor | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))
        except (OSError, ValueError):
            return None  # a damaged entry: recomputed and rewritten below

    def _write(self, key: str, features: Tensor) -> None:
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        with atomic_write(path) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, features.detach().cpu().to(torch.float16).numpy(), allow_pickle=False)

    @torch.no_grad()
    def __call__(self, backbone: nn.Module, clips: Tensor) -> Tensor:
        keys = [clip_key(clip) for clip in clips]
        found = [self._read(key) for key in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            computed = backbone(clips[missing]).float()
            for i, features in zip(missing, computed, strict=True):
                self._write(keys[i], features)
                # what is used is what a later read gives: the stored float16 values
                found[i] = features.to(torch.float16).float().cpu()
        return torch.stack(found).to(clips.device)
