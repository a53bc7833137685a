"""``bagoftricks ablate SPEC --jobs N``: N worker processes, each ``bagoftricks ablate SPEC --only <its share>
--no-report``, the same command a SLURM array task runs; the parent writes the report when all are done.

A run's numbers depend only on its arguments, its seed and, on a CPU, its thread count (which orders the
floating-point sums), not on which process trains it or when: with the same threads per run, the results
equal those of one process running them one after another. Each result records its ``cpu_threads`` and
the report names a table that mixes them.
On CPUs each worker gets its share of the cores (``OMP_NUM_THREADS``); on GPUs worker i sees device i mod
the device count (of the devices ``CUDA_VISIBLE_DEVICES`` already allows, if set), so ``--jobs`` above the
device count runs several small runs per device.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from rich.console import Console

from bagoftricks.ablation.spec import Run
from bagoftricks.errors import UserError


def worker_env(job: int, jobs: int) -> dict[str, str]:
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    if torch.cuda.is_available():
        visible = env.get("CUDA_VISIBLE_DEVICES", "").split(",")
        devices = [d for d in visible if d.strip()] or [str(i) for i in range(torch.cuda.device_count())]
        env["CUDA_VISIBLE_DEVICES"] = devices[job % len(devices)]
    return env


def run_parallel(spec_path: Path, todo: list[Run], jobs: int, cli_args: list[str], console: Console) -> None:
    """Train ``todo`` in ``jobs`` worker processes (each a share of the runs, interleaved across steps)."""
    shards = [shard for shard in (todo[i::jobs] for i in range(jobs)) if shard]
    console.print(f"{len(todo)} runs in {len(shards)} worker processes.")
    workers = []
    for job, shard in enumerate(shards):
        only = ",".join(str(run.index) for run in shard)
        command = [sys.executable, "-m", "bagoftricks", "ablate", str(spec_path), *cli_args, "--only", only, "--no-report"]
        workers.append(subprocess.Popen(command, env=worker_env(job, len(shards))))
    codes = [worker.wait() for worker in workers]
    failed = [f"worker {job} (exit {code})" for job, code in enumerate(codes) if code != 0]
    if failed:
        raise UserError(f"{', '.join(failed)} of {len(shards)} failed, as printed above; repeat the command to finish the remaining runs.")
