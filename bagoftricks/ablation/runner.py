"""Run the planned runs in-process, one ``bagoftricks fit`` each, resumable and skippable; then report."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import netrc
import os
import shutil
import sys
import time
import uuid
import warnings
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bagoftricks.ablation.budget import with_budget
from bagoftricks.ablation.check import bare_argv, check_out_dir, check_runs, disk_error
from bagoftricks.ablation.design import design_record
from bagoftricks.ablation.evidence import save_predictions
from bagoftricks.ablation.parallel import run_parallel
from bagoftricks.ablation.files import atomic_write
from bagoftricks.ablation.report import print_table, read_metrics, summarize_run, write_report, write_results_csv
from bagoftricks.ablation.spec import Run, Spec, load_spec, one_line, plan, step_folder, sweep_config
from bagoftricks.ablation.wandb_summary import log_summary
from bagoftricks.cli import cli_main, ignore_known_warnings
from bagoftricks.errors import ConfigError, DataError
from bagoftricks.models import model_stats


class EpochTimer(Callback):
    """Logs ``time/epoch_s``: wall time of each epoch, training, validation and checkpointing included."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log("time/epoch_s", time.perf_counter() - self.start, on_step=False, on_epoch=True)


@contextlib.contextmanager
def quiet_lightning():
    """Lightning's per-run INFO lines (devices, seeds, param groups) times 24 runs would bury the progress line.

    Each distinct warning is shown once per ablation, not once per run (Lightning's own filter changes
    reset Python's once-per-location memory), unless the user chose warning filters with ``-W``.
    """
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            if not sys.warnoptions:
                warnings.simplefilter("once")
                ignore_known_warnings()  # ahead of "once", which would otherwise show them once per run
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def default_wandb_offline(console: Console) -> None:
    """Without W&B credentials (WANDB_API_KEY or a ~/.netrc entry), log offline instead of prompting."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    with contextlib.suppress(OSError, netrc.NetrcParseError):
        if netrc.netrc().authenticators(host):
            return
    os.environ["WANDB_MODE"] = "offline"
    console.print("W&B: no credentials found, logging offline (upload later with `wandb sync`).")


def _prepare_run_dir(run_dir: Path) -> Path | None:
    """Resume from ``checkpoints/last.ckpt`` if a killed run left one, else start from an empty folder."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        # The CSVLogger deletes metrics.csv when it starts: keep the metrics so far as a numbered part.
        if (run_dir / "metrics.csv").is_file():
            part = len(list(run_dir.glob("metrics.part*.csv")))
            os.replace(run_dir / "metrics.csv", run_dir / f"metrics.part{part}.csv")
        (run_dir / "config.yaml").unlink(missing_ok=True)  # rewritten, now with the resumed run's config
        return last
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a run that failed before its first checkpoint starts over
    run_dir.mkdir(parents=True)
    return None


def _wandb_id(run: Run, resuming: bool) -> str | None:
    """The W&B run id, kept in the run folder so a resumed run continues the same W&B run."""
    if run.wandb is None:
        return None
    path = run.run_dir / "wandb-id"
    if resuming and path.is_file():
        return path.read_text().strip()
    path.write_text(run_id := uuid.uuid4().hex[:8])
    return run_id


def _log_ablation_to_wandb(cli, spec: Spec, run: Run) -> None:
    """The run's place in the ablation into its W&B config (``WandbConfigCallback`` logs the resolved config)."""
    from lightning.pytorch.loggers import WandbLogger

    ablation = {"spec": str(spec.path), "step": run.step, "seed": run.seed, "tricks": list(run.tricks)}
    for logger in cli.trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.config.update({"ablation": ablation}, allow_val_change=True)


def _has_own_test_set(datamodule) -> bool:
    test_set = getattr(datamodule, "test_set", None)
    return test_set is not None and test_set is not getattr(datamodule, "val_set", None)


def _remove_partial_checkpoints(run_dir: Path) -> None:
    """Delete checkpoints cut short (a full disk mid-write): a torch checkpoint is a zip archive, and a
    truncated one lacks the zip's closing directory. A later resume must not load half a file."""
    for path in (run_dir / "checkpoints").glob("*.ckpt"):
        if path.is_file() and not zipfile.is_zipfile(path):
            path.unlink()


def execute(run: Run, spec: Spec, out: Path) -> dict[str, Any]:
    """Train one run (resuming it if it was killed), write its ``result.json`` and return it."""
    last = _prepare_run_dir(run.run_dir)
    start = time.perf_counter()
    try:
        # run=False: the CLI builds model, data and trainer exactly as `bagoftricks fit ARGS` would,
        # and this function calls fit itself, with the timer and the resume checkpoint.
        with bare_argv(), warnings.catch_warnings():
            # The folder holds the W&B id or, resuming, the checkpoints; the CSVLogger's warning does not apply.
            warnings.filterwarnings("ignore", "Experiment logs directory .* exists and is not empty")
            cli = cli_main(run.fit_args(_wandb_id(run, last is not None)), run=False)
        trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
        trainer.callbacks.append(EpochTimer())
        _log_ablation_to_wandb(cli, spec, run)
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(last) if last else None)
        if not trainer.state.finished:
            raise RuntimeError(f"Training of {run.run_dir} stopped before its end ({trainer.state.status}).")
        with_test = spec.test and _has_own_test_set(datamodule)
        if with_test:
            # The final weights, like the reported val top-1 (the best epoch's would be biased).
            trainer.test(model, datamodule=datamodule, verbose=False)
        save_predictions(run.run_dir / "predictions.pt", trainer, model, datamodule, with_test)
        stats = model_stats(model.backbone, datamodule.image_size)
        global_step = trainer.global_step
    except BaseException:
        _remove_partial_checkpoints(run.run_dir)
        raise
    finally:
        if run.wandb is not None:
            import wandb

            wandb.finish()
    result = {
        "index": run.index,
        "step_index": run.step_index,
        "step": run.step,
        "parent": run.parent,
        "seed": run.seed,
        "tricks": list(run.tricks),
        "budget": run.budget,
        "unbudgeted": run.unbudgeted,
        **summarize_run(read_metrics(run.run_dir)),
        "wall_time_s": round(time.perf_counter() - start, 2),  # of the invocation that finished the run
        "params": stats["params"],
        "macs": stats["macs"],
        "global_step": global_step,
        "cpu_threads": torch.get_num_threads(),  # CPU results depend on it (the order of float sums)
        "resumed_from": str(last) if last else None,
        "run_dir": run.run_dir.relative_to(out).as_posix(),
        "configs": list(run.configs),
        "overrides": list(run.overrides),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    # Written last and atomically: its presence means the run is finished.
    atomic_write(run.run_dir / "result.json", json.dumps(result, indent=2) + "\n")
    if not spec.keep_checkpoints:
        shutil.rmtree(run.run_dir / "checkpoints", ignore_errors=True)
    del cli, trainer, model, datamodule
    gc.collect()
    # With model.compile, every run compiles a new model; without a reset, torch.compile's
    # recompile limit would leave the later runs of a long ablation silently eager.
    torch.compiler.reset()
    return result


def read_result(path: Path) -> dict[str, Any]:
    """A run's ``result.json``; a damaged one is named, with the way to train that run again."""
    try:
        result = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        result = None
    if not isinstance(result, dict):
        raise DataError(f"{path} is not a valid result file (cut short or edited); delete it and repeat the command to train that run again.")
    return result


def finished_results(spec: Spec, out_dir: Path) -> list[dict[str, Any]]:
    """Every finished run of the spec in ``out_dir``, whichever seeds and ``--only`` chose this invocation's runs
    (a run belongs to the spec when its step's folder and name match one of the spec's steps)."""
    results = []
    for i, step in enumerate(spec.steps):
        for path in (out_dir / step_folder(i, step.name)).glob("seed*/result.json"):
            result = read_result(path)
            if result.get("step") == step.name:
                results.append(result)
    return sorted(results, key=lambda r: (r["step_index"], r["seed"]))


def write_sweep(path: str | os.PathLike, spec: Spec, runs: list[Run], cli_args: list[str]) -> None:
    """A W&B grid sweep over the run indices (see ``spec.sweep_config``)."""
    sweep = sweep_config(spec.path, runs, spec.name, cli_args)
    header = f"# wandb sweep {path}  # then: wandb agent ENTITY/PROJECT/SWEEP_ID (each agent call trains one run of {spec.path})\n"
    atomic_write(Path(path), header + yaml.safe_dump(sweep, sort_keys=False))


def unfinished(selected: list[Run], console: Console) -> list[Run]:
    """The runs without a result.json; warns about finished runs whose settings differ from the spec's now."""
    todo = []
    for run in selected:
        path = run.run_dir / "result.json"
        if not path.is_file():
            todo.append(run)
            continue
        done = read_result(path)
        if done.get("configs") != list(run.configs) or done.get("overrides") != list(run.overrides):
            console.print(f"[yellow]warning:[/] {run.run_dir} was finished with other settings; delete it to rerun it.")
    if len(todo) < len(selected):
        console.print(f"{len(selected) - len(todo)} of {len(selected)} runs already finished (result.json): skipped.")
    return todo


def run_all(spec: Spec, runs: list[Run], todo: list[Run], out_dir: Path, console: Console) -> None:
    """Train ``todo`` one after the other under one progress line; results.csv is whole after each."""
    if not todo:
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with quiet_lightning(), Progress(*columns, TextColumn("ETA"), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task(spec.name, total=len(todo))
        for run in todo:
            label = f"run {run.index + 1}/{len(runs)}  {run.step}  seed {run.seed}"
            progress.update(task, description=label)
            try:
                result = execute(run, spec, out_dir)
            finally:
                write_results_csv(out_dir, finished_results(spec, out_dir))  # also after a failed run
            top1 = "n/a" if result["val_top1"] is None else f"{result['val_top1']:.2f}%"
            resumed = ", resumed" if result["resumed_from"] else ""
            progress.console.print(f"{label}: val top-1 {top1}  ({result['wall_time_s']:.0f} s{resumed})")
            progress.advance(task)


def ablate(
    spec_path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    seeds: list[int] | None = None,
    dry_run: bool = False,
    export_sweep: str | os.PathLike | None = None,
    only: list[int] | None = None,
    wandb: bool = False,
    overrides: dict[str, Any] | None = None,
    console: Console | None = None,
    jobs: int = 1,
    report: bool = True,
) -> Path:
    """Run (or with ``dry_run`` print, or with ``export_sweep`` export) an ablation spec; return its output folder.

    ``jobs`` > 1 trains in that many worker processes; ``report=False`` only trains (and keeps results.csv whole).
    """
    console = console or Console()
    spec = load_spec(spec_path)
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
        raise ConfigError(f"--seeds {','.join(map(str, seeds))!r} must name each seed once, such as 0,1,2 (leave it out for the spec's).")
    out_dir = spec.out_dir(out)
    runs = plan(spec, out_dir, seeds, wandb=wandb, extra=overrides)
    for index in only or []:
        if not 0 <= index < len(runs):
            raise ConfigError(f"--only {index} is out of range: {spec.path} has {len(runs)} runs (0 to {len(runs) - 1}).")
    with quiet_lightning():
        configs = check_runs(spec, runs, overrides, console)
    runs = [with_budget(spec, run, configs[run.step_index]) for run in runs]
    selected = [runs[i] for i in only] if only else runs
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs} must be at least 1.")
    if export_sweep is not None:
        write_sweep(export_sweep, spec, runs, _cli_args(out, seeds, overrides))
        console.print(f"W&B sweep over {len(runs)} runs written to {export_sweep}.")
    if dry_run:
        for run in selected:
            print(run.command())
    if dry_run or export_sweep is not None:
        return out_dir

    check_out_dir(out_dir)
    if spec.design is not None:
        record = design_record(spec.design, [step.name for step in spec.steps])
        atomic_write(out_dir / "design.json", json.dumps(record, indent=2) + "\n")
    if any(run.wandb is not None for run in runs):
        default_wandb_offline(console)
    try:
        todo = unfinished(selected, console)
        if jobs > 1 and len(todo) > 1:
            run_parallel(spec.path, todo, jobs, _cli_args(out_dir, seeds, overrides) + ["--wandb"] * wandb, console)
        else:
            run_all(spec, runs, todo, out_dir, console)
        results = finished_results(spec, out_dir)
        write_results_csv(out_dir, results)
        if results and report:
            summaries = write_report(out_dir, title=spec.name)
            print_table(summaries, title=spec.name, console=console)
            if runs[0].wandb is not None:
                log_summary(spec, out_dir, summaries, runs[0].wandb)
            console.print(f"Results in {out_dir}: results.csv, results.md, top1.png, val_curves.png, lr.png.")
    except OSError as err:
        if (user_error := disk_error(err, out_dir)) is None:
            raise
        raise user_error from err
    return out_dir


def _cli_args(out: str | os.PathLike | None, seeds: list[int] | None, overrides: dict[str, Any] | None) -> list[str]:
    """The ``ablate`` flags that give another process (a sweep agent, a --jobs worker) the same runs."""
    args = (["--out", str(out)] if out is not None else []) + (["--seeds", ",".join(map(str, seeds))] if seeds else [])
    return args + [arg for key, value in (overrides or {}).items() for arg in ("--set", f"{key}={one_line(value)}")]


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,2, got {text!r}") from None


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as trainer.max_epochs=2, got {text!r}")
    return key.strip().removeprefix("--"), yaml.safe_load(value) if value.strip() else value


def ablate_main(argv: list[str] | None = None) -> Path:
    """``bagoftricks ablate SPEC [--out DIR] [--seeds 0,1,2] [--only N,...] [--dry-run] [--export-sweep FILE]
    [--wandb] [--set KEY=VALUE]``; the flags are described in the package docstring."""
    parser = argparse.ArgumentParser(
        prog="bagoftricks ablate",
        description="Train every step x seed of an ablation spec, then write results.csv, results.md and plots.",
    )
    parser.add_argument("spec", help="the ablation spec (YAML)")
    parser.add_argument("--out", help="output folder (default: runs/<spec name>)")
    parser.add_argument("--seeds", type=_int_list, help="seeds instead of the spec's, e.g. 0,1,2")
    parser.add_argument("--only", type=_int_list, help="run only these run indices (0-based; for sweeps and SLURM arrays)")
    parser.add_argument("--dry-run", action="store_true", help="print each run's `bagoftricks fit` command; run nothing")
    parser.add_argument("--export-sweep", metavar="FILE", help="write a W&B grid sweep over the run indices; run nothing")
    parser.add_argument("--wandb", action="store_true", help="log every run to W&B as well (offline without credentials)")
    parser.add_argument("--jobs", type=int, default=1, help="train N runs at once, each with its share of the CPU cores (or its GPU)")
    parser.add_argument("--no-report", action="store_true", help="train only; leave results.md and the plots to a later call")
    parser.add_argument(
        "--set",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a CLI key in every run, after the spec (e.g. data.root=/datasets)",
    )
    args = parser.parse_args(argv)
    return ablate(
        args.spec,
        out=args.out,
        seeds=args.seeds,
        dry_run=args.dry_run,
        export_sweep=args.export_sweep,
        only=args.only,
        wandb=args.wandb,
        overrides=dict(args.set),
        jobs=args.jobs,
        report=not args.no_report,
    )
