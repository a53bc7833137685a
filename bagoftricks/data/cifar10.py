"""CIFAR-10 (Krizhevsky 2009) in torchvision's ``cifar-10-batches-py`` format: 10 classes, 6,000 images each."""

from __future__ import annotations

from torchvision.datasets import CIFAR10

from bagoftricks.data.base import Splits
from bagoftricks.data.cifar import CIFARDataModule, read_batches, read_names
from bagoftricks.data.download import Archive

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
ARCHIVE = Archive(
    "CIFAR-10",
    "cifar-10-batches-py",
    CIFAR10.url,  # cifar-10-python.tar.gz at www.cs.toronto.edu
    (CIFAR10.tgz_md5,),
    (*TRAIN_FILES, "test_batch", "batches.meta"),
)


class CIFAR10DataModule(CIFARDataModule):
    """CIFAR-10: ``root`` holds the extracted ``cifar-10-batches-py/``; settings as :class:`CIFARDataModule`."""

    num_classes = 10
    archive = ARCHIVE
    # Per-channel mean and std of the 50,000 training images.
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

    def read_splits(self) -> Splits:
        path = self.archive.located(self.root)
        train = read_batches([path / name for name in TRAIN_FILES], "labels", self.num_classes)
        test = read_batches([path / "test_batch"], "labels", self.num_classes)
        return Splits(train, test, read_names(path / "batches.meta", "label_names"))
