"""Imagenette and Imagewoof (fast.ai's 10-class ImageNet subsets), with noisy labels and a decoded cache.

One implementation for both: the official ``train/`` and ``val/`` class folders of the extracted
archive, classes in sorted wnid order, and the ``noisy_labels_N`` column of the bundled csv for the
label-noise benchmarks. The official ``val/`` is the ``test`` split; validation is held out of
``train/`` (``val_fraction``; 0 validates on the official val, the fast.ai leaderboard's setting).
Own dataset rather than ``torchvision.datasets.Imagenette``: that one has no Imagewoof, no noisy
labels, a single md5 per archive and no cache.
"""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image

from bagoftricks.data.base import Downloadable, ImageDataModule, Source, Splits
from bagoftricks.data.download import Archive
from bagoftricks.data.folder import check_fraction, held_out_splits, read_class_folders
from bagoftricks.errors import ConfigError, DataError, MissingDataError

BASE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/"
SIZES = ("full", "320px", "160px")
NOISE_LEVELS = (0, 1, 5, 25, 50)  # percent of training labels changed, the columns of the csv

IMAGENETTE_CLASSES = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}
IMAGEWOOF_CLASSES = {
    "n02086240": "Shih-Tzu",
    "n02087394": "Rhodesian ridgeback",
    "n02088364": "beagle",
    "n02089973": "English foxhound",
    "n02093754": "Border terrier",
    "n02096294": "Australian terrier",
    "n02099601": "golden retriever",
    "n02105641": "Old English sheepdog",
    "n02111889": "Samoyed",
    "n02115641": "dingo",
}

# Known-good MD5s per archive. fast.ai has re-uploaded the archives with new checksums, so each
# list holds every published one: torchvision's Imagenette, fastai's data/checks.txt, and
# catalyst's Imagewoof (two releases). An archive matching none stops with an override hint.
KNOWN_MD5 = {
    "imagenette2": ("fe2fc210e6bb7c5664d602c3cd71e612", "2c774ecb40005b35d7937d50f5d42336"),
    "imagenette2-320": ("3df6f0d01a2c9592104656642f5e78a3", "1f1f74f133caff120e575856659b87a2"),
    "imagenette2-160": ("e793b78cc4c9e9a4ccc0c1155377a412", "c475f8f7617a200ba35b9facc48443c3"),
    "imagewoof2": (
        "9aafe18bcdb1632c4249a76c458465ba",
        "5eaf5bbf4bf16a77c616dc6e8dd5f8e9",
        "2cc1c1e36e20cb6fd24ffb978edcb487",
    ),
    "imagewoof2-320": (
        "0f46d997ec2264e97609196c95897a44",
        "af65be7963816efa949fa3c3b4947740",
        "7a1fd92672a559a85de76e4810a20c21",
    ),
    "imagewoof2-160": (
        "3d200a7be99704a0d7509be2a9fbfe15",
        "fcd23cc7dfce8837c95a8f9d63a128b7",
        "3559b194123981a540b87132dbda412f",
    ),
}


def read_noisy_labels(csv_path: Path, noisy_labels: int) -> dict[str, str]:
    """``{relative image path: wnid}`` from the ``noisy_labels_<noisy_labels>`` column of the csv."""
    column = f"noisy_labels_{noisy_labels}"
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []) or "path" not in (reader.fieldnames or []):
            raise DataError(f"{csv_path} has no 'path' and '{column}' columns; it is not fast.ai's noisy-label csv.")
        return {row["path"]: row[column] for row in reader}


@dataclass(kw_only=True)
class Imagenette(Downloadable, Source):
    """Imagenette (10 easy ImageNet classes; ~9.5k train, ~3.9k val images).

    ``test`` is the official ``val/`` folder; validation is a held-out ``val_fraction`` of ``train/``
    (set it to 0 to validate on the official val, as the fast.ai leaderboard does).

    Args:
        root: folder holding the extracted ``imagenette2-160/`` (or ``imagenette2-320/``, ``imagenette2/``),
            or a copy resized by hand in the same layout (``imagenette2-96/train/<wnid>/*.JPEG``, ``val/``).
        size: ``'160px'``, ``'320px'`` (shorter side resized by fast.ai) or ``'full'``: the official
            archive to read or download. Without its folder, the one ``imagenette2*/`` folder under
            ``root`` that holds ``train/`` and ``val/`` is read, whatever its resolution.
        folder: the folder under ``root`` to read, for a copy of any resolution (``imagenette2-96``);
            None: as ``size`` says.
        noisy_labels: percent of training labels replaced by a wrong class (0, 1, 5, 25, 50), read
            from the csv in the archive; validation and test labels stay clean.
        val_fraction: share of each class's ``train/`` images held out for validation (stratified, seeded
            by ``split_seed``); 0 validates on the official ``val/``, the fast.ai leaderboard's setting.
    """

    name: ClassVar[str] = "Imagenette"
    native_size: ClassVar[int] = 128
    dataset_name: ClassVar[str] = "imagenette2"
    noisy_csv: ClassVar[str] = "noisy_imagenette.csv"
    wnids: ClassVar[list[str]] = sorted(IMAGENETTE_CLASSES)
    classes: ClassVar[list[str]] = [IMAGENETTE_CLASSES[w] for w in wnids]

    root: str = "data"
    size: Literal["full", "320px", "160px"] = "160px"
    folder: str | None = None
    noisy_labels: int = 0
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        self.root = os.path.expanduser(self.root)
        if self.size not in SIZES:
            raise ConfigError(f"data.size must be one of {SIZES}, got {self.size!r}.")
        folder = self.folder
        if folder is not None and (not folder or Path(folder).name != folder or folder in (".", "..")):
            raise ConfigError(
                f"data.folder must be the name of a folder inside data.root, such as {self.dataset_name}-96, got {folder!r}."
            )
        if type(self.noisy_labels) is not int or self.noisy_labels not in NOISE_LEVELS:  # true is not 1 percent
            raise ConfigError(f"data.noisy_labels must be one of {NOISE_LEVELS} (percent), got {self.noisy_labels!r}.")
        check_fraction(self.val_fraction)
        if self.download and folder not in (None, self.official_folder):
            raise ConfigError(
                f"data.download fetches the official {self.official_folder}.tgz, not data.folder {folder!r}: "
                "unset data.folder to download, or data.download to read your copy."
            )

    @property
    def num_classes(self) -> int:
        return len(self.wnids)

    @property
    def official_folder(self) -> str:
        """The folder the archive of ``size`` extracts to: ``imagenette2``, ``imagenette2-320`` or ``imagenette2-160``."""
        return self.dataset_name if self.size == "full" else f"{self.dataset_name}-{self.size.removesuffix('px')}"

    @property
    def archive(self) -> Archive:
        """The official archive of ``size``, read from ``folder`` or the one local copy under ``root``."""
        official = self.official_folder
        return Archive(self.name, self.folder or self.local_copy(), f"{BASE_URL}{official}.tgz", KNOWN_MD5[official], ("train", "val"))

    def local_copy(self) -> str:
        """The official folder if present (or to be downloaded), else the one other copy under ``root``."""
        official = self.official_folder
        if self.download or (Path(self.root) / official).exists():
            return official
        copies = sorted(
            p.name for p in Path(self.root).glob(f"{self.dataset_name}*") if (p / "train").is_dir() and (p / "val").is_dir()
        )
        if len(copies) > 1:
            raise ConfigError(
                f"{self.root} holds several copies of {self.name} ({', '.join(copies)}): "
                f"name one with --data.folder, for instance --data.folder {copies[0]}."
            )
        return copies[0] if copies else official

    def read(self, *, image_size: int, split_seed: int) -> Splits:
        path = self.archive.located(self.root)
        self.check_resolution(path, image_size)
        # A reduced copy may lack classes; labels stay the wnid positions of the full set.
        train = read_class_folders(path / "train", self.wnids, every_class=False)
        if self.noisy_labels:
            train.labels = self.noisy(path, train.images)
        test = read_class_folders(path / "val", self.wnids, every_class=False)
        return held_out_splits(train, None, test, self.classes, self.val_fraction, split_seed, path)

    def check_resolution(self, path: Path, image_size: int) -> None:
        """Say which copy is read and at what resolution; warn if the crops would upsample every image."""
        first = next((p for p in sorted((path / "train").glob("*/*")) if p.is_file()), None)
        try:
            with Image.open(first) as image:
                side = min(image.size)
        except (OSError, TypeError, ValueError, SyntaxError):
            return  # no readable first image: reading the splits names the problem
        rank_zero_info(f"{self.name}: reading {path} (shorter side {side} px, e.g. {first.name}).")
        if image_size > side:
            warnings.warn(
                f"data.image_size {image_size} is larger than the {side}-px images of {path}, so every crop "
                f"is upsampled: set data.image_size to at most {side} (the CPU recipes use 64).",
                stacklevel=2,
            )

    def noisy(self, path: Path, images: list[str]) -> torch.Tensor:
        """Labels of ``images`` from the csv's ``noisy_labels_N`` column."""
        csv_path = path / self.noisy_csv
        if not csv_path.is_file():
            raise MissingDataError(
                f"{csv_path} is missing, so data.noisy_labels={self.noisy_labels} cannot be read: "
                "restore it from the archive or set data.noisy_labels 0."
            )
        table = read_noisy_labels(csv_path, self.noisy_labels)
        labels = []
        for image in images:
            key = Path(image).relative_to(path).as_posix()
            if table.get(key) not in self.wnids:
                raise DataError(f"{key} has no row with a known wnid in {csv_path}: restore the csv from the archive.")
            labels.append(self.wnids.index(table[key]))
        return torch.tensor(labels, dtype=torch.int64)


@dataclass(kw_only=True)
class Imagewoof(Imagenette):
    """Imagewoof: 10 dog breeds from ImageNet (~9k train, ~3.9k val images), hard to tell apart;
    Imagenette's keys and layout, with noisy labels from ``noisy_imagewoof.csv``.

    Args:
        root: folder holding the extracted ``imagewoof2-160/`` (or ``imagewoof2-320/``, ``imagewoof2/``),
            or a copy resized by hand in the same layout (``imagewoof2-96/train/<wnid>/*.JPEG``, ``val/``).
    """

    name: ClassVar[str] = "Imagewoof"
    dataset_name: ClassVar[str] = "imagewoof2"
    noisy_csv: ClassVar[str] = "noisy_imagewoof.csv"
    wnids: ClassVar[list[str]] = sorted(IMAGEWOOF_CLASSES)
    classes: ClassVar[list[str]] = [IMAGEWOOF_CLASSES[w] for w in wnids]


class ImagenetteDataModule(ImageDataModule, source=Imagenette):
    """Imagenette (10 easy ImageNet classes; ~9.5k train, ~3.9k val images); ``test`` is the official ``val/``."""


class ImagewoofDataModule(ImageDataModule, source=Imagewoof):
    """Imagewoof: 10 dog breeds from ImageNet (~9k train, ~3.9k val images); ``test`` is the official ``val/``."""
