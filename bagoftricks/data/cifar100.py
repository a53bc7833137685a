"""CIFAR-100 in its ``cifar-100-python`` format: fine (100) or coarse (20) labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torchvision.datasets import CIFAR100 as TorchvisionCIFAR100

from bagoftricks.data.base import ImageDataModule, Splits
from bagoftricks.data.cifar import cifar_splits, read_batches, read_names
from bagoftricks.data.cifar10 import CIFAR10
from bagoftricks.data.download import Archive
from bagoftricks.data.transforms import CIFAR100_MEAN, CIFAR100_STD

ARCHIVE = Archive(
    "CIFAR-100",
    "cifar-100-python",
    TorchvisionCIFAR100.url,  # cifar-100-python.tar.gz at www.cs.toronto.edu
    (TorchvisionCIFAR100.tgz_md5,),
    ("train", "test", "meta"),
)


@dataclass(kw_only=True)
class CIFAR100(CIFAR10):
    """CIFAR-100: CIFAR-10's format and keys with 100 fine classes in 20 coarse ones.

    Args:
        root: the folder that holds the extracted ``cifar-100-python/``.
        coarse: the 20 superclass labels instead of the 100 fine ones.
    """

    name: ClassVar[str] = "CIFAR-100"
    archive: ClassVar[Archive] = ARCHIVE
    mean: ClassVar[tuple[float, ...]] = CIFAR100_MEAN
    std: ClassVar[tuple[float, ...]] = CIFAR100_STD

    coarse: bool = False

    @property
    def num_classes(self) -> int:
        return 20 if self.coarse else 100

    def read(self, *, image_size: int, split_seed: int) -> Splits:
        path = self.archive.located(self.root)
        kind = "coarse" if self.coarse else "fine"
        train, test = (read_batches([path / name], f"{kind}_labels", self.num_classes) for name in ("train", "test"))
        return cifar_splits(train, test, read_names(path / "meta", f"{kind}_label_names"), self.val_size, split_seed)


class CIFAR100DataModule(ImageDataModule, source=CIFAR100):
    """CIFAR-100 from its pickles, decoded in memory; the pad-and-crop preset by default."""
