"""CIFAR-10 (Krizhevsky 2009) in torchvision's ``cifar-10-batches-py`` format: 10 classes, 6,000 images each."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

from bagoftricks.data.base import Downloadable, ImageDataModule, Source, Splits
from bagoftricks.data.cifar import check_val_size, cifar_splits, read_batches, read_names
from bagoftricks.data.download import Archive

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
ARCHIVE = Archive(
    "CIFAR-10",
    "cifar-10-batches-py",
    TorchvisionCIFAR10.url,  # cifar-10-python.tar.gz at www.cs.toronto.edu
    (TorchvisionCIFAR10.tgz_md5,),
    (*TRAIN_FILES, "test_batch", "batches.meta"),
)


@dataclass(kw_only=True)
class CIFAR10(Downloadable, Source):
    """CIFAR-10: 50,000 training and 10,000 test images of 32 x 32 pixels, 10 classes.

    Args:
        root: the folder that holds the extracted ``cifar-10-batches-py/``.
        val_size: training images held out for validation (stratified, seeded by ``split_seed``; about
            this many, the same share of every class); 0 validates on the test set, as published recipes report.
    """

    name: ClassVar[str] = "CIFAR-10"
    archive: ClassVar[Archive] = ARCHIVE
    native_size: ClassVar[int] = 32
    # Per-channel mean and std of the 50,000 training images.
    mean: ClassVar[tuple[float, ...]] = (0.4914, 0.4822, 0.4465)
    std: ClassVar[tuple[float, ...]] = (0.2470, 0.2435, 0.2616)
    augment: ClassVar[str] = "cifar"
    in_memory: ClassVar[bool] = True

    root: str = "data"
    val_size: int = 5000

    def __post_init__(self) -> None:
        self.root = os.path.expanduser(self.root)
        check_val_size(self.val_size)

    @property
    def num_classes(self) -> int:
        return 10

    def stored_side(self, image_size: int) -> int:
        return 32

    def read(self, *, image_size: int, split_seed: int) -> Splits:
        path = self.archive.located(self.root)
        train = read_batches([path / name for name in TRAIN_FILES], "labels", self.num_classes)
        test = read_batches([path / "test_batch"], "labels", self.num_classes)
        return cifar_splits(train, test, read_names(path / "batches.meta", "label_names"), self.val_size, split_seed)


class CIFAR10DataModule(ImageDataModule, source=CIFAR10):
    """CIFAR-10 from its pickled batches, decoded in memory; the pad-and-crop preset by default."""
