"""The restricted unpickler: numpy arrays and builtin containers in, everything else refused."""

from __future__ import annotations

import os
import pickle
import subprocess

import numpy as np
import pytest

from stvr_data.errors import StvrDataError
from stvr_data.pickles import (
    PickleFormatError,
    UnsafePickleError,
    load_restricted,
    loads_restricted,
)


class _System:
    """Pickles to a call of os.system, the classic malicious payload."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Popen:
    def __reduce__(self):
        return (subprocess.Popen, (["true"],))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_numpy_arrays_scalars_and_containers_round_trip(protocol):
    value = {"boxes": np.array([[197, 73, 109, 165]], dtype=np.uint8),
             "numf": np.uint16(300), "f": np.linspace(0, 1, 5, dtype=np.float32).reshape(5, 1),
             "set": {1, 2}, "tuple": (1, 2.5, "x"), "bytes": b"\x00\xff", "nested": [{"a": None}]}
    back = loads_restricted(pickle.dumps(value, protocol=protocol))
    assert back["boxes"].dtype == np.uint8 and back["boxes"].tolist() == [[197, 73, 109, 165]]
    assert back["numf"] == 300 and back["numf"].dtype == np.uint16
    assert back["f"].shape == (5, 1) and back["f"].dtype == np.float32
    assert np.array_equal(back["f"], value["f"])
    assert back["set"] == {1, 2} and back["tuple"] == (1, 2.5, "x")
    assert back["bytes"] == b"\x00\xff" and back["nested"] == [{"a": None}]


def test_real_pyannot_loads(shared_dir):
    data = load_restricted(shared_dir / "data" / "ucf101-24" / "pyannot.pkl")
    assert len(data) == 3194
    entry = data["Basketball/v_Basketball_g01_c01"]
    assert entry["annotations"][0]["boxes"].dtype == np.uint8


def test_os_system_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_System(f"touch {marker}")))
    with pytest.raises(UnsafePickleError) as info:
        load_restricted(path)
    message = str(info.value)
    assert str(path) in message
    assert "system" in info.value.refused and info.value.refused.split(".")[0] in ("os", "posix", "nt")
    assert not marker.exists()


@pytest.mark.parametrize("payload, refused", [
    (pickle.dumps(_Popen()), "subprocess.Popen"),
    (b"cbuiltins\neval\n(V1+1\ntR.", "builtins.eval"),
    (b"c__builtin__\ngetattr\n(c__builtin__\nlist\nVappend\ntR.", "__builtin__.getattr"),
    (b"cnumpy\nload\n(Vx.npy\ntR.", "numpy.load"),
])
def test_other_globals_are_refused_by_name(payload, refused):
    with pytest.raises(UnsafePickleError) as info:
        loads_restricted(payload, source="payload.pkl")
    assert info.value.refused == refused
    assert str(info.value).startswith("payload.pkl: refused to load")
    assert isinstance(info.value, (StvrDataError, ValueError))


def test_codecs_encode_admits_latin1_only():
    # Python 3 writes raw bytes into protocol-2 pickles as _codecs.encode(text, 'latin1').
    assert loads_restricted(b"c_codecs\nencode\n(V\xff\nVlatin1\ntR.".replace(b"\xff", b"\\u00ff")) == b"\xff"
    with pytest.raises(PickleFormatError, match="rot13"):
        loads_restricted(b"c_codecs\nencode\n(Vabc\nVrot13\ntR.", source="rot.pkl")


def test_truncated_and_foreign_files_name_the_file(tmp_path):
    whole = pickle.dumps({"a": np.arange(10)}, protocol=2)
    path = tmp_path / "cut.pkl"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(PickleFormatError, match="cut.pkl: not a readable pickle"):
        load_restricted(path)
    rar = tmp_path / "UCF101.rar"
    rar.write_bytes(b"Rar!\x1a\x07\x01\x00" + bytes(32))
    with pytest.raises(PickleFormatError, match="UCF101.rar"):
        load_restricted(rar)


def test_missing_file_is_reported():
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        load_restricted("/nonexistent/nope.pkl")
