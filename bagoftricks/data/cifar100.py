"""CIFAR-100 in its ``cifar-100-python`` format: fine (100) or coarse (20) labels."""

from __future__ import annotations

from torchvision.datasets import CIFAR100

from bagoftricks.data.base import Splits
from bagoftricks.data.cifar import CIFARDataModule, read_batches, read_names
from bagoftricks.data.download import Archive
from bagoftricks.data.transforms import CIFAR100_MEAN, CIFAR100_STD

ARCHIVE = Archive(
    "CIFAR-100",
    "cifar-100-python",
    CIFAR100.url,  # cifar-100-python.tar.gz at www.cs.toronto.edu
    (CIFAR100.tgz_md5,),
    ("train", "test", "meta"),
)


class CIFAR100DataModule(CIFARDataModule):
    """CIFAR-100: ``root`` holds the extracted ``cifar-100-python/``.

    Args:
        coarse: the 20 superclass labels instead of the 100 fine ones.
        **kwargs: the settings of :class:`~bagoftricks.data.cifar.CIFARDataModule` and the shared base.
    """

    archive = ARCHIVE
    mean, std = CIFAR100_MEAN, CIFAR100_STD

    def __init__(self, root: str = "data", *, coarse: bool = False, **kwargs) -> None:
        super().__init__(root, **kwargs)
        self.coarse = coarse
        self.num_classes = 20 if coarse else 100

    def read_splits(self) -> Splits:
        path = self.archive.located(self.root)
        kind = "coarse" if self.coarse else "fine"
        train, test = (read_batches([path / name], f"{kind}_labels", self.num_classes) for name in ("train", "test"))
        return Splits(train, test, read_names(path / "meta", f"{kind}_label_names"))
