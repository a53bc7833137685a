"""An ablation spec (YAML in) -> a validated ``Spec``: its steps (design and budget rows expanded) and settings."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bagoftricks.ablation.design import Design, design
from bagoftricks.cli import check_aliases, read_config_text
from bagoftricks.errors import ConfigError

MODES = ("cumulative", "each", "leave-one-out", "factorial")
SPEC_KEYS = ("name", "base", "seeds", "mode", "set", "steps", "test", "keep_checkpoints", "runs_per_seed", "budgets")
STEP_KEYS = ("name", "set", "config", "from")
# Chosen per run by the runner; a spec that set them would write every run into one folder.
RUNNER_KEYS = ("seed_everything", "trainer.default_root_dir", "checkpoint.dirpath", "ckpt_path")
WANDB_LOGGER = "lightning.pytorch.loggers.WandbLogger"


@dataclass(frozen=True)
class Step:
    """One row of the ablation: its own changes and the step it builds on (``parent``)."""

    name: str
    set: dict[str, Any] = field(default_factory=dict)
    configs: tuple[str, ...] = ()
    parent: int | None = None  # index of the step this one adds its changes to
    # The step "Δ prev" compares with: the parent, except in designs (leave-one-out compares with the full
    # recipe, factorial rows with no single step).
    reference: int | None = None
    trick_names: tuple[str, ...] | None = None  # set by designs, whose rows' names are not "+"-joined tricks
    budget: float | None = None  # epoch multiplier (spec key `budgets`), None without budgets
    unbudgeted: str = ""  # the step's name without its budget suffix


@dataclass(frozen=True)
class Spec:
    path: Path
    name: str
    base: tuple[str, ...]
    seeds: tuple[int, ...]
    mode: str
    set: dict[str, Any]
    steps: tuple[Step, ...]
    test: bool = True  # also evaluate the final weights on the test split (when it is not the val split)
    keep_checkpoints: bool = True  # False: delete a run's checkpoints once its result.json is written
    design: Design | None = None  # mode: factorial's two-level design (rows = steps, in order)

    def out_dir(self, out: str | os.PathLike | None = None) -> Path:
        return Path(out) if out is not None else Path("runs") / self.name

    def chain(self, index: int) -> list[int]:
        """Indices of the steps whose changes make up step ``index``, root first."""
        chain = [index]
        while (parent := self.steps[chain[-1]].parent) is not None:
            chain.append(parent)
        return chain[::-1]

    def tricks(self, index: int) -> list[str]:
        """The tricks on in step ``index``: its chain's names that change something, split at ``+``."""
        if self.steps[index].trick_names is not None:
            return list(self.steps[index].trick_names)
        chain = [self.steps[i] for i in self.chain(index)]
        names = [step.unbudgeted or step.name for step in chain if step.set or step.configs]
        return list(dict.fromkeys(part.strip() for name in names for part in name.split("+") if part.strip()))


def one_line(value: Any) -> str:
    """A CLI value: strings as they are, everything else as one line of YAML."""
    if isinstance(value, str):
        return value
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), sort_keys=False).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def set_args(values: dict[str, Any]) -> list[str]:
    return [arg for key, value in values.items() for arg in (f"--{key}", one_line(value))]


def step_folder(index: int, name: str) -> str:
    """``03-cosine-ls``: the step's index and its name in lower case, runs of other characters as one dash."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "step"
    return f"{index:02d}-{slug}"


def _paths(spec_path: Path, value: Any, what: str) -> tuple[str, ...]:
    """The config file, or list of them, that ``value`` names relative to the spec's folder; each must exist."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(f"{spec_path}: {what} is an empty list; name at least one config file or leave it out.")
    paths = []
    for relative in values:
        if not isinstance(relative, str) or not relative:
            raise ConfigError(f"{spec_path}: {what} must be a file path, got {relative!r}.")
        path = Path(os.path.normpath(spec_path.parent / relative))
        if not path.is_file():
            raise ConfigError(f"{spec_path}: {what} {path} does not exist (paths are relative to the spec's folder).")
        paths.append(str(path))
    return tuple(paths)


def check_set(value: Any, where: str) -> dict[str, Any]:
    """A spec's ``set`` (or ``--set``'s keys and values), each mistake one sentence starting with ``where``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping of CLI keys to values, such as {{trainer.max_epochs: 10}}.")
    for key in value:
        if not isinstance(key, str) or key.startswith("-") or not key:
            raise ConfigError(f"{where} key {key!r} must be a dotted CLI key without dashes, such as model.label_smoothing.")
        if key in RUNNER_KEYS:
            raise ConfigError(f"{where} names {key}, which the ablation chooses per run (seeds by --seeds, folders by --out); remove it.")
    return dict(value)


def _unknown(spec_path: Path, mapping: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(map(str, mapping)) - set(allowed))
    if unknown:
        raise ConfigError(f"{spec_path}: {where} has unknown key(s) {', '.join(unknown)}; allowed are {', '.join(allowed)}.")


def read_yaml(path: Path) -> Any:
    """A spec or config file's YAML; a syntax error names the file and line."""
    text = read_config_text(path)
    try:
        check_aliases(text)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}{where} is not valid YAML ({problem}); fix the syntax there.") from None


def load_spec(path: str | os.PathLike) -> Spec:
    """Read and validate an ablation spec; every mistake is one sentence naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Ablation spec {path} {'is a folder' if path.is_dir() else 'does not exist'}; name its YAML file, such as experiments/digits/ablation.yaml.")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} is not an ablation spec: expected a YAML mapping with base, seeds and steps.")
    if "base" not in raw and {"model", "data", "trainer"} & set(raw):
        raise ConfigError(f"{path} is a config for `bagoftricks fit -c {path}`, not an ablation spec (a spec names it under base:).")
    _unknown(path, raw, SPEC_KEYS, "the spec")
    if "base" not in raw:
        raise ConfigError(f"{path} has no `base:`; name the LightningCLI config(s) every run starts from.")
    mode = raw.get("mode", "cumulative")
    if mode not in MODES:
        raise ConfigError(f"{path}: mode must be one of {', '.join(MODES)}, got {mode!r}.")
    seeds = raw.get("seeds", [0])
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise ConfigError(f"{path}: seeds must be a non-empty list of integers, such as [0, 1, 2].")
    check_seeds(seeds, f"{path}: seeds")
    raw_steps = raw.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ConfigError(f"{path} has no steps; list at least a baseline under `steps:`.")
    steps: list[Step] = []
    index_of: dict[str, int] = {}
    for i, raw_step in enumerate(raw_steps):
        if not isinstance(raw_step, dict) or not isinstance(raw_step.get("name"), str) or not raw_step["name"].strip():
            raise ConfigError(f"{path}: step {i + 1} needs a `name:` (a mapping such as {{name: +warmup, set: {{...}}}}).")
        name = raw_step["name"].strip()
        _unknown(path, raw_step, STEP_KEYS, f"step {name!r}")
        if name in index_of:
            raise ConfigError(f"{path}: step name {name!r} appears twice; step names must be unique.")
        if "from" in raw_step:
            if raw_step["from"] not in index_of:
                raise ConfigError(f"{path}: step {name!r} builds on `from: {raw_step['from']}`, which names no earlier step.")
            parent = index_of[raw_step["from"]]
        elif i == 0:
            parent = None
        else:
            parent = i - 1 if mode == "cumulative" else 0
        configs = _paths(path, raw_step["config"], f"step {name!r} config") if "config" in raw_step else ()
        steps.append(Step(name, check_set(raw_step.get("set"), f"{path}: step {name!r} `set`"), configs, parent, reference=parent))
        index_of[name] = i
    for key in ("test", "keep_checkpoints"):
        if not isinstance(raw.get(key, True), bool):
            raise ConfigError(f"{path}: {key} must be true or false, got {raw[key]!r}.")
    if "runs_per_seed" in raw and mode != "factorial":
        raise ConfigError(f"{path}: runs_per_seed applies to mode: factorial only; remove it.")
    name = raw.get("name") or f"{path.resolve().parent.name}-{path.stem}"
    if not isinstance(name, str) or Path(name).name != name or name == "..":  # it names the folder runs/<name>
        raise ConfigError(f"{path}: name {name!r} must be one folder's name as text, such as digits-tricks or '2024' (it names runs/<name> and the W&B group).")
    design = None
    if mode in ("leave-one-out", "factorial"):
        steps, design = _design_rows(path, mode, steps, raw_steps, raw.get("runs_per_seed"))
    if "budgets" in raw:
        if mode == "factorial":
            raise ConfigError(f"{path}: budgets do not combine with mode: factorial (one design per budget); run one spec per budget.")
        steps = budget_rows(path, steps, raw["budgets"])
    return Spec(
        path=path,
        name=name,
        base=_paths(path, raw["base"], "base"),
        seeds=tuple(seeds),
        mode=mode,
        set=check_set(raw.get("set"), f"{path}: the top-level `set`"),
        steps=tuple(steps),
        test=raw.get("test", True),
        keep_checkpoints=raw.get("keep_checkpoints", True),
        design=design,
    )


def check_seeds(seeds: list[int], where: str) -> None:
    """Each seed once, inside the range of numpy's (and so Lightning's seed_everything's) generator; else one
    sentence starting with ``where``."""
    if not seeds:
        raise ConfigError(f"{where} '' must name each seed once, such as 0,1,2 (leave it out for the spec's).")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where} {','.join(map(str, seeds))} repeat a seed; each seed must appear once.")
    if bad := [s for s in seeds if not 0 <= s <= 2**32 - 1]:
        raise ConfigError(f"{where}: seed {bad[0]} is outside numpy's seed range 0 to {2**32 - 1}; use seeds such as 0,1,2.")


def budget_rows(path: Path, steps: list[Step], budgets: Any) -> list[Step]:
    """The steps repeated for every budget (budget-major), each block's parents and references kept inside it."""
    if not (isinstance(budgets, list) and budgets and all(isinstance(b, (int, float)) and not isinstance(b, bool) and b > 0 for b in budgets)):
        raise ConfigError(f"{path}: budgets must be a non-empty list of positive epoch multipliers, such as [1, 2, 4].")
    if len(set(budgets)) != len(budgets):
        raise ConfigError(f"{path}: budgets {budgets} repeat a budget; each must appear once.")
    rows = []
    for block, budget in enumerate(budgets):
        for step in steps:
            parent, reference = (None if i is None else i + block * len(steps) for i in (step.parent, step.reference))
            rows.append(dataclasses.replace(step, name=f"{step.name} ×{budget:g}", parent=parent, reference=reference,
                                            budget=float(budget), unbudgeted=step.name))  # fmt: skip
    return rows


def _combined(name: str, baseline: Step, tricks: list[Step], names: list[str], on: list[int]) -> Step:
    """A row of the tricks ``on`` (their indices) on the baseline (no parent: a fractional design need not start
    with the baseline)."""
    steps = [baseline, *(tricks[j] for j in on)]
    values = {key: value for step in steps for key, value in step.set.items()}
    return Step(name, values, tuple(c for step in steps for c in step.configs), trick_names=tuple(names[j] for j in on))


def _design_rows(path: Path, mode: str, steps: list[Step], raw_steps: list, runs: Any) -> tuple[list[Step], Design | None]:
    """The rows of a designed ablation (step 0 the baseline, each later step one trick): leave-one-out's baseline,
    all tricks and all but each one (Δ prev: vs all tricks), or one row per row of the factorial design."""
    if any("from" in raw_step for raw_step in raw_steps):
        raise ConfigError(f"{path}: `from:` has no meaning in mode: {mode}, where every step after the first is one trick; remove it.")
    baseline, tricks = steps[0], steps[1:]
    names = [trick.name.strip().lstrip("+").strip() for trick in tricks]
    if len(tricks) < 2:
        raise ConfigError(f"{path}: mode: {mode} needs a baseline step and at least two trick steps after it.")
    if mode == "leave-one-out":
        rows = [baseline, _combined("all tricks", baseline, tricks, names, list(range(len(tricks))))]
        for i, name in enumerate(names):
            row = _combined(f"without {name}", baseline, tricks, names, [j for j in range(len(tricks)) if j != i])
            rows.append(dataclasses.replace(row, reference=1))
        return rows, None
    if runs is not None and not (isinstance(runs, int) and not isinstance(runs, bool)):
        raise ConfigError(f"{path}: runs_per_seed must be an integer such as 16, got {runs!r}.")
    try:
        plan = design(names, runs)
    except ValueError as err:
        raise ConfigError(f"{path}: runs_per_seed {runs}: {err}.") from None
    rows = []
    for levels in plan.matrix:
        on = [j for j, level in enumerate(levels) if level > 0]
        name = " + ".join(names[j] for j in on) or baseline.name
        row = _combined(name, baseline, tricks, names, on)
        rows.append(row if on else dataclasses.replace(baseline, trick_names=()))
    return rows, plan


def wandb_init_args(spec: Spec) -> dict[str, Any] | None:
    """The WandbLogger init_args a base config, step config or ``set`` names (the last one wins), or None; a
    malformed logger is left to the parser, which refuses it."""
    found: dict[str, Any] | None = None
    sources: list[Any] = []
    for config in (*spec.base, *(c for step in spec.steps for c in step.configs)):
        trainer = data.get("trainer") if isinstance(data := read_yaml(Path(config)), dict) else None  # else the parser refuses it
        sources.append(trainer.get("logger") if isinstance(trainer, dict) else None)
    sources += [values.get("trainer.logger") for values in (spec.set, *(step.set for step in spec.steps))]
    for source in sources:
        for entry in source if isinstance(source, list) else [source]:
            entry = entry if isinstance(entry, dict) else {"class_path": entry}
            if str(entry.get("class_path")).split(".")[-1] == "WandbLogger":
                found = entry["init_args"] if isinstance(entry.get("init_args"), dict) else {}
    return found
