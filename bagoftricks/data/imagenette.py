"""Imagenette and Imagewoof (fast.ai's 10-class ImageNet subsets), with noisy labels and a decoded cache.

One implementation for both: the official ``train/`` and ``val/`` folders of the extracted archive,
classes in sorted wnid order, and the ``noisy_labels_N`` column of the bundled csv for the
label-noise benchmarks. Own dataset rather than ``torchvision.datasets.Imagenette``: that one has
no Imagewoof, no noisy labels, a single md5 per archive and no cache.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from bagoftricks.data.images import ImageFilesDataModule

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
            raise ValueError(f"{csv_path} has no 'path' and '{column}' columns; it is not fast.ai's noisy-label csv.")
        return {row["path"]: row[column] for row in reader}


class ImagenetteDataModule(ImageFilesDataModule):
    """Imagenette (10 easy ImageNet classes; ~9.5k train, ~3.9k val images), official split.

    There is no test split: ``test`` evaluates on ``val``, as the fast.ai leaderboard does.

    Args:
        root: folder holding the extracted ``imagenette2-160/`` (or ``imagenette2-320/``, ``imagenette2/``).
        size: ``'160px'``, ``'320px'`` (shorter side resized by fast.ai) or ``'full'``.
        noisy_labels: percent of training labels replaced by a wrong class (0, 1, 5, 25, 50), read
            from the csv in the archive; validation labels stay clean.
        download: download and extract the archive into ``root`` if the folder is missing.
        md5: accept an archive with this MD5 instead of the known ones (after an upstream re-upload).
        auto_augment: ``'autoaugment'``, ``'randaugment'``, ``'trivialaugment'`` or None.
        color_jitter: brightness/contrast/saturation jitter (the paper: 0.4; 0 switches it off).
        pca_lighting: std of the AlexNet PCA lighting noise (the paper: 0.1; 0 switches it off).
        cache: ``'none'`` decodes every JPEG every epoch; ``'memory'`` or ``'disk'`` decode each image once,
            shorter side resized to ``cache_side``, into uint8 tensors in RAM or a memmap under ``root/.cache``
            (about N x 1.33 x 3 x cache_side^2 bytes: 0.8 GB for the 160px train set at 128 px).
        cache_side: shorter side stored in the cache; default ``image_size / 0.875``, the eval resize.
            Random crops then come from that resolution, not the original's.
        skip_corrupt: skip unreadable images (counted in one warning) instead of stopping at the first.
    """

    num_classes = 10
    display_name = "Imagenette"
    dataset_name = "imagenette2"
    noisy_csv = "noisy_imagenette.csv"
    wnids = sorted(IMAGENETTE_CLASSES)
    classes = [IMAGENETTE_CLASSES[w] for w in wnids]

    def __init__(
        self,
        root: str = "data",
        size: Literal["full", "320px", "160px"] = "160px",
        noisy_labels: int = 0,
        download: bool = False,
        md5: str | None = None,
        batch_size: int = 64,
        num_workers: int | None = None,
        image_size: int = 128,
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
        if size not in SIZES:
            raise ValueError(f"data.size must be one of {SIZES}, got {size!r}.")
        if noisy_labels not in NOISE_LEVELS:
            raise ValueError(f"data.noisy_labels must be one of {NOISE_LEVELS} (percent), got {noisy_labels!r}.")
        self.size, self.noisy_labels = size, noisy_labels
        self.wnid_to_idx = {wnid: i for i, wnid in enumerate(self.wnids)}

    @property
    def folder(self) -> str:
        """The archive's top folder: ``imagenette2``, ``imagenette2-320`` or ``imagenette2-160``."""
        return self.dataset_name if self.size == "full" else f"{self.dataset_name}-{self.size.removesuffix('px')}"

    @property
    def url(self) -> str:
        return f"{BASE_URL}{self.folder}.tgz"

    @property
    def known_md5s(self) -> tuple[str, ...]:
        return KNOWN_MD5[self.folder]

    @property
    def path(self) -> Path:
        return self.root / self.folder

    def check_folder(self, path: Path) -> None:
        """Raise unless ``path`` has ``train/`` and ``val/`` with only known wnid folders (and the csv if needed)."""
        for split in ("train", "val"):
            if not (path / split).is_dir():
                raise self.not_extracted_error(path, f"has no {split}/ folder")
            unknown = sorted(d.name for d in (path / split).iterdir() if d.is_dir() and d.name not in self.wnid_to_idx)
            if unknown:
                raise ValueError(
                    f"{path / split} has folders {unknown} that are not {self.dataset_name} classes "
                    f"(expected wnids: {self.wnids})."
                )
        if self.noisy_labels and not (path / self.noisy_csv).is_file():
            raise FileNotFoundError(
                f"{path / self.noisy_csv} is missing, so data.noisy_labels={self.noisy_labels} cannot be read: "
                "restore it from the archive or set data.noisy_labels 0."
            )

    def samples(self, split: str) -> list[tuple[str, int]]:
        """``(path, label)`` pairs of a split in sorted order; train labels from the noisy column if asked."""
        split_dir = self.path / split
        present = {d.name: self.wnid_to_idx[d.name] for d in split_dir.iterdir() if d.is_dir()}
        samples = make_dataset(str(split_dir), present, extensions=IMG_EXTENSIONS)
        if split != "train" or self.noisy_labels == 0:
            return samples
        table = read_noisy_labels(self.path / self.noisy_csv, self.noisy_labels)
        relabeled = []
        for path, _ in samples:
            key = Path(path).relative_to(self.path).as_posix()
            if table.get(key) not in self.wnid_to_idx:
                raise ValueError(f"{key} has no row with a known wnid in {self.path / self.noisy_csv}.")
            relabeled.append((path, self.wnid_to_idx[table[key]]))
        return relabeled

    def setup(self, stage: str | None = None) -> None:
        self.dataset_path()  # checked on every call: a later stage may ask for a split not yet built
        if stage in (None, "fit") and not hasattr(self, "train_set"):
            self.train_set = self.image_dataset(self.samples("train"), "train", train=True)
        if not hasattr(self, "val_set"):
            self.val_set = self.image_dataset(self.samples("val"), "val", train=False)
        self.test_set = self.val_set


class ImagewoofDataModule(ImagenetteDataModule):
    """Imagewoof: 10 dog breeds from ImageNet (~9k train, ~3.9k val images), hard to tell apart.

    Same arguments as :class:`ImagenetteDataModule`; ``root`` holds ``imagewoof2-160/`` and the
    noisy labels come from ``noisy_imagewoof.csv``.
    """

    display_name = "Imagewoof"
    dataset_name = "imagewoof2"
    noisy_csv = "noisy_imagewoof.csv"
    wnids = sorted(IMAGEWOOF_CLASSES)
    classes = [IMAGEWOOF_CLASSES[w] for w in wnids]
