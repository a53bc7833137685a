"""Training-loader throughput: torchvision ImageFolder + PIL transforms vs ImagenetteDataModule with its cache.

    python benchmarks/data_pipeline.py [--per-class 100] [--workers 2] [--batch-size 64] [--epochs 4]
    python benchmarks/data_pipeline.py --quick      # a smoke run of every code path

Writes an Imagenette-160-like set of JPEGs (10 classes, shorter side 160 px, the genuine folder
layout) to a temporary folder, then iterates each training loader for a few epochs with the same
workers, batch size and augmentation (random-resized crop to 128 px, flip, normalize) and prints
images/s. The cached pipelines decode every image once before their first epoch; "with build"
counts that, "steady" is the median epoch after the first. (b) vs (a) is the like-for-like ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from bagoftricks.data.imagenette import IMAGENETTE_CLASSES, ImagenetteDataModule
from bagoftricks.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def make_photos(root: Path, per_class: int, seed: int = 0) -> Path:
    """Smooth random pictures (JPEG sizes like real 160 px photos, ~10 kB) in imagenette2-160/{train,val}/<wnid>/."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", max(1, per_class // 10))):
        for wnid in sorted(IMAGENETTE_CLASSES):
            folder = root / "imagenette2-160" / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                size = (213, 160) if k % 3 else (160, 240)  # landscape and portrait, shorter side 160
                coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
                pixels = np.asarray(coarse, dtype=np.float32) + rng.normal(0, 6, (size[1], size[0], 3))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{wnid}_{k}.JPEG", quality=90)
    return root


def epoch_seconds(loader: DataLoader) -> float:
    start = time.perf_counter()
    for images, labels in loader:
        pass
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="a few tiny images, no workers: a smoke test of the script")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_class, args.workers, args.batch_size, args.epochs, args.image_size = 2, 0, 4, 2, 32
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        root = make_photos(Path(tmp), args.per_class)
        train_dir = root / "imagenette2-160" / "train"
        pil = transforms.Compose(
            [
                transforms.RandomResizedCrop(args.image_size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
        baseline = DataLoader(
            datasets.ImageFolder(str(train_dir), transform=pil),
            batch_size=args.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=args.workers,
            persistent_workers=args.workers > 0,
        )
        same_augmentation = {"color_jitter": 0, "pca_lighting": 0}
        variants = {
            "(b) ImagenetteDataModule cache=memory": {"cache": "memory", **same_augmentation},
            "(c) ImagenetteDataModule cache=disk": {"cache": "disk", **same_augmentation},
            "(d) ImagenetteDataModule cache=none": {"cache": "none", **same_augmentation},
            "(e) = (b) + paper's jitter and lighting": {"cache": "memory"},
        }
        loaders, builds = {"(a) ImageFolder + PIL transforms": baseline}, {"(a) ImageFolder + PIL transforms": 0.0}
        for name, options in variants.items():
            dm = ImagenetteDataModule(
                str(root), image_size=args.image_size, batch_size=args.batch_size, num_workers=args.workers, **options
            )
            start = time.perf_counter()
            dm.setup("fit")  # the cache decodes every image here, once
            builds[name], loaders[name] = time.perf_counter() - start, dm.train_dataloader()

        # Epochs round-robin over the pipelines, so load from other processes hits all of them alike.
        seconds: dict[str, list[float]] = {name: [] for name in loaders}
        for _ in range(args.epochs):
            for name, loader in loaders.items():
                seconds[name].append(epoch_seconds(loader))

        images = len(baseline) * args.batch_size
        print(f"{images} images per epoch ({args.per_class * 10} JPEGs, shorter side 160 px), {args.workers} workers, "
              f"batch {args.batch_size}, crop {args.image_size} px, {args.epochs} epochs; steady = median of epochs 2+")
        base_steady = None
        for name, times in seconds.items():
            steady = images / statistics.median(times[1:] or times)
            overall = images * len(times) / (builds[name] + sum(times))
            base_steady = base_steady or steady
            epochs = " ".join(f"{t:.2f}" for t in times)
            print(
                f"{name:<41} build {builds[name]:5.2f} s | epochs {epochs} s | steady {steady:6.0f} img/s "
                f"({steady / base_steady:4.2f}x) | with build {overall:6.0f} img/s"
            )


if __name__ == "__main__":
    main()
