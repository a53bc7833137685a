"""The one reader of dataset pickles (CIFAR's batches and meta files): data only, never code.

``pickle.load`` calls whatever a file names, so a crafted ``cifar-100-python/train`` would run
code at ``setup``. The genuine files hold dicts, lists, strings, bytes, ints and uint8/int numpy
arrays; this unpickler resolves only the few globals those need, each narrowed to the arguments
genuine files pass, and refuses everything else with one sentence naming the file.

The work a file can cause is bounded by its size: dict keys must be strings, bytes or ints (a key
of nested shared tuples, ``t = (t, t)`` 64 deep, would take 2^64 steps to hash), sets are refused,
and the array check visits each object once, without recursion (a list that holds itself, or
lists nested 200,000 deep, are walked like any other).
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


_KEY_TYPES = (str, bytes, int)


def _refuse_sets(self):
    raise pickle.UnpicklingError("it holds a set")


def _checked_keys(items: list) -> list:
    for key in items[::2]:
        if type(key) not in _KEY_TYPES:
            raise pickle.UnpicklingError(f"a dict key of type {type(key).__name__}")
    return items


class _DataUnpickler(pickle._Unpickler):
    """pickle's pure-Python unpickler, the one whose opcodes can be narrowed (the C one's cannot):
    a real CIFAR-100 ``train`` file (150 MB) takes about a second more, in exchange for bounded work."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"it names {module}.{name}")

    def load_setitem(self):
        _checked_keys(self.stack[-2:])
        pickle._Unpickler.load_setitem(self)

    def load_setitems(self):
        items = _checked_keys(self.pop_mark())
        self.stack[-1].update(zip(items[::2], items[1::2]))

    def load_dict(self):
        items = _checked_keys(self.pop_mark())
        self.append(dict(zip(items[::2], items[1::2])))

    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.DICT[0]] = load_dict
    for _opcode in (pickle.EMPTY_SET, pickle.ADDITEMS, pickle.FROZENSET):
        dispatch[_opcode[0]] = _refuse_sets


def _check_arrays(value) -> None:
    """Refuse arrays whose dtype came in without our dtype check (an object array from BUILD state).

    Each container is visited once (by identity), from an explicit stack: the work is linear in the
    objects the file holds, however they nest or refer to each other.
    """
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        if isinstance(item, np.ndarray) and item.dtype.kind not in _ARRAY_KINDS:
            raise pickle.UnpicklingError(f"an array of dtype {item.dtype}")
        if isinstance(item, dict | list | tuple) and id(item) not in seen:
            seen.add(id(item))
            stack.extend(item.values() if isinstance(item, dict) else item)


def load_data_pickle(path: str | Path) -> dict:
    """The dict pickled in ``path`` (Python 2 strings read as latin1, keys as ``str``).

    Raises DataError, naming the file, for anything but plain data: a refused global, a truncated
    or corrupt file, or a pickle that is not a dict.
    """
    try:
        with open(path, "rb") as f:
            value = _DataUnpickler(f, encoding="latin1").load()
        _check_arrays(value)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, RecursionError) as e:
        raise DataError(
            f"{path} was refused: it is not a plain-data dataset pickle ({e}); delete it and download the dataset again."
        ) from e
    if not isinstance(value, dict):
        raise DataError(f"{path} holds a {type(value).__name__}, not the dict of a dataset pickle; delete it and download again.")
    # Python 2 pickles written without latin1-able keys come back as bytes keys; CIFAR's are ASCII.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in value.items()}
