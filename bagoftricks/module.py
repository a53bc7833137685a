"""ClassificationModule: a backbone plus every loss, regularisation and optimizer trick as an argument.

Each trick of He et al. 2019 is one constructor argument, so a YAML diff or a CLI flag
(``--model.label_smoothing 0.1``) switches it on; the trick itself is a pure function in
``bagoftricks.tricks``, and this file only wires it in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from bagoftricks.models import create_model
from bagoftricks.tricks import (
    check_distillation,
    check_layer_lr_decay,
    check_mixing,
    check_smoothing,
    distillation_loss,
    mix_batch,
    param_groups,
    scaled_lr,
    smooth_targets,
    soft_target_cross_entropy,
)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def load_teacher(path: str, num_classes: int, backbone: str | None = None) -> nn.Module:
    """A frozen teacher from a checkpoint of this library or from a weights file plus its model name."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"model.teacher file {path!r} does not exist; train the teacher first or fix the path.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an unpickling refusal is the usual cause; the message says which
        raise ValueError(
            f"model.teacher {path!r} could not be loaded safely (weights_only=True): {err}. "
            "Save the teacher's state_dict or a bagoftricks checkpoint instead."
        ) from None
    kwargs: dict[str, Any] = {}
    if "state_dict" in checkpoint:  # a Lightning checkpoint of ClassificationModule
        hparams = checkpoint.get("hyper_parameters", {})
        backbone = backbone or hparams.get("backbone")
        kwargs = dict(hparams.get("backbone_kwargs") or {})
        state = {k.removeprefix("backbone."): v for k, v in checkpoint["state_dict"].items() if k.startswith("backbone.")}
    else:
        state = checkpoint
    if backbone is None:
        raise ValueError(f"model.teacher {path!r} is a bare weights file; name its architecture with model.teacher_backbone.")
    teacher_classes = state["fc.weight"].shape[0] if "fc.weight" in state else None
    if teacher_classes != num_classes:
        raise ValueError(
            f"model.teacher {path!r} predicts {teacher_classes} classes but the data has {num_classes}; "
            "distil from a teacher trained on the same dataset."
        )
    teacher = create_model(backbone, num_classes, **kwargs)
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
        lr_scaling: ``'linear'`` multiplies the LR by global batch / 256 (Goyal et al. 2017).
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
        channels_last: bool = True,
        compile: bool | str = False,
    ) -> None:
        super().__init__()
        # Refused here, at start-up, with the same checks the trick functions run.
        check_smoothing(label_smoothing)
        check_mixing(mixup_alpha, cutmix_alpha, mix_prob, mix_switch_prob)
        check_distillation(distill_temperature, distill_alpha)
        check_layer_lr_decay(layer_lr_decay)
        _check(lr_scaling in ("none", "linear"), f"model.lr_scaling must be 'none' or 'linear', got {lr_scaling!r}.")
        _check(
            isinstance(compile, bool) or compile in torch.compiler.list_backends(exclude_tags=()),
            f"model.compile must be true, false or a torch.compile backend such as "
            f"{', '.join(torch.compiler.list_backends())} or aot_eager, got {compile!r}.",
        )
        # The optimizer is a callable, not a hyperparameter: keeping it out lets checkpoints load with weights_only=True.
        self.save_hyperparameters(ignore=["optimizer"])
        self.optimizer = optimizer
        self.backbone = create_model(
            backbone, num_classes, pretrained=pretrained, zero_init_last=zero_init_last, **(backbone_kwargs or {})
        )
        # Kept out of the module tree on purpose: a frozen teacher is not saved in the student's
        # checkpoints, not counted in its parameters and not switched to train mode by Lightning.
        self.__dict__["teacher"] = load_teacher(teacher, num_classes, teacher_backbone) if teacher else None
        self.mixing = mixup_alpha > 0 or cutmix_alpha > 0
        # micro: the fraction of images classified right (torchmetrics' default is the per-class mean).
        top1 = dict(num_classes=num_classes, top_k=1, average="micro")
        top5 = dict(num_classes=num_classes, top_k=min(5, num_classes), average="micro")
        self.train_top1 = MulticlassAccuracy(**top1)
        self.val_top1, self.val_top5 = MulticlassAccuracy(**top1), MulticlassAccuracy(**top5)
        self.test_top1, self.test_top5 = MulticlassAccuracy(**top1), MulticlassAccuracy(**top5)

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

    def on_fit_start(self) -> None:
        if self.teacher is not None:
            self.teacher.to(self.device)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """The batch on the device in the model's memory format (a no-op when it already is)."""
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = self._input(batch[0]), batch[1]
        hp = self.hparams
        # Targets stay class ids unless a trick needs probabilities; smoothing is folded in once,
        # before mixing, so mixed targets are never smoothed twice.
        target: torch.Tensor = y
        if hp.label_smoothing > 0 or self.mixing:
            target = smooth_targets(y, hp.num_classes, hp.label_smoothing)
        if self.mixing:
            x, target = mix_batch(x, target, hp.mixup_alpha, hp.cutmix_alpha, hp.mix_prob, hp.mix_switch_prob)
        logits = self(x)
        if self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.teacher(x)  # the same (mixed) input, the same precision
            loss = distillation_loss(logits, teacher_logits, target, hp.distill_temperature, hp.distill_alpha)
        elif target.is_floating_point():
            loss = soft_target_cross_entropy(logits, target)
        else:
            loss = F.cross_entropy(logits, target)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"train/loss is {loss.item()} at step {self.global_step}; the usual causes are an FP16 overflow "
                "(use bf16-mixed or 32-true), too high an LR (lower it or add schedule.warmup_epochs) or bad input data."
            )
        self.train_top1(logits, y)  # against the unmixed labels
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/top1", self.train_top1, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        x, y = batch
        logits = self(self._input(x))
        top1, top5 = getattr(self, f"{stage}_top1"), getattr(self, f"{stage}_top5")
        top1(logits, y)
        top5(logits, y)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log(f"{stage}/top1", top1, prog_bar=stage == "val")
        self.log(f"{stage}/top5", top5)

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
        states = checkpoint.get("rng_states", {})
        if "torch" in states:
            torch.set_rng_state(states["torch"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])

    def global_batch_size(self) -> int:
        """Images per optimizer step over all devices and accumulated batches."""
        trainer = self.trainer
        return trainer.datamodule.batch_size * trainer.world_size * trainer.accumulate_grad_batches

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        # The optimizer's own settings are read from a probe, then the module builds the groups:
        # decay only on conv/linear weights when no_bias_decay is on, so no optimizer setting
        # in a YAML can silently decay BN and bias parameters (He et al. 2019, sec. 3.1).
        defaults = self.optimizer([nn.Parameter(torch.zeros(1))]).defaults
        lr = defaults["lr"]
        if hp.lr_scaling == "linear":
            lr = scaled_lr(lr, self.global_batch_size())
        groups = param_groups(self.backbone, defaults.get("weight_decay", 0.0), hp.no_bias_decay, hp.layer_lr_decay)
        for group in groups:
            # base_lr: the peak LR of this group, which the LR schedule callback scales per step.
            group["lr"] = group["base_lr"] = lr * group["lr_scale"]
            rank_zero_info(
                f"param group {group['name']}: {sum(p.numel() for p in group['params']):,} parameters, "
                f"weight_decay {group['weight_decay']}, lr {group['lr']:.4g}"
            )
        # torch's fused kernels update every tensor in one pass (CPU and CUDA): on one CPU core
        # AdamW's step on resnet50d takes 38 ms instead of 117 (benchmarks/throughput.py).
        # A user's own fused/foreach setting wins.
        fused = defaults.get("fused", False) is None and not defaults.get("foreach") and not defaults.get("differentiable")
        return self.optimizer(groups, **({"fused": True} if fused else {}))
