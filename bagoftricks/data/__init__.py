"""DataModules: every dataset shares ImageDataModule's loaders and differs only in where images come from."""

from bagoftricks.data.base import ImageDataModule
from bagoftricks.data.cifar100 import CIFAR100DataModule
from bagoftricks.data.cub200 import CUB200DataModule
from bagoftricks.data.digits import DigitsDataModule
from bagoftricks.data.download import DataError
from bagoftricks.data.imagenette import ImagenetteDataModule, ImagewoofDataModule

__all__ = [
    "CIFAR100DataModule",
    "CUB200DataModule",
    "DataError",
    "DigitsDataModule",
    "ImageDataModule",
    "ImagenetteDataModule",
    "ImagewoofDataModule",
]
