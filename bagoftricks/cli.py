"""`bagoftricks fit|validate|test|predict` (LightningCLI); `bagoftricks ablate SPEC` runs its fits through ``cli_main``."""

from __future__ import annotations

import warnings
from typing import Any

import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from bagoftricks.callbacks import LRSchedule, ProgressiveResizing
from bagoftricks.data import ImageDataModule
from bagoftricks.errors import ConfigError, UserError
from bagoftricks.models import fit_report, min_image_size, read_checkpoint
from bagoftricks.module import ClassificationModule


class WandbConfigCallback(SaveConfigCallback):
    """config.yaml as usual, and the resolved config into W&B runs (LightningCLI does not: Lightning issue 19728)."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if loggers:
            config = yaml.safe_load(self.parser.dump(self.config))
            for logger in loggers:
                logger.experiment.config.update(config, allow_val_change=True)


class BagOfTricksCLI(LightningCLI):
    """LightningCLI with the LR schedule, progressive resizing and checkpointing always present under their own groups."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(LRSchedule, "schedule")
        parser.add_lightning_class_args(ProgressiveResizing, "progressive")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                # Keep the best model by validation top-1 and always a last.ckpt to resume from.
                "checkpoint.monitor": "val/top1",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
            }
        )
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:
            # jsonargparse reports a constructor's error inside a dump of the union types it tried
            # (the data group is `ImageDataModule | None`); a user's mistake is shown as itself.
            cause = err.__cause__ or err.__context__
            while cause is not None and not isinstance(cause, UserError):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            raise cause from None

    def _parse_ckpt_path(self) -> None:
        """Resume with the config the user gave, not the checkpoint's hyperparameters.

        LightningCLI would parse the checkpoint's saved hyperparameters over the command line, so
        ``--model.label_smoothing 0.3 --ckpt_path last.ckpt`` trained with the checkpoint's value.
        Here the checkpoint gives weights and loop state only; ``_check_run`` refuses one
        whose network does not fit the config.
        """

    def _check_run(self) -> None:
        """What only the whole config can tell: a training length, an image size the backbone
        takes, a checkpoint that fits the network."""
        config = self.config[self.subcommand]
        path = config.get("ckpt_path")
        if self.subcommand == "fit" and 0 in (self.trainer.max_epochs, self.trainer.max_steps):
            raise ConfigError("trainer.max_epochs and trainer.max_steps must be positive: 0 trains nothing.")
        smallest = min_image_size(self.model.backbone)
        for key in ("image_size", "test_image_size"):
            size = getattr(self.datamodule, key, None)
            if size is not None and size < smallest:
                raise ConfigError(
                    f"data.{key} {size} is smaller than model.backbone {self.model.hparams.backbone} takes "
                    f"({smallest} px); use data.{key} {smallest} or more."
                )
        if not path or path in ("last", "best", "hpc", "registry"):  # Lightning's own names, resolved by it
            return
        state, hparams = read_checkpoint(path, role="--ckpt_path", weights_only=config.get("weights_only") is not False)
        problems = fit_report(self.model.backbone, state)
        if problems:
            trained = f" (it was trained as {hparams['backbone']} with {hparams['num_classes']} classes)" if hparams else ""
            raise ConfigError(
                f"--ckpt_path {path} does not fit this config's model.backbone {self.model.hparams.backbone} with "
                f"{self.model.hparams.num_classes} classes{trained}: {problems}; pass the config it was trained with."
            )

    before_fit = before_validate = before_test = before_predict = _check_run

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]):
        # The checkpoint group always adds a ModelCheckpoint, which Lightning refuses beside
        # --trainer.enable_checkpointing false: that switch drops it instead.
        if config.get("enable_checkpointing") is False:
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        return super()._instantiate_trainer(config, callbacks)

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        # --ckpt_path files load as tensors only unless the user explicitly trusts the file
        # (--weights_only false): unpickling a stranger's checkpoint can run code.
        if "weights_only" in kwargs and kwargs["weights_only"] is None:
            kwargs["weights_only"] = True
        return kwargs


def cli_main(args: list[str] | None = None, run: bool = True) -> BagOfTricksCLI:
    """Build (and with ``run``, execute) the CLI, so code and tests can do what the shell does."""
    return BagOfTricksCLI(
        ClassificationModule,
        ImageDataModule,
        subclass_mode_data=True,
        auto_configure_optimizers=False,  # the module builds its own optimizer groups
        parser_kwargs={"description": "Train, evaluate or predict with one config; `bagoftricks ablate SPEC` runs a whole ablation."},
        save_config_callback=WandbConfigCallback,
        # Each logged run has its own version folder; without a logger, validate/test would
        # otherwise refuse to run twice in the same folder.
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        args=args,
        run=run,
    )


def ignore_known_warnings() -> None:
    """Warnings printed at every fit that are not for a user to act on: Lightning 2.6's own use of
    APIs that torch 2.14 and jsonargparse 4.49 deprecate, and its advice to log more often than an
    epoch has steps (StepLog writes every step's value at the end of each epoch anyway)."""
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"lightning\.pytorch\.cli")
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")
