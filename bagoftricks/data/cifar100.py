"""CIFAR-100 through torchvision's reader: fine (100) or coarse (20) labels, a seeded validation split."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR100

from bagoftricks.data.base import TensorImageDataset
from bagoftricks.data.download import DownloadableDataModule
from bagoftricks.data.transforms import cifar_eval_transform, cifar_train_transform

FOLDER = "cifar-100-python"
FILES = ("train", "test", "meta")


class CIFAR100Files(CIFAR100):
    """torchvision's CIFAR-100 reader without its per-file MD5s.

    With ``md5=None`` torchvision's ``check_integrity`` only checks that a file exists, so a user's
    reduced copy in the genuine layout loads; the archive's MD5 still guards every download.
    """

    train_list = [["train", None]]
    test_list = [["test", None]]
    meta = {"filename": "meta", "key": "fine_label_names", "md5": None}


def load_cifar100(root: Path, train: bool, coarse: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images as uint8 [N, 3, 32, 32], labels as int64 [N] and the class names of one split."""
    file = root / FOLDER / ("train" if train else "test")
    try:
        split = CIFAR100Files(str(root), train=train, download=False)
        labels, classes = split.targets, split.classes
        if coarse:  # torchvision reads only the fine labels
            with open(file, "rb") as f:
                labels = pickle.load(f, encoding="latin1")["coarse_labels"]
            with open(root / FOLDER / "meta", "rb") as f:
                classes = pickle.load(f, encoding="latin1")["coarse_label_names"]
    except (KeyError, ValueError, EOFError, pickle.UnpicklingError) as e:
        raise ValueError(
            f"{file} is not a CIFAR-100 pickle with keys data, fine_labels, coarse_labels ({e!r}): "
            "delete the folder and pass --data.download true."
        ) from e
    if len(labels) != len(split.data):
        raise ValueError(f"{file} has {len(split.data)} images but {len(labels)} labels.")
    images = torch.from_numpy(np.ascontiguousarray(split.data.transpose(0, 3, 1, 2)))
    return images, torch.tensor(labels, dtype=torch.int64), classes


class CIFAR100DataModule(DownloadableDataModule):
    """CIFAR-100: 50,000 training and 10,000 test images of 32 x 32 pixels.

    Args:
        root: folder holding the extracted ``cifar-100-python/``.
        download: download and extract ``cifar-100-python.tar.gz`` into ``root`` if missing.
        md5: accept an archive with this MD5 instead of torchvision's.
        coarse: the 20 superclass labels instead of the 100 fine ones.
        val_size: training images held out for validation (a seeded split); 0 validates on the test set.
        split_seed: seed of that split, fixed so every run of an ablation sees the same one.
        auto_augment: add AutoAugment's CIFAR-10 policy after crop and flip.
    """

    num_classes = 100
    display_name = "CIFAR-100"
    folder = FOLDER
    url = CIFAR100.url  # cifar-100-python.tar.gz at www.cs.toronto.edu
    known_md5s = (CIFAR100.tgz_md5,)

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        md5: str | None = None,
        coarse: bool = False,
        val_size: int = 5000,
        split_seed: int = 0,
        auto_augment: bool = False,
        batch_size: int = 128,
        num_workers: int | None = None,
        image_size: int = 32,
        pin_memory: bool = True,
    ) -> None:
        super().__init__(root, download, md5, batch_size, num_workers, image_size, pin_memory)
        if val_size < 0:
            raise ValueError(f"data.val_size must be 0 (validate on test) or a positive count, got {val_size}.")
        self.coarse = coarse
        self.val_size, self.split_seed, self.auto_augment = val_size, split_seed, auto_augment
        self.num_classes = 20 if coarse else 100

    def check_folder(self, path: Path) -> None:
        """Raise unless ``path`` holds the three pickles of the extracted archive."""
        missing = [name for name in FILES if not (path / name).is_file()]
        if missing:
            raise self.not_extracted_error(path, f"lacks {missing}")

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "test_set"):
            return
        self.dataset_path()  # the missing-dataset or layout error before any file is read
        images, labels, self.classes = load_cifar100(self.root, train=True, coarse=self.coarse)
        test_images, test_labels, _ = load_cifar100(self.root, train=False, coarse=self.coarse)
        train_tf = cifar_train_transform(self.image_size, auto_augment=self.auto_augment)
        eval_tf = cifar_eval_transform(self.image_size)
        self.test_set = TensorImageDataset(test_images, test_labels, eval_tf)
        if self.val_size == 0:
            self.train_set, self.val_set = TensorImageDataset(images, labels, train_tf), self.test_set
            return
        if self.val_size >= len(labels):
            raise ValueError(f"data.val_size ({self.val_size}) must be smaller than the {len(labels)} training images.")
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, train_idx = order[: self.val_size].sort().values, order[self.val_size :].sort().values
        self.train_set = TensorImageDataset(images[train_idx], labels[train_idx], train_tf)
        self.val_set = TensorImageDataset(images[val_idx], labels[val_idx], eval_tf)
