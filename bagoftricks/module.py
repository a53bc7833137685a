"""ClassificationModule: a backbone plus every loss, regularisation and optimizer trick as an argument.

Each trick of He et al. 2019 is one constructor argument, so a YAML diff or a CLI flag
(``--model.label_smoothing 0.1``) switches it on; the trick itself is a pure function in
``bagoftricks.tricks``, and this file only wires it in. Settings are checked once, here, when the
module is built; the training step reads no device value on the host.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from bagoftricks.callbacks import StepLog
from bagoftricks.errors import ConfigError
from bagoftricks.models import create_model, fit_report, read_checkpoint
from bagoftricks.tricks import (
    create_ema,
    distillation_loss,
    mix_batch,
    param_groups,
    random_erasing,
    resize_batch,
    scaled_lr,
    smooth_targets,
    soft_target_cross_entropy,
)


@dataclass
class Tricks:
    """The training step's tricks in one place: switch one by assigning, e.g.
    ``module.tricks.mixup_alpha = 0.2`` or ``module.tricks.teacher = None`` (benchmarks/tricks.py does).

    The module checks the values it is built with; values assigned later are the caller's to check.
    """

    num_classes: int
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    mix_switch_prob: float = 0.5
    distill_temperature: float = 1.0
    distill_alpha: float = 0.5
    random_erasing: float = 0.0
    # Set by the module for the last `mixup_off_epochs` epochs (GluonCV's --mixup-off-epoch):
    # the final epochs train on clean images, closer to what the model is tested on.
    mixing_paused: bool = field(default=False, init=False)
    # Set by callbacks.ProgressiveResizing: the side training batches are downsampled to (None: as loaded).
    image_size: int | None = field(default=None, init=False)
    # A frozen model, kept out of the module tree on purpose: not saved in the student's
    # checkpoints, not counted in its parameters and not switched to train mode by Lightning.
    teacher: nn.Module | None = None

    @property
    def mixing(self) -> bool:
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and not self.mixing_paused

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, loss)`` of one training batch with every trick applied."""
        if self.image_size is not None:
            x = resize_batch(x, self.image_size)
        if self.random_erasing > 0:  # per image, before mixing, as in torchvision's recipe
            x = random_erasing(x, self.random_erasing)
        # Targets stay class ids unless a trick needs probabilities; smoothing is folded in once,
        # before mixing, so mixed targets are never smoothed twice.
        target = y
        if self.label_smoothing > 0 or self.mixing:
            target = smooth_targets(y, self.num_classes, self.label_smoothing)
        if self.mixing:
            x, target = mix_batch(x, target, self.mixup_alpha, self.cutmix_alpha, self.mix_prob, self.mix_switch_prob)
        logits = model(x)
        if self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.teacher(x)  # the same (mixed) input, the same precision
            return logits, distillation_loss(logits, teacher_logits, target, self.distill_temperature, self.distill_alpha)
        if target.is_floating_point():
            return logits, soft_target_cross_entropy(logits, target)
        return logits, F.cross_entropy(logits, target)


# What every numeric setting must be, checked once when the module is built: key -> (test, requirement).
RULES: dict[str, tuple[Any, str]] = {
    "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1) (the paper uses 0.1)"),
    "mixup_alpha": (lambda v: v >= 0, ">= 0 (0 turns mixup off)"),
    "cutmix_alpha": (lambda v: v >= 0, ">= 0 (0 turns cutmix off)"),
    "mix_prob": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "mix_switch_prob": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "distill_temperature": (lambda v: v > 0, "> 0 (the paper uses 20)"),
    "distill_alpha": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "layer_lr_decay": (lambda v: 0 < v <= 1, "in (0, 1] (1 = off)"),
    "num_classes": (lambda v: v >= 2, "at least 2"),
    "random_erasing": (lambda v: 0 <= v <= 1, "in [0, 1] (torchvision's recipe uses 0.25)"),
    "mixup_off_epochs": (lambda v: v >= 0, ">= 0 (0 mixes to the end)"),
    "ema_decay": (lambda v: 0 <= v < 1, "in [0, 1) (0 = off; torchvision's recipe uses 0.99998 every 32 steps)"),
    "ema_every_n_steps": (lambda v: v >= 1, ">= 1"),
}


def check_settings(settings: dict[str, Any]) -> None:
    """Refuse the first impossible setting with a ConfigError naming its ``model.*`` key."""
    for key, (ok, requirement) in RULES.items():
        if not ok(settings[key]):
            raise ConfigError(f"model.{key} must be {requirement}, got {settings[key]!r}.")
    if settings["lr_scaling"] not in ("none", "linear"):
        raise ConfigError(f"model.lr_scaling must be 'none' or 'linear', got {settings['lr_scaling']!r}.")
    compile = settings["compile"]
    if not (isinstance(compile, bool) or compile in torch.compiler.list_backends(exclude_tags=())):
        raise ConfigError(
            f"model.compile must be true, false or a torch.compile backend such as "
            f"{', '.join(torch.compiler.list_backends())} or aot_eager, got {compile!r}."
        )


def load_teacher(path: str, num_classes: int, backbone: str | None = None) -> nn.Module:
    """A frozen teacher from a checkpoint of this library or from a weights file plus its model name."""
    state, hparams = read_checkpoint(path, role="model.teacher")
    backbone = backbone or hparams.get("backbone")
    if backbone is None:
        raise ConfigError(f"model.teacher {path} is a bare weights file; name its architecture with model.teacher_backbone.")
    teacher_classes = state["fc.weight"].shape[0] if "fc.weight" in state else None
    if teacher_classes != num_classes:
        raise ConfigError(
            f"model.teacher {path} predicts {teacher_classes} classes but the data has {num_classes}; "
            "distil from a teacher trained on the same dataset."
        )
    teacher = create_model(backbone, num_classes, **dict(hparams.get("backbone_kwargs") or {}))
    problems = fit_report(teacher, state)
    if problems:
        raise ConfigError(f"model.teacher {path} is not a {backbone} ({problems}); set model.teacher_backbone to its architecture.")
    teacher.load_state_dict(state)
    return teacher.eval().requires_grad_(False)


class ClassificationModule(L.LightningModule):
    """Image classification with the tricks of He et al., "Bag of Tricks for Image Classification
    with Convolutional Neural Networks", CVPR 2019 (arXiv 1812.01187), as switches.

    Args:
        backbone: a ``bagoftricks.models.create_model`` name (``resnet50``, ``resnet50d``, ...).
        num_classes: classes of the dataset (linked from ``data.num_classes`` by the CLI).
        backbone_kwargs: more model flags (``stem``, ``se``, ``act``, ...).
        pretrained: a weights file or a torchvision weights name (``ResNet50_Weights.IMAGENET1K_V2``).
        zero_init_last: zero the last BN gamma of every residual block (paper sec. 3.1).
        optimizer: the optimizer class and its settings; its ``lr`` is per 256 images when
            ``lr_scaling='linear'``, and its ``weight_decay`` applies to conv/linear weights only
            when ``no_bias_decay`` is on.
        no_bias_decay: no weight decay on biases and BN parameters (paper sec. 3.1).
        lr_scaling: ``'linear'`` multiplies the LR by global batch / 256 (Goyal et al. 2017); the
            global batch is the train loader's batch x devices x accumulated batches, so it works
            with any loader, with or without a DataModule.
        layer_lr_decay: discriminative LRs for fine-tuning: each earlier stage's LR is the next
            one's times this factor (1 = off).
        label_smoothing: epsilon of label smoothing (paper sec. 5.2 uses 0.1).
        mixup_alpha: Beta(alpha, alpha) mixup (paper sec. 5.4 uses 0.2); 0 = off.
        cutmix_alpha: CutMix (Yun et al. 2019); 0 = off.
        mix_prob: probability that a batch is mixed at all.
        mix_switch_prob: with both alphas on, probability of CutMix rather than mixup.
        teacher: a checkpoint or weights file of a teacher to distil from (paper sec. 5.3).
        teacher_backbone: the teacher's model name, needed only for a bare weights file.
        distill_temperature: softmax temperature T of distillation (paper: 20).
        distill_alpha: weight of the hard-target loss; 1 - alpha goes to the teacher's.
        random_erasing: probability of erasing a random box in each training image (Zhong et al.
            2017); 0 = off.
        mixup_off_epochs: train the last this many epochs without mixup/cutmix (needs
            trainer.max_epochs); 0 = mix to the end.
        ema_decay: keep an EMA of the weights and BN statistics with this decay per update, its
            decay warmed up as timm's; validated as ``val_ema/*`` beside the raw ``val/*`` and
            saved in checkpoints as ``ema.*``; 0 = off.
        ema_every_n_steps: optimizer steps between EMA updates.
        ema_warmup: timm's decay warmup, min(ema_decay, 1 - (1 + updates) ** -0.75).
        flip_tta: also score validation and test on the mean logits of each image and its
            mirror, logged as ``val/top1_tta`` and ``test/top1_tta``.
        channels_last: NHWC memory format for model and inputs (faster convolutions; on by default).
        compile: ``torch.compile`` the backbone (and the teacher) in place when training starts:
            ``true`` for torch's default backend (inductor), or a backend's name (``'aot_eager'``,
            ``'cudagraphs'``, ...). Parameter names and checkpoints stay those of the eager model.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 10,
        backbone_kwargs: dict[str, Any] | None = None,
        pretrained: str | None = None,
        zero_init_last: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        no_bias_decay: bool = False,
        lr_scaling: Literal["none", "linear"] = "none",
        layer_lr_decay: float = 1.0,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        mix_switch_prob: float = 0.5,
        teacher: str | None = None,
        teacher_backbone: str | None = None,
        distill_temperature: float = 1.0,
        distill_alpha: float = 0.5,
        random_erasing: float = 0.0,
        mixup_off_epochs: int = 0,
        ema_decay: float = 0.0,
        ema_every_n_steps: int = 1,
        ema_warmup: bool = True,
        flip_tta: bool = False,
        channels_last: bool = True,
        compile: bool | str = False,
    ) -> None:
        super().__init__()
        # The optimizer is a callable, not a hyperparameter: keeping it out lets checkpoints load with weights_only=True.
        self.save_hyperparameters(ignore=["optimizer"])
        check_settings(dict(self.hparams))
        self.optimizer = optimizer
        try:  # the optimizer's own checks (torch's "Invalid learning rate"), now rather than when training starts
            probe = optimizer([nn.Parameter(torch.zeros(1))])
        except (ValueError, TypeError) as err:
            raise ConfigError(f"model.optimizer cannot be built ({err}); fix its setting (model.optimizer.init_args.*).") from err
        if "lr" not in getattr(probe, "defaults", {}):
            raise ConfigError(f"model.optimizer must build a torch optimizer with an lr, got {type(probe).__name__}.")
        flags = dict(backbone_kwargs or {})
        for key in ("num_classes", "pretrained"):  # module settings of their own, never model flags
            if key in flags:
                raise ConfigError(f"model.backbone_kwargs may not set {key}; use model.{key} instead.")
        # zero_init_last is a module setting and a model flag: either one switches it on.
        flags["zero_init_last"] = zero_init_last or bool(flags.get("zero_init_last", False))
        try:
            self.backbone = create_model(backbone, num_classes, pretrained=pretrained, **flags)
        except ConfigError:
            raise
        except (ValueError, TypeError) as err:  # create_model speaks of its own arguments; say which setting it was
            raise ConfigError(f"model.backbone {backbone} with model.backbone_kwargs {backbone_kwargs}: {err}") from err
        names = {f.name for f in fields(Tricks)} - {"teacher"}
        self.tricks = Tricks(
            **{k: v for k, v in self.hparams.items() if k in names},
            teacher=load_teacher(teacher, num_classes, teacher_backbone) if teacher else None,
        )
        # micro: the fraction of images classified right (torchmetrics' default is the per-class mean).
        # validate_args off: its checks read the labels on the host, a device sync in every step.
        top1 = dict(num_classes=num_classes, top_k=1, average="micro", validate_args=False)
        top5 = dict(num_classes=num_classes, top_k=min(5, num_classes), average="micro", validate_args=False)
        self.train_top1 = MulticlassAccuracy(**top1)
        self.val_top1, self.val_top5 = MulticlassAccuracy(**top1), MulticlassAccuracy(**top5)
        self.test_top1, self.test_top5 = MulticlassAccuracy(**top1), MulticlassAccuracy(**top5)
        # A submodule, so it moves with the module and is saved in its checkpoints; param_groups
        # reads the backbone only, so no optimizer sees it.
        self.ema = create_ema(self.backbone, ema_decay, 0.75 if ema_warmup else None) if ema_decay > 0 else None
        self._ema_step = 0  # the global step of the last EMA update
        for stage in ("val", "test"):
            if self.ema is not None:
                setattr(self, f"{stage}_ema_top1", MulticlassAccuracy(**top1))
                setattr(self, f"{stage}_ema_top5", MulticlassAccuracy(**top5))
            if flip_tta:
                setattr(self, f"{stage}_top1_tta", MulticlassAccuracy(**top1))

    def configure_callbacks(self) -> list[L.Callback]:
        return [StepLog()]  # train/loss, train/lr and the non-finite guard, with or without the CLI

    @property
    def teacher(self) -> nn.Module | None:
        return self.tricks.teacher

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def setup(self, stage: str) -> None:
        hp = self.hparams
        for model in (self.backbone, self.teacher):
            if model is None:
                continue
            if hp.channels_last:
                model.to(memory_format=torch.channels_last)
            # nn.Module.compile works in place, so state_dict keys get no `_orig_mod.` prefix;
            # compiled once, not again for each stage.
            if hp.compile and model._compiled_call_impl is None:
                model.compile(**({} if hp.compile is True else {"backend": hp.compile}))
        if self.ema is not None and hp.channels_last:  # the backbone's layout, so the EMA update is one foreach pass
            self.ema.to(memory_format=torch.channels_last)

    def on_fit_start(self) -> None:
        if self.teacher is not None:
            self.teacher.to(self.device)
        if self.hparams.mixup_off_epochs > 0 and self.trainer.max_epochs in (None, -1):
            raise ConfigError(
                "model.mixup_off_epochs counts back from the last epoch, so it needs trainer.max_epochs; "
                "set trainer.max_epochs or model.mixup_off_epochs 0."
            )
        off, epochs = self.hparams.mixup_off_epochs, self.trainer.max_epochs
        if off > 0 and off >= epochs and (self.hparams.mixup_alpha > 0 or self.hparams.cutmix_alpha > 0):
            raise ConfigError(
                f"model.mixup_off_epochs {off} covers all {epochs} epochs (trainer.max_epochs), so nothing would be "
                "mixed; set it below trainer.max_epochs, or mixup_alpha and cutmix_alpha 0 to train without mixing."
            )

    def on_train_epoch_start(self) -> None:
        off = self.hparams.mixup_off_epochs
        self.tricks.mixing_paused = off > 0 and self.current_epoch >= self.trainer.max_epochs - off

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Once per optimizer step (global_step does not move between accumulated batches).
        step = self.trainer.global_step
        if self.ema is not None and step > self._ema_step and step % self.hparams.ema_every_n_steps == 0:
            self.ema.update_parameters(self.backbone)
            self._ema_step = step

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """The batch on the device in the model's memory format (a no-op when it already is)."""
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits, loss = self.tricks.loss(self, self._input(x), y)
        # train/loss and train/lr are kept on the device and written every log_every_n_steps by
        # callbacks.StepLog, which also stops a non-finite loss: no value is read here.
        self.train_top1.update(logits, y)  # against the unmixed labels
        self.log("train/top1", self.train_top1, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        x, y = batch
        x = self._input(x)
        logits = self(x)
        top1, top5 = getattr(self, f"{stage}_top1"), getattr(self, f"{stage}_top5")
        top1.update(logits, y)
        top5.update(logits, y)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log(f"{stage}/top1", top1, prog_bar=stage == "val")
        self.log(f"{stage}/top5", top5)
        # Each variant under its own name, never folded into the plain metrics.
        if self.hparams.flip_tta:
            tta = getattr(self, f"{stage}_top1_tta")
            tta.update((logits + self(x.flip(3))) / 2, y)
            self.log(f"{stage}/top1_tta", tta)
        if self.ema is not None:
            ema_logits = self.ema(x)
            ema_top1, ema_top5 = getattr(self, f"{stage}_ema_top1"), getattr(self, f"{stage}_ema_top5")
            ema_top1.update(ema_logits, y)
            ema_top5.update(ema_logits, y)
            self.log(f"{stage}_ema/top1", ema_top1)
            self.log(f"{stage}_ema/top5", ema_top5)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self(self._input(batch[0])).softmax(dim=-1)

    # Lightning restores weights, optimizer and loop state but not the random generators; saving
    # them makes a resumed run draw the same shuffles, augmentations and mixing lambdas as an
    # uninterrupted one. Tensors only, so checkpoints still load with weights_only=True.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A checkpoint trained with EMA loads without it, and one without EMA starts the average
        # from its weights: switching model.ema_decay on resume is a setting, not another network.
        state = checkpoint["state_dict"]
        if self.ema is None:
            for key in [k for k in state if k.startswith("ema.")]:
                del state[key]
        elif "ema.n_averaged" not in state:
            state.update({"ema.module." + k.removeprefix("backbone."): v for k, v in list(state.items()) if k.startswith("backbone.")})
            state["ema.n_averaged"] = torch.tensor(0)
        states = checkpoint.get("rng_states", {})
        if "torch" in states:
            torch.set_rng_state(states["torch"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        # The optimizer's own settings are read from a probe, then the module builds the groups:
        # decay only on conv/linear weights when no_bias_decay is on, so no optimizer setting
        # in a YAML can silently decay BN and bias parameters (He et al. 2019, sec. 3.1).
        defaults = self.optimizer([nn.Parameter(torch.zeros(1))]).defaults
        groups = param_groups(self.backbone, defaults.get("weight_decay", 0.0), hp.no_bias_decay, hp.layer_lr_decay)
        for group in groups:
            # base_lr: the peak LR of this group, which the LR schedule callback scales per step;
            # linear scaling multiplies it in at train start, when the loader's batch is known.
            group["lr"] = group["base_lr"] = defaults["lr"] * group["lr_scale"]
            group["config_lr"] = defaults["lr"]
        # torch's fused kernels update every tensor in one pass (CPU and CUDA): on one CPU core
        # AdamW's step on resnet50d takes 38 ms instead of 117 (benchmarks/throughput.py).
        # A user's own fused/foreach setting wins.
        # Only to a factory that takes the keyword: `lambda p: torch.optim.SGD(p, lr=0.1)` does not.
        fused = defaults.get("fused", False) is None and not defaults.get("foreach") and not defaults.get("differentiable")
        return self.optimizer(groups, **({"fused": True} if fused and takes_keyword(self.optimizer, "fused") else {}))

    def monitorable_metrics(self) -> set[str]:
        """The names ``fit`` logs for callbacks to monitor (``checkpoint.monitor``): per epoch, from
        training and validation. ``train/loss`` and ``train/lr`` go to the loggers only (StepLog)."""
        names = {"train/top1", "val/loss", "val/top1", "val/top5", "epoch", "step"}
        if self.ema is not None:
            names |= {"val_ema/top1", "val_ema/top5"}
        if self.hparams.flip_tta:
            names.add("val/top1_tta")
        return names

    def on_train_start(self) -> None:
        """The peak LR of every group: the configured LR, times global batch / 256 with linear scaling;
        the EMA counts updates from the step training starts at.

        Computed from ``config_lr`` each time, so a resumed run, whose groups come back scaled from
        its checkpoint, is not scaled twice.
        """
        self._ema_step = self.trainer.global_step  # a resumed run's EMA is up to date with its checkpoint
        lr_factor = scaled_lr(1.0, global_batch_size(self.trainer)) if self.hparams.lr_scaling == "linear" else 1.0
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["base_lr"] = group["config_lr"] * lr_factor * group["lr_scale"]
                rank_zero_info(
                    f"param group {group['name']}: {sum(p.numel() for p in group['params']):,} parameters, "
                    f"weight_decay {group['weight_decay']}, peak lr {group['base_lr']:.4g}"
                )


def takes_keyword(factory: Any, name: str) -> bool:
    """Whether ``factory`` accepts the keyword argument ``name`` (by name or through ``**kwargs``)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: do not guess
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def global_batch_size(trainer: L.Trainer) -> int:
    """Images per optimizer step: the train loader's batch x devices x accumulated batches."""
    loader = trainer.train_dataloader
    batch = getattr(loader, "batch_size", None) or getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    if batch is None:
        raise ConfigError(
            "model.lr_scaling linear needs the train loader's batch size, and this loader has none; "
            "pass a DataLoader with batch_size or set model.lr_scaling none."
        )
    return batch * trainer.world_size * trainer.accumulate_grad_batches
