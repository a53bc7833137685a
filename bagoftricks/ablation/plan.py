"""Plan once: a ``Spec`` (+ ``--seeds``, ``--set``, budgets) -> the ordered ``PlannedRun``s, each parsed by the
CLI's own parser and checked as ``fit`` would, before any run trains. Launchers read ``<out>/plan.json``."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import shlex
import textwrap
from argparse import ArgumentError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace

from bagoftricks import cli
from bagoftricks.ablation.spec import WANDB_LOGGER, Spec, one_line, set_args, step_folder, wandb_init_args
from bagoftricks.errors import ConfigError, MissingDataError, UserError
from bagoftricks.models.resnet import MODEL_FLAGS


@dataclass(frozen=True)
class PlannedRun:
    """One training run: a step of the spec with one seed, and everything needed to train it anywhere."""

    index: int
    step_index: int
    step: str
    parent: str  # name of the step "Δ prev" compares with ('' for none)
    seed: int
    tricks: tuple[str, ...]
    run_dir: Path
    configs: tuple[str, ...]  # -c files in order (base first)
    overrides: tuple[str, ...]  # the spec's --key value pairs (and -c diffs), in the order they apply
    wandb: dict[str, Any] | None = None  # WandbLogger init_args, or None without W&B
    budget: float | None = None  # the step's epoch multiplier (None without budgets)
    unbudgeted: str = ""  # the step's name without its budget suffix
    test: bool = True  # also evaluate the final weights on the test split
    keep_checkpoints: bool = True
    config: dict[str, Any] | None = field(default=None, compare=False, repr=False)  # as `fit` parses it (plan.json)

    def fit_args(self, wandb_id: str | None = None) -> list[str]:
        # First logger: its log_dir (the run folder itself: no name, version ".") receives config.yaml and metrics.csv,
        # flushed every step, so a killed run keeps its metrics up to its last checkpoint.
        csv_args = {"save_dir": str(self.run_dir), "name": None, "version": ".", "flush_logs_every_n_steps": 1}
        loggers: list[dict[str, Any]] = [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": csv_args}]
        if self.wandb is not None:
            init_args = {**self.wandb, **({"id": wandb_id, "resume": "allow"} if wandb_id else {})}
            loggers.append({"class_path": WANDB_LOGGER, "init_args": init_args})
        # Quiet by default: the launcher shows one progress line across runs; a spec may turn these back on.
        args = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
        args += [arg for config in self.configs for arg in ("-c", config)]
        args += list(self.overrides)
        args += ["--seed_everything", str(self.seed), "--trainer.default_root_dir", str(self.run_dir)]
        args += ["--trainer.logger", one_line(loggers), "--checkpoint.dirpath", str(self.run_dir / "checkpoints")]
        return args

    def command(self) -> str:
        """The equivalent shell command."""
        return shlex.join(["bagoftricks", "fit", *self.fit_args()])

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "run_dir": str(self.run_dir)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlannedRun:
        data = {**data, "run_dir": Path(data["run_dir"])}
        for key in ("tricks", "configs", "overrides"):
            data[key] = tuple(data[key])
        return cls(**data)


class _ParserBuilt(Exception):
    """Raised by ``_ParserOnlyCLI`` with the parser it built, before anything is parsed or instantiated."""


class _ParserOnlyCLI(cli.BagOfTricksCLI):
    def parse_arguments(self, parser, args) -> None:
        raise _ParserBuilt(parser)


@functools.cache
def fit_parser():
    """The parser of ``bagoftricks fit``, built once per process by ``cli_main``: its ``parse_args`` gives the config
    ``fit ARGS`` would run with, or raises ``argparse.ArgumentError`` where ``fit`` would fail."""
    try:
        cli.cli_main([], run=False, cli_class=_ParserOnlyCLI)
    except _ParserBuilt as built:
        (parser,) = built.args
    parser.exit_on_error = False
    return parser


def cli_keys(config: Namespace) -> list[str]:
    """Every dotted key a ``set:`` may name: leaves, their parents, and subclass keys without ``init_args``."""
    keys = set()
    for leaf in config.keys():
        for key in (leaf, leaf.replace(".init_args.", ".")):
            parts = key.split(".")
            keys.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(keys)


def _unknown_key(spec: Spec, run: PlannedRun, extra: dict[str, Any], known: list[str]) -> str | None:
    """The first key a `set` of this step names that is not one of the ``known`` CLI keys, with its close matches."""
    sources = [(key, "the spec's top-level `set`") for key in spec.set]
    sources += [
        (key, "its `set`" if j == run.step_index else f"step {spec.steps[j].name!r}'s `set`")
        for j in spec.chain(run.step_index)
        for key in spec.steps[j].set
    ]
    sources += [(key, "--set") for key in extra]
    for key, source in sources:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.7)
            group, _, name = key.rpartition(".")
            if group == "model" and name in MODEL_FLAGS:
                hint = f"{name} is a backbone flag: set model.backbone_kwargs: {{{name}: ...}}."
            elif close:
                hint = f"did you mean {' or '.join(close)}?"
            else:
                hint = "`bagoftricks fit --help` lists the keys."
            return f"{spec.path}: step {run.step!r}: {source} names {key}, which is not a CLI key; {hint}"
    return None


def _parse(spec: Spec, run: PlannedRun, extra: dict[str, Any]) -> Namespace:
    """The run's config as ``fit`` parses it; a parse error in the spec's terms: an unknown key (the keys known
    from the run's config files alone) with its close matches, else the parser's complaint."""
    where = f"{spec.path}: step {run.step!r}"
    try:
        config = fit_parser().parse_args(run.fit_args())
    except ArgumentError as err:
        files = [*run.configs, *(value for flag, value in zip(run.overrides[::2], run.overrides[1::2]) if flag == "-c")]
        try:
            known = cli_keys(fit_parser().parse_args(dataclasses.replace(run, configs=tuple(files), overrides=()).fit_args()))
        except ArgumentError as files_err:
            problem = textwrap.shorten(str(files_err), 300, placeholder="...")
            raise ConfigError(f"{where}: its config files ({', '.join(files)}) do not parse: {problem}; fix them.") from None
        problem = textwrap.shorten(str(err), 300, placeholder="...")
        raise ConfigError(_unknown_key(spec, run, extra, known) or f"{where}: {problem}; fix that value in the spec.") from None
    return config


def check_step(where: str, config: Namespace, files: bool) -> str | None:
    """What ``fit`` refuses before training, for one step's parsed config (its seeds change nothing checked here),
    each message after ``where``: the training length and trainer values, the warmup, what the model's and data
    module's constructors check (built on the meta device: no weights), the image sizes the backbone takes and the
    checkpoint's monitor. Teacher and pretrained weights are not loaded but, with ``files`` (not ``--dry-run``),
    must exist, as must the dataset. Returns a warning (warmup covering every epoch) or None."""
    epochs, warmup = config.get("trainer.max_epochs"), config.get("schedule.warmup_epochs")
    config, parser = config.clone(), fit_parser()
    try:
        cli.check_length(epochs, config.get("trainer.max_steps"), config.get("trainer.limit_train_batches"))
        cli.check_trainer_config({**vars(config.trainer), "accelerator": None})  # the GPU is the run's machine's to check
        if warmup and epochs and warmup > epochs:  # the schedule would refuse it at the run's start
            raise ConfigError(
                f"schedule.warmup_epochs ({warmup:g}) is longer than trainer.max_epochs ({epochs}); shorten the warmup or train longer."
            )
        for key in ("model.teacher", "model.pretrained"):
            if (path := config.get(key)) and files and not Path(path).is_file():
                raise ConfigError(f"{key} {path} does not exist; create it first (a teacher's command is on its config's first line).")
            config[key] = None
        with torch.device("meta"):  # the constructors' checks without allocating or initialising any weight
            built = (getattr(parser, "instantiate", None) or parser.instantiate_classes)(config)
        cli.check_image_sizes(built.model, built.data)
        cli.check_monitors(built.model, [built.checkpoint, *(built.get("trainer.callbacks") or [])])
    except (ValueError, TypeError, UserError) as err:
        if (cause := cli.user_cause(err)) is None:
            raise
        if files or not isinstance(cause, MissingDataError):  # --dry-run plans without the dataset, as without the teacher
            raise ConfigError(f"{where}: {cause}") from None
    if warmup and epochs and warmup == epochs:
        return f"schedule.warmup_epochs covers all of trainer.max_epochs in {where.split(': ', 1)[-1]} ({warmup:g} of {epochs})"
    return None


def budget_overrides(where: str, budget: float | None, config: Namespace) -> list[str]:
    """The arguments that multiply the schedule's length by ``budget``, read from the run's parsed config."""
    if budget is None or budget == 1:
        return []
    epochs = config.get("trainer.max_epochs")
    if not epochs or epochs < 0 or not math.isclose(epochs * budget, round(epochs * budget)):
        raise ConfigError(f"{where}: budget {budget:g} x trainer.max_epochs {epochs} is not a whole number of epochs; choose budgets that make one.")
    scaled: dict[str, Any] = {"trainer.max_epochs": round(epochs * budget)}
    if config.get("schedule.warmup_epochs"):
        scaled["schedule.warmup_epochs"] = config["schedule.warmup_epochs"] * budget
    if config.get("schedule.milestones"):
        scaled["schedule.milestones"] = [m * budget for m in config["schedule.milestones"]]
    if config.get("model.mixup_off_epochs"):
        scaled["model.mixup_off_epochs"] = round(config["model.mixup_off_epochs"] * budget)
    return set_args(scaled)


def plan(
    spec: Spec,
    out: str | Path | None = None,
    seeds: list[int] | None = None,
    wandb: bool = False,
    extra: dict[str, Any] | None = None,
    console=None,
    files: bool = True,
) -> list[PlannedRun]:
    """Every run of the spec (step-major, then seed) with its checked ``fit`` arguments; ``extra``: ``--set``,
    applied last; warnings go to ``console``; ``files=False`` (``--dry-run``) plans before a teacher exists."""
    out = spec.out_dir(out)
    extra = extra or {}
    user_wandb = wandb_init_args(spec)
    runs: list[PlannedRun] = []
    covered = []
    for i, step in enumerate(spec.steps):
        overrides = set_args(spec.set)  # a `trainer.logger` is parsed (checked), then replaced by the run's loggers
        # Each step's files, then its keys, in chain order: a later step overrides an earlier one.
        for j in spec.chain(i):
            overrides += [arg for config in spec.steps[j].configs for arg in ("-c", config)]
            overrides += set_args(spec.steps[j].set)
        overrides += set_args(extra)
        parent = spec.steps[step.reference].name if step.reference is not None else ""
        where = f"{spec.path}: step {step.name!r}"
        for seed in seeds if seeds is not None else spec.seeds:
            run_dir = out / step_folder(i, step.name) / f"seed{seed}"
            logger = None
            if wandb or user_wandb is not None:
                # The user's WandbLogger settings (project, entity, ...) stay; the ablation names and groups the run.
                logger = {"project": "bagoftricks", **(user_wandb or {})}
                logger.update(save_dir=str(run_dir), group=spec.name, name=f"{step.name} s{seed}", tags=[t[:64] for t in spec.tricks(i)],
                              config={"ablation": {"spec": str(spec.path), "step": step.name, "seed": seed, "tricks": spec.tricks(i)}})
            run = PlannedRun(len(runs), i, step.name, parent, seed, tuple(spec.tricks(i)), run_dir, tuple(spec.base), tuple(overrides),
                             logger, step.budget, step.unbudgeted, spec.test, spec.keep_checkpoints)  # fmt: skip
            config = _parse(spec, run, extra)
            if scaled := budget_overrides(where, step.budget, config):
                run = dataclasses.replace(run, overrides=(*run.overrides, *scaled))
                config = _parse(spec, run, extra)
            if run.seed == (seeds or spec.seeds)[0] and (warning := check_step(where, config, files)):
                covered.append(warning)
            runs.append(dataclasses.replace(run, config=json.loads(fit_parser().dump(config, format="json", skip_check=True))))
    if covered and console is not None:
        # With warmup over every epoch the LR never decays: cosine and step schedules become no-ops and
        # steps that differ only in the schedule train identically.
        console.print(f"[yellow]warning:[/] {spec.path}: " + "; ".join(covered) + ", so the schedule after warmup never runs; "
                      "lower warmup_epochs or raise max_epochs.")  # fmt: skip
    return runs

