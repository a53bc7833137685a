"""The CIFAR family's shared piece: the batches read by the safe pickle reader, a held-out validation
split, the standard pad-and-crop augmentation; CIFAR-10 and CIFAR-100 only say which files and keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bagoftricks.data.base import ImageDataModule, Split, TensorImageDataset, check_int, stratified_split
from bagoftricks.data.pickles import load_data_pickle
from bagoftricks.data.transforms import cifar_eval_transform, cifar_train_transform
from bagoftricks.errors import ConfigError, DataError


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


class CIFARDataModule(ImageDataModule):
    """The shared piece of CIFAR-10 and CIFAR-100: 50,000 training and 10,000 test images of 32 x 32 pixels.

    Args:
        val_size: training images held out for validation (stratified, seeded by ``split_seed``; about
            this many, the same share of every class); 0 validates on the test set, as published recipes report.
        auto_augment: add AutoAugment's CIFAR-10 policy after crop and flip.
        **kwargs: the settings every dataset shares (:class:`~bagoftricks.data.base.ImageDataModule`).
    """

    native_size = 32
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __init__(self, root: str = "data", *, val_size: int = 5000, auto_augment: bool = False, **kwargs) -> None:
        super().__init__(root, **kwargs)
        check_int("val_size", val_size, 0, " (0: validate on the test set)")
        self.val_size, self.auto_augment = val_size, auto_augment
        self.train_tf = cifar_train_transform(self.image_size, auto_augment=auto_augment, mean=self.mean, std=self.std)
        self.eval_tf = cifar_eval_transform(self.test_image_size, mean=self.mean, std=self.std)

    def split_off_val(self, labels: torch.Tensor):
        if self.val_size == 0:
            return None
        if self.val_size >= len(labels):
            raise ConfigError(f"data.val_size ({self.val_size}) must be smaller than the {len(labels)} training images.")
        val, train = stratified_split(labels, (self.val_size / len(labels),), self.split_seed)
        if len(val) == 0:
            raise ConfigError(f"data.val_size {self.val_size} holds out no image of any class: raise it, or set 0.")
        return val, train

    def no_training_images(self, held_out: int) -> str:
        return f"data.val_size {self.val_size} holds out all {held_out} training images, leaving none to train on: lower it."

    def make_dataset(self, split: Split, name: str, train: bool) -> Dataset:
        return TensorImageDataset(split.images, split.labels, self.train_tf if train else self.eval_tf)
