"""Your own images: ``root/train/<class>/...``, optionally ``root/val/<class>/...`` and ``root/test/<class>/...``.

The dataset most users reach for first, and the shape of every images-on-disk dataset here: a
:class:`~bagoftricks.data.base.Source` saying where the images are and how their labels are read,
bound to the one data module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from PIL import Image

from bagoftricks.data.base import ImageDataModule, Source, Split, Splits, hold_out
from bagoftricks.errors import ConfigError, DataError, MissingDataError

Image.init()
# Every extension PIL can open, less formats it hands to an external program (EPS: Ghostscript)
# or only recognises without decoding (stubs for scientific and vector formats).
_NOT_IMAGES = {".eps", ".ps", ".bufr", ".grib", ".h5", ".hdf", ".fit", ".fits", ".wmf", ".emf", ".mpeg", ".mpg"}
IMAGE_EXTENSIONS = frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN) - _NOT_IMAGES


def image_files(folder: Path) -> list[str]:
    """Image files at any depth below ``folder`` (extensions in any case), sorted; hidden entries and other files skipped."""
    return sorted(
        str(p)
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def read_class_folders(split_dir: Path, classes: list[str], *, every_class: bool = True) -> Split:
    """The images of ``split_dir/<class>/`` labelled by their class's position in ``classes``.

    Raises DataError naming the folder for an empty class folder, for a folder of no known class,
    and (with ``every_class``) for a class without a folder.
    """
    present = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise DataError(f"{split_dir} has class folders {unknown} that are not among the classes {classes}: remove or rename them.")
    if every_class and len(present) < len(classes):
        missing = sorted(set(classes) - set(present))
        raise MissingDataError(f"{split_dir} has no folder for the classes {missing}: add their images or remove them from train/.")
    paths, labels = [], []
    for name in present:
        files = image_files(split_dir / name)
        if not files:
            raise DataError(f"The class folder {split_dir / name} holds no images: add some or remove the folder.")
        paths += files
        labels += [classes.index(name)] * len(files)
    return Split(paths, torch.tensor(labels, dtype=torch.int64))


@dataclass(kw_only=True)
class ImageFolder(Source):
    """Images in class folders: ``root/train/<class>/`` and, if present, ``root/val/`` and ``root/test/``.

    Classes are the folder names of ``train/``, sorted; images may sit at any depth below their class
    folder, in any format PIL reads (other files are ignored). A ``val/`` folder is the validation split;
    without one, ``val_fraction`` of ``train/`` is held out. ``test/`` is the evaluation split (without
    it, test is validation).

    Args:
        root: the folder that holds ``train/<class>/`` (and optionally ``val/``, ``test/``).
        val_fraction: share of each class's training images held out for validation when there is no
            ``val/`` (stratified, seeded by ``split_seed``, at least one image of each class that has two);
            0 validates on the official evaluation split, as leaderboards do.
    """

    name: ClassVar[str] = "ImageFolder"
    root: str = "data"
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        self.root = os.path.expanduser(self.root)
        check_fraction(self.val_fraction)

    @property
    def num_classes(self) -> int:
        """Read from the folder when asked (the CLI links it to the model before ``setup``)."""
        return len(self.class_names())

    def class_names(self) -> list[str]:
        train_dir = Path(self.root) / "train"
        if not train_dir.is_dir():
            raise MissingDataError(
                f"{train_dir} is not a folder: set --data.root to a folder with train/<class>/ image folders."
            )
        classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise MissingDataError(f"{train_dir} has no class folders: put each class's images in train/<class>/.")
        return classes

    def read(self, *, image_size: int, split_seed: int) -> Splits:
        root, classes = Path(self.root), self.class_names()
        train = read_class_folders(root / "train", classes)
        other = {s: read_class_folders(root / s, classes) for s in ("val", "test") if (root / s).is_dir()}
        return held_out_splits(train, other.get("val"), other.get("test"), classes, self.val_fraction, split_seed, root)


def check_fraction(val_fraction: float) -> None:
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"data.val_fraction must be in [0, 1) (0: validate on the test split), got {val_fraction}.")


def held_out_splits(
    train: Split, val: Split | None, test: Split | None, classes: list[str], val_fraction: float, seed: int, where: Path
) -> Splits:
    """The splits of a dataset of image files: its own validation, else ``val_fraction`` of train, else the test split."""
    if val is None and val_fraction > 0:
        val, train = hold_out(train, "val_fraction", val_fraction, seed)
    if val is None and test is None:
        raise ConfigError(
            f"{where} has no validation or test images: hold some out with data.val_fraction above 0, or add a val/ or test/ folder."
        )
    return Splits(train, val if val is not None else test, test, classes)


class ImageFolderDataModule(ImageDataModule, source=ImageFolder):
    """Your own images in class folders: ``root/train/<class>/``, optionally ``root/val/`` and ``root/test/``."""
