"""The one reader of dataset pickles (CIFAR's batches and meta files): data only, never code.

``pickle.load`` calls whatever a file names, so a crafted ``cifar-100-python/train`` would run
code at ``setup``. The genuine files hold dicts, lists, strings, bytes, ints and uint8/int numpy
arrays; this unpickler resolves only the few globals those need, each narrowed to the arguments
genuine files pass, and refuses everything else with one sentence naming the file.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np
from numpy._core.multiarray import _reconstruct as numpy_reconstruct

from bagoftricks.errors import DataError

# dtype kinds a genuine file's arrays have: unsigned and signed integers (pixels, labels).
_ARRAY_KINDS = "ui"


def _reconstruct(cls, shape, dtype_code):
    if cls is not np.ndarray:
        raise pickle.UnpicklingError(f"an array of class {cls!r}")
    return numpy_reconstruct(cls, shape, dtype_code)


def _dtype(name, align=False, copy=True):
    dtype = np.dtype(name, align, copy)
    if dtype.kind not in _ARRAY_KINDS:
        raise pickle.UnpicklingError(f"an array of dtype {dtype}")
    return dtype


def _encode(text, encoding="latin1"):
    # Python 3 pickles bytes at protocol 2 as codecs.encode(str, 'latin1'); nothing else is needed.
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("a codec call other than encode(str, 'latin1')")
    return codecs.encode(text, "latin1")


_ALLOWED = {
    # numpy's array pickling: module path before and after numpy 2 renamed numpy.core.
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _encode,
}


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"it names {module}.{name}")


def _check_arrays(value) -> None:
    """Refuse arrays whose dtype came in without our dtype check (an object array from BUILD state)."""
    if isinstance(value, np.ndarray) and value.dtype.kind not in _ARRAY_KINDS:
        raise pickle.UnpicklingError(f"an array of dtype {value.dtype}")
    if isinstance(value, dict):
        for item in value.values():
            _check_arrays(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_arrays(item)


def load_data_pickle(path: str | Path) -> dict:
    """The dict pickled in ``path`` (Python 2 strings read as latin1, keys as ``str``).

    Raises DataError, naming the file, for anything but plain data: a refused global, a truncated
    or corrupt file, or a pickle that is not a dict.
    """
    try:
        with open(path, "rb") as f:
            value = _DataUnpickler(f, encoding="latin1").load()
        _check_arrays(value)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise DataError(
            f"{path} was refused: it is not a plain-data dataset pickle ({e}); delete it and download the dataset again."
        ) from e
    if not isinstance(value, dict):
        raise DataError(f"{path} holds a {type(value).__name__}, not the dict of a dataset pickle; delete it and download again.")
    # Python 2 pickles written without latin1-able keys come back as bytes keys; CIFAR's are ASCII.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in value.items()}
