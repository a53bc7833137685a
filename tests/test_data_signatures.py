"""The data modules' constructors: keyword-only after root, each key declared once, every legacy CLI key kept."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from jsonargparse import ArgumentParser

import bagoftricks.data as data
from bagoftricks.cli import cli_main
from bagoftricks.data.base import ImageDataModule
from bagoftricks.data.cifar import CIFARDataModule
from bagoftricks.data.images import ImageFilesDataModule
from bagoftricks.errors import ConfigError

EXPORTED = [getattr(data, name) for name in data.__all__ if name.endswith("DataModule")]
ALL = [*EXPORTED, CIFARDataModule, ImageFilesDataModule]
SHARED = ["batch_size", "num_workers", "image_size", "pin_memory", "split_seed", "max_per_class"]
FILES = ["root", "val_fraction", "augment", "auto_augment", "color_jitter", "pca_lighting", "cache", "cache_side", "skip_corrupt"]
# Every data.* key each dataset accepted before the data modules were composed, plus the new ones.
KEYS = {
    data.DigitsDataModule: [*SHARED, "val_fraction", "test_fraction", "augment"],
    data.ImagenetteDataModule: [*SHARED, *FILES, "size", "noisy_labels", "download", "md5"],
    data.ImagewoofDataModule: [*SHARED, *FILES, "size", "noisy_labels", "download", "md5"],
    data.CUB200DataModule: [*SHARED, *FILES, "download", "md5"],
    data.CIFAR100DataModule: [*SHARED, "root", "download", "md5", "coarse", "val_size", "auto_augment"],
    data.CIFAR10DataModule: [*SHARED, "root", "download", "md5", "val_size", "auto_augment"],
    data.ImageFolderDataModule: [*SHARED, *FILES],
}


def own_parameters(cls) -> list[str]:
    init = cls.__dict__.get("__init__")
    if init is None:
        return []
    return [p.name for p in inspect.signature(init).parameters.values() if p.name not in ("self", "root", "kwargs")]


def cli_keys(cls) -> set[str]:
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "data")
    return set(vars(parser.get_defaults().data))


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_keyword_only_after_root_and_no_key_declared_twice(cls):
    init = cls.__dict__.get("__init__")
    if init is not None:
        params = [p for p in inspect.signature(init).parameters.values() if p.name not in ("self", "root")]
        assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in params), cls
    declared_above = {name for base in cls.__mro__[1:] for name in own_parameters(base)}
    assert not set(own_parameters(cls)) & declared_above, f"{cls.__name__} repeats its base's settings"


def test_no_positional_forwarding():
    """Every super().__init__ in bagoftricks/data passes at most root positionally; the rest by name."""
    calls = 0
    for file in Path(data.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "__init__":
                calls += 1
                assert len(node.args) <= 1, f"{file.name}:{node.lineno} forwards arguments by position"
    assert calls >= 5


def test_constructors_differ():
    signatures = [tuple(own_parameters(cls)) for cls in ALL if "__init__" in cls.__dict__]
    assert len(signatures) == len(set(signatures))


@pytest.mark.parametrize("cls", KEYS, ids=lambda c: c.__name__)
def test_every_cli_key_is_kept(cls):
    assert set(KEYS[cls]) <= cli_keys(cls)
    assert ("root" in cli_keys(cls)) == (cls is not data.DigitsDataModule)
    assert issubclass(cls, ImageDataModule)


def test_batch_size_zero_is_one_sentence_from_the_cli():
    """A plain int reaches the constructor (no union-type dump from the parser), which refuses it in one sentence.

    jsonargparse wraps errors raised while instantiating the optional ``data`` group in its own
    ValueError, raised ``from`` the original: the CLI's entry point prints that cause.
    """
    with pytest.raises(ValueError) as info:
        cli_main(["--data", "DigitsDataModule", "--data.batch_size", "0", "--trainer.logger", "false"], run=False)
    cause = info.value if isinstance(info.value, ConfigError) else info.value.__cause__
    assert isinstance(cause, ConfigError)
    assert str(cause) == "data.batch_size must be a whole number of at least 1, got 0."
