"""DDP on CPU (gloo, 2 processes): metrics are synchronised, so validation equals one process's."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import DIGITS_BASE, TINY, column, fit, read_metrics

# 216 validation images: divisible by 2, so DistributedSampler pads with no duplicate.
SPLIT = ["--data.val_fraction", "0.12"]


def validate_top1(out) -> tuple[float, float]:
    rows = read_metrics(next(out.rglob("metrics.csv")))
    return column(rows, "val/top1")[-1], column(rows, "val/top5")[-1]


def test_ddp_validate_equals_single_process(tmp_path):
    fit(tmp_path / "train", "-c", str(DIGITS_BASE), *TINY, *SPLIT, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "10")
    ckpt = str(next((tmp_path / "train").rglob("last.ckpt")))
    common = ["validate", "-c", str(DIGITS_BASE), *TINY, *SPLIT, "--ckpt_path", ckpt, "--trainer.logger", "CSVLogger"]
    for name, extra in {"single": [], "ddp": ["--trainer.strategy", "ddp", "--trainer.devices", "2"]}.items():
        out = tmp_path / name
        argv = [*common, "--trainer.logger.save_dir", str(out), "--trainer.default_root_dir", str(out), *extra]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores
        subprocess.run([sys.executable, "-m", "bagoftricks", *argv], check=True, env=env, capture_output=True, timeout=300)
    single, ddp = validate_top1(tmp_path / "single"), validate_top1(tmp_path / "ddp")
    assert ddp == single
    assert 0 < single[0] < single[1] <= 1
