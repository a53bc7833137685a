"""Count the host reads of tensor values that make the CPU wait for the device, and the copies
from the host that block.

``.item()``, ``float(t)``, ``int(t)``, ``bool(t)``, an ``if`` on a tensor and a library's value
check (``F.one_hot``'s range check, a validated distribution) all end in
``aten._local_scalar_dense``; ``torch.equal`` returns a host bool; ``.cpu()`` / ``.tolist()`` of a
device tensor is a copy to the host. The same ops run on CPU tensors, so a CPU test catches what
would stall a GPU (only ``.tolist()`` / ``.numpy()`` of a CPU tensor, which read memory without an
op, go unseen). Usage::

    with HostReads() as reads:
        training_step(...)
    assert reads.ops == []
"""

from __future__ import annotations

import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# item / is_nonzero decompose to _local_scalar_dense before a dispatch mode sees them; listed in
# case a backend keeps them whole.
SCALAR_READS = {aten._local_scalar_dense.default, aten.item.default, aten.is_nonzero.default, aten.equal.default}


def _to_host(func, args, kwargs) -> bool:
    """A copy from another device to the CPU (``.cpu()``, ``.to("cpu")``, ``.tolist()`` of a device tensor)."""
    if func is aten._to_copy.default:
        source, target = args[0].device, kwargs.get("device")
    elif func is aten.copy_.default:
        source, target = args[1].device, args[0].device
    else:
        return False
    return target is not None and torch.device(target).type == "cpu" and source.type != "cpu"


def _blocking_to_device(func, args, kwargs) -> bool:
    """A copy from the CPU to another device that waits for it (no ``non_blocking=True``)."""
    if func is aten._to_copy.default:
        source, target = args[0].device, kwargs.get("device")
        blocking = not kwargs.get("non_blocking", False)
    elif func is aten.copy_.default:
        source, target = args[1].device, args[0].device
        blocking = not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
    else:
        return False
    return blocking and target is not None and source.type == "cpu" and torch.device(target).type != "cpu"


# Factories that copy Python values (lists, numbers, shapes) from host memory into a tensor.
FROM_HOST_DATA = {torch.tensor, torch.as_tensor, torch.asarray, torch.Tensor.new_tensor}


def _caller() -> str:
    """The innermost frame outside torch and this file: the line that asked for the value."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/torch/" not in frame.filename and frame.filename != __file__:
            return f"{frame.filename}:{frame.lineno} ({frame.line})"
    return "?"


class _DeviceReads(TorchDispatchMode):
    def __init__(self, ops: list[str]) -> None:
        super().__init__()
        self.ops = ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SCALAR_READS or _to_host(func, args, kwargs):
            self.ops.append(f"{func} at {_caller()}")
        elif _blocking_to_device(func, args, kwargs):
            self.ops.append(f"{func} (a blocking copy to the device) at {_caller()}")
        return func(*args, **kwargs)


class _HostData(TorchFunctionMode):
    def __init__(self, ops: list[str]) -> None:
        super().__init__()
        self.ops = ops

    def __torch_function__(self, func, types, args=(), kwargs=None):
        data = args[1] if func is torch.Tensor.new_tensor else (args[0] if args else None)
        if func in FROM_HOST_DATA and not isinstance(data, torch.Tensor):
            self.ops.append(f"{func.__name__} of Python data (a copy from the host) at {_caller()}")
        return func(*args, **(kwargs or {}))


class HostReads:
    """While active, records every host read, and every blocking copy from the host, as
    ``"op at file:line (source)"`` in ``ops``."""

    def __init__(self) -> None:
        self.ops: list[str] = []
        self._modes = (_HostData(self.ops), _DeviceReads(self.ops))

    def __enter__(self) -> HostReads:
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
