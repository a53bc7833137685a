"""CUB-200-2011: 11,788 photos of 200 bird species, the official 5,994 / 5,794 train/test split."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from bagoftricks.data.base import stratified_split
from bagoftricks.data.images import ImageFilesDataModule

TABLES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")


def read_table(path: Path) -> dict[int, str]:
    """``{id: rest of the line}`` of one of CUB's ``<id> <value>`` text files."""
    table = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        if not key.isdigit() or not value:
            raise ValueError(f"{path} line {number} is {line!r}, not '<id> <value>'.")
        table[int(key)] = value.strip()
    return table


def read_cub(path: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[str]]:
    """Train samples, test samples (``(path, 0-based label)`` in image-id order) and class names."""
    images, labels, is_train, class_names = (read_table(path / name) for name in TABLES)
    classes = [class_names[i].partition(".")[2] or class_names[i] for i in sorted(class_names)]
    train, test = [], []
    for image_id in sorted(images):
        if image_id not in labels or image_id not in is_train:
            raise ValueError(f"Image {image_id} of {path / 'images.txt'} has no class or no split in the index files.")
        label = int(labels[image_id]) - 1
        if not 0 <= label < len(classes):
            raise ValueError(f"Image {image_id} has class {label + 1}, which is not in {path / 'classes.txt'}.")
        (train if is_train[image_id] == "1" else test).append((str(path / "images" / images[image_id]), label))
    return train, test, classes


class CUB200DataModule(ImageFilesDataModule):
    """CUB-200-2011 birds with ImageNet-style augmentation; labels 0-based in ``classes.txt`` order.

    Args:
        root: folder holding the extracted ``CUB_200_2011/``.
        download: download and extract ``CUB_200_2011.tgz`` (1.1 GB) into ``root`` if missing.
        md5: accept an archive with this MD5 instead of the published one.
        val_fraction: share of each class's training images held out for validation (seeded);
            0 validates on the official test set.
        split_seed: seed of that split, fixed so every run of an ablation sees the same one.
        auto_augment, color_jitter, pca_lighting, cache, cache_side, skip_corrupt: as for
            :class:`~bagoftricks.data.imagenette.ImagenetteDataModule`.
    """

    num_classes = 200
    display_name = "CUB-200-2011"
    folder = "CUB_200_2011"
    url = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
    known_md5s = ("97eceeb196236b17998738112f37df78",)

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        md5: str | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        batch_size: int = 64,
        num_workers: int | None = None,
        image_size: int = 224,
        pin_memory: bool = True,
        auto_augment: str | None = None,
        color_jitter: float = 0.4,
        pca_lighting: float = 0.1,
        cache: Literal["none", "memory", "disk"] = "none",
        cache_side: int | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__(
            root, download, md5, batch_size, num_workers, image_size, pin_memory,
            auto_augment, color_jitter, pca_lighting, cache, cache_side, skip_corrupt,
        )  # fmt: skip
        if not 0 <= val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in [0, 1) (0: validate on test), got {val_fraction}.")
        self.val_fraction, self.split_seed = val_fraction, split_seed

    def check_folder(self, path: Path) -> None:
        """Raise unless ``path`` has the four index files and the ``images/`` folder of the archive."""
        missing = [name for name in (*TABLES, "images") if not (path / name).exists()]
        if missing:
            raise self.not_extracted_error(path, f"lacks {missing}")

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "test_set"):
            return
        train, test, self.classes = read_cub(self.dataset_path())
        self.test_set = self.image_dataset(test, "test", train=False)
        if self.val_fraction > 0:
            labels = torch.tensor([label for _, label in train])
            val_idx, train_idx = stratified_split(labels, (self.val_fraction,), self.split_seed)
            if len(val_idx) == 0:
                raise ValueError(f"data.val_fraction {self.val_fraction} holds out no image; raise it or set 0.")
            self.val_set = self.image_dataset([train[i] for i in val_idx], "val", train=False)
            train = [train[i] for i in train_idx]
        else:
            self.val_set = self.test_set
        self.train_set = self.image_dataset(train, "train", train=True)
