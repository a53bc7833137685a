"""DDP on CPU (gloo, 2 processes): metrics are synchronised, so validation equals one process's,
and the linear scaling rule counts the images of every process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import DIGITS_BASE, TINY, column, fit, read_metrics

# Each test launches `python -m bagoftricks` processes that train: a minute or more on a 2-core CPU.
pytestmark = pytest.mark.slow

# 216 validation images: divisible by 2, so DistributedSampler pads with no duplicate.
SPLIT = ["--data.val_fraction", "0.12"]


def validate_top1(out) -> tuple[float, float]:
    rows = read_metrics(next(out.rglob("metrics.csv")))
    return column(rows, "val/top1")[-1], column(rows, "val/top5")[-1]


DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]


def run_cli(out, *argv: str) -> None:
    """`python -m bagoftricks ...` in a subprocess (DDP launches its second process from the command line)."""
    argv = [*argv, "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(out), "--trainer.default_root_dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores
    subprocess.run([sys.executable, "-m", "bagoftricks", *argv], check=True, env=env, capture_output=True, timeout=300)


def test_ddp_validate_equals_single_process(tmp_path):
    fit(tmp_path / "train", "-c", str(DIGITS_BASE), *TINY, *SPLIT, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "10", checkpoint=True)
    ckpt = str(next((tmp_path / "train").rglob("last.ckpt")))
    for name, extra in {"single": [], "ddp": DDP}.items():
        run_cli(tmp_path / name, "validate", "-c", str(DIGITS_BASE), *TINY, *SPLIT, "--ckpt_path", ckpt, *extra)
    single, ddp = validate_top1(tmp_path / "single"), validate_top1(tmp_path / "ddp")
    assert ddp == single
    assert 0 < single[0] < single[1] <= 1


def test_ddp_linear_scaling_counts_every_process(tmp_path):
    # base.yaml: lr 0.025 per 256 images once scaled; TINY: batch 16 per process. Global batch
    # 16 x 2 processes x 2 accumulated = 64, so the LR of the first step is 0.025 x 64 / 256.
    run_cli(tmp_path, "fit", "-c", str(DIGITS_BASE), *TINY, *DDP, "--model.lr_scaling", "linear",
            "--trainer.accumulate_grad_batches", "2", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0")  # fmt: skip
    lrs = column(read_metrics(next(tmp_path.rglob("metrics.csv"))), "train/lr")
    assert lrs == [pytest.approx(0.025 * 64 / 256)]
