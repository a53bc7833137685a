"""Launch the plan on this machine: in this process one run after another, or ``--jobs N`` worker processes.

A worker is ``python -m bagoftricks ablate --worker OUT 3,7,11``: it reads ``OUT/plan.json`` and trains
those runs, the way a SLURM array task trains its one (``slurm.py``). A run's numbers depend only on its
arguments, its seed and, on a CPU, its thread count (which orders the floating-point sums), not on which
process trains it or when: with the same threads per run, the records equal those of one process running
them one after another. On CPUs each worker gets ``cores // N`` threads (one thread per run with the
default ``--jobs``, one per core); on GPUs worker i sees device i mod the device count (of the devices
``CUDA_VISIBLE_DEVICES`` already allows), so ``--jobs`` above the device count shares devices.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bagoftricks.ablation.execute import RUN_ENV, execute, quiet_lightning
from bagoftricks.ablation.plan import PlannedRun
from bagoftricks.ablation.store import Store, disk_error
from bagoftricks.errors import UserError


def default_jobs() -> int:
    """One run per GPU, else one run per CPU core."""
    return torch.cuda.device_count() if torch.cuda.is_available() else os.cpu_count() or 1


def threads_per_run(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def train_runs(runs: list[PlannedRun], store: Store, total: int, console: Console) -> None:
    """Train ``runs`` one after the other under one progress line; a run that another process is training, or
    has finished meanwhile, is skipped."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with quiet_lightning(), Progress(*columns, TextColumn("ETA"), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task(runs[0].run_dir.parent.parent.name if runs else "", total=len(runs))
        for run in runs:
            label = f"run {run.index + 1}/{total}  {run.step}  seed {run.seed}"
            progress.update(task, description=label)
            with store.run_lock(run) as held:
                if not held or store.is_finished(run):
                    progress.console.print(f"{label}: {'being trained by another process' if not held else 'finished meanwhile'}, skipped")
                    progress.advance(task)
                    continue
                record = execute(run, store)
            top1 = f"diverged ({record.note})" if record.diverged else "n/a" if record.val_top1 is None else f"{record.val_top1:.2f}%"
            resumed = ", resumed" if record.resumed_from else ""
            progress.console.print(f"{label}: val top-1 {top1}  ({record.wall_time_s:.0f} s{resumed})")
            progress.advance(task)


def worker_env(job: int, jobs: int) -> dict[str, str]:
    env = dict(os.environ)
    threads = str(threads_per_run(jobs))
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    if torch.cuda.is_available():
        visible = env.get("CUDA_VISIBLE_DEVICES", "").split(",")
        devices = [d for d in visible if d.strip()] or [str(i) for i in range(torch.cuda.device_count())]
        env["CUDA_VISIBLE_DEVICES"] = devices[job % len(devices)]
    return env


def run_jobs(store: Store, todo: list[PlannedRun], jobs: int, console: Console) -> None:
    """Train ``todo`` in ``jobs`` worker processes (each a share of the runs, interleaved across steps)."""
    shards = [shard for shard in (todo[i::jobs] for i in range(jobs)) if shard]
    console.print(f"{len(todo)} runs in {len(shards)} worker processes, {threads_per_run(len(shards))} CPU thread(s) each.")
    processes = []
    for job, shard in enumerate(shards):
        only = ",".join(str(run.index) for run in shard)
        command = [sys.executable, "-m", "bagoftricks", "ablate", "--worker", str(store.out), only]
        processes.append(subprocess.Popen(command, env=worker_env(job, len(shards))))
    codes = [process.wait() for process in processes]
    failed = [f"worker {job} (exit {code})" for job, code in enumerate(codes) if code != 0]
    if failed:
        raise UserError(f"{', '.join(failed)} of {len(shards)} failed, as printed above; repeat the command to finish the remaining runs.")


def ddp_rank_run() -> bool:
    """In a process that a multi-process strategy started for one run (``LOCAL_RANK`` > 0): train that run's
    share and return True; the process was started with the launcher's own command line, which must not
    plan, launch or report again."""
    if RUN_ENV not in os.environ or int(os.environ.get("LOCAL_RANK", 0)) == 0:
        return False
    out, _, index = os.environ[RUN_ENV].rpartition(":")
    store = Store(out)
    execute(store.read_plan()[int(index)], store)
    return True


def worker(out: str, only: str) -> None:
    """``bagoftricks ablate --worker OUT 3,7``: train those runs of ``OUT/plan.json``."""
    store = Store(out)
    runs = store.read_plan()
    try:
        train_runs([runs[int(i)] for i in only.split(",")], store, len(runs), Console())
    except OSError as err:
        if (user_error := disk_error(err, store.out)) is None:
            raise
        raise user_error from err
