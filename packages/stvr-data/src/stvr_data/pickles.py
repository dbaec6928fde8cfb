"""Load pickled annotation files without running their code.

A pickle names the callables that rebuild its objects, and loading it calls them: a
downloaded ``pyannot.pkl`` could as well call ``os.system``. The published files we read
(UCF101-24's ``pyannot.pkl``, the ACT/MOC ``UCF101v2-GT.pkl``, numpy weight
checkpoints) only need numpy arrays, numpy scalars and builtin containers, so the
unpickler here admits exactly those callables, resolved from a fixed table (never by
importing the name the file asks for), and refuses every other global with an
`UnsafePickleError` naming the file and the global.

Nor may a pickle allocate more than its own bytes describe (a 35-byte file asking for a
1 TiB ``bytearray``, a corrupted memo index sizing a 32 GB table): see
`RestrictedUnpickler`. Any other failure while loading is one `PickleFormatError` line.
This is the one unpickler of both packages (stvr-model reads weight pickles with it).

Python 2 pickles hold byte strings; ``encoding="latin1"`` decodes them so that numpy's
raw array buffers survive unchanged (numpy's own advice for Python 2 pickles).
"""

from __future__ import annotations

import codecs
import collections
import io
import os
import pickle
import struct
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


def _plain_dtype(*args):
    """`numpy.dtype` refusing object dtypes, whose items would be further pickles."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"object dtype {dtype} is not admitted")
    return dtype


def _plain_bytearray(*args):
    """`bytearray` from bytes or text only: ``bytearray(n)`` would allocate n bytes from a
    number in the file."""
    if not args or not isinstance(args[0], (bytes, str)):
        raise pickle.UnpicklingError("bytearray is admitted only from bytes or text")
    return bytearray(*args)


_CONTAINERS = (set, frozenset, list, dict, tuple, complex)
_ADMITTED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _plain_dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
for _prefix in ("numpy.core", "numpy._core"):
    _ADMITTED[(f"{_prefix}.multiarray", "_reconstruct")] = _numpy_core("multiarray._reconstruct")
    _ADMITTED[(f"{_prefix}.multiarray", "scalar")] = _numpy_core("multiarray.scalar")
    _ADMITTED[(f"{_prefix}.numeric", "_frombuffer")] = _numpy_core("numeric._frombuffer")
for _builtins in ("builtins", "__builtin__"):  # Python 3 and Python 2 spellings
    for _container in _CONTAINERS:
        _ADMITTED[(_builtins, _container.__name__)] = _container
    _ADMITTED[(_builtins, "bytearray")] = _plain_bytearray
_RECONSTRUCT = _numpy_core("multiarray._reconstruct")


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler whose globals come only from the admitted table and whose allocations
    are bounded by the size of the data.

    It is Python's own pure-Python unpickler (``pickle._Unpickler``), not the C one: the
    C unpickler sizes its memo table from indices read from the file, so one corrupted
    4-byte index asks for tens of GB before anything is checked; here the memo is a
    dict. On top of that, every call a pickle makes goes through `_call`, which lets an
    array be made empty only (numpy pickles fill arrays from bytes in the file) and no
    container be built from an array; the opcodes that create objects without a callable
    we admitted (NEWOBJ, OBJ, INST) are refused, and BYTEARRAY8 reads its bytes before
    allocating them.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

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

    def _call(self, func, args):
        if func is np.ndarray:  # admitted only as _reconstruct's type argument
            raise pickle.UnpicklingError("numpy.ndarray(...) is not admitted; arrays come from _reconstruct")
        if func is _RECONSTRUCT and (len(args) != 3 or args[0] is not np.ndarray
                                     or not isinstance(args[1], tuple) or args[1] != (0,)):
            raise pickle.UnpicklingError(f"numpy _reconstruct{args!r:.60} does not make an empty array")
        if func in _CONTAINERS and any(isinstance(a, np.ndarray) for a in args):
            raise pickle.UnpicklingError(f"{func.__name__} built from an array is not admitted")
        return func(*args)

    def load_reduce(self):
        args = self.stack.pop()
        if not isinstance(args, tuple):
            raise pickle.UnpicklingError("REDUCE arguments are not a tuple")
        self.stack[-1] = self._call(self.stack[-1], args)

    def load_bytearray8(self):
        size, = struct.unpack("<Q", self.read(8))
        data = self.read(size)  # reads what the file holds, at most `size` bytes
        if len(data) != size:
            raise pickle.UnpicklingError(f"BYTEARRAY8 of {size} bytes, the data holds {len(data)}")
        self.append(bytearray(data))

    def _refuse(self):
        raise pickle.UnpicklingError("objects built without an admitted callable (NEWOBJ/OBJ/INST)")

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8
    for _opcode in (pickle.NEWOBJ, pickle.NEWOBJ_EX, pickle.OBJ, pickle.INST):
        dispatch[_opcode[0]] = _refuse


def loads_restricted(data: bytes, *, source: str = "<bytes>", encoding: str = "latin1"):
    """Unpickle `data` admitting only numpy arrays/scalars and builtin containers.

    `source` names the data in error messages. Raises `UnsafePickleError` for any other
    global and `PickleFormatError` for data that is not a complete, sound pickle (any
    failure while loading it: truncated, corrupted, or asking for more memory than the
    data could describe).
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=source, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except (Exception, RecursionError) as err:  # a corrupt pickle fails in any of a dozen ways
        raise PickleFormatError(f"{source}: not a readable pickle ({type(err).__name__}: {err})") from None


def load_restricted(path: str | os.PathLike, *, encoding: str = "latin1"):
    """Read and unpickle the file at `path` with `loads_restricted` (errors name the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return loads_restricted(path.read_bytes(), source=str(path), encoding=encoding)
