"""DataModules: one shared base (ImageDataModule) and, per dataset, only where its images are and how labels are read."""

from bagoftricks.data.base import ImageDataModule
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
]
