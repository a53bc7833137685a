"""ClassificationModule and the LR schedule callback: tricks wired in, alone and together, on real digits."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from bagoftricks import ClassificationModule
from bagoftricks.callbacks import LRSchedule
from bagoftricks.data import DigitsDataModule
from bagoftricks.errors import ConfigError, TrainingDivergedError
from bagoftricks.models import model_stats
from bagoftricks.models.resnet import MODEL_FLAGS
from bagoftricks.module import RULES
from bagoftricks.tricks import lr_at
from conftest import DIGITS_BASE, NARROW, NARROW_WIDTHS, TINY, column, fit, read_metrics
from host_reads import HostReads

def built(tmp_path, *flags):
    """The CLI's model, data, trainer and LR schedule for the digits config plus ``flags``, not run."""
    return fit(tmp_path, "-c", str(DIGITS_BASE), *TINY, *flags, run=False)


def schedule_of(cli) -> LRSchedule:
    return next(c for c in cli.trainer.callbacks if isinstance(c, LRSchedule))


def optimizer_of(cli) -> torch.optim.Optimizer:
    cli.model.trainer = cli.trainer
    return cli.model.configure_optimizers()


def batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 32, 32, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def test_label_smoothing_is_the_smoothed_cross_entropy(tmp_path):
    module = built(tmp_path, "--model.label_smoothing", "0.1").model
    x, y = batch()
    logits, loss = module.tricks.loss(module, x, y)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y, label_smoothing=0.1).item(), rel=1e-6)


@pytest.mark.parametrize("flag", ["--model.mixup_alpha", "--model.cutmix_alpha"])
def test_mixing_changes_the_input_and_the_targets(tmp_path, flag):
    module = built(tmp_path, flag, "1.0").model.eval()  # eval: BN gives each image its own output
    x, y = batch()
    torch.manual_seed(0)
    logits, loss = module.tricks.loss(module, x, y)
    assert not torch.allclose(logits, module(x))  # the model saw mixed images
    assert module.tricks.mixing and loss.item() != pytest.approx(F.cross_entropy(logits, y).item())


def test_no_bias_decay_decays_only_conv_and_linear_weights(tmp_path):
    for flag, decays_all in (("true", False), ("false", True)):
        optimizer = optimizer_of(built(tmp_path, "--model.no_bias_decay", flag))
        for group in optimizer.param_groups:
            for p in group["params"]:
                assert (group["weight_decay"] > 0) == (decays_all or p.ndim > 1)


def test_zero_gamma_zeroes_the_last_bn_of_every_block(tmp_path):
    for flag in ("true", "false"):
        backbone = built(tmp_path, "--model.zero_init_last", flag).model.backbone
        blocks = [block for layer in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4) for block in layer]
        assert all(bool((block.bn2.weight == 0).all()) == (flag == "true") for block in blocks)


def test_resnet_d_average_pools_the_shortcut(tmp_path):
    plain = built(tmp_path, "--model.backbone", "resnet18").model.backbone
    tweaked = built(tmp_path, "--model.backbone", "resnet18d").model.backbone
    assert isinstance(tweaked.layer2[0].downsample[0], nn.AvgPool2d)
    assert isinstance(plain.layer2[0].downsample[0], nn.Conv2d)


def test_layer_lr_decay_scales_each_earlier_stage(tmp_path):
    optimizer = optimizer_of(built(tmp_path, "--model.layer_lr_decay", "0.5"))
    scales = {g["name"].split("/")[0]: g["lr_scale"] for g in optimizer.param_groups}
    assert scales == {"stem": 0.5**5, "layer1": 0.5**4, "layer2": 0.5**3, "layer3": 0.5**2, "layer4": 0.5, "head": 1.0}


def test_se_and_mish_are_in_the_backbone(tmp_path):
    backbone = built(tmp_path, "--model.backbone_kwargs", "{se: true, act: mish}").model.backbone
    kinds = {type(m).__name__ for m in backbone.modules()}
    assert {"SqueezeExcite", "Mish"} <= kinds and "ReLU" not in kinds


@pytest.mark.parametrize(
    ("flags", "kind", "settings"),
    [
        (["--model.optimizer", "Adam", "--model.optimizer.lr", "0.001"], torch.optim.Adam, {"lr": 0.001}),
        (["--model.optimizer", "NAdam"], torch.optim.NAdam, {}),
        (["--model.optimizer", "SGD", "--model.optimizer.lr", "0.1", "--model.optimizer.momentum", "0.9",
          "--model.optimizer.nesterov", "true"], torch.optim.SGD, {"lr": 0.1, "nesterov": True, "momentum": 0.9}),  # fmt: skip
    ],
    ids=["adam", "nadam", "sgd_nesterov"],
)
def test_optimizer_choice(tmp_path, flags, kind, settings):
    optimizer = optimizer_of(built(tmp_path, *flags))
    assert type(optimizer) is kind
    assert all(optimizer.param_groups[0][k] == v for k, v in settings.items())


def test_schedule_flags_reach_the_callback(tmp_path):
    schedule = schedule_of(built(tmp_path, "--schedule.name", "cosine", "--schedule.warmup_epochs", "1"))
    assert (schedule.name, schedule.warmup_epochs) == ("cosine", 1)


@pytest.mark.parametrize("channels_last", ["true", "false"])
def test_memory_format_of_model_and_input(tmp_path, channels_last):
    module = built(tmp_path, "--model.channels_last", channels_last).model
    module.setup("fit")
    on = channels_last == "true"
    assert module.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last) == on
    assert module._input(batch()[0]).is_contiguous(memory_format=torch.channels_last) == on


def test_bf16_mixed_runs_the_step_in_bfloat16(tmp_path):
    cli = built(tmp_path, "--trainer.precision", "bf16-mixed")
    with cli.trainer.precision_plugin.forward_context():
        logits = cli.model(batch()[0])
    assert logits.dtype == torch.bfloat16


ALL = ["--schedule.warmup_epochs", "1", "--schedule.name", "cosine", "--model.label_smoothing", "0.1",
       "--model.mixup_alpha", "0.2", "--model.cutmix_alpha", "1.0", "--model.no_bias_decay", "true",
       "--model.zero_init_last", "true", "--model.backbone", "resnet18d", "--model.lr_scaling", "linear"]  # fmt: skip


def test_all_tricks_train_together(tmp_path):
    # log_every_n_steps 2: the kept values are written after step 1, then at the end of the epoch.
    fit(tmp_path, "-c", str(DIGITS_BASE), *TINY, *ALL, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
        "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "2")  # fmt: skip
    rows = read_metrics(next(tmp_path.rglob("metrics.csv")))
    losses = column(rows, "train/loss")
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert [r["step"] for r in rows if r["train/loss"]] == ["0", "1", "2"]
    # Warmup over the 3-step epoch, with the YAML's lr (0.025) per 256 images and batch 16.
    assert column(rows, "train/lr") == pytest.approx([0.025 * 16 / 256 * (s + 1) / 3 for s in range(3)])


def test_teacher_with_other_classes_is_refused(tmp_path):
    narrow = {"channels": NARROW_WIDTHS}
    other = ClassificationModule("resnet18", num_classes=7, backbone_kwargs=narrow)
    path = tmp_path / "teacher.pt"
    torch.save(other.backbone.state_dict(), path)
    with pytest.raises(ConfigError, match="7 classes but the data has 10"):
        ClassificationModule("resnet18", num_classes=10, teacher=str(path), teacher_backbone="resnet18", backbone_kwargs=narrow)


def test_plain_lightning_without_a_datamodule(tmp_path):
    """Trainer.fit with loaders only: linear scaling reads the loader's batch, every trick on."""
    data = DigitsDataModule(batch_size=16)
    data.setup("fit")
    module = ClassificationModule(
        num_classes=10, lr_scaling="linear", mixup_alpha=0.2, label_smoothing=0.1, optimizer=partial(torch.optim.SGD, lr=0.1)
    )
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=3, limit_val_batches=1, callbacks=[LRSchedule()], logger=CSVLogger(tmp_path),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=data.train_dataloader(), val_dataloaders=data.val_dataloader())
    rows = read_metrics(next(tmp_path.rglob("metrics.csv")))
    assert column(rows, "train/lr") == pytest.approx([0.1 * 16 / 256] * 3)
    assert len(column(rows, "train/loss")) == 3 and column(rows, "val/top1")


class StopAfterFirstEpoch(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def test_resumed_run_equals_straight_run(tmp_path):
    """Stopped after epoch 1 and resumed with --ckpt_path: the same LRs, losses and accuracies."""
    flags = ["-c", str(DIGITS_BASE), *TINY, *NARROW, "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "4",
             "--trainer.limit_val_batches", "2", "--schedule.name", "cosine", "--schedule.warmup_epochs", "1",
             "--model.mixup_alpha", "0.2"]  # fmt: skip
    straight = fit(tmp_path / "straight", *flags)
    expected = read_metrics(next((tmp_path / "straight").rglob("metrics.csv")))

    stopped = fit(tmp_path / "stopped", *flags, "--checkpoint.save_top_k", "0", run=False, checkpoint=True)  # last.ckpt only
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


@pytest.mark.parametrize("accumulate", [1, 2])
def test_flushed_step_log_equals_per_step_logging(tmp_path, accumulate):
    """40 batches kept on the device and written every 10 steps give one raw value per optimizer
    step, at steps 0, 1, ..., the same values that writing every step gives."""
    flags = ["-c", str(DIGITS_BASE), *TINY, *NARROW, "--seed_everything", "0", "--model.mixup_alpha", "0.2",
             "--data.batch_size", "4", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "40",
             "--trainer.limit_val_batches", "0", "--trainer.accumulate_grad_batches", str(accumulate)]  # fmt: skip
    runs = {}
    for every in (10, 1):
        fit(tmp_path / str(every), *flags, "--trainer.log_every_n_steps", str(every))
        rows = read_metrics(next((tmp_path / str(every)).rglob("metrics.csv")))
        runs[every] = [(int(r["step"]), float(r["train/loss"]), float(r["train/lr"])) for r in rows if r.get("train/loss")]
    assert [step for step, _, _ in runs[10]] == list(range(40 // accumulate))
    assert runs[10] == runs[1]


def test_non_finite_loss_stops_with_the_step(tmp_path):
    cli = fit(tmp_path, "-c", str(DIGITS_BASE), *TINY, "--trainer.fast_dev_run", "1", run=False)
    with torch.no_grad():
        cli.model.backbone.fc.bias.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="train/loss is nan at step 0.*FP16 overflow"):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)


@pytest.mark.slow  # torch.compile traces forward and backward: a minute on a 2-core CPU
def test_compiled_backbone_trains_like_eager(tmp_path):
    # aot_eager traces forward and backward through dynamo and AOTAutograd like inductor does, but
    # runs the captured graphs without generating C++ (inductor's first compile takes a minute here).
    flags = ["-c", str(DIGITS_BASE), *TINY, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
             "--trainer.limit_val_batches", "2"]  # fmt: skip
    torch._dynamo.reset()
    compiled = fit(tmp_path / "compiled", *flags, "--model.compile", "aot_eager", checkpoint=True)
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
    with pytest.raises(ConfigError, match="model.compile must be true, false or a torch.compile backend such as .*inductor"):
        ClassificationModule(compile="inductr")


class CountHostReads(L.Callback):
    """Host reads and blocking copies from the start of the first training batch to the start of the
    third: two whole steps with everything between them (hooks, logging, the optimizer, the next
    batch). With ``sync_errors`` (a GPU), torch also raises at any device sync in that window."""

    def __init__(self, sync_errors: bool = False) -> None:
        self.reads, self.sync_errors = HostReads(), sync_errors

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.reads.__enter__()
            if self.sync_errors:
                torch.cuda.set_sync_debug_mode("error")
        elif batch_idx == 2:
            if self.sync_errors:
                torch.cuda.set_sync_debug_mode("default")
            self.reads.__exit__(None, None, None)
            trainer.should_stop = True  # two steps seen: the rest of the fit is not needed


# How the read-back test switches on each trick key of module.RULES and each flag of
# models.MODEL_FLAGS, with what the key needs beside it ("TEACHER": a teacher checkpoint). A key
# added to either without a row here fails that test, which names the table.
TRICK_ON: dict[str, list[str]] = {
    "label_smoothing": ["--model.label_smoothing", "0.1"],
    "mixup_alpha": ["--model.mixup_alpha", "0.2"],
    "cutmix_alpha": ["--model.cutmix_alpha", "1.0"],
    "mix_prob": ["--model.cutmix_alpha", "1.0", "--model.mix_prob", "0.5"],
    "mix_switch_prob": ["--model.mixup_alpha", "0.2", "--model.cutmix_alpha", "1.0", "--model.mix_switch_prob", "0.3"],
    "distill_temperature": ["--model.teacher", "TEACHER", "--model.distill_temperature", "4"],
    "distill_alpha": ["--model.teacher", "TEACHER", "--model.distill_alpha", "0.3"],
    "layer_lr_decay": ["--model.layer_lr_decay", "0.7"],
    "num_classes": [],  # linked from the data (the digits' 10), not a switch
    "random_erasing": ["--model.random_erasing", "0.5"],
    "mixup_off_epochs": ["--model.mixup_alpha", "0.2", "--model.mixup_off_epochs", "1", "--trainer.max_epochs", "2"],
    "ema_decay": ["--model.ema_decay", "0.99"],
    "ema_every_n_steps": ["--model.ema_decay", "0.99", "--model.ema_every_n_steps", "2"],
}
FLAG_ON: dict[str, str] = {
    "in_chans": "3",  # the digits are RGB: the one value their data takes
    "stem": "deep",
    "stride_in_3x3": "true",
    "avg_down": "true",
    "zero_init_last": "true",
    "se": "true",
    "act": "mish",
    "drop_path_rate": "0.1",
    "blur_pool": "true",
    "channels": "[16, 32, 64, 128]",
}
# Switches outside RULES and MODEL_FLAGS that touch the training step, on in the "everything" case.
OTHERS = ["--model.lr_scaling", "linear", "--model.no_bias_decay", "true", "--model.flip_tta", "true",
          "--schedule.name", "cosine", "--schedule.warmup_epochs", "1", "--progressive.initial_scale", "0.5"]  # fmt: skip


def switched_on(case: str) -> list[str]:
    """The CLI flags that switch `case` on: a RULES key, a MODEL_FLAGS flag, or "everything"."""
    if case == "everything":
        pairs = {name: value for key in RULES for name, value in zip(TRICK_ON[key][::2], TRICK_ON[key][1::2])}
        tricks = [flag for name, value in pairs.items() if name != "--trainer.max_epochs" for flag in (name, value)]
        flags = ", ".join(f"{key}: {value}" for key, value in FLAG_ON.items())
        return [*tricks, "--model.backbone_kwargs", f"{{{flags}}}", *OTHERS, "--trainer.max_epochs", "2"]
    if case in RULES:
        assert case in TRICK_ON, f"model.{case} is a new trick key: add how to switch it on to TRICK_ON"
        return TRICK_ON[case]
    assert case in FLAG_ON, f"{case} is a new model flag: add a value that switches it on to FLAG_ON"
    return ["--model.backbone_kwargs", f"{{{case}: {FLAG_ON[case]}}}"]


GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the sync-debug run needs a GPU")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=GPU)])
@pytest.mark.parametrize("case", [*RULES, *MODEL_FLAGS, "everything"])
def test_training_steps_read_nothing_back(tmp_path, digits_teacher, case, device):
    """No host read and no blocking copy from the host in two training steps, with each trick and
    model flag on alone and all together; on a GPU, also no device sync at all
    (``torch.cuda.set_sync_debug_mode("error")``)."""
    flags = [str(digits_teacher) if flag == "TEACHER" else flag for flag in switched_on(case)]
    if device == "cuda":  # CUDA's deterministic mode has no deterministic pooling backward
        flags += ["--trainer.accelerator", "gpu", "--trainer.devices", "1", "--trainer.deterministic", "false"]
    limits = ["--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "0", "--trainer.enable_checkpointing", "false"]
    cli = built(tmp_path, *flags, *limits)
    counter = CountHostReads(sync_errors=device == "cuda")
    cli.trainer.callbacks.insert(0, counter)
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    finally:
        if device == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    assert cli.trainer.global_step >= 2
    # The loader's per-image augmentation draws its crops on the CPU (in loader workers on a GPU
    # machine): no device value. Everything else, from the model to the optimizer, reads nothing.
    assert [op for op in counter.reads.ops if "/torchvision/transforms/" not in op] == []
    assert counter.reads.ops, "the counter saw nothing: it did not run"
