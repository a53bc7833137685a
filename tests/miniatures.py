"""Miniature datasets in the genuine on-disk layouts, for the data tests and fast dev runs of the configs.

Each ``make_*`` writes what the real archive extracts to (same folders, file names, index files,
pickle keys) with a handful of tiny images, and returns ``root``. Images are a class colour plus
noise, so a model can learn them. ``make_archive`` packs a folder the way the real ``.tgz`` is packed.
"""

from __future__ import annotations

import csv
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from bagoftricks.data.imagenette import IMAGENETTE_CLASSES, IMAGEWOOF_CLASSES

NOISE_LEVELS = (0, 1, 5, 25, 50)
CUB_NAMES = ("Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross", "Groove_billed_Ani", "Crested_Auklet")


def write_image(path: Path, label: int, size: tuple[int, int], rng: np.random.Generator) -> None:
    """A ``size`` (width, height) JPEG: the colour of ``label`` plus noise."""
    color = np.array([(label * 67) % 256, (label * 131 + 80) % 256, (label * 29 + 160) % 256])
    pixels = color + rng.normal(0, 25, (size[1], size[0], 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def make_imagenette(
    root: str | Path,
    name: str = "imagenette2-160",
    per_class: int = 2,
    val_per_class: int | None = None,
    wnids: list[str] | None = None,
    side: int = 64,
    seed: int = 0,
    noisy_csv: bool = True,
) -> Path:
    """``root/name/{train,val}/<wnid>/*.JPEG`` and the noisy-label csv; ``name`` starting with imagewoof
    gives the Imagewoof classes and ``noisy_imagewoof.csv``. Images have shorter side ``side`` and mixed
    orientations. ``noisy_csv=False`` leaves the csv out, as in a copy a user resized by hand. In the csv, a train image's ``noisy_labels_N`` (N > 0) is the next class's wnid for
    every train image whose position j satisfies ``(37 * j) % 100 < N`` (so position 0 always is)."""
    root, rng = Path(root), np.random.default_rng(seed)
    woof = name.startswith("imagewoof")
    wnids = wnids or sorted(IMAGEWOOF_CLASSES if woof else IMAGENETTE_CLASSES)
    rows = []
    for split, count in (("train", per_class), ("val", per_class if val_per_class is None else val_per_class)):
        for c, wnid in enumerate(wnids):
            for k in range(count):
                file = f"{wnid}_{1000 + k}.JPEG" if split == "train" else f"ILSVRC2012_val_{c * 1000 + k:08d}.JPEG"
                long_side = side + (k % 3) * side // 4
                size = (long_side, side) if k % 2 == 0 else (side, long_side)
                write_image(root / name / split / wnid / file, c, size, rng)
                rows.append((f"{split}/{wnid}/{file}", wnid, split == "val"))
    if not noisy_csv:
        return root
    with open(root / name / f"noisy_{'imagewoof' if woof else 'imagenette'}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", *(f"noisy_labels_{n}" for n in NOISE_LEVELS), "is_valid"])
        for j, (path, wnid, is_valid) in enumerate(rows):
            wrong = wnids[(wnids.index(wnid) + 1) % len(wnids)]
            noisy = [wrong if not is_valid and n > 0 and (37 * j) % 100 < n else wnid for n in NOISE_LEVELS]
            writer.writerow([path, *noisy, is_valid])
    return root


def make_cifar100(root: str | Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> Path:
    """``root/cifar-100-python/{train,test,meta}``: the real pickles' keys, dtypes and shapes.

    The real files were pickled by Python 2, whose ``str`` keys torchvision reads as ``str`` with
    ``encoding="latin1"``; Python-3 ``str`` keys at protocol 2 load to the same dict. Coarse label
    = fine label // 5 here (the real superclass map differs, the format does not).
    """
    folder, rng = Path(root) / "cifar-100-python", np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        fine = rng.permutation(np.arange(n) % 100)  # as balanced as n allows, in shuffled order
        data = cifar_rows(fine, rng)
        entry = {
            "filenames": [f"mini_{split}_{i}.png" for i in range(n)],
            "batch_label": f"{'training' if split == 'train' else 'testing'} batch 1 of 1",
            "fine_labels": fine.tolist(),
            "coarse_labels": (fine // 5).tolist(),
            "data": data,
        }
        with open(folder / split, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    meta = {
        "fine_label_names": [f"fine_{i:02d}" for i in range(100)],
        "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)],
    }
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return Path(root)


def cifar_rows(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CIFAR's ``data`` rows (uint8 [N, 3072], channel-major: 1024 red, 1024 green, 1024 blue) in each label's colour."""
    colors = np.stack([(labels * 67) % 256, (labels * 131 + 80) % 256, (labels * 29 + 160) % 256], axis=1)
    return (np.repeat(colors, 1024, axis=1) + rng.normal(0, 25, (len(labels), 3072))).clip(0, 255).astype(np.uint8)


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_cifar10(root: str | Path, per_batch: int = 20, n_test: int = 20, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py/`` as torchvision extracts it: ``data_batch_1..5``, ``test_batch`` and
    ``batches.meta`` with the real keys; labels cycle through the classes, so batch i holds image
    ``j`` with label ``(i * per_batch + j) % 10``."""
    folder, rng = Path(root) / "cifar-10-batches-py", np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = [(f"data_batch_{i}", per_batch, i - 1) for i in range(1, 6)] + [("test_batch", n_test, 0)]
    for name, n, index in batches:
        labels = (index * per_batch + np.arange(n)) % 10
        entry = {
            "batch_label": f"{'testing' if name == 'test_batch' else 'training'} batch {index + 1} of 5",
            "labels": labels.tolist(),
            "data": cifar_rows(labels, rng),
            "filenames": [f"mini_{name}_{j}.png" for j in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"num_cases_per_batch": per_batch, "label_names": CIFAR10_NAMES, "num_vis": 3072}, f, protocol=2)
    return Path(root)


def make_image_folder(
    root: str | Path,
    classes: tuple[str, ...] = ("cat", "dog", "frog"),
    per_class: int = 6,
    test_per_class: int = 2,
    side: int = 32,
    seed: int = 0,
) -> Path:
    """``root/train/<class>/`` and ``root/test/<class>/`` of ``side``-px JPEGs, like the extracted shared CIFAR-10 copy."""
    root, rng = Path(root), np.random.default_rng(seed)
    for split, count in (("train", per_class), ("test", test_per_class)):
        for c, name in enumerate(classes):
            for k in range(count):
                write_image(root / split / name / f"{k:04d}.jpg", c, (side, side), rng)
    return root


def make_cub200(
    root: str | Path, n_classes: int = 3, per_class: int = 4, train_per_class: int = 2, side: int = 64
) -> Path:
    """``root/CUB_200_2011/`` with ``images/NNN.Name/*.jpg`` and the four index files; image ids run class
    by class as in the real set, the first ``train_per_class`` images of each class are training images."""
    folder, rng = Path(root) / "CUB_200_2011", np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{c + 1:03d}.{CUB_NAMES[c] if c < len(CUB_NAMES) else f'Bird_{c + 1}'}" for c in range(n_classes)]
    images, labels, split = [], [], []
    for c, name in enumerate(names):
        for k in range(per_class):
            image_id = len(images) + 1
            relative = f"{name}/{name.partition('.')[2]}_{k:04d}_{image_id}.jpg"
            write_image(folder / "images" / relative, c, (side + 8 * k, side), rng)
            images.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {c + 1}")
            split.append(f"{image_id} {int(k < train_per_class)}")
    (folder / "classes.txt").write_text("".join(f"{c + 1} {n}\n" for c, n in enumerate(names)))
    (folder / "images.txt").write_text("\n".join(images) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (folder / "train_test_split.txt").write_text("\n".join(split) + "\n")
    return Path(root)


def make_archive(folder: str | Path, tgz_path: str | Path) -> Path:
    """Pack ``folder`` as the top-level entry of a gzipped tar, like the real archives."""
    folder, tgz_path = Path(folder), Path(tgz_path)
    tgz_path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tgz_path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return tgz_path
