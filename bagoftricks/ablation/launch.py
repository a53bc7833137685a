"""Launch the plan: in this process, in ``--jobs N`` workers (``ablate --worker OUT 3,7``: those runs of
``OUT/plan.json``; ``cores // N`` threads each on CPUs, GPU i mod count on GPUs) or as one SLURM job array via
submitit (one run per task; on ``USR2`` submitit requeues the task, which resumes from ``last.ckpt``). Each
launcher trains a run under its run lock, skipped if finished, resumed from its ``last.ckpt``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bagoftricks.ablation.execute import RUN_ENV, execute, quiet_lightning
from bagoftricks.ablation.plan import PlannedRun
from bagoftricks.ablation.spec import Spec
from bagoftricks.ablation.store import Store
from bagoftricks.errors import UserError

# --slurm.<name>: (submitit's AutoExecutor parameter, type, help)
SLURM_OPTIONS = {
    "partition": ("slurm_partition", str, "the partition to submit to"),
    "gpus_per_node": ("gpus_per_node", int, "GPUs per array task (one run each)"),
    "cpus_per_task": ("cpus_per_task", int, "CPU cores per array task (its torch threads; default 1)"),
    "mem_gb": ("mem_gb", float, "memory per array task, GB"),
    "timeout_min": ("timeout_min", int, "time limit per array task, minutes (default 240; a run that hits it is requeued)"),
    "array_parallelism": ("slurm_array_parallelism", int, "at most this many array tasks at once"),
    "account": ("slurm_account", str, "the account to charge"),
    "qos": ("slurm_qos", str, "the quality of service"),
    "constraint": ("slurm_constraint", str, "node features, as sbatch --constraint"),
}
SLURM_DEFAULTS = {"timeout_min": 240, "cpus_per_task": 1}  # submitit's own default time limit is 5 minutes
MAX_REQUEUES_ON_TIMEOUT = 10


def default_jobs() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else os.cpu_count() or 1


def threads_per_run(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def train_one(run: PlannedRun, store: Store) -> str:
    """Train ``run`` under its lock; one line on how it ended, or why it was skipped."""
    with store.run_lock(run) as held:
        if not held:
            return "being trained by another process, skipped"
        if store.record(run) is not None:
            return "finished meanwhile, skipped"
        record = execute(run, store)
    top1 = f"diverged ({record.note})" if record.diverged else "n/a" if record.val_top1 is None else f"{record.val_top1:.2f}%"
    return f"val top-1 {top1}  ({record.wall_time_s:.0f} s{', resumed' if record.resumed_from else ''})"


def train_runs(runs: list[PlannedRun], store: Store, total: int, console: Console) -> None:
    """Train ``runs`` one after the other under one progress line."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with quiet_lightning(), Progress(*columns, TextColumn("ETA"), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task(runs[0].run_dir.parent.parent.name if runs else "", total=len(runs))
        for run in runs:
            label = f"run {run.index + 1}/{total}  {run.step}  seed {run.seed}"
            progress.update(task, description=label)
            progress.console.print(f"{label}: {train_one(run, store)}")
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
    """In a DDP rank a run started (``LOCAL_RANK`` > 0, with the launcher's command line): train that run's
    share and return True, so that it does not plan, launch or report again."""
    if RUN_ENV not in os.environ or int(os.environ.get("LOCAL_RANK", 0)) == 0:
        return False
    out, _, index = os.environ[RUN_ENV].rpartition(":")
    store = Store(out)
    execute(store.read_plan()[0][int(index)], store)
    return True


def worker(out: str, only: str) -> None:
    """``bagoftricks ablate --worker OUT 3,7``: train those runs of ``OUT/plan.json``."""
    store = Store(out)
    runs, _ = store.read_plan()
    with store.disk_errors():
        train_runs([runs[int(i)] for i in only.split(",")], store, len(runs), Console())


@dataclass(frozen=True)
class TrainTask:
    """What one array task runs: train one planned run of ``out``; ``checkpoint`` is submitit's requeue hook."""

    out: str

    def __call__(self, run: PlannedRun) -> str:
        if threads := os.environ.get("SLURM_CPUS_PER_TASK"):
            torch.set_num_threads(int(threads))  # the task's cores, as --jobs gives each worker its share
        with quiet_lightning():
            return f"{run.run_dir}: {train_one(run, Store(self.out))}"

    def checkpoint(self, run: PlannedRun):  # preempted or out of time: the same call again, resumed
        import submitit

        return submitit.helpers.DelayedSubmission(TrainTask(self.out), run)


def executor(store: Store, options: dict[str, Any]):
    try:
        import submitit
    except ImportError:
        raise UserError('--launcher slurm needs submitit, which is not installed; pip install -e ".[slurm]" (or pip install submitit).') from None
    options = dict(options)
    cluster = options.pop("cluster", "slurm")  # "local": submitit's local executor, the same protocol without SLURM
    try:
        made = submitit.AutoExecutor(folder=store.slurm, cluster=cluster, slurm_max_num_timeout=MAX_REQUEUES_ON_TIMEOUT)
    except RuntimeError as err:
        raise UserError(f"--launcher slurm found no SLURM here ({err}); run it on the cluster's login node, or train here with --jobs.") from None
    extra = options.pop("sbatch", None)  # any other sbatch option, passed through
    parameters = {SLURM_OPTIONS[key][0]: value for key, value in {**SLURM_DEFAULTS, **options}.items()}
    parameters.update({"slurm_additional_parameters": extra} if extra else {})
    if cluster == "local":
        parameters = {k: v for k, v in parameters.items() if not k.startswith("slurm_")}
    made.update_parameters(name=store.out.name, nodes=1, tasks_per_node=1, **parameters)
    return made


def submit(store: Store, todo: list[PlannedRun], options: dict[str, Any], wait: bool, spec: Spec, console: Console) -> bool:
    """Submit ``todo`` as one array; return whether it is over (``wait``), so that the report can be written."""
    if not todo:
        console.print("Every planned run is finished: nothing to submit.")
        return True
    made = executor(store, options)  # first: it names the extra to install if submitit is missing
    from submitit.core.utils import FailedJobError

    try:
        jobs = made.map_array(TrainTask(str(store.out)), todo)
    except FailedJobError as err:  # sbatch's refusal: a partition, a limit, a value
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else "no reason given"
        raise UserError(f"sbatch refused the job array ({reason}); fix the --slurm.* option it names and repeat the command.") from None
    array = jobs[0].job_id.split("_")[0]
    console.print(f"Submitted job array {array}: {len(todo)} run(s), one per task; logs in {store.slurm}/.")
    if not wait:
        console.print(f"When it is done: bagoftricks ablate {spec.path} --out {store.out} --report")
        return False
    shown = -1
    while (done := sum(job.done() for job in jobs)) < len(jobs):
        if done != shown:
            console.print(f"job array {array}: {done} of {len(jobs)} tasks done")
            shown = done
        time.sleep(2)
    failed = [job for job in jobs if job.exception() is not None]  # the task's own error, or a task SLURM killed
    if failed:
        logs = ", ".join(str(job.paths.stderr) for job in failed[:3])
        raise UserError(f"{len(failed)} of {len(jobs)} task(s) of job {array} failed; see {logs}, then repeat the command to finish the remaining runs.")
    console.print(f"job array {array}: all {len(jobs)} tasks done.")
    return True
