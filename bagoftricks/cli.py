"""`bagoftricks fit|validate|test|predict` (LightningCLI) and `bagoftricks ablate SPEC`."""

from __future__ import annotations

import os
import pickle
import sys
import warnings

import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from bagoftricks.callbacks import LRSchedule
from bagoftricks.data import DataError, ImageDataModule
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
    """LightningCLI with the LR schedule and checkpointing always present under their own groups."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(LRSchedule, "schedule")
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
        trainer_defaults={"log_every_n_steps": 1},  # raw per-step values, as the paper's curves need
        args=args,
        run=run,
    )


def ignore_known_warnings() -> None:
    """Lightning 2.6's own use of a torch API that torch 2.14 deprecates: printed at every fit and
    not for a user to act on."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def main(argv: list[str] | None = None) -> None:
    """The console script: a user's mistake is one line on stderr, not a traceback.

    Set ``BAGOFTRICKS_TRACEBACK=1`` to see the full traceback.
    """
    args = sys.argv[1:] if argv is None else argv
    ignore_known_warnings()
    try:
        if args[:1] == ["ablate"]:
            from bagoftricks.ablation import ablate_main

            ablate_main(args[1:])
        else:
            cli_main(argv)  # None: LightningCLI reads sys.argv itself
    except (ValueError, FileNotFoundError, FloatingPointError, DataError, pickle.UnpicklingError) as err:
        if os.environ.get("BAGOFTRICKS_TRACEBACK"):
            raise
        if isinstance(err, pickle.UnpicklingError):
            err = "the checkpoint holds pickled objects and weights-only loading refused it; " \
                  "pass --weights_only false only for a file you trust."
        sys.exit(f"bagoftricks: error: {err}")
