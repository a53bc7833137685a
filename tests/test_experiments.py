"""Every shipped training config (each base and each diff, stacked as its first line says) instantiated and
fast-dev-run on a miniature in its dataset's genuine layout; the digits configs are run by test_cli.py."""

from __future__ import annotations

import shlex

import pytest
import torch
import yaml
from miniatures import make_cifar100, make_cub200, make_image_folder, make_imagenette

from bagoftricks import ClassificationModule, data
from conftest import EXPERIMENTS, TINY, fit

# Tiny inputs so a ResNet-152 step fits a 2-core CI; everything else is the shipped recipe.
SMALL = [*TINY, "--data.batch_size", "2", "--data.num_workers", "0"]
SIZE_32 = ["--data.image_size", "32"]
# data class -> (miniature in its layout, extra arguments)
DATASETS = {
    data.ImagenetteDataModule: (lambda root: make_imagenette(root, "imagenette2-160"), SIZE_32),
    data.ImagewoofDataModule: (lambda root: make_imagenette(root, "imagewoof2-160"), SIZE_32),
    data.CIFAR100DataModule: (lambda root: make_cifar100(root, n_train=200), []),
    data.CUB200DataModule: (make_cub200, [*SIZE_32, "--data.val_fraction", "0.5"]),
    # The shared CIFAR-10 copy's layout: train/<class>/, test/<class>/ of 32-px JPEGs.
    data.ImageFolderDataModule: (lambda root: make_image_folder(root / "cifar10", per_class=6), ["--data.max_per_class", "4"]),
}


def stacked(path) -> list[str]:
    """The ``-c`` configs of the command on a config's first line, in order."""
    words = shlex.split(path.read_text().splitlines()[0].lstrip("# "))
    return [words[i + 1] for i, word in enumerate(words) if word == "-c"]


def merged(configs: list[str]) -> dict:
    """The keys of the stacked files that decide how a config is run here."""
    out = {"data": None, "teacher": False, "precision": None, "accelerator": None, "pretrained": False, "warmup": 0}
    for config in configs:
        raw = yaml.safe_load((EXPERIMENTS.parent / config).read_text()) or {}
        out["data"] = (raw.get("data") or {}).get("class_path", out["data"])
        model, trainer = raw.get("model") or {}, raw.get("trainer") or {}
        out["teacher"] |= "teacher" in model
        out["pretrained"] |= bool(model.get("pretrained"))
        out["precision"] = trainer.get("precision", out["precision"])
        out["accelerator"] = trainer.get("accelerator", out["accelerator"])
        out["warmup"] = (raw.get("schedule") or {}).get("warmup_epochs", out["warmup"])
    return out


TRAINING_CONFIGS = sorted(
    path
    for path in EXPERIMENTS.rglob("*.yaml")
    if path.parent.name != "digits" and "steps" not in (yaml.safe_load(path.read_text()) or {})
)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Untrained teacher checkpoints in the layout ClassificationModule's checkpoints have, per class count."""
    root, paths = tmp_path_factory.mktemp("teachers"), {}
    for num_classes in (10, 200):
        module = ClassificationModule("resnet18", num_classes=num_classes)
        paths[num_classes] = root / f"teacher{num_classes}.ckpt"
        torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, paths[num_classes])
    return paths


def test_every_dataset_has_a_config():
    classes = {merged(stacked(path))["data"] for path in TRAINING_CONFIGS}
    assert {f"bagoftricks.data.{cls.__name__}" for cls in DATASETS} <= classes


@pytest.mark.parametrize("config", TRAINING_CONFIGS, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_shipped_config_fast_dev_run(tmp_path, config, teachers):
    configs = stacked(config)
    assert str(config.relative_to(EXPERIMENTS.parent)) == configs[-1]
    keys = merged(configs)
    datamodule = next(cls for cls in DATASETS if f"bagoftricks.data.{cls.__name__}" == keys["data"])
    make, extra = DATASETS[datamodule]
    root = make(tmp_path / "data")
    args = [arg for path in configs for arg in ("-c", str(EXPERIMENTS.parent / path))]
    args += ["--data.root", str(root), *SMALL, *extra, "--trainer.fast_dev_run", "1"]
    if keys["pretrained"]:
        args += ["--model.pretrained", "null"]  # no network in tests: a random init instead of ImageNet weights
    if keys["teacher"]:
        args += ["--model.teacher", str(teachers[200 if datamodule is data.CUB200DataModule else 10])]
    if keys["precision"] == "16-mixed" and not torch.cuda.is_available():
        args += ["--trainer.precision", "bf16-mixed"]  # FP16 autocast needs a GPU
    if keys["accelerator"] == "gpu" and not torch.cuda.is_available():
        args += ["--trainer.accelerator", "cpu"]
    if keys["warmup"] > 1:
        args += ["--schedule.warmup_epochs", "1"]  # a one-step fast dev run has room for one epoch of warmup at most
    cli = fit(tmp_path, *args)
    assert cli.trainer.state.finished
    assert type(cli.datamodule) is datamodule
    assert cli.model.hparams.num_classes == cli.datamodule.num_classes
