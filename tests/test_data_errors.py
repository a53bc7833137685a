"""Every data fault a user can cause ends in one sentence naming the key or file and the fix, leaving nothing half-written."""

from __future__ import annotations

import dataclasses
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from miniatures import make_cifar10, make_cub200, make_image_folder, make_imagenette

from bagoftricks.data import (
    CIFAR10DataModule,
    CUB200DataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    ImagenetteDataModule,
    ImagewoofDataModule,
)
from bagoftricks.data import cifar10 as cifar10_module
from bagoftricks.errors import ConfigError, DataError, MissingDataError

FOLDER = {"batch_size": 2, "num_workers": 0, "val_fraction": 0}


def _setup(dm) -> None:
    dm.setup("fit")


def _cub_bad_flag(root: Path):
    make_cub200(root)
    split = root / "CUB_200_2011" / "train_test_split.txt"
    split.write_text(split.read_text().replace("3 0\n", "3 2\n"))
    return lambda: _setup(CUB200DataModule(str(root), num_workers=0, image_size=32))


def _cifar_label(root: Path):
    make_cifar10(root)
    batch = root / "cifar-10-batches-py" / "data_batch_2"
    entry = pickle.loads(batch.read_bytes())
    entry["labels"][3] = 10
    batch.write_bytes(pickle.dumps(entry, protocol=2))
    return lambda: _setup(CIFAR10DataModule(str(root), num_workers=0))


def _cifar_shape(root: Path):
    make_cifar10(root)
    batch = root / "cifar-10-batches-py" / "test_batch"
    entry = pickle.loads(batch.read_bytes())
    entry["data"] = entry["data"][:, :100]
    batch.write_bytes(pickle.dumps(entry, protocol=2))
    return lambda: _setup(CIFAR10DataModule(str(root), num_workers=0))


def _empty_class(root: Path):
    make_image_folder(root)
    for image in (root / "train" / "dog").iterdir():
        image.unlink()
    return lambda: _setup(ImageFolderDataModule(str(root), **FOLDER))


def _empty_wnid(root: Path):
    make_imagenette(root, "imagenette2-160", per_class=1)
    folder = next((root / "imagenette2-160" / "val").iterdir())
    shutil.rmtree(folder)
    folder.mkdir()
    return lambda: _setup(ImagenetteDataModule(str(root), num_workers=0, image_size=32))


def _missing_test_class(root: Path):
    make_image_folder(root)
    shutil.rmtree(root / "test" / "frog")
    return lambda: _setup(ImageFolderDataModule(str(root), **FOLDER))


def _unknown_test_class(root: Path):
    make_image_folder(root)
    shutil.copytree(root / "test" / "frog", root / "test" / "toad")
    return lambda: _setup(ImageFolderDataModule(str(root), **FOLDER))


def _no_train(root: Path):
    root.mkdir(parents=True)
    return lambda: ImageFolderDataModule(str(root), **FOLDER).num_classes


# A host no resolver answers (RFC 6761): the download tests' url, so none of them can reach the real one.
UNREACHABLE = "https://cifar.invalid/cifar-10-python.tar.gz"


def _no_network(root: Path):
    offline = (root / "offline" / "cifar-10-python.tar.gz").as_uri()  # as unreachable as a host without network
    cifar10_module.CIFAR10.archive = dataclasses.replace(cifar10_module.ARCHIVE, url=offline)  # undone by the test
    return lambda: CIFAR10DataModule(str(root), download=True).prepare_data()


def _folder(**kw):
    return lambda root: (lambda: ImageFolderDataModule(str(root), **kw))


# (name, build(tmp root) -> the call that fails, error class, the sentence's pattern)
CASES = [
    ("size 80px", lambda root: lambda: ImagenetteDataModule(size="80px"), ConfigError, r"data.size must be one of \('full', '320px', '160px'\)"),
    ("noisy_labels 3", lambda root: lambda: ImagewoofDataModule(noisy_labels=3), ConfigError, r"data.noisy_labels must be one of \(0, 1, 5, 25, 50\)"),
    ("cache gpu", _folder(cache="gpu"), ConfigError, r"data.cache must be one of \('none', 'memory', 'disk'\)"),
    ("auto_augment best", lambda root: lambda: CUB200DataModule(auto_augment="best"), ConfigError, "data.auto_augment must be one of"),
    ("image_size 0", _folder(image_size=0), ConfigError, r"data.image_size must be a whole number of at least 8 pixels, got 0\."),
    ("image_size -32", _folder(image_size=-32), ConfigError, r"data.image_size must be .* at least 8 pixels, got -32\."),
    ("image_size 3", lambda root: lambda: DigitsDataModule(image_size=3), ConfigError, r"data.image_size .* got 3\."),
    ("batch_size 0", lambda root: lambda: DigitsDataModule(batch_size=0), ConfigError, r"data.batch_size must be a whole number of at least 1, got 0\."),
    ("batch_size 2.5", _folder(batch_size=2.5), ConfigError, r"data.batch_size must be a whole number"),
    ("num_workers -1", _folder(num_workers=-1), ConfigError, r"data.num_workers must be a whole number of at least 0"),
    ("max_per_class 0", _folder(max_per_class=0), ConfigError, r"data.max_per_class must be .* at least 1 \(or null"),
    ("augment name", _folder(augment="autumn"), ConfigError, r"data.augment must be one of \('imagenet', 'cifar', 'shift', 'none'\) or null"),
    ("jitter on cifar preset", _folder(augment="cifar", color_jitter=0.4), ConfigError, r"data.color_jitter belongs to data.augment 'imagenet', not 'cifar'"),
    ("auto_augment true", lambda root: lambda: CIFAR10DataModule(auto_augment=True), ConfigError, r"data.auto_augment must be one of \('autoaugment', .*got True\."),
    ("digits augment true", lambda root: lambda: DigitsDataModule(augment=True), ConfigError, r"data.augment must be one of .*got True\."),
    ("pca_lighting on digits", lambda root: lambda: DigitsDataModule(pca_lighting=0.1), ConfigError, r"data.pca_lighting belongs to data.augment 'imagenet', not 'shift'"),
    ("pca_lighting -1", _folder(pca_lighting=-1.0), ConfigError, r"data.pca_lighting must be at least 0"),
    ("crop_scale reversed", _folder(crop_scale=(0.9, 0.35)), ConfigError, r"data.crop_scale must be \[min, max\] with 0 < min <= max <= 1, got \[0.9, 0.35\]\."),
    ("crop_scale on cifar preset", _folder(augment="cifar", crop_scale=(0.35, 1.0)), ConfigError, r"data.crop_scale belongs to data.augment 'imagenet', not 'cifar'"),
    ("color_jitter nan", _folder(color_jitter=float("nan")), ConfigError, r"data.color_jitter must be at least 0"),
    ("noisy_labels true", lambda root: lambda: ImagenetteDataModule(noisy_labels=True), ConfigError, r"data.noisy_labels must be one of .*got True\."),
    ("split_seed -1", _folder(split_seed=-1), ConfigError, r"data.split_seed must be a whole number of at least 0, got -1\."),
    ("split_seed 2**70", _folder(split_seed=2**70), ConfigError, r"data.split_seed must be below 2\*\*63"),
    ("val_fraction 1", _folder(val_fraction=1.0), ConfigError, r"data.val_fraction must be in \[0, 1\)"),
    ("val_size -1", lambda root: lambda: CIFAR10DataModule(val_size=-1), ConfigError, r"data.val_size must be a whole number of at least 0"),
    ("digits fractions", lambda root: lambda: DigitsDataModule(val_fraction=0.6, test_fraction=0.5), ConfigError, r"sum to less than 1"),
    ("CUB split flag 2", _cub_bad_flag, DataError, r"train_test_split.txt gives image 3 the split flag '2', but only 1 \(train\) and 0 \(test\)"),
    ("CIFAR label 10", _cifar_label, DataError, r"data_batch_2 has the label 10, outside the 10 classes 0..9"),
    ("CIFAR rows of 100", _cifar_shape, DataError, r"test_batch is not a CIFAR batch with 'data' \(N x 3072 uint8\)"),
    ("empty class folder", _empty_class, DataError, r"The class folder .*train/dog holds no images: add some or remove the folder\."),
    ("empty wnid folder", _empty_wnid, DataError, r"The class folder .*imagenette2-160/val/n\d+ holds no images"),
    ("missing test class", _missing_test_class, MissingDataError, r"test has no folder for the classes \['frog'\]"),
    ("unknown test class", _unknown_test_class, DataError, r"test has class folders \['toad'\] that are not among the classes"),
    ("no train folder", _no_train, MissingDataError, r"train is not a folder: set --data.root to a folder with train/<class>/"),
    ("download offline", _no_network, DataError, r"Downloading file:///.*cifar-10-python.tar.gz failed \(.*\): .* place it at .*cifar-10-python.tar.gz"),
]


@pytest.mark.parametrize("name, build, error, pattern", CASES, ids=[c[0] for c in CASES])
def test_fault_is_one_sentence(name, build, error, pattern, tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10_module.CIFAR10, "archive", cifar10_module.ARCHIVE)  # _no_network's change is undone
    root = tmp_path / "data"
    fail = build(root)
    with pytest.raises(error, match=pattern) as info:
        fail()
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.rstrip().endswith((".", ")")) and message.count(". ") <= 1, message


def test_download_broken_midway_leaves_no_partial_file(tmp_path, monkeypatch):
    """The connection drops after the first bytes: nothing at the archive's name, no temporary file."""

    class Dropping:
        headers = {"Content-Length": "100000"}

        def __init__(self):
            self.sent = False

        def info(self):
            return self

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def get_all(self, key):
            return [self.headers[key]] if key in self.headers else None

        def read(self, n):
            if self.sent:
                raise ConnectionResetError("connection reset by peer")
            self.sent = True
            return b"\x1f\x8b" + b"0" * 8190

    import torch.hub

    monkeypatch.setattr(torch.hub, "urlopen", lambda request: Dropping())
    monkeypatch.setattr(cifar10_module.CIFAR10, "archive", dataclasses.replace(cifar10_module.ARCHIVE, url=UNREACHABLE))
    root = tmp_path / "data"
    with pytest.raises(DataError, match=r"Downloading https://cifar.invalid/cifar-10-python.tar.gz failed \(connection reset by peer\)"):
        CIFAR10DataModule(str(root), download=True).prepare_data()
    assert list(root.iterdir()) == []


def test_corrupt_image_in_a_worker_is_one_sentence(tmp_path):
    root = make_image_folder(tmp_path / "data")
    broken = root / "train" / "cat" / "0002.jpg"
    broken.write_text("not a jpeg")
    dm = ImageFolderDataModule(str(root), batch_size=2, num_workers=1, val_fraction=0)
    dm.setup("fit")
    with pytest.raises(DataError) as info:
        for _ in dm.train_dataloader():
            pass
    message = str(info.value)
    assert message.startswith(f"Cannot read image {broken}") and message.endswith("to skip it.")
    assert "\n" not in message and "Caught" not in message and "Original Traceback" not in message


def test_truncated_disk_cache_is_decoded_again(tmp_path):
    root = make_image_folder(tmp_path / "data")
    first = ImageFolderDataModule(str(root), cache="disk", **FOLDER)
    first.setup("fit")
    expected = torch.stack([first.val_set[i][0] for i in range(len(first.val_set))])
    cache = max((root / ".cache").glob("*-val-*.u8"), key=lambda p: p.stat().st_mtime_ns)
    cache.write_bytes(cache.read_bytes()[:100])  # a full disk, a killed copy

    again = ImageFolderDataModule(str(root), cache="disk", **FOLDER)
    with pytest.warns(UserWarning, match=f"The disk cache {cache} is incomplete; decoding its images again"):
        again.setup("fit")
    images = torch.stack([again.val_set[i][0] for i in range(len(again.val_set))])
    assert torch.equal(images, expected)
    assert cache.stat().st_size == int(np.load(f"{cache}.index.npy")[:, 1:].prod(axis=1).sum() * 3)


def test_a_download_that_was_not_stubbed_cannot_reach_the_network(tmp_path, monkeypatch):
    """conftest's guard: a download's lookup fails at once, as one sentence, and leaves nothing behind (the host is
    under .invalid, a name no resolver answers, so even without the guard nothing would leave this machine)."""
    monkeypatch.setattr(cifar10_module.CIFAR10, "archive", dataclasses.replace(cifar10_module.ARCHIVE, url=UNREACHABLE))
    root = tmp_path / "data"
    with pytest.raises(DataError, match=r"Downloading https://cifar.invalid/.* failed \(tests must not reach the network"):
        CIFAR10DataModule(str(root), download=True).prepare_data()
    assert not root.exists() or list(root.iterdir()) == []
