"""Hostile data inputs (issue 27): each is accepted or refused in one sentence within seconds, with nothing lost on disk.

One parametrized table per class of fault: dataset pickles built to make a structure walk hang or
recurse, CIFAR pixels that would wrap around, a disk cache on a read-only dataset folder, a
validation split that leaves nothing to train on, an image size the memory cannot hold.
"""

from __future__ import annotations

import pickle
import signal
import struct
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from miniatures import make_cifar10, make_image_folder

from bagoftricks.data import CIFAR10DataModule, DigitsDataModule, ImageFolderDataModule, images
from bagoftricks.errors import ConfigError, DataError

SECONDS = 10  # the bound: a few-KB file is accepted or refused well within it on a loaded 2-core machine
FOLDER = {"batch_size": 2, "num_workers": 0, "image_size": 16}


@contextmanager
def within(seconds: int = SECONDS):
    """Fail (instead of hanging the suite) if the block runs longer than ``seconds``."""

    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------------------- crafted pickles: bounded work


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE


def _shared_tuples_key(depth: int = 64) -> bytes:
    """``{t: 1}`` with ``t = (t, t)`` nested ``depth`` deep through the memo: 2^depth steps to hash, 600 bytes."""
    ops = b"\x80\x02}" + b")q\x000"  # PROTO 2, EMPTY_DICT, EMPTY_TUPLE, BINPUT 0, POP
    for i in range(depth):
        ops += b"h" + bytes([i]) + b"h" + bytes([i]) + b"\x86q" + bytes([i + 1]) + b"0"  # (t_i, t_i) -> memo i+1
    return ops + b"h" + bytes([depth]) + b"K\x01s."  # key, value 1, SETITEM, STOP


def _deep_list(depth: int = 200_000) -> bytes:
    """``{'labels': [[[...]]]}`` nested ``depth`` deep, written opcode by opcode (pickle itself would recurse)."""
    return b"\x80\x02}" + _unicode("labels") + b"]" * depth + b"a" * (depth - 1) + b"s."


def _batch(labels, data=None, **extra) -> bytes:
    data = np.zeros((20, 3072), np.uint8) if data is None else data
    return pickle.dumps({"batch_label": "training batch 1 of 5", "labels": labels, "data": data, **extra}, protocol=2)


def _shared_lists(depth: int = 64):
    x: list = []
    for _ in range(depth):
        x = [x, x]
    return x


def _with_deep_key(batch: bytes, depth: int = 200_000) -> bytes:
    """``batch`` with one more key, ``filenames``, holding a list nested ``depth`` deep."""
    assert batch.endswith(b".")
    return batch[:-1] + _unicode("filenames") + b"]" * depth + b"a" * (depth - 1) + b"s."


def _self_list():
    x: list = []
    x.append(x)
    return x


def _self_dict():
    d: dict = {}
    d["labels"] = d
    return d


# (name, the bytes of data_batch_1, "accepted" or the pattern of the one sentence)
PICKLES = [
    ("labels: shared lists 64 deep", _batch([_shared_lists()] + [0] * 19), r"has the label a list, outside the 10 classes"),
    ("labels: a list holding itself", _batch([_self_list()] + [0] * 19), r"has the label a list, outside"),
    ("labels: the shared lists themselves", _batch(_shared_lists()), r"has 20 images but 2 labels"),
    ("labels: 200k-deep list", _deep_list(), r"is not a CIFAR batch"),
    ("data: shared lists 64 deep", _batch(list(range(20)), data=_shared_lists()), r"is not a CIFAR batch"),
    ("a dict holding itself", pickle.dumps(_self_dict(), protocol=2), r"is not a CIFAR batch"),
    ("key: shared tuples 64 deep", _shared_tuples_key(), r"refused: .*a dict key of type tuple"),
    ("a set, protocol 4", pickle.dumps({"labels": {1, 2}}, protocol=4), r"refused: .*holds a set"),
    ("a frozenset key, protocol 4", pickle.dumps({frozenset({1}): 1}, protocol=4), r"refused: .*holds a set"),
    ("a set, protocol 2", pickle.dumps({"labels": {1, 2}}, protocol=2), r"refused: .*names __builtin__.set"),
    ("an ignored key of shared lists", _batch([i % 10 for i in range(20)], filenames=_shared_lists()), "accepted"),
    ("an ignored key 200k deep", _with_deep_key(_batch([i % 10 for i in range(20)])), "accepted"),
]


@pytest.mark.parametrize("name, content, expected", PICKLES, ids=[p[0] for p in PICKLES])
def test_crafted_pickle_is_accepted_or_refused_within_seconds(name, content, expected, tmp_path):
    make_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(content)
    dm = CIFAR10DataModule(str(tmp_path), num_workers=0, val_size=0)
    start = time.perf_counter()
    with within():
        if expected == "accepted":
            dm.setup("fit")
            assert len(dm.train_set) == 100
        else:
            with pytest.raises(DataError, match=expected) as info:
                dm.setup("fit")
            assert "\n" not in str(info.value)
    assert time.perf_counter() - start < SECONDS
    assert batch.read_bytes() == content  # refused, never rewritten or removed


# ----------------------------------------------------------------------------- CIFAR pixels outside uint8


PIXELS = [
    ("int64 256", np.int64, 256, r"int64 pixel values from 0 to 256, outside 0..255"),
    ("int64 -1", np.int64, -1, r"int64 pixel values from -1 to .*, outside 0..255"),
    ("int64 2**40", np.int64, 2**40, r"int64 pixel values from 0 to 1099511627776"),
    ("int16 300", np.int16, 300, r"int16 pixel values from 0 to 300"),
    ("uint16 65535", np.uint16, 65535, r"uint16 pixel values"),
    ("int64 within 0..255", np.int64, 255, None),  # the same pixels, only stored wider: read as they are
    ("uint8 255", np.uint8, 255, None),
]


@pytest.mark.parametrize("name, dtype, extreme, expected", PIXELS, ids=[p[0] for p in PIXELS])
def test_cifar_pixels_that_would_wrap_are_refused(name, dtype, extreme, expected, tmp_path):
    make_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    entry = pickle.loads(batch.read_bytes())
    data = entry["data"].astype(dtype)
    data[0, 0] = extreme
    entry["data"] = data
    batch.write_bytes(pickle.dumps(entry, protocol=2))
    dm = CIFAR10DataModule(str(tmp_path), num_workers=0, val_size=0)
    if expected is None:
        dm.setup("fit")
        assert int(dm.train_set.images[40, 0, 0, 0]) == extreme  # image 0 of the third batch, unchanged
    else:
        with pytest.raises(DataError, match=expected):
            dm.setup("fit")


# ----------------------------------------------------------------------------- the disk cache on a read-only folder


def _read_only(*folders: Path):
    """``images.writable`` answering False inside ``folders``: running as root, chmod would not stop a write."""
    real = images.writable

    def writable(folder: Path) -> bool:
        return not any(Path(folder).is_relative_to(f) for f in folders) and real(folder)

    return writable


# (name, folders that are read-only, data.cache_dir, where the cache must land or the sentence's pattern)
READ_ONLY = [
    ("root read-only: the user cache", ["root"], None, "user"),
    ("root writable: beside the data", [], None, "root/.cache"),
    ("cache_dir given", ["root"], "mine", "mine"),
    ("cache_dir read-only", ["mine"], "mine", r"data.cache_dir .*mine is not writable: set it to a folder you can write to"),
    ("root and user read-only", ["root", "user"], None, r"data.cache disk cannot write to .*root/.cache \(read-only\) nor to .*: set data.cache_dir"),
]


@pytest.mark.parametrize("name, read_only, cache_dir, expected", READ_ONLY, ids=[r[0] for r in READ_ONLY])
def test_disk_cache_of_a_read_only_dataset_goes_somewhere_writable(name, read_only, cache_dir, expected, tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "root", per_class=2, test_per_class=1)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
    monkeypatch.setattr(images, "writable", _read_only(*(tmp_path / f for f in read_only)))
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    mine = None if cache_dir is None else str(tmp_path / cache_dir)
    dm = ImageFolderDataModule(str(root), cache="disk", cache_dir=mine, val_fraction=0, **FOLDER)
    if expected.startswith(("user", "root", "mine")):
        dm.setup("fit")
        folder = tmp_path / expected if expected != "user" else tmp_path / "user" / "bagoftricks"
        assert len(list(folder.glob("*.u8"))) == 2  # train and test
        next(iter(dm.train_dataloader()))
    else:
        with pytest.raises(ConfigError, match=expected):
            dm.setup("fit")
    if "root" in read_only:
        assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written beside the data


def test_disk_cache_without_the_space_stops_before_writing(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "root", per_class=2, test_per_class=1)
    monkeypatch.setattr(images.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 100})())
    dm = ImageFolderDataModule(str(root), cache="disk", val_fraction=0, **FOLDER)
    with pytest.raises(DataError, match=r"data.cache disk needs .* but 0.0 GB is free: .*data.cache_dir"):
        dm.setup("fit")
    assert not list((root / ".cache").glob("*"))  # no partial file left behind


# ----------------------------------------------------------------------------- held-out validation leaving no training image


def _folder_dm(root: Path, **kw):
    make_image_folder(root, per_class=2, test_per_class=1)
    return ImageFolderDataModule(str(root), **{**FOLDER, **kw})


def _cifar_dm(root: Path, **kw):
    make_cifar10(root)
    return CIFAR10DataModule(str(root), num_workers=0, **kw)


EMPTY_TRAIN = [
    ("folder val_fraction 0.9", lambda root: _folder_dm(root, val_fraction=0.9), r"data.val_fraction 0.9 holds out all 6 training images"),
    ("folder val_fraction 0.75", lambda root: _folder_dm(root, val_fraction=0.75), r"data.val_fraction 0.75 holds out all 6"),
    ("cifar val_size 99", lambda root: _cifar_dm(root, val_size=99), r"data.val_size 99 holds out all 100 training images"),
    ("cifar val_size 96", lambda root: _cifar_dm(root, val_size=96), r"data.val_size 96 holds out all 100"),
    ("cifar val_size 100", lambda root: _cifar_dm(root, val_size=100), r"data.val_size \(100\) must be smaller than the 100 training images"),
    ("folder val_fraction 0.5", lambda root: _folder_dm(root, val_fraction=0.5), None),  # one image each way: fine
]


@pytest.mark.parametrize("name, make, expected", EMPTY_TRAIN, ids=[e[0] for e in EMPTY_TRAIN])
def test_validation_that_leaves_no_training_image_is_one_sentence(name, make, expected, tmp_path):
    dm = make(tmp_path / "data")
    if expected is None:
        dm.setup("fit")
        assert len(dm.train_set) == len(dm.val_set) == 3
        return
    with pytest.raises(ConfigError, match=expected) as info:
        dm.setup("fit")
    assert "\n" not in str(info.value) and str(info.value).endswith(".")


# ----------------------------------------------------------------------------- image sizes the memory cannot hold


GB = 10**9
MEMORY = [
    ("digits image_size 10**6", lambda root: DigitsDataModule(image_size=10**6), r"data.image_size 1000000 makes one batch of 64 images"),
    ("folder image_size 10**5", lambda root: ImageFolderDataModule(str(root), image_size=10**5), r"data.image_size 100000 makes one batch"),
    ("cifar test_image_size 10**5", lambda root: CIFAR10DataModule(str(root), test_image_size=10**5), r"data.test_image_size 100000 makes"),
    ("batch_size 10**7 at 224", lambda root: ImageFolderDataModule(str(root), batch_size=10**7, image_size=224), r"lower data.image_size or data.batch_size"),
]


@pytest.mark.parametrize("name, make, expected", MEMORY, ids=[m[0] for m in MEMORY])
def test_batches_the_memory_cannot_hold_are_refused_at_construction(name, make, expected, tmp_path):
    with pytest.raises(ConfigError, match=expected) as info:
        make(tmp_path)
    assert "memory available" in str(info.value) and "\n" not in str(info.value)


def test_memory_cache_too_large_is_refused_before_decoding(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "root", per_class=2, test_per_class=1)
    monkeypatch.setattr(images, "available_memory", lambda: 1000)  # the 9 training images need 9 x 3 x 32 x 32 bytes

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache cannot fit")

    monkeypatch.setattr(images, "_decode_all", no_decoding)
    dm = ImageFolderDataModule(str(root), cache="memory", val_fraction=0, **FOLDER)
    with pytest.raises(ConfigError, match=r"data.cache memory needs 0.0 GB for 6 images at \d+ px but 0.0 GB .*use data.cache disk"):
        dm.setup("fit")
