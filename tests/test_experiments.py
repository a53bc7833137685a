"""Every shipped training config under experiments/, each exactly once: stacked as the command on its first line
says (a diff file on top of its base), instantiated and fast-dev-run on its dataset's session miniature in the
genuine layout. New configs are found by the glob; ablation specs (files with ``steps``) are planned by
test_ablation.py. A fast dev run writes no checkpoint (bagoftricks/cli.py drops the callback)."""

from __future__ import annotations

import shlex

import pytest
import torch
import yaml

from bagoftricks import data
from bagoftricks.cli import cli_main
from conftest import DIGITS_BASE, EXPERIMENTS, TINY, fit

# data class -> (the session miniature fixture holding its layout, arguments that shrink it to a 2-core CI).
SIZE_32 = ["--data.image_size", "32"]
SMALL = ["--data.batch_size", "2", "--data.num_workers", "0"]
MINIATURES = {
    data.DigitsDataModule: (None, ["--data.batch_size", "16"]),  # embedded: scikit-learn's bundled digits
    data.ImagenetteDataModule: ("imagenette_root", [*SMALL, *SIZE_32]),
    data.ImagewoofDataModule: ("imagewoof_root", [*SMALL, *SIZE_32]),
    data.CIFAR100DataModule: ("cifar100_root", SMALL),
    data.CIFAR10DataModule: ("cifar10_root", SMALL),
    data.CUB200DataModule: ("cub200_root", [*SMALL, *SIZE_32, "--data.val_fraction", "0.5"]),
    data.ImageFolderDataModule: ("image_folder_root", [*SMALL, "--data.max_per_class", "4"]),
}
# A config that names no data.size reads whichever copy is under data.root, as a hand-resized one.
IMAGENETTE_COPY = "imagenette_copy_root"


def stacked(path) -> list[str]:
    """The ``-c`` configs of the command on a config's first line, in order."""
    words = shlex.split(path.read_text().splitlines()[0].lstrip("# "))
    return [words[i + 1] for i, word in enumerate(words) if word == "-c"]


def merged(configs: list[str]) -> dict:
    """The keys of the stacked files that decide how a config is run here."""
    out = {"data": None, "size": None, "teacher": False, "precision": None, "accelerator": None, "pretrained": False, "warmup": 0}
    for config in configs:
        raw = yaml.safe_load((EXPERIMENTS.parent / config).read_text()) or {}
        data_group, model, trainer = raw.get("data") or {}, raw.get("model") or {}, raw.get("trainer") or {}
        out["data"] = data_group.get("class_path", out["data"])
        out["size"] = (data_group.get("init_args") or {}).get("size", out["size"])
        out["teacher"] |= "teacher" in model
        out["pretrained"] |= bool(model.get("pretrained"))
        out["precision"] = trainer.get("precision", out["precision"])
        out["accelerator"] = trainer.get("accelerator", out["accelerator"])
        out["warmup"] = (raw.get("schedule") or {}).get("warmup_epochs", out["warmup"])
    return out


def is_spec(path) -> bool:
    return "steps" in (yaml.safe_load(path.read_text()) or {})


def is_slow(path) -> bool:
    """A ResNet-152 step (the distillation teachers) takes tens of seconds on a 2-core CPU."""
    configs = stacked(path)
    backbones = [((yaml.safe_load((EXPERIMENTS.parent / c).read_text()) or {}).get("model") or {}).get("backbone") for c in configs]
    return any(b and b.startswith("resnet152") for b in backbones)


TRAINING_CONFIGS = sorted(path for path in EXPERIMENTS.rglob("*.yaml") if not is_spec(path))
CASES = [
    pytest.param(path, id=str(path.relative_to(EXPERIMENTS)), marks=[pytest.mark.slow] if is_slow(path) else [])
    for path in TRAINING_CONFIGS
]


def test_every_dataset_has_a_config_and_a_miniature():
    classes = {merged(stacked(path))["data"] for path in TRAINING_CONFIGS}
    known = {f"bagoftricks.data.{cls.__name__}" for cls in MINIATURES}
    assert classes <= known, f"no miniature for {classes - known}: add a session fixture to conftest.py and a row to MINIATURES"
    assert known - classes <= {"bagoftricks.data.CIFAR10DataModule"}  # the pickled CIFAR-10 has no shipped config


@pytest.mark.parametrize("config", CASES)
def test_shipped_config_fast_dev_run(tmp_path, config, request, untrained_teacher, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a config's relative paths (checkpoint.dirpath: runs/...) land here, not in the repository
    configs = stacked(config)
    assert str(config.relative_to(EXPERIMENTS.parent)) == configs[-1], "the first line's command must end with this file"
    keys = merged(configs)
    datamodule = next(cls for cls in MINIATURES if f"bagoftricks.data.{cls.__name__}" == keys["data"])
    fixture, extra = MINIATURES[datamodule]
    if datamodule is data.ImagenetteDataModule and keys["size"] is None:
        fixture = IMAGENETTE_COPY
    args = [arg for path in configs for arg in ("-c", str(EXPERIMENTS.parent / path))]
    args += [*TINY, *extra, "--trainer.fast_dev_run", "1"]
    if fixture is not None:
        args += ["--data.root", str(request.getfixturevalue(fixture))]
    if keys["pretrained"]:
        args += ["--model.pretrained", "null"]  # no network in tests: a random init instead of ImageNet weights
    if keys["teacher"]:
        args += ["--model.teacher", str(untrained_teacher({data.CUB200DataModule: 200, data.CIFAR100DataModule: 100}.get(datamodule, 10)))]
    if keys["precision"] == "16-mixed" and not torch.cuda.is_available():
        args += ["--trainer.precision", "bf16-mixed"]  # FP16 autocast needs a GPU
    if keys["accelerator"] == "gpu" and not torch.cuda.is_available():
        args += ["--trainer.accelerator", "cpu"]
    if keys["warmup"] > 1:
        args += ["--schedule.warmup_epochs", "1"]  # a one-step fast dev run has room for one epoch of warmup at most
    cli = fit(tmp_path, *args)
    assert type(cli.datamodule) is datamodule
    assert cli.model.hparams.num_classes == cli.datamodule.num_classes
    # One training step and one validation batch ran: the weights moved, and nothing was saved.
    assert cli.trainer.global_step == 1 and cli.trainer.state.finished
    assert "val/top1" in cli.trainer.callback_metrics
    assert not list(tmp_path.rglob("*.ckpt"))


def test_fast_dev_run_writes_no_checkpoint_for_a_later_ckpt_path_last(tmp_path, monkeypatch):
    """Lightning says a fast dev run suppresses checkpointing; ModelCheckpoint(save_last) wrote last.ckpt into the
    working directory anyway (a last-vN.ckpt per call), which a later `fit --ckpt_path last` then resumed from."""
    monkeypatch.chdir(tmp_path)  # as a user runs it: no default_root_dir, no logger of the test's choosing
    flags = ["fit", "-c", str(DIGITS_BASE), *TINY, "--trainer.logger", "false"]
    for _ in range(2):
        cli_main([*flags, "--trainer.fast_dev_run", "true"])
    assert not list(tmp_path.rglob("*.ckpt"))
    # Same folder, checkpointing on but nothing written (save_top_k 0): `last` finds nothing to resume from.
    cli = cli_main([*flags, "--ckpt_path", "last", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0",
                    "--checkpoint.save_top_k", "0", "--checkpoint.save_last", "false"])  # fmt: skip
    assert cli.trainer.ckpt_path is None and cli.trainer.global_step == 1
