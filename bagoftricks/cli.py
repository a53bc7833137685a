"""`bagoftricks fit|validate|test|predict` (LightningCLI); `bagoftricks ablate SPEC` runs its fits through ``cli_main``."""

from __future__ import annotations

import codecs
import errno
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import jsonargparse
import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO

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


# ---------------------------------------------------------------- config files a user may hand us

MAX_CONFIG_BYTES = 1 << 20  # a config is a few KB; anything past 1 MiB is not one
MAX_YAML_NODES = 100_000  # values of a YAML document once its aliases are expanded (base.yaml: about 40)


def read_config_text(path: str | Path) -> str:
    """The text of a config or ablation spec; a file that is not one (too big, binary, UTF-16 or UTF-32 with
    or without a byte order mark, not UTF-8: jsonargparse would stall or fail with a traceback) is refused in
    one sentence naming it."""
    size = Path(path).stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is {size:,} bytes, too big for a config (at most 1 MiB); pass the YAML file of the run.")
    data = Path(path).read_bytes()
    head, half = data[:4096], len(data[:4096]) // 2
    boms = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)
    if data.startswith(boms) or (half >= 2 and half in (head[1::2].count(0), head[0::2].count(0))):  # ASCII as UTF-16
        raise ConfigError(f"{path} is UTF-16 or UTF-32 text; save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8).")
    if b"\0" in data:
        raise ConfigError(f"{path} is binary (it holds NUL bytes), not a YAML config; pass the YAML file of the run.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.start} is not); save it as UTF-8.") from None


def config_files(args: list[str]) -> list[str]:
    """The files given with ``-c``/``--config`` (and ``--config=``) in ``args``."""
    files = [value for flag, value in zip(args, args[1:]) if flag in ("-c", "--config")]
    return files + [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]


def expanded_nodes(root: yaml.Node) -> int:
    """The number of nodes of a composed YAML document with every alias expanded, counted up to
    just past MAX_YAML_NODES (each shared node once, by memo, so a "billion laughs" file costs
    its size, not its expansion); a document that contains itself counts as too big."""
    sizes: dict[int, int] = {}
    stack, open_nodes = [(root, False)], set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        value = node.value if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)) else []
        children = [n for item in value for n in (item if isinstance(item, tuple) else (item,))]
        if children_done:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[key] > MAX_YAML_NODES:
                return sizes[key]
        elif key in open_nodes:  # an alias to an enclosing node: infinite when expanded
            return MAX_YAML_NODES + 1
        elif key not in sizes:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


_yaml_load = jsonargparse.get_loader("yaml")


def check_aliases(stream: str) -> None:
    """Refuse a YAML document whose aliases expand past MAX_YAML_NODES values (a few hundred bytes
    of nested anchors otherwise cost minutes to load); a syntax error is left to the loader."""
    if "*" in stream:  # no alias, nothing to expand
        try:
            root = yaml.compose(stream, Loader=yaml.SafeLoader)
        except RecursionError:
            raise ConfigError("A config value is nested too deeply to be a config; pass the YAML file of the run.") from None
        except yaml.YAMLError:
            root = None  # the loader below reports it as jsonargparse does
        if root is not None and expanded_nodes(root) > MAX_YAML_NODES:
            raise ConfigError(
                f"A config expands its YAML aliases (*name) past {MAX_YAML_NODES:,} values, which no run needs; "
                "write the values out or remove the nested anchors."
            )


def bounded_yaml_load(stream: str) -> Any:
    """jsonargparse's YAML loader, after :func:`check_aliases`."""
    check_aliases(stream)
    try:
        return _yaml_load(stream)
    except RecursionError:
        raise ConfigError("A config value is nested too deeply to be a config; pass the YAML file of the run.") from None


jsonargparse.set_loader("yaml", bounded_yaml_load, exceptions=(yaml.YAMLError,))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic: the file is written beside its target and renamed
    over it only when complete, so a full disk or a killed run never leaves a truncated
    ``last.ckpt`` behind, and the previous one stays intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # a remote filesystem: fsspec's own write
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        partial = target.with_name(f".{target.name}.partial")
        try:
            super().save_checkpoint(checkpoint, partial, storage_options)
            os.replace(partial, target)
        except OSError as err:
            partial.unlink(missing_ok=True)
            raise UserError(
                f"Writing checkpoint {target} failed ({err.strerror or err}); free space there or set checkpoint.dirpath "
                "to a disk with room (checkpoints already written are intact)."
            ) from None


def lightning_mistake(err: Exception) -> ConfigError:
    """Lightning's refusal of a ``trainer.*`` setting, as one line that says which group it is."""
    return ConfigError(f"{' '.join(str(err).split())} (a trainer.* or callback setting; see bagoftricks fit --help).")


TRAINER_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")


def check_trainer_config(config: dict[str, Any]) -> None:
    """The ``trainer.*`` values Lightning would refuse with a traceback, or accept and do nothing with."""
    for key in TRAINER_LIMITS:
        value = config.get(key)
        if isinstance(value, float) and not (0 <= value <= 1):
            raise ConfigError(f"trainer.{key} must be a fraction in [0, 1] or a whole number of batches, got {value}.")
        if isinstance(value, int) and value < 0:
            raise ConfigError(f"trainer.{key} must be at least 0, got {value}.")
    accumulate = config.get("accumulate_grad_batches")
    if accumulate is not None and (isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1):
        raise ConfigError(f"trainer.accumulate_grad_batches must be a whole number >= 1 (1 = no accumulation), got {accumulate}.")
    devices = config.get("devices")
    if isinstance(devices, str) and devices.lstrip("-").isdigit():  # the CLI parses `--trainer.devices 0` as a string
        devices = int(devices)
    if isinstance(devices, int) and not isinstance(devices, bool) and (devices == 0 or devices < -1):
        raise ConfigError(f"trainer.devices must be at least 1, -1 (all), auto or a list of device ids, got {devices}.")
    accelerator = config.get("accelerator")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator {accelerator} needs a CUDA GPU and this machine has none; use trainer.accelerator cpu or auto.")
    interval = config.get("val_check_interval")
    if isinstance(interval, float) and not 0 < interval <= 1:
        raise ConfigError(f"trainer.val_check_interval as a fraction of an epoch must be in (0, 1], got {interval}.")


def is_out_of_memory(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, torch.OutOfMemoryError) or "can't allocate memory" in text or "out of memory" in text


def user_cause(err: BaseException) -> UserError | None:
    """The user's mistake behind ``err`` (jsonargparse wraps a constructor's error in its own), or None."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, UserError):
        cause = cause.__cause__ or cause.__context__
    return cause


def check_length(max_epochs: int | None, max_steps: int | None, limit_train_batches: int | float | None) -> None:
    """Refuse a fit that would train nothing (``fit`` and ``bagoftricks ablate``'s plan share it)."""
    if 0 in (max_epochs, max_steps):
        raise ConfigError("trainer.max_epochs and trainer.max_steps must be positive: 0 trains nothing.")
    if limit_train_batches == 0:
        raise ConfigError("trainer.limit_train_batches 0 trains nothing; set a fraction in (0, 1] or a number of batches.")


def check_monitors(model: Any, callbacks: list[Any]) -> None:
    """A checkpoint's monitor must be a metric the module logs, or it is found missing only after the first
    epoch has trained (``fit`` and ``bagoftricks ablate``'s plan share it)."""
    logged = model.monitorable_metrics() if isinstance(model, ClassificationModule) else None
    for callback in callbacks:
        monitor = getattr(callback, "monitor", None)
        if logged is not None and monitor is not None and monitor not in logged:
            raise ConfigError(
                f"checkpoint.monitor {monitor} is not a metric this run logs; use one of {', '.join(sorted(logged))}, "
                "or null to keep only the last checkpoint."
            )


def check_image_sizes(model: Any, datamodule: Any) -> None:
    """Refuse a data module's image side below the smallest the model's backbone takes (``fit`` and ``bagoftricks
    ablate``'s plan share it; the plan's model is built on the meta device)."""
    smallest = min_image_size(model.backbone)
    for key in ("image_size", "test_image_size"):
        if (size := getattr(datamodule, key, None)) is not None and size < smallest:
            raise ConfigError(
                f"data.{key} {size} is smaller than model.backbone {model.hparams.backbone} takes ({smallest} px); "
                f"use data.{key} {smallest} or more."
            )


class BagOfTricksCLI(LightningCLI):
    """LightningCLI with the LR schedule, progressive resizing and checkpointing always present under their own groups."""

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        # An abbreviated key is refused, not expanded (`--model.lr` is no `--model.lr_scaling`; jsonargparse 5's
        # default), and a refused value ends in jsonargparse's error and the --help tip without 100 lines of usage.
        parser = super().init_parser(allow_abbrev=False, **kwargs)
        parser.print_usage = lambda file=None: None
        return parser

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
            if (cause := user_cause(err)) is None:
                raise
            raise cause from None

    def _set_seed(self) -> None:
        seed = self._get(self.config, "seed_everything")
        if not isinstance(seed, bool) and isinstance(seed, int) and not 0 <= seed <= 2**32 - 1:
            raise ConfigError(f"seed_everything must be in [0, 4294967295] (numpy's range) or true for a random one, got {seed}.")
        super()._set_seed()

    def _run_subcommand(self, subcommand: str) -> None:
        """The subcommand, with Lightning's and the machine's refusals found while it runs turned
        into one sentence each: a trainer setting, memory, disk space."""
        try:
            super()._run_subcommand(subcommand)
        except UserError:
            raise
        except MisconfigurationException as err:
            raise lightning_mistake(err) from None
        except ValueError as err:
            found = re.match(r"\s*`val_check_interval` \((.+?)\) .*training batches \((\d+)\)", str(err))
            if found:  # found when the epoch's length is known
                raise ConfigError(
                    f"trainer.val_check_interval {found[1]} is more batches than an epoch has ({found[2]}); lower it, "
                    "or set trainer.check_val_every_n_epoch null to count batches across epochs."
                ) from None
            raise
        except (RuntimeError, MemoryError) as err:
            if not (isinstance(err, MemoryError) or is_out_of_memory(err)):
                raise
            data = self.datamodule
            raise UserError(
                f"Out of memory with data.batch_size {getattr(data, 'batch_size', '?')} at data.image_size "
                f"{getattr(data, 'image_size', '?')}; lower one of them (or trainer.precision bf16-mixed)."
            ) from None
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            raise UserError(
                f"Writing {err.filename or 'an output file'} failed ({err.strerror}); free space there or point "
                "trainer.default_root_dir (logs) and checkpoint.dirpath at a disk with room."
            ) from None

    def _parse_ckpt_path(self) -> None:
        """Resume with the config the user gave, not the checkpoint's hyperparameters.

        LightningCLI would parse the checkpoint's saved hyperparameters over the command line, so
        ``--model.label_smoothing 0.3 --ckpt_path last.ckpt`` trained with the checkpoint's value.
        Here the checkpoint gives weights and loop state only; ``_check_run`` refuses one
        whose network does not fit the config.
        """

    def _check_run(self) -> None:
        """What only the whole config can tell: a training length, an image size the backbone
        takes, a checkpoint that fits the network. Built with ``run=False`` (no subcommand), the checks of fit."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        path = config.get("ckpt_path")
        if self.subcommand in ("fit", None):
            check_length(self.trainer.max_epochs, self.trainer.max_steps, self.trainer.limit_train_batches)
            check_monitors(self.model, self.trainer.checkpoint_callbacks)
        check_image_sizes(self.model, self.datamodule)
        if path == "best" and not any(getattr(cb, "best_model_path", "") for cb in self.trainer.checkpoint_callbacks):
            raise ConfigError(
                "--ckpt_path best names the best checkpoint of a fit run earlier in this same process, and none has; "
                "pass the checkpoint file itself (fit saves it under trainer.default_root_dir or checkpoint.dirpath)."
            )
        if path == "last":  # Lightning finds it: check the file it would load
            found = [p for cb in self.trainer.checkpoint_callbacks for p in cb._find_last_checkpoints(self.trainer)]
            path = max(found, key=os.path.getmtime) if found else None
        if not path or path in ("best", "hpc", "registry"):  # Lightning's own names, resolved by it
            return
        state, hparams = read_checkpoint(path, role="--ckpt_path", weights_only=config.get("weights_only") is not False)
        if not hparams:
            raise ConfigError(
                f"--ckpt_path {path} holds weights only, not a training checkpoint of this library; to start from those "
                "weights pass --model.pretrained with it instead."
            )
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
        # --trainer.fast_dev_run promises no checkpoints, but Lightning 2.6's ModelCheckpoint.on_train_end
        # still writes save_last's last.ckpt (a new last-vN.ckpt per call) where a later `--ckpt_path last`
        # would load it: a fast dev run drops the callback too.
        if config.get("fast_dev_run"):
            config = {**config, "enable_checkpointing": False}
        if config.get("enable_checkpointing") is False:
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        check_trainer_config(config)
        plugins = config.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            config = {**config, "plugins": [*plugins, AtomicCheckpointIO()]}
        try:
            trainer = super()._instantiate_trainer(config, callbacks)
        except MisconfigurationException as err:
            raise lightning_mistake(err) from None
        if torch.are_deterministic_algorithms_enabled():
            # trainer.deterministic keeps torch's deterministic algorithms, without their NaN fill of
            # every new tensor: only a kernel that reads memory it never wrote needs it, and on the
            # digits recipe the fill was the fixed cost per step that a user's plain loop does not pay
            # (benchmarks/README.md, profile_step.py).
            torch.utils.deterministic.fill_uninitialized_memory = False
        return trainer

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        # --ckpt_path files load as tensors only unless the user explicitly trusts the file
        # (--weights_only false): unpickling a stranger's checkpoint can run code.
        if "weights_only" in kwargs and kwargs["weights_only"] is None:
            kwargs["weights_only"] = True
        return kwargs


def cli_main(args: list[str] | None = None, run: bool = True, cli_class: type[BagOfTricksCLI] = BagOfTricksCLI) -> BagOfTricksCLI:
    """Build (and with ``run``, execute) the CLI, so code and tests can do what the shell does
    (``cli_class``: a subclass, for the ablation's parse entry)."""
    for path in config_files(sys.argv[1:] if args is None else list(args)):
        if Path(path).is_file():  # a missing one is left to jsonargparse's message
            text = read_config_text(path)
            if re.search(r"^base:", text, re.M) and re.search(r"^steps:", text, re.M):  # an ablation spec's top-level keys
                raise ConfigError(f"{path} is an ablation spec, not a config; run it with `bagoftricks ablate {path}`.")
    return cli_class(
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
