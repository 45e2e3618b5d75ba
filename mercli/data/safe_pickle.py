"""Load pickles that may hold only numpy arrays and plain containers.

A pickle can name any importable callable and have it called while loading, so a downloaded
feature file is code. :func:`load_pickle` resolves globals through a short allow-list (what numpy
arrays, numpy scalars and a few builtins need) and refuses everything else before it is imported.
Pickles written by numpy 1.x (``numpy.core``) and 2.x (``numpy._core``) both load, and so do
Python 2 pickles (``__builtin__``, byte strings decoded as latin-1, as numpy needs).
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from mercli.data import DatasetError

# Python 2 module names, as pickle's own fix_imports maps them.
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}

# Plain value types a feature pickle may need (protocol 2 writes b"" as builtins.bytes()).
_BUILTINS = frozenset({"set", "frozenset", "complex", "slice", "range", "bytearray", "bytes"})


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """numpy's reconstruction helpers under both the 1.x and the 2.x module paths."""
    try:  # numpy >= 2 moved numpy.core to numpy._core; the old path warns on import
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        # protocol 5 pickles of contiguous arrays: frombuffer(buf, dtype).reshape(shape)
        table[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer  # type: ignore[attr-defined]
    return table


def _latin1_encode(text: str, encoding: str) -> bytes:
    """Protocol <= 2 stores bytes as ``_codecs.encode(text, "latin1")``; no other codec."""
    if encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with codec {encoding!r}")
    return text.encode("latin1")


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that admits numpy arrays and plain containers only.

    Raises:
        DatasetError: on the first global outside the allow-list, naming the file and the global.
    """

    def __init__(self, file: io.BufferedIOBase, path: str | Path) -> None:
        # latin-1 lets numpy rebuild arrays from Python 2 byte strings; Python 3 pickles ignore it
        super().__init__(file, encoding="latin1")
        self.path = path
        self.allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        if module == "builtins" and name in _BUILTINS:
            return getattr(__import__("builtins"), name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        raise DatasetError(
            self.path,
            f"refusing to load global {module}.{name}: the file may hold only numpy arrays and "
            "plain containers (pickles can run code; this one is not a feature file)",
        )


def load_pickle(path: str | Path) -> Any:
    """Load ``path`` through :class:`SafeUnpickler`.

    Raises:
        DatasetError: the file is missing, truncated, not a pickle, or names a refused global.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "no such file")
    with path.open("rb") as f:
        try:
            return SafeUnpickler(f, path).load()
        except (pickle.UnpicklingError, EOFError) as error:
            raise DatasetError(path, f"not a readable pickle ({error})") from error
