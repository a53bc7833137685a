"""The tricks after the paper, wired into ClassificationModule: each key's effect on real digits
(random_erasing, mixup_off_epochs, ema_decay, flip_tta, progressive resizing, and the model flags
drop_path_rate and blur_pool through backbone_kwargs)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from torchvision.transforms.v2 import functional as TF

from bagoftricks import ClassificationModule
from bagoftricks.callbacks import LRSchedule, ProgressiveResizing
from bagoftricks.data import DigitsDataModule
from bagoftricks.errors import ConfigError
from bagoftricks.models.layers import BlurPool2d, DropPath
from bagoftricks.tricks import create_ema, progressive_scale, random_erasing, resize_batch, scaled_side
from conftest import DIGITS_BASE, NARROW_WIDTHS, TINY, column, fit, read_metrics


def built(tmp_path, *flags):
    return fit(tmp_path, "-c", str(DIGITS_BASE), *TINY, *flags, run=False)


def digits():
    data = DigitsDataModule(batch_size=16)
    data.setup("fit")
    return data


def trainer(tmp_path, **kwargs) -> L.Trainer:
    settings = dict(max_epochs=1, limit_train_batches=3, limit_val_batches=2, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    return L.Trainer(**(settings | kwargs))


def accuracy(logits: list[torch.Tensor], labels: list[torch.Tensor]) -> float:
    return (torch.cat(logits).argmax(1) == torch.cat(labels)).float().mean().item()


def test_random_erasing_erases_the_training_images(tmp_path):
    module = built(tmp_path, "--model.random_erasing", "1.0").model.eval()  # eval: each image its own output
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    torch.manual_seed(0)
    logits, _ = module.tricks.loss(module, x, y)
    torch.manual_seed(0)
    torch.testing.assert_close(logits, module(random_erasing(x, 1.0)))
    assert not torch.allclose(logits, module(x))


class RecordMixing(Callback):
    def __init__(self):
        self.mixing = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.mixing.append(pl_module.tricks.mixing)


def test_mixup_off_for_the_last_epochs(tmp_path):
    data, record = digits(), RecordMixing()
    module = ClassificationModule(num_classes=10, mixup_alpha=0.2, mixup_off_epochs=1)
    trainer(tmp_path, max_epochs=3, limit_train_batches=1, limit_val_batches=0, callbacks=[record]).fit(module, data.train_dataloader())
    assert record.mixing == [True, True, False]


def test_mixup_off_needs_max_epochs(tmp_path):
    module = ClassificationModule(num_classes=10, mixup_alpha=0.2, mixup_off_epochs=1)
    with pytest.raises(ConfigError, match="model.mixup_off_epochs .* needs trainer.max_epochs"):
        trainer(tmp_path, max_epochs=-1, max_steps=1).fit(module, digits().train_dataloader())


class RecordWeights(Callback):
    """The backbone after every optimizer step (callbacks run before the module's own hook)."""

    def __init__(self):
        self.states = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.states.append({k: v.clone() for k, v in pl_module.backbone.state_dict().items()})


def test_ema_follows_averaged_model_and_is_validated_apart(tmp_path):
    data, record = digits(), RecordWeights()
    module = ClassificationModule(num_classes=10, ema_decay=0.9, ema_every_n_steps=2, channels_last=False)
    fit_trainer = trainer(tmp_path, limit_train_batches=4, callbacks=[record])
    fit_trainer.fit(module, data.train_dataloader(), data.val_dataloader())
    # Updated after steps 2 and 4, with the decay warmup: the same as AveragedModel fed those weights.
    reference = create_ema(module.backbone, 0.9)
    for state in record.states[1::2]:
        snapshot = ClassificationModule(num_classes=10).backbone
        snapshot.load_state_dict(state)
        reference.update_parameters(snapshot)
    assert module.ema.n_averaged.item() == 2
    for (key, ours), theirs in zip(module.ema.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(ours, theirs, msg=key)
    # val_ema/top1 is the EMA model's accuracy, val/top1 the raw model's.
    metrics = trainer(tmp_path).validate(module, data.val_dataloader(), verbose=False)[0]
    module.eval()
    batches = list(zip(range(2), data.val_dataloader()))
    with torch.no_grad():
        assert metrics["val_ema/top1"] == pytest.approx(accuracy([module.ema(x) for _, (x, _) in batches], [y for _, (_, y) in batches]))
        assert metrics["val/top1"] == pytest.approx(accuracy([module(x) for _, (x, _) in batches], [y for _, (_, y) in batches]))


def test_resumed_ema_updates_once_per_optimizer_step(tmp_path):
    """4 batches accumulated in pairs: 2 updates an epoch, also in the epoch after a resume (the
    resumed run's first batch, before any optimizer step, does not update again)."""
    data = digits()
    fit_trainer = trainer(tmp_path, limit_train_batches=4, accumulate_grad_batches=2, limit_val_batches=0)
    narrow = {"channels": NARROW_WIDTHS}  # a 1.5 MB checkpoint
    fit_trainer.fit(ClassificationModule(num_classes=10, ema_decay=0.9, backbone_kwargs=narrow), data.train_dataloader())
    fit_trainer.save_checkpoint(tmp_path / "epoch1.ckpt")
    resumed = ClassificationModule(num_classes=10, ema_decay=0.9, backbone_kwargs=narrow)
    trainer(tmp_path, max_epochs=2, limit_train_batches=4, accumulate_grad_batches=2, limit_val_batches=0).fit(
        resumed, data.train_dataloader(), ckpt_path=tmp_path / "epoch1.ckpt"
    )
    assert resumed.ema.n_averaged.item() == 4


def save(module: ClassificationModule, path) -> None:
    """What Lightning's checkpoint holds for loading a module."""
    hparams = {k: v for k, v in module.hparams.items() if k != "optimizer"}
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": L.__version__}, path)


def test_ema_checkpoints_load_with_the_setting_switched(tmp_path):
    plain, path = ClassificationModule(num_classes=10, backbone_kwargs={"channels": NARROW_WIDTHS}), tmp_path / "model.ckpt"
    save(plain, path)
    with_ema = ClassificationModule.load_from_checkpoint(path, ema_decay=0.99)
    assert with_ema.ema.n_averaged.item() == 0  # its first update copies the weights then current
    assert torch.equal(with_ema.ema.module.conv1.weight, plain.backbone.conv1.weight)
    save(with_ema, path)
    assert ClassificationModule.load_from_checkpoint(path, ema_decay=0.0).ema is None


def test_flip_tta_averages_image_and_mirror(tmp_path):
    data = digits()
    module = ClassificationModule(num_classes=10, flip_tta=True, channels_last=False)
    metrics = trainer(tmp_path).validate(module, data.val_dataloader(), verbose=False)[0]
    module.eval()
    batches = [batch for _, batch in zip(range(2), data.val_dataloader())]
    with torch.no_grad():
        tta = [(module(x) + module(x.flip(3))) / 2 for x, _ in batches]
    assert metrics["val/top1_tta"] == pytest.approx(accuracy(tta, [y for _, y in batches]))
    assert "val/top1" in metrics and "val_ema/top1" not in metrics


def test_drop_path_and_blur_pool_through_backbone_kwargs(tmp_path):
    backbone = built(tmp_path, "--model.backbone_kwargs", "{drop_path_rate: 0.1, blur_pool: true}").model.backbone
    rates = [m.drop_prob for m in backbone.modules() if isinstance(m, DropPath)]
    assert rates == pytest.approx([0.1 * i / 7 for i in range(1, 8)])  # resnet18: 8 blocks, the first never drops
    assert sum(isinstance(m, BlurPool2d) for m in backbone.modules()) == 4  # stem pool + 3 strided stages
    with pytest.raises(ConfigError, match=r"model.backbone_kwargs .*drop_path_rate must be in \[0, 1\)"):
        ClassificationModule(backbone_kwargs={"drop_path_rate": 1.5})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("random_erasing", 1.5, "model.random_erasing must be in"), ("ema_decay", 1.0, "model.ema_decay must be in"),
     ("ema_every_n_steps", 0, "model.ema_every_n_steps must be >= 1"), ("mixup_off_epochs", -1, "model.mixup_off_epochs")],
)  # fmt: skip
def test_bad_values_name_their_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        ClassificationModule(**{key: value})


def test_every_new_key_trains_through_the_cli(tmp_path):
    fit(tmp_path, "-c", str(DIGITS_BASE), *TINY, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "1", "--model.random_erasing", "0.25", "--model.mixup_alpha", "0.2",
        "--model.mixup_off_epochs", "1", "--model.ema_decay", "0.99", "--model.flip_tta", "true",
        "--model.backbone_kwargs", "{drop_path_rate: 0.05, blur_pool: true}", "--data.test_image_size", "40",
        "--progressive.initial_scale", "0.5")  # fmt: skip
    rows = read_metrics(next(tmp_path.rglob("metrics.csv")))
    for key in ("val/top1", "val_ema/top1", "val/top1_tta"):
        assert len(column(rows, key)) == 2 and all(0 <= v <= 1 for v in column(rows, key)), key


# --- progressive resizing -------------------------------------------------------------------------


def composer_side(width: int, elapsed: float, initial: float, delay: float, finetune: float, increment: int) -> int:
    """MosaicML composer's ProgressiveResizing.apply, written out: the scale, then the width pinned to the increment."""
    frac = min((elapsed - delay) / (1 - finetune - delay), 1) if elapsed >= delay else 0.0
    scale = initial + (1 - initial) * frac
    return round(width * scale / increment) * increment


@pytest.mark.parametrize(("initial", "delay", "finetune", "increment"), [(0.5, 0.5, 0.2, 4), (0.25, 0.1, 0.3, 8), (0.75, 0.0, 0.0, 1)])
def test_progressive_schedule_is_composers(initial, delay, finetune, increment):
    for step in range(101):
        side = scaled_side(224, progressive_scale(step / 100, initial, delay, finetune), increment)
        assert side == composer_side(224, step / 100, initial, delay, finetune, increment), step
    assert scaled_side(32, 0.1, 4, smallest=16) == 16  # never below what the backbone takes


def test_resize_batch_is_torchvisions_antialiased_bilinear_resize():
    x = torch.randn(2, 3, 32, 24)
    torch.testing.assert_close(resize_batch(x, 16), TF.resize(x, [16, 12], antialias=True))
    assert resize_batch(x, 32) is x


class RecordInputs(Callback):
    def __init__(self):
        self.train_sides, self.val_sides = [], []

    def on_train_start(self, trainer, pl_module):
        pl_module.backbone.register_forward_pre_hook(
            lambda _, args: (self.train_sides if pl_module.training else self.val_sides).append(args[0].shape[-1])
        )


def test_progressive_resizing_trains_small_first_and_leaves_lr_and_validation_alone(tmp_path):
    """20 steps of 32 px digits at initial_scale 0.5, delay 0.25, finetune 0.2: 16 px for steps 0-4,
    composer's ramp to 32 px by step 11, then 32; validation at 32; the same LRs as without it."""
    data, runs = digits(), {}
    for scale in (0.5, 1.0):
        record, lrs = RecordInputs(), []
        schedule = LRSchedule("cosine", warmup_epochs=0.2)
        sizes = ProgressiveResizing(initial_scale=scale, delay_fraction=0.25, finetune_fraction=0.2)
        lr_log = L.pytorch.callbacks.LambdaCallback(on_train_batch_end=lambda t, *_: lrs.append(t.optimizers[0].param_groups[0]["lr"]))
        fit_trainer = trainer(tmp_path, max_epochs=2, limit_train_batches=10, callbacks=[schedule, sizes, record, lr_log])
        module = ClassificationModule(num_classes=10, backbone_kwargs={"channels": NARROW_WIDTHS})
        fit_trainer.fit(module, data.train_dataloader(), data.val_dataloader())
        runs[scale] = record, lrs
    record, lrs = runs[0.5]
    assert record.train_sides == [composer_side(32, step / 20, 0.5, 0.25, 0.2, 4) for step in range(20)]
    assert record.train_sides[:5] == [16] * 5 and record.train_sides[-4:] == [32] * 4
    assert set(record.val_sides) == {32} and runs[1.0][0].train_sides == [32] * 20
    assert lrs == runs[1.0][1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"initial_scale": 0}, "progressive.initial_scale must be in"), ({"delay_fraction": 0.9}, "must be at least 0 and sum to at most 1"),
     ({"size_increment": 0}, "progressive.size_increment")],
)
def test_bad_progressive_settings_name_their_key(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ProgressiveResizing(**kwargs)
