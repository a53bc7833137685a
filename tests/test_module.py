"""ClassificationModule and the LR schedule callback: tricks wired in, alone and together, on real digits."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from bagoftricks import ClassificationModule
from bagoftricks.models import model_stats
from bagoftricks.tricks import lr_at
from conftest import DIGITS_BASE, TINY, column, fit, read_metrics

TRICKS = {
    "warmup": ["--schedule.warmup_epochs", "1"],
    "cosine": ["--schedule.name", "cosine"],
    "onecycle": ["--schedule.name", "onecycle"],
    "label_smoothing": ["--model.label_smoothing", "0.1"],
    "mixup": ["--model.mixup_alpha", "0.2"],
    "cutmix": ["--model.cutmix_alpha", "1.0"],
    "no_bias_decay": ["--model.no_bias_decay", "true"],
    "zero_gamma": ["--model.zero_init_last", "true"],
    "resnet_d": ["--model.backbone", "resnet18d"],
    "linear_scaling": ["--model.lr_scaling", "linear"],
    "layer_lr_decay": ["--model.layer_lr_decay", "0.5"],
    "se_mish": ["--model.backbone_kwargs", "{se: true, act: mish}"],
    "adam": ["--model.optimizer", "Adam", "--model.optimizer.lr", "0.001"],
    "nadam": ["--model.optimizer", "NAdam"],
    "sgd_nesterov": ["--model.optimizer", "SGD", "--model.optimizer.lr", "0.1", "--model.optimizer.momentum", "0.9", "--model.optimizer.nesterov", "true"],
    "bf16": ["--trainer.precision", "bf16-mixed"],
    "nchw": ["--model.channels_last", "false"],
}
ALL = [*TRICKS["warmup"], *TRICKS["cosine"], *TRICKS["label_smoothing"], *TRICKS["mixup"], *TRICKS["cutmix"],
       *TRICKS["no_bias_decay"], *TRICKS["zero_gamma"], *TRICKS["resnet_d"], *TRICKS["linear_scaling"]]  # fmt: skip


@pytest.mark.parametrize("flags", [*TRICKS.values(), ALL], ids=[*TRICKS, "all"])
def test_trick_fast_dev_run(tmp_path, flags):
    cli = fit(tmp_path, "-c", str(DIGITS_BASE), *TINY, *flags, "--trainer.fast_dev_run", "2")
    assert cli.trainer.state.finished
    assert math.isfinite(cli.trainer.callback_metrics["train/loss"].item())


def test_distillation_all_tricks(tmp_path, digits_teacher):
    flags = [*ALL, "--model.teacher", str(digits_teacher), "--model.distill_temperature", "20"]
    cli = fit(tmp_path, "-c", str(DIGITS_BASE), *TINY, *flags, "--trainer.fast_dev_run", "2")
    teacher = cli.model.teacher
    assert not teacher.training and all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not any(k.startswith("teacher") for k in cli.model.state_dict())  # not saved with the student


def test_teacher_with_other_classes_is_refused(tmp_path):
    other = ClassificationModule("resnet18", num_classes=7)
    path = tmp_path / "teacher.pt"
    torch.save(other.backbone.state_dict(), path)
    with pytest.raises(ValueError, match="7 classes but the data has 10"):
        ClassificationModule("resnet18", num_classes=10, teacher=str(path), teacher_backbone="resnet18")


def test_optimizer_groups_follow_no_bias_decay(tmp_path):
    cli = fit(tmp_path, "-c", str(DIGITS_BASE), *TINY, "--model.no_bias_decay", "true", "--model.lr_scaling", "linear", "--trainer.fast_dev_run", "1")
    optimizer = cli.trainer.optimizers[0]
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for p in cli.model.backbone.parameters():
        assert (id(p) in decayed) == (p.ndim > 1)
    # With linear scaling the YAML's lr (0.025) is per 256 images; the batch is 16.
    assert optimizer.param_groups[0]["base_lr"] == pytest.approx(0.025 * 16 / 256)


class StopAfterFirstEpoch(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def test_resumed_run_equals_straight_run(tmp_path):
    """Stopped after epoch 1 and resumed with --ckpt_path: the same LRs, losses and accuracies."""
    flags = ["-c", str(DIGITS_BASE), *TINY, "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "4",
             "--trainer.limit_val_batches", "2", "--schedule.name", "cosine", "--schedule.warmup_epochs", "1",
             "--model.mixup_alpha", "0.2"]  # fmt: skip
    straight = fit(tmp_path / "straight", *flags)
    expected = read_metrics(next((tmp_path / "straight").rglob("metrics.csv")))

    stopped = fit(tmp_path / "stopped", *flags, run=False)
    stopped.trainer.callbacks.append(StopAfterFirstEpoch())
    stopped.trainer.fit(stopped.model, datamodule=stopped.datamodule)
    ckpt = next((tmp_path / "stopped").rglob("last.ckpt"))
    fit(tmp_path / "resumed", *flags, "--ckpt_path", str(ckpt))
    got = read_metrics(next((tmp_path / "stopped").rglob("metrics.csv")))
    got += read_metrics(next((tmp_path / "resumed").rglob("metrics.csv")))

    assert straight.trainer.global_step == 12
    closed_form = [lr_at(s, 12, 0.025, warmup_steps=4, schedule="cosine") for s in range(12)]
    assert column(expected, "train/lr") == pytest.approx(closed_form)
    for key in ("train/lr", "train/loss", "val/top1", "val/loss"):
        assert column(got, key) == column(expected, key), key


def test_same_seed_same_metrics(tmp_path):
    flags = ["-c", str(DIGITS_BASE), *TINY, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
             "--trainer.limit_val_batches", "2", "--model.cutmix_alpha", "1.0", "--model.mixup_alpha", "0.2"]  # fmt: skip
    runs = []
    for i in range(2):
        fit(tmp_path / str(i), *flags)
        runs.append(read_metrics(next((tmp_path / str(i)).rglob("metrics.csv"))))
    assert runs[0] == runs[1]
    assert len(column(runs[0], "train/loss")) == 3


def test_non_finite_loss_stops_with_the_step(tmp_path):
    cli = fit(tmp_path, "-c", str(DIGITS_BASE), *TINY, "--trainer.fast_dev_run", "1", run=False)
    with torch.no_grad():
        cli.model.backbone.fc.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="train/loss is nan at step 0.*FP16 overflow"):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)


def test_compiled_backbone_trains_like_eager(tmp_path):
    # aot_eager traces forward and backward through dynamo and AOTAutograd like inductor does, but
    # runs the captured graphs without generating C++ (inductor's first compile takes a minute here).
    flags = ["-c", str(DIGITS_BASE), *TINY, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
             "--trainer.limit_val_batches", "2"]  # fmt: skip
    torch._dynamo.reset()
    compiled = fit(tmp_path / "compiled", *flags, "--model.compile", "aot_eager")
    assert compiled.model.backbone._compiled_call_impl is not None
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs > 0
    eager = fit(tmp_path / "eager", *flags)
    # Counted on the compiled model as it is, without compiling it again for one image.
    assert model_stats(compiled.model.backbone, 32) == model_stats(eager.model.backbone, 32)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    runs = [read_metrics(next((tmp_path / name).rglob("metrics.csv"))) for name in ("compiled", "eager")]
    for key in ("train/loss", "val/loss"):
        assert column(runs[0], key) == pytest.approx(column(runs[1], key), rel=1e-4), key
    # The checkpoint holds the eager model's parameter names: it loads without compile.
    checkpoint = next((tmp_path / "compiled").rglob("last.ckpt"))
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert state.keys() == eager.model.state_dict().keys()


def test_unknown_compile_backend_is_refused():
    with pytest.raises(ValueError, match="model.compile must be true, false or a torch.compile backend such as .*inductor"):
        ClassificationModule(compile="inductr")
