"""``bagoftricks ablate SPEC``: spec -> plan -> launch -> records -> report, and its command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from bagoftricks.ablation.execute import default_wandb_offline
from bagoftricks.ablation.launch import SLURM_OPTIONS, ddp_rank_run, default_jobs, run_jobs, submit, train_runs, worker
from bagoftricks.ablation.plan import PlannedRun, plan
from bagoftricks.ablation.render import log_summary, print_table, write_report
from bagoftricks.ablation.spec import Spec, check_seeds, check_set, load_spec, one_line
from bagoftricks.ablation.store import Store, atomic_write
from bagoftricks.cli import check_aliases
from bagoftricks.errors import ConfigError, UserError


def _unfinished(store: Store, selected: list[PlannedRun], console: Console) -> list[PlannedRun]:
    """The runs without a record; warns about finished runs whose settings differ from the plan's now."""
    todo = []
    for run in selected:
        if (done := store.record(run)) is None:
            todo.append(run)
        elif (done.configs, done.overrides) != (run.configs, run.overrides):
            console.print(f"[yellow]warning:[/] {run.run_dir} was finished with other settings; delete it to rerun it.")
    if len(todo) < len(selected):
        console.print(f"{len(selected) - len(todo)} of {len(selected)} runs already finished (result.json): skipped.")
    return todo


def _export_sweep(path: Path, spec: Spec, runs: list[PlannedRun], cli_args: list[str], console: Console) -> None:
    """A W&B grid sweep over the run index (``${args}`` -> ``--only=<index>``): each agent call trains one run."""
    if path.is_dir() or not path.parent.is_dir():
        raise UserError(f"--export-sweep {path} is not a file in an existing folder; name the sweep file to write, such as sweep.yaml.")
    sweep = {
        "name": spec.name,
        "program": "bagoftricks",
        "method": "grid",
        "parameters": {"only": {"values": [run.index for run in runs]}},
        "command": ["bagoftricks", "ablate", str(spec.path), *cli_args, "--wandb", "--jobs", "1", "${args}"],
    }
    header = f"# wandb sweep {path}  # then: wandb agent ENTITY/PROJECT/SWEEP_ID (each agent call trains one run of {spec.path})\n"
    atomic_write(path, header + yaml.safe_dump(sweep, sort_keys=False))
    console.print(f"W&B sweep over {len(runs)} runs written to {path}.")


def _report(spec: Spec, store: Store, runs: list[PlannedRun], console: Console) -> None:
    records = store.records(spec)
    if not records:
        console.print(f"No finished run of {spec.path} in {store.out} yet: no report.")
        return
    summaries = write_report(store.out, title=spec.name, records=records)
    print_table(summaries, title=spec.name, console=console)
    if runs and runs[0].wandb is not None:
        log_summary(spec.name, spec.path, store.out, summaries, records, runs[0].wandb)
    console.print(f"Results in {store.out}: results.md, results.csv, top1.png, val_curves.png, lr.png.")


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
    jobs: int | None = 1,
    report: bool = True,
    launcher: str = "local",
    slurm: dict[str, Any] | None = None,
    wait: bool = False,
    report_only: bool = False,
) -> Path:
    """Run (or print, export or only report) an ablation spec; return its output folder."""
    console = console or Console()
    if out is not None and not str(out).strip():
        raise UserError("--out '' names no folder; leave it out for runs/<spec name>, or name a folder.")
    if only is not None and not only:
        raise UserError("--only '' names no run (an unset array variable?); give run indices such as 0,3 or leave it out for every run.")
    if seeds is not None:
        check_seeds(seeds, "--seeds")
    check_set(overrides, "--set")
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs} must be at least 1.")
    spec = load_spec(spec_path)
    store = Store(spec.out_dir(out))
    runs = plan(spec, store.out, seeds, wandb=wandb, extra=overrides, console=console, files=not dry_run and export_sweep is None)
    for index in only or []:
        if not 0 <= index < len(runs):
            raise ConfigError(f"--only {index} is out of range: {spec.path} has {len(runs)} runs (0 to {len(runs) - 1}).")
    selected = [runs[i] for i in dict.fromkeys(only)] if only else runs  # a run named twice trains once
    if export_sweep is not None:
        args = (["--out", str(out)] if out is not None else []) + (["--seeds", ",".join(map(str, seeds))] if seeds else [])
        args += [arg for key, value in (overrides or {}).items() for arg in ("--set", f"{key}={one_line(value)}")]
        _export_sweep(Path(export_sweep), spec, runs, args, console)
    if dry_run:
        for run in selected:
            print(run.command())
    if dry_run or export_sweep is not None:
        return store.out
    with store.disk_errors(), store.lock(shared=only is not None):
        if not (report_only and store.plan_json.is_file()):  # --report on an older version's folder plans too
            store.write_plan(runs, spec)
        if report_only:
            _report(spec, store, runs, console)
            return store.out
        if any(run.wandb is not None for run in runs):
            default_wandb_offline(console)
        todo = _unfinished(store, selected, console)
        try:
            if launcher == "slurm":
                if not submit(store, todo, slurm or {}, wait, spec, console):
                    return store.out
            elif jobs > 1 and len(todo) > 1:
                run_jobs(store, todo, jobs, console)
            elif todo:
                train_runs(todo, store, len(runs), console)
        finally:
            store.export_csv(store.records(spec))  # whole after a failed run too
        if report:
            _report(spec, store, runs, console)
    return store.out


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,2, got {text!r}") from None


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as trainer.max_epochs=2, got {text!r}")
    try:
        check_aliases(value)
        return key.strip().removeprefix("--"), yaml.safe_load(value) if value.strip() else value
    except ConfigError as err:
        raise argparse.ArgumentTypeError(f"the value of {key.strip()}: {err}") from None
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise argparse.ArgumentTypeError(f"the value of {key.strip()} is not valid YAML ({problem}): {value!r}; quote it or fix it") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UserError(f"{message} (see `bagoftricks ablate --help`).")


def ablate_main(argv: list[str] | None = None) -> Path | None:
    """``bagoftricks ablate SPEC [flags]`` (the spec format: the package docstring; the flags: ``--help``)."""
    argv = sys.argv[1:] if argv is None else argv
    if ddp_rank_run():
        return None
    if argv[:1] == ["--worker"] and len(argv) == 3:  # a --jobs worker: its share of the plan (see launch.py)
        worker(*argv[1:])
        return None
    parser = _Parser(
        prog="bagoftricks ablate",
        description="Train every step x seed of an ablation spec, then write results.csv, results.md and plots.",
    )
    parser.add_argument("spec_path", metavar="spec", help="the ablation spec (YAML)")
    parser.add_argument("--out", help="output folder (default: runs/<spec name>)")
    parser.add_argument("--seeds", type=_int_list, help="seeds instead of the spec's, e.g. 0,1,2")
    parser.add_argument("--only", type=_int_list, help="run only these run indices (0-based; for sweeps and SLURM arrays)")
    parser.add_argument("--dry-run", action="store_true", help="print each run's `bagoftricks fit` command; run nothing")
    parser.add_argument("--export-sweep", metavar="FILE", help="write a W&B grid sweep over the run indices; run nothing")
    parser.add_argument("--wandb", action="store_true", help="log every run to W&B as well (offline without credentials)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="train N runs at once in worker processes, cores // N threads each (default: one per core, or per GPU)")  # fmt: skip
    parser.add_argument("--no-report", dest="report", action="store_false", help="train only; leave results.md and the plots to a later call")
    parser.add_argument("--report", dest="report_only", action="store_true",
                        help="train nothing: write results.md and the plots from the finished runs")  # fmt: skip
    parser.add_argument("--set", dest="overrides", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="override a CLI key in every run, after the spec (e.g. data.root=/datasets)")  # fmt: skip
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local", help="where the runs train (slurm: one job array, via submitit)")
    parser.add_argument("--wait", action="store_true", help="with --launcher slurm: wait for the array, then write the report")
    for name, (_, kind, text) in SLURM_OPTIONS.items():
        parser.add_argument(f"--slurm.{name}", dest=f"slurm_{name}", type=kind, help=text)
    parser.add_argument("--slurm.sbatch", dest="slurm_sbatch", type=_key_value, action="append", default=[], metavar="OPTION=VALUE",
                        help="any other sbatch option, e.g. --slurm.sbatch exclude=node7 (repeatable)")  # fmt: skip
    args = vars(parser.parse_args(argv))
    slurm = {name: value for name in SLURM_OPTIONS if (value := args.pop(f"slurm_{name}")) is not None}
    if sbatch := args.pop("slurm_sbatch"):
        slurm["sbatch"] = dict(sbatch)
    if (slurm or args["wait"]) and args["launcher"] != "slurm":
        raise UserError("--slurm.* options and --wait apply to --launcher slurm; add it or leave them out.")
    args["overrides"] = dict(args["overrides"])
    return ablate(**args, slurm=slurm)
