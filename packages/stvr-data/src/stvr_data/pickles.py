"""Load pickled annotation files without running their code.

A pickle names the callables that rebuild its objects, and loading it calls them: a
downloaded ``pyannot.pkl`` could as well call ``os.system``. The published files we read
(UCF101-24's ``pyannot.pkl``, the ACT/MOC ``UCF101v2-GT.pkl``, numpy weight
checkpoints) only need numpy arrays, numpy scalars and builtin containers, so the
unpickler here admits exactly those callables, resolved from a fixed table (never by
importing the name the file asks for), and refuses every other global with an
`UnsafePickleError` naming the file and the global.

Python 2 pickles hold byte strings; ``encoding="latin1"`` decodes them so that numpy's
raw array buffers survive unchanged (numpy's own advice for Python 2 pickles).
"""

from __future__ import annotations

import codecs
import collections
import io
import os
import pickle
from pathlib import Path

import numpy as np

from stvr_data.errors import StvrDataError


class UnsafePickleError(StvrDataError):
    """A pickle that asks for a callable outside the admitted numpy/builtin set."""

    def __init__(self, source: str, module: str, name: str):
        self.source = source
        self.refused = f"{module}.{name}"
        super().__init__(
            f"{source}: refused to load, the pickle asks for '{self.refused}' "
            "(only numpy arrays, numpy scalars and builtin containers are admitted)")


class PickleFormatError(StvrDataError):
    """A file that is not a readable pickle (truncated, corrupt, or another format)."""


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """``_codecs.encode`` as Python 3 writes raw bytes into protocol-2 pickles; other
    codecs (zlib, rot13...) are refused so the admitted call cannot do anything else."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with codec '{encoding}' is not admitted")
    return codecs.encode(text, "latin1", errors)


def _numpy_core(name: str):
    # numpy 2 renamed numpy.core to numpy._core; files written by either name the one
    # their writer had, so both spellings map to the installed module's object.
    core = getattr(np, "_core", None) or np.core
    module, attr = name.rsplit(".", 1)
    return getattr(getattr(core, module), attr)


_ADMITTED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
for _prefix in ("numpy.core", "numpy._core"):
    _ADMITTED[(f"{_prefix}.multiarray", "_reconstruct")] = _numpy_core("multiarray._reconstruct")
    _ADMITTED[(f"{_prefix}.multiarray", "scalar")] = _numpy_core("multiarray.scalar")
    _ADMITTED[(f"{_prefix}.numeric", "_frombuffer")] = _numpy_core("numeric._frombuffer")
for _builtins in ("builtins", "__builtin__"):  # Python 3 and Python 2 spellings
    for _container in (set, frozenset, list, dict, tuple, bytearray, complex):
        _ADMITTED[(_builtins, _container.__name__)] = _container


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose globals come only from the admitted table."""

    def __init__(self, file, *, source: str, encoding: str = "latin1"):
        super().__init__(file, encoding=encoding, fix_imports=True)
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return _ADMITTED[(module, name)]
        except KeyError:
            raise UnsafePickleError(self.source, module, name) from None

    def persistent_load(self, pid):
        # Persistent ids hand object creation to the loader; nothing we read uses them.
        raise UnsafePickleError(self.source, "persistent_id", repr(pid)[:40])


def loads_restricted(data: bytes, *, source: str = "<bytes>", encoding: str = "latin1"):
    """Unpickle `data` admitting only numpy arrays/scalars and builtin containers.

    `source` names the data in error messages. Raises `UnsafePickleError` for any other
    global and `PickleFormatError` for data that is not a complete pickle.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=source, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, UnicodeDecodeError) as err:
        raise PickleFormatError(f"{source}: not a readable pickle ({type(err).__name__}: {err})") from None


def load_restricted(path: str | os.PathLike, *, encoding: str = "latin1"):
    """Read and unpickle the file at `path` with `loads_restricted` (errors name the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return loads_restricted(path.read_bytes(), source=str(path), encoding=encoding)
