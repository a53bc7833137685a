"""The CLI as a user drives it: help, printed configs, every shipped YAML fast-dev-run, clean errors."""

from __future__ import annotations

import sys

import lightning as L
import pytest
import torch
import yaml

from bagoftricks.__main__ import main
from bagoftricks.cli import cli_main
from bagoftricks.errors import ConfigError
from conftest import DIGITS_BASE, EXPERIMENTS, NARROW, TINY, column, fit, read_metrics


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for subcommand in ("fit", "validate", "test", "predict"):
        assert subcommand in out


@pytest.mark.filterwarnings("always")  # not the suite's filter, which ignores this warning for the tests' own cli_main(args)
def test_the_console_script_reads_sys_argv_without_warning(monkeypatch, capsys, recwarn):
    monkeypatch.setattr(sys, "argv", ["bagoftricks", "fit", "-c", str(DIGITS_BASE), "--print_config"])
    with pytest.raises(SystemExit):
        main()
    assert yaml.safe_load(capsys.readouterr().out)["model"]["backbone"]
    assert not [w for w in recwarn if "LightningCLI's args parameter" in str(w.message)]


def test_an_ablation_spec_given_to_fit_names_the_command_that_runs_it():
    spec = EXPERIMENTS / "digits" / "ablation.yaml"
    with pytest.raises(ConfigError) as info:
        cli_main(["fit", "-c", str(spec)], run=False)
    assert str(info.value) == f"{spec} is an ablation spec, not a config; run it with `bagoftricks ablate {spec}`."


def test_print_config_has_schedule_and_links(capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "-c", str(DIGITS_BASE), "--model.label_smoothing", "0.1", "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["schedule"]["name"] == "step"
    assert config["model"]["label_smoothing"] == 0.1
    assert config["data"]["class_path"] == "bagoftricks.data.DigitsDataModule"
    assert config["checkpoint"]["save_last"] is True


def test_shipped_configs_start_with_their_command():
    for path in EXPERIMENTS.rglob("*.yaml"):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# bagoftricks "), f"{path} does not start with the command that runs it"
        assert str(path.relative_to(EXPERIMENTS.parent)) in first, f"{path}: the command names another file"


def test_validate_and_test_from_checkpoint_reproduce_the_fitted_weights(tmp_path):
    """The checkpoint's weights are what validate and test evaluate: validate --ckpt_path gives the val/top1 and
    val/loss the fit logged at its last epoch, test --ckpt_path the test metrics of the fitted model in memory.
    (The digits shipped configs are fast-dev-run by test_experiments.py.)"""
    flags = ["-c", str(DIGITS_BASE), *TINY, *NARROW, "--trainer.limit_val_batches", "3", "--trainer.limit_test_batches", "3"]
    fitted = fit(tmp_path / "fit", *flags, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4",
                 "--checkpoint.save_top_k", "0", "--checkpoint.save_weights_only", "true", checkpoint=True)  # fmt: skip
    logged = read_metrics(next((tmp_path / "fit").rglob("metrics.csv")))
    in_memory = fitted.trainer.test(fitted.model, datamodule=fitted.datamodule, verbose=False)[0]
    ckpt = str(next((tmp_path / "fit").rglob("last.ckpt")))
    results = {}
    for subcommand in ("validate", "test"):
        argv = [subcommand, *flags, "--ckpt_path", ckpt, "--trainer.default_root_dir", str(tmp_path / subcommand), "--trainer.logger", "false"]
        results[subcommand] = {k: v.item() for k, v in cli_main(argv).trainer.callback_metrics.items()}
    assert results["validate"]["val/top1"] == pytest.approx(column(logged, "val/top1")[-1], abs=1e-6)
    assert results["validate"]["val/loss"] == pytest.approx(column(logged, "val/loss")[-1], rel=1e-5)
    assert results["test"]["test/loss"] == pytest.approx(in_memory["test/loss"], rel=1e-5)
    assert results["test"]["test/top1"] == pytest.approx(in_memory["test/top1"], abs=1e-6)


@pytest.mark.parametrize(
    ("flag", "words"),
    [
        (["--model.backbone", "resnet05"], "resnet50"),
        (["--model.label_smoothing", "1.5"], "model.label_smoothing"),
        (["--model.mixup_alpha", "-1"], "model.mixup_alpha"),
        (["--model.distill_temperature", "0"], "model.distill_temperature"),
        (["--model.layer_lr_decay", "0"], "model.layer_lr_decay must be in (0, 1]"),
        (["--model.teacher", "missing.ckpt"], "missing.ckpt"),
        (["--schedule.warmup_epochs", "50"], "schedule.warmup_epochs"),
        (["--model.backbone_kwargs", "{stem: round}"], "stem"),
        (["--trainer.max_epochs", "0"], "trainer.max_epochs"),
        (["--data.image_size", "12"], "data.image_size 12 is smaller than model.backbone resnet18 takes"),
        (["--data.image_size", "3"], "data.image_size must be"),
        (["--data.test_image_size", "12"], "data.test_image_size 12 is smaller than model.backbone resnet18 takes"),
        (["--data.test_image_size", "0"], "data.test_image_size must be"),
        (["--data.batch_size", "0"], "data.batch_size"),
        (["--model.teacher", "."], "is a directory"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, flag, words):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(DIGITS_BASE), *TINY, "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path), *flag])
    message = str(exit_info.value.code) + capsys.readouterr().err
    assert words in message
    assert "Traceback" not in message


class Unlisted:
    pass


def test_checkpoint_needing_unpickling_is_refused(tmp_path, capsys, digits_teacher):
    ckpt = torch.load(digits_teacher, weights_only=True)  # a checkpoint this CLI wrote
    ckpt["extra"] = Unlisted()  # a class outside the weights-only allow-list
    path = tmp_path / "pickled.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "-c", str(DIGITS_BASE), *TINY, "--ckpt_path", str(path), "--trainer.default_root_dir", str(tmp_path)])
    assert "--weights_only false" in str(exit_info.value.code)


def test_checkpoint_that_is_not_one_is_one_line(tmp_path):
    (tmp_path / "empty.ckpt").touch()
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    for path, words in ((tmp_path / "empty.ckpt", "not a file written by torch.save"), (tmp_path / "notes.ckpt", "not a file written by torch.save"),
                        (tmp_path, "is a directory")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(["validate", "-c", str(DIGITS_BASE), *TINY, "--ckpt_path", str(path), "--trainer.default_root_dir", str(tmp_path)])
        assert words in str(exit_info.value.code) and str(path) in str(exit_info.value.code)


class Boom(L.Callback):
    """A user's own callback with a bug in it."""

    def on_train_start(self, trainer, pl_module):
        raise ValueError("a bug in the user's callback")


def test_a_bug_keeps_its_traceback_and_a_config_mistake_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "Boom", Boom, raising=False)
    argv = ["fit", "-c", str(DIGITS_BASE), *TINY, "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path)]
    with pytest.raises(ValueError, match="a bug in the user's callback"):  # not SystemExit: the traceback is printed
        main([*argv, "--trainer.callbacks", f"{__name__}.Boom"])
    with pytest.raises(SystemExit, match="model.label_smoothing must be in"):
        main([*argv, "--model.label_smoothing", "2"])


def test_resume_uses_the_given_config_and_refuses_another_network(tmp_path, capsys):
    flags = ["-c", str(DIGITS_BASE), *TINY, *NARROW, "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    fit(tmp_path / "a", *flags, "--trainer.max_epochs", "1", "--checkpoint.save_top_k", "0", checkpoint=True)  # last.ckpt only
    ckpt = next((tmp_path / "a").rglob("last.ckpt"))
    resumed = fit(tmp_path / "b", *flags, "--trainer.max_epochs", "2", "--model.label_smoothing", "0.3", "--ckpt_path", str(ckpt))
    assert resumed.model.tricks.label_smoothing == 0.3 and resumed.trainer.current_epoch == 2
    saved = yaml.safe_load(next((tmp_path / "b").rglob("config.yaml")).read_text())
    assert saved["model"]["label_smoothing"] == 0.3
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *flags, "--model.backbone", "resnet18d", "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp_path / "c")])
    assert "does not fit this config's model.backbone resnet18d" in str(exit_info.value.code)
    assert "trained as resnet18 with 10 classes" in str(exit_info.value.code)


@pytest.mark.parametrize(
    "flags",
    [["--trainer.enable_checkpointing", "false"], ["--trainer.logger", "false"], ["--trainer.max_steps", "2"], ["--trainer.max_time", "00:00:01:00"]],
    ids=["no_checkpointing", "no_logger", "max_steps", "max_time"],
)
def test_lightning_switches_work(tmp_path, flags):
    argv = ["fit", "-c", str(DIGITS_BASE), *TINY, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
            "--trainer.limit_val_batches", "1", "--trainer.default_root_dir", str(tmp_path), *flags,
            "--checkpoint.save_top_k", "0", "--checkpoint.save_last", "false"]  # fmt: skip
    cli = cli_main(argv)
    assert cli.trainer.state.finished and cli.trainer.global_step == 2
    if "false" in flags and "--trainer.enable_checkpointing" in flags:
        assert not list(tmp_path.rglob("*.ckpt"))
