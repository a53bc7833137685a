"""Your own images: ``root/train/<class>/...``, optionally ``root/val/<class>/...`` and ``root/test/<class>/...``.

The dataset most users reach for first, and the shape of every images-on-disk dataset here: the
shared machinery (splits, presets, cache, corrupt files) is :class:`ImageFilesDataModule`; this
file only says where the images are and how their labels are read.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from bagoftricks.data.base import Split, Splits
from bagoftricks.data.images import ImageFilesDataModule
from bagoftricks.errors import DataError, MissingDataError

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


class ImageFolderDataModule(ImageFilesDataModule):
    """Images in class folders: ``root/train/<class>/`` and, if present, ``root/val/`` and ``root/test/``.

    Classes are the folder names of ``train/``, sorted; images may sit at any depth below their
    class folder, in any format PIL reads (other files are ignored). A ``val/`` folder is the
    validation split; without one, ``val_fraction`` of ``train/`` is held out (stratified, seeded).
    ``test/`` is the evaluation split (without it, test is validation). Every setting is that of
    :class:`ImageFilesDataModule` and the shared base (``augment``, ``cache``, ``max_per_class``, ...).
    """

    def __init__(self, root: str = "data", **kwargs) -> None:
        super().__init__(root, download=False, md5=None, **kwargs)  # your own folder: nothing to download

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

    def read_splits(self) -> Splits:
        root, classes = Path(self.root), self.class_names()
        other = {s: read_class_folders(root / s, classes) for s in ("val", "test") if (root / s).is_dir()}
        return Splits(read_class_folders(root / "train", classes), other.get("test"), classes, val=other.get("val"))
