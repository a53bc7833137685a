"""``--launcher slurm``: the plan's unfinished runs as one SLURM job array, submitted through submitit
(``pip install -e ".[slurm]"``), one run per array task.

Each task trains its planned run exactly as ``--jobs`` workers do (a run lock, skipped if finished, resumed
from its ``last.ckpt``). Preemption and time limits follow submitit's checkpointing protocol: SLURM signals
the task (``USR2``, 90 s before the limit, or on preemption), submitit calls ``TrainTask.checkpoint``, which
resubmits the same call, and requeues the task; the requeued task resumes from the run's last epoch-end
checkpoint. Lightning's own SLURM requeue handler is switched off in the task so the two do not both requeue.
Scripts, pickles and logs go to ``<out>/slurm/`` (``<job>_<task>_log.out`` / ``.err``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
from rich.console import Console

from bagoftricks.ablation.execute import quiet_lightning
from bagoftricks.ablation.plan import PlannedRun
from bagoftricks.ablation.spec import Spec
from bagoftricks.ablation.store import Store
from bagoftricks.errors import UserError

# --slurm.<name>: (submitit's AutoExecutor parameter, type, help)
OPTIONS = {
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
DEFAULTS = {"timeout_min": 240, "cpus_per_task": 1}  # submitit's own default time limit is 5 minutes
MAX_REQUEUES_ON_TIMEOUT = 10


class TrainTask:
    """What one array task runs: train one planned run of ``out``; ``checkpoint`` is submitit's requeue hook."""

    def __init__(self, out: str):
        self.out = out

    def __call__(self, run: PlannedRun) -> str:
        from bagoftricks.ablation.execute import execute

        store = Store(self.out)
        if threads := os.environ.get("SLURM_CPUS_PER_TASK"):
            torch.set_num_threads(int(threads))  # the task's cores, as --jobs gives each worker its share
        with quiet_lightning(), store.run_lock(run) as held:
            if not held:
                return f"{run.run_dir}: being trained by another process, skipped"
            if store.is_finished(run):
                return f"{run.run_dir}: already finished"
            record = execute(run, store)
        return f"{run.run_dir}: {record.status}, val top-1 {record.val_top1}"

    def checkpoint(self, run: PlannedRun):
        """Preempted or out of time: the same call again; it resumes from the run's last.ckpt."""
        import submitit

        return submitit.helpers.DelayedSubmission(TrainTask(self.out), run)


def executor(store: Store, options: dict[str, Any]):
    """submitit's executor for the array, with ``options`` (the ``--slurm.*`` flags) as sbatch parameters."""
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
    parameters = {OPTIONS[key][0]: value for key, value in {**DEFAULTS, **options}.items()}
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
    jobs = executor(store, options).map_array(TrainTask(str(store.out)), todo)
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
    failed = []
    for job in jobs:
        try:
            job.result()
        except Exception:  # the task's own error, or submitit's UncompletedJobError for a task SLURM killed
            failed.append(job)
    if failed:
        logs = ", ".join(str(job.paths.stderr) for job in failed[:3])
        raise UserError(f"{len(failed)} of {len(jobs)} array task(s) of job {array} failed; see {logs}, then repeat the command to finish the remaining runs.")
    console.print(f"job array {array}: all {len(jobs)} tasks done.")
    return True
