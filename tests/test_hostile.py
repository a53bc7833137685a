"""Hostile input (issue 27), one table per class of fault: each input is refused in one sentence that
names the key, file or value and the fix, within seconds and with nothing lost on disk, or, where
it is legitimate, gives the right result. Everything goes through ``cli_main``, as the shell does."""

from __future__ import annotations

import functools
import resource
import shutil
import signal
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from bagoftricks import ClassificationModule
from bagoftricks.cli import check_monitors, cli_main
from bagoftricks.data import DigitsDataModule
from bagoftricks.errors import ConfigError, DataError, UserError
from conftest import DIGITS_BASE, NARROW, TINY, fit

FAST = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"]


def refused(tmp_path: Path, args: list[str], error: type[Exception], message: str, run: bool = True, seconds: float = 120, checkpoint: bool = False) -> None:
    """``bagoftricks fit -c base.yaml ARGS`` raises ``error`` matching ``message`` within ``seconds`` (generous by
    default: a refusal at fit start follows the data setup, slow on a loaded 2-vCPU machine)."""
    start = time.monotonic()
    with pytest.raises(error, match=message) as caught:
        fit(tmp_path, "-c", str(DIGITS_BASE), *TINY, *args, run=run, checkpoint=checkpoint)
    assert "\n" not in str(caught.value), "one sentence, one line"
    assert time.monotonic() - start < seconds


# ---------------------------------------------------------------- config files given with -c


def billion_laughs(levels: int = 9) -> str:
    """Nested anchors, each list ten aliases of the one before: 10**levels values from ~600 bytes."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nmodel:\n  backbone_kwargs:\n    bomb: *a{levels - 1}\n"


CONFIG_FILES = {
    "billion laughs": (billion_laughs().encode(), "expands its YAML aliases .* past 100,000 values"),
    "self-referential anchor": (b"model:\n  backbone_kwargs: &a {deeper: *a}\n", "expands its YAML aliases"),
    "utf-16": ("trainer:\n  max_epochs: 1\n".encode("utf-16"), "is UTF-16 or UTF-32 text; save it as UTF-8"),
    "utf-16 without BOM": ("trainer:\n  max_epochs: 1\n".encode("utf-16-le"), "is UTF-16 or UTF-32 text"),
    "binary": (bytes(range(256)) * 4, r"is binary \(it holds NUL bytes\)"),
    "latin-1": ("model:\n  backbone: r\xe9snet18\n".encode("latin-1"), "is not UTF-8 text .*save it as UTF-8"),
    "2 MB": (b"# padding\n" * 200_000, r"is 2,000,000 bytes, too big for a config"),
}


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_config_file_is_refused_within_seconds(tmp_path, name):
    content, message = CONFIG_FILES[name]
    path = tmp_path / "hostile.yaml"
    path.write_bytes(content)
    refused(tmp_path, ["-c", str(path)], ConfigError, message, run=False, seconds=10)


def test_deeply_nested_config_is_refused_by_the_parser(tmp_path, capsys):
    """libyaml stops at its nesting limit, and jsonargparse prints that as a usage error."""
    path = tmp_path / "deep.yaml"
    path.write_bytes(b"model:\n  backbone_kwargs: {x: " + b"[" * 50_000 + b"]" * 50_000 + b"}\n")
    start = time.monotonic()
    with pytest.raises(SystemExit):
        fit(tmp_path, "-c", str(path), run=False)
    assert "exceeded maximum nesting depth" in capsys.readouterr().err and time.monotonic() - start < 10


def test_a_config_with_a_few_aliases_is_legitimate(tmp_path):
    path = tmp_path / "aliases.yaml"
    path.write_text("trainer:\n  limit_val_batches: &n 3\n  limit_test_batches: *n\n")
    cli = fit(tmp_path, "-c", str(DIGITS_BASE), "-c", str(path), *TINY, run=False)
    assert cli.trainer.limit_val_batches == cli.trainer.limit_test_batches == 3


# ---------------------------------------------------------------- values that make no sense


VALUES = [
    # (flags, error, message); all refused when the CLI is built, before any data is read
    (["--schedule.gamma", "-1"], ConfigError, r"schedule.gamma must be > 0 .*got -1"),
    (["--schedule.gamma", "0"], ConfigError, r"schedule.gamma must be > 0"),
    (["--schedule.final_lr_factor", "-5"], ConfigError, r"schedule.final_lr_factor must be in \[0, 1\] .*got -5"),
    (["--schedule.final_lr_factor", "2"], ConfigError, r"schedule.final_lr_factor must be in \[0, 1\]"),
    (["--schedule.milestones", "[-1, 3]"], ConfigError, r"schedule.milestones must be epochs >= 0"),
    (["--schedule.name", "onecycle", "--schedule.div_factor", "0"], ConfigError, r"schedule.div_factor must be > 0"),
    (["--schedule.name", "onecycle", "--schedule.final_div_factor", "0"], ConfigError, r"schedule.final_div_factor must be > 0"),
    (["--model.optimizer.init_args.lr", "-1"], ConfigError, r"model.optimizer cannot be built \(Invalid learning rate: -1"),
    (["--model.optimizer.init_args.momentum", "-0.9"], ConfigError, r"model.optimizer cannot be built \(Invalid momentum"),
    (["--model.optimizer.init_args.weight_decay", "-1"], ConfigError, r"model.optimizer cannot be built \(Invalid weight_decay"),
    (["--model.backbone_kwargs", "{num_classes: 5}"], ConfigError, r"model.backbone_kwargs may not set num_classes; use model.num_classes"),
    (["--model.backbone_kwargs", "{pretrained: x.pt}"], ConfigError, r"model.backbone_kwargs may not set pretrained"),
    (["--model.backbone_kwargs", "{depth: 3}"], ConfigError, r"model.backbone_kwargs .*Unknown model flag\(s\) depth"),
    (["--seed_everything", "-1"], ConfigError, r"seed_everything must be in \[0, 4294967295\] .*got -1"),
    (["--seed_everything", str(2**32)], ConfigError, r"seed_everything must be in \[0, 4294967295\]"),
    (["--trainer.limit_train_batches", "1.5"], ConfigError, r"trainer.limit_train_batches must be a fraction in \[0, 1\] .*got 1.5"),
    (["--trainer.limit_val_batches", "-2"], ConfigError, r"trainer.limit_val_batches must be at least 0"),
    (["--trainer.accumulate_grad_batches", "0"], ConfigError, r"trainer.accumulate_grad_batches must be a whole number >= 1"),
    (["--trainer.devices", "0"], ConfigError, r"trainer.devices must be at least 1"),
    (["--trainer.devices", "-3"], ConfigError, r"trainer.devices must be at least 1, -1 \(all\)"),
    (["--trainer.val_check_interval", "1.5"], ConfigError, r"trainer.val_check_interval as a fraction .*in \(0, 1\]"),
]

# Refused by the parser itself (jsonargparse): a usage error on stderr and exit code 2, within seconds.
PARSER = [
    (["--model.backbone_kwargs", "{" + ", ".join(f"k{i}: &a{i} [" + ", ".join([f"*a{i - 1}" if i else "x"] * 10) + "]" for i in range(9)) + "}"],
     "expands its YAML aliases"),  # a billion laughs inline
    (["--schedule.warmup_epochs", "nan"], "Expected a <class 'float'>. Got value: nan"),
    (["--schedule.warmup_epochs", "inf"], "Expected a <class 'float'>. Got value: inf"),
    (["--model.label_smoothing", "nan"], "Expected a <class 'float'>. Got value: nan"),
    (["--trainer.precision", "15"], 'Parser key "trainer.precision"'),
    (["--trainer.max_epochs", "1e400"], 'Parser key "trainer.max_epochs"'),
    (["--model.lr", "0.1"], "unrecognized arguments: --model.lr 0.1"),  # not expanded to model.lr_scaling
]  # fmt: skip


@pytest.mark.parametrize(("flags", "message"), PARSER, ids=lambda v: " ".join(v)[:40] if isinstance(v, list) else "")
def test_value_the_parser_refuses(tmp_path, capsys, flags, message):
    start = time.monotonic()
    with pytest.raises(SystemExit):
        fit(tmp_path, "-c", str(DIGITS_BASE), *flags, run=False)
    err = capsys.readouterr().err
    assert message in err and "usage:" not in err and time.monotonic() - start < 10  # the error, not 100 lines of usage


@pytest.mark.parametrize(("flags", "error", "message"), VALUES, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_impossible_value_is_refused_when_the_cli_is_built(tmp_path, flags, error, message):
    refused(tmp_path, flags, error, message, run=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_accelerator_without_a_gpu_is_refused(tmp_path):
    refused(tmp_path, ["--trainer.accelerator", "gpu"], ConfigError, r"trainer.accelerator gpu needs a CUDA GPU .*use trainer.accelerator cpu", run=False)


# Refused once the run starts, before any step trains (what they need only the fit knows).
AT_FIT_START = [
    (["--trainer.limit_train_batches", "0"], ConfigError, r"trainer.limit_train_batches 0 trains nothing"),
    (["--checkpoint.monitor", "val/acc"], ConfigError, r"checkpoint.monitor val/acc is not a metric this run logs; use one of .*val/top1"),
    (["--checkpoint.monitor", "val_ema/top1"], ConfigError, r"checkpoint.monitor val_ema/top1 is not a metric"),  # no EMA on
    (["--trainer.val_check_interval", "500"], ConfigError, r"trainer.val_check_interval 500 is more batches than an epoch has \(1\)"),
    (["--model.mixup_alpha", "0.2", "--model.mixup_off_epochs", "1"], ConfigError, r"model.mixup_off_epochs 1 covers all 1 epochs"),
    (["--data.image_size", "120000"], UserError, r"data.image_size 120000 makes one batch of 16 images .* lower data.image_size or data.batch_size"),
]


@pytest.mark.parametrize(("flags", "error", "message"), AT_FIT_START, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_impossible_run_is_refused_before_training(tmp_path, flags, error, message):
    refused(tmp_path, [*FAST, *flags], error, message, checkpoint=True)
    assert not list(tmp_path.rglob("*.ckpt"))


def test_legitimate_neighbours_are_accepted(tmp_path):
    """The values next to the refused ones: an EMA metric with EMA on, mixing paused for the last of two epochs."""
    cli = fit(tmp_path, "-c", str(DIGITS_BASE), *TINY, "--model.ema_decay", "0.9", "--checkpoint.monitor", "val_ema/top1",
              run=False, checkpoint=True)  # fmt: skip
    check_monitors(cli.model, cli.trainer.checkpoint_callbacks)
    for flags in (["--schedule.gamma", "1.0", "--schedule.final_lr_factor", "1.0"], ["--trainer.limit_train_batches", "1.0"]):
        fit(tmp_path, "-c", str(DIGITS_BASE), *TINY, *flags, run=False)
    cli = fit(tmp_path, "-c", str(DIGITS_BASE), *TINY, *FAST, "--trainer.max_epochs", "2", "--model.mixup_alpha", "0.2",
              "--model.mixup_off_epochs", "1")  # fmt: skip
    assert cli.trainer.current_epoch == 2 and cli.model.tricks.mixing_paused


# ---------------------------------------------------------------- checkpoint files given to --ckpt_path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real last.ckpt of the digits recipe (a narrow ResNet-18), one step trained."""
    out = tmp_path_factory.mktemp("run")
    fit(out, "-c", str(DIGITS_BASE), *TINY, *NARROW, *FAST, "--checkpoint.dirpath", str(out / "ckpt"), checkpoint=True)
    return out / "ckpt" / "last.ckpt"


def subcommand(tmp_path: Path, name: str, *args: str):
    return cli_main([name, "-c", str(DIGITS_BASE), *TINY, *NARROW, *FAST, *args, "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"])


def test_checkpoint_files_that_cannot_resume(tmp_path, checkpoint):
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    torch.save(state, tmp_path / "plain.pt")  # a plain state dict of the module
    torch.save({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}, tmp_path / "backbone.pt")
    truncated = tmp_path / "killed" / "last.ckpt"  # what a run killed while writing left before saves were atomic
    truncated.parent.mkdir()
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    cases = [
        (["--ckpt_path", str(tmp_path / "plain.pt")], ConfigError, r"holds weights only, not a training checkpoint.*--model.pretrained"),
        (["--ckpt_path", str(tmp_path / "backbone.pt")], ConfigError, r"holds weights only.*--model.pretrained"),
        (["--ckpt_path", str(checkpoint), "--model.backbone", "resnet34"], ConfigError, r"does not fit this config's model.backbone resnet34"),
        (["--ckpt_path", str(checkpoint), "--model.backbone", "resnet18d"], ConfigError, r"does not fit this config's model.backbone resnet18d"),
        (["--ckpt_path", "best"], ConfigError, r"--ckpt_path best names the best checkpoint of a fit run earlier in this same process"),
        (["--ckpt_path", str(truncated)], DataError, r"is not a file written by torch.save"),
        (["--ckpt_path", "last", "--checkpoint.dirpath", str(truncated.parent)], DataError, r"killed/last.ckpt is not a file written by torch.save"),
    ]  # fmt: skip
    count = 0
    for name in ("validate", "fit"):
        for args, error, message in cases:
            if name == "validate" and "last" in args:
                continue  # Lightning resolves `last` for fit only
            with pytest.raises(error, match=message):
                subcommand(tmp_path / "out", name, *args)
            count += 1
    assert count == 13
    assert not list((tmp_path / "out").rglob("*.ckpt"))
    # The legitimate ones: the weights given as model.pretrained, the checkpoint itself.
    cli = subcommand(tmp_path / "out", "validate", "--model.pretrained", str(tmp_path / "backbone.pt"))
    assert torch.equal(cli.model.backbone.fc.weight, state["backbone.fc.weight"])
    assert subcommand(tmp_path / "out", "validate", "--ckpt_path", str(checkpoint)).trainer.state.finished


class NoSpace:
    """Writes past ``limit`` bytes fail with EFBIG, as on a full disk (SIGXFSZ ignored, so the write returns the error)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __enter__(self):
        self.saved = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, self.saved[0][1]))

    def __exit__(self, *exc) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, self.saved[0])
        signal.signal(signal.SIGXFSZ, self.saved[1])


def test_fit_on_a_full_disk_leaves_the_last_checkpoint_intact(tmp_path, checkpoint):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    shutil.copy(checkpoint, folder / "last.ckpt")
    before = (folder / "last.ckpt").read_bytes()
    with NoSpace(1 << 20), pytest.raises(UserError, match=r"Writing checkpoint .*ckpt failed \(File too large\); free space there or set checkpoint.dirpath"):
        fit(tmp_path, "-c", str(DIGITS_BASE), *TINY, *NARROW, *FAST, "--checkpoint.dirpath", str(folder), checkpoint=True)
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]  # no truncated file, no leftover .partial
    assert (folder / "last.ckpt").read_bytes() == before


# ---------------------------------------------------------------- the module under a plain Trainer


@pytest.mark.parametrize(
    ("factory", "fused"),
    [(lambda p: torch.optim.SGD(p, lr=0.1), None), (functools.partial(torch.optim.SGD, lr=0.1), True), (torch.optim.AdamW, True)],
    ids=["lambda", "partial", "class"],
)
def test_optimizer_factories_under_a_plain_trainer(tmp_path, factory, fused):
    """fused=True goes only to a factory that takes it; a lambda gets its own settings unchanged."""
    module = ClassificationModule(num_classes=10, optimizer=factory)
    data = DigitsDataModule(batch_size=16, image_size=32)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 1
    assert trainer.optimizers[0].defaults["fused"] is fused


def test_an_optimizer_with_an_invalid_value_is_refused_when_the_module_is_built():
    with pytest.raises(ConfigError, match=r"model.optimizer cannot be built \(Invalid learning rate: -1"):
        ClassificationModule(optimizer=lambda p: torch.optim.SGD(p, lr=-1))
