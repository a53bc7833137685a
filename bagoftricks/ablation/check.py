"""Checks made before the first run trains: every step's CLI arguments parse, warmup leaves room for the
schedule, the output folder can be written. A mistake in step 7 should not cost the training of steps 0-6."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import errno
import os
import sys
from argparse import ArgumentError
from pathlib import Path
from typing import Any
from unittest import mock

from jsonargparse import Namespace
from rich.console import Console

from bagoftricks import cli
from bagoftricks.ablation.spec import Run, Spec
from bagoftricks.errors import ConfigError, UserError
from bagoftricks.models.resnet import MODEL_FLAGS

# Write failures a user fixes by freeing space or choosing another folder (not bugs: no traceback).
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


@contextlib.contextmanager
def bare_argv():
    """No ``ablate`` arguments in ``sys.argv`` while LightningCLI parses the run's own (it warns about both)."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


class _Parsed(Exception):
    def __init__(self, config: Namespace):
        self.config = config


class _ParseOnlyCLI(cli.BagOfTricksCLI):
    """The CLI up to its parsed config: nothing is built, and a parse error is raised, not printed and exited."""

    def parse_arguments(self, parser, args) -> None:
        parser.exit_on_error = False
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        raise _Parsed(self.config)


def parse_fit_args(args: list[str]) -> Namespace:
    """The config ``bagoftricks fit ARGS`` would run with; raises ``argparse.ArgumentError`` where it would fail.

    ``cli_main`` keeps the one definition of the CLI's settings; only its class is swapped for the parse-only one.
    """
    with bare_argv(), mock.patch.object(cli, "BagOfTricksCLI", _ParseOnlyCLI):
        try:
            cli.cli_main(args, run=False)
        except _Parsed as parsed:
            return parsed.config
    raise AssertionError("the CLI built its classes without calling before_instantiate_classes")


def cli_keys(config: Namespace) -> list[str]:
    """Every dotted key a ``set:`` may name: leaves, their parents, and subclass keys without ``init_args``."""
    keys = set()
    for leaf in config.keys():
        for key in (leaf, leaf.replace(".init_args.", ".")):
            parts = key.split(".")
            keys.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(keys)


def _one_line(err: Exception, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unknown_key(spec: Spec, run: Run, extra: dict[str, Any], known: list[str]) -> str | None:
    """The first key a `set` of this step names that is not one of the ``known`` CLI keys, in the spec's terms."""
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


def _explain(spec: Spec, run: Run, extra: dict[str, Any], err: ArgumentError) -> str:
    """The parse error of one step's arguments in the spec's terms: an unknown key with its close matches,
    else the parser's complaint about a value."""
    pairs = list(zip(run.overrides[::2], run.overrides[1::2]))
    files_only = dataclasses.replace(run, overrides=tuple(a for flag, value in pairs if flag == "-c" for a in (flag, value)))
    try:
        known = cli_keys(parse_fit_args(files_only.fit_args()))
    except ArgumentError as files_err:
        files = ", ".join([*run.configs, *(value for flag, value in pairs if flag == "-c")])
        return f"{spec.path}: step {run.step!r}: its config files ({files}) do not parse: {_one_line(files_err)}; fix them."
    return _unknown_key(spec, run, extra, known) or f"{spec.path}: step {run.step!r}: {_one_line(err)}; fix that value in the spec."


def check_runs(spec: Spec, runs: list[Run], extra: dict[str, Any] | None, console: Console) -> dict[int, Namespace]:
    """Parse each step's arguments (once per step: seeds change nothing else), refuse warmup longer than
    training and warn about warmup that covers all of it, before anything trains; return each step's
    parsed config."""
    first_of_step: dict[int, Run] = {}
    for run in runs:
        first_of_step.setdefault(run.step_index, run)
    covered, configs = [], {}
    for run in first_of_step.values():
        try:
            config = parse_fit_args(run.fit_args())
        except ArgumentError as err:
            raise ConfigError(_explain(spec, run, extra or {}, err)) from None
        # The parser accepts abbreviations (`trainer.max_epoch`), which its next major version refuses.
        if problem := _unknown_key(spec, run, extra or {}, cli_keys(config)):
            raise ConfigError(problem)
        configs[run.step_index] = config
        warmup, epochs = config.get("schedule.warmup_epochs"), config.get("trainer.max_epochs")
        if warmup and epochs and warmup > epochs:  # the schedule would refuse it at the run's start
            raise ConfigError(
                f"{spec.path}: step {run.step!r}: schedule.warmup_epochs ({warmup:g}) is longer than trainer.max_epochs "
                f"({epochs}); shorten the warmup or train longer."
            )
        if warmup and epochs and warmup == epochs:
            covered.append(f"{run.step!r} ({warmup:g} of {epochs})")
    if covered:
        # With warmup over every epoch the LR never decays: cosine and step schedules become no-ops and
        # steps that differ only in the schedule train identically.
        steps = ", ".join(covered)
        console.print(
            f"[yellow]warning:[/] {spec.path}: schedule.warmup_epochs covers all of trainer.max_epochs in step(s) "
            f"{steps}, so the schedule after warmup never runs; lower warmup_epochs or raise max_epochs."
        )
    return configs


def check_out_dir(out_dir: Path) -> None:
    """The output folder exists (or is created) and takes a file; else one sentence naming it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file, not a folder; name a folder (a new one, or this spec's earlier output).")
    probe = out_dir / f".write-test{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write to --out {out_dir} ({err.strerror}); choose a folder you can write to.") from None


def disk_error(err: OSError, out_dir: Path) -> UserError | None:
    """A write that failed for lack of space or permission, as one sentence; None for any other OSError."""
    if err.errno not in DISK_ERRNOS:
        return None
    what = err.filename or f"a file in {out_dir}"
    return UserError(
        f"writing {what} failed ({err.strerror or os.strerror(err.errno)}); free space or choose another --out and "
        "repeat the command: finished runs are kept and the interrupted one starts again."
    )
