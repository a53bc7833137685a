"""One image data module (:class:`ImageDataModule`) composed with a small description of each dataset (a
:class:`Source`: where its files are, how it reads its splits, its classes, native size, normalisation and
augmentation preset); each public ``XxxDataModule`` binds one source and shows every key it takes."""

from bagoftricks.data.base import ImageDataModule, Source
from bagoftricks.data.cifar10 import CIFAR10DataModule
from bagoftricks.data.cifar100 import CIFAR100DataModule
from bagoftricks.data.cub200 import CUB200DataModule
from bagoftricks.data.digits import DigitsDataModule
from bagoftricks.data.folder import ImageFolderDataModule
from bagoftricks.data.imagenette import ImagenetteDataModule, ImagewoofDataModule
from bagoftricks.errors import DataError

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "CUB200DataModule",
    "DataError",
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "ImagenetteDataModule",
    "ImagewoofDataModule",
    "Source",
]
