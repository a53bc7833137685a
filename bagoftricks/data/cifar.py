"""The CIFAR family's shared piece: the batches read by the safe pickle reader and a held-out validation
split of ``val_size`` images; CIFAR-10 and CIFAR-100 only say which files and keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bagoftricks.data.base import Split, Splits, check_int, hold_out
from bagoftricks.data.pickles import load_data_pickle
from bagoftricks.errors import DataError


def read_batches(files: list[Path], label_key: str, num_classes: int) -> Split:
    """The images (uint8 [N, 3, 32, 32]) and labels of CIFAR batch files, concatenated in order.

    Raises DataError naming the file for a missing key, a wrong shape or a label outside the classes.
    """
    images, labels = [], []
    for file in files:
        entry = load_data_pickle(file)
        data, ys = entry.get("data"), entry.get(label_key)
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or not isinstance(ys, list):
            raise DataError(
                f"{file} is not a CIFAR batch with 'data' (N x 3072 uint8) and '{label_key}' (a list): "
                "delete the folder and pass --data.download true."
            )
        if len(ys) != len(data):
            raise DataError(f"{file} has {len(data)} images but {len(ys)} labels: delete the folder and download again.")
        bad = next((y for y in ys if type(y) is not int or not 0 <= y < num_classes), None)
        if bad is not None:
            # A non-int is named by its type: the repr of a crafted nested list could be endless.
            shown = repr(bad) if type(bad) is int else f"a {type(bad).__name__}"
            raise DataError(
                f"{file} has the label {shown}, outside the {num_classes} classes 0..{num_classes - 1}: "
                "delete the folder and download again."
            )
        if data.dtype != np.uint8 and len(data) and (data.min() < 0 or data.max() > 255):
            raise DataError(
                f"{file} has {data.dtype} pixel values from {data.min()} to {data.max()}, outside 0..255, which "
                "would wrap around as uint8: it is not a CIFAR batch; delete the folder and download again."
            )
        images.append(torch.from_numpy(data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32)))
        labels += ys
    return Split(torch.cat(images), torch.tensor(labels, dtype=torch.int64))


def read_names(file: Path, key: str) -> list[str]:
    names = load_data_pickle(file).get(key)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{file} has no list of class names under '{key}': delete the folder and download again.")
    return names


def check_val_size(val_size: int) -> None:
    check_int("val_size", val_size, 0, " (0: validate on the test set)")


def cifar_splits(train: Split, test: Split, classes: list[str], val_size: int, seed: int) -> Splits:
    """About ``val_size`` training images held out for validation (the same share of every class, seeded);
    0 validates on the test set, as published recipes report."""
    if val_size == 0:
        return Splits(train, test, test, classes)
    val, train = hold_out(train, "val_size", val_size, seed, count=True)
    return Splits(train, val, test, classes)
