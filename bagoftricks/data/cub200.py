"""CUB-200-2011: 11,788 photos of 200 bird species, the official 5,994 / 5,794 train/test split."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from bagoftricks.data.base import Downloadable, ImageDataModule, Source, Split, Splits
from bagoftricks.data.download import Archive
from bagoftricks.data.folder import check_fraction, held_out_splits
from bagoftricks.errors import DataError

TABLES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
ARCHIVE = Archive(
    "CUB-200-2011",
    "CUB_200_2011",
    "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
    ("97eceeb196236b17998738112f37df78",),
    (*TABLES, "images"),
)


def read_table(path: Path) -> dict[int, str]:
    """``{id: rest of the line}`` of one of CUB's ``<id> <value>`` text files."""
    table = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        if not key.isdigit() or not value:
            raise DataError(f"{path} line {number} is {line!r}, not '<id> <value>': restore the file from the archive.")
        table[int(key)] = value.strip()
    return table


def read_cub(path: Path) -> tuple[Split, Split, list[str]]:
    """Train and test splits (in image-id order, 0-based labels) and the class names."""
    images, labels, is_train, class_names = (read_table(path / name) for name in TABLES)
    classes = [class_names[i].partition(".")[2] or class_names[i] for i in sorted(class_names)]
    parts: dict[str, tuple[list[str], list[int]]] = {"1": ([], []), "0": ([], [])}
    for image_id in sorted(images):
        if image_id not in labels or image_id not in is_train:
            raise DataError(f"Image {image_id} of {path / 'images.txt'} has no class or no split in the index files.")
        label = int(labels[image_id]) - 1
        if not 0 <= label < len(classes):
            raise DataError(f"Image {image_id} has class {label + 1}, which is not in {path / 'classes.txt'}.")
        flag = is_train[image_id]
        if flag not in parts:
            raise DataError(
                f"{path / 'train_test_split.txt'} gives image {image_id} the split flag {flag!r}, "
                "but only 1 (train) and 0 (test) exist: restore the file from the archive."
            )
        parts[flag][0].append(str(path / "images" / images[image_id]))
        parts[flag][1].append(label)
    train, test = (Split(paths, torch.tensor(ys, dtype=torch.int64)) for paths, ys in (parts["1"], parts["0"]))
    return train, test, classes


@dataclass(kw_only=True)
class CUB200(Downloadable, Source):
    """CUB-200-2011 birds; labels 0-based in ``classes.txt`` order, the official test split as ``test``.

    Args:
        root: the folder that holds the extracted ``CUB_200_2011/`` (``download`` fetches ``CUB_200_2011.tgz``, 1.1 GB).
        val_fraction: share of each class's training images held out for validation (stratified, seeded by
            ``split_seed``); 0 validates on the official test split.
    """

    name: ClassVar[str] = "CUB-200-2011"
    archive: ClassVar[Archive] = ARCHIVE
    root: str = "data"
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        self.root = os.path.expanduser(self.root)
        check_fraction(self.val_fraction)

    @property
    def num_classes(self) -> int:
        return 200

    def read(self, *, image_size: int, split_seed: int) -> Splits:
        path = self.archive.located(self.root)
        train, test, classes = read_cub(path)
        return held_out_splits(train, None, test, classes, self.val_fraction, split_seed, path)


class CUB200DataModule(ImageDataModule, source=CUB200):
    """CUB-200-2011: 11,788 photos of 200 bird species, the official 5,994 / 5,794 train/test split."""
