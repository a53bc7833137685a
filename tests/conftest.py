"""Shared helpers: run the CLI the way the shell does, read the metrics it logged."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bagoftricks.cli import cli_main

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
DIGITS_BASE = EXPERIMENTS / "digits" / "base.yaml"
# Small enough for a 2-core CI: a batch of 16 digits at 32 px.
TINY = ["--data.batch_size", "16", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def fit(tmp_path: Path, *args: str, **kwargs):
    """`bagoftricks fit ARGS` with all outputs under tmp_path and a CSV logger there.

    With ``run=False`` the CLI only builds model, data and trainer (no subcommand).
    """
    subcommand = ["fit"] if kwargs.get("run", True) else []
    argv = [*subcommand, *args, "--trainer.default_root_dir", str(tmp_path)]
    argv += ["--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path)]
    return cli_main(argv, **kwargs)


def read_metrics(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory) -> Path:
    """A real (briefly trained) teacher checkpoint on digits, for the distillation tests."""
    out = tmp_path_factory.mktemp("teacher")
    fit(
        out, "-c", str(DIGITS_BASE), *TINY,
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
        "--checkpoint.dirpath", str(out), "--checkpoint.filename", "teacher", "--checkpoint.save_last", "false",
    )  # fmt: skip
    return out / "teacher.ckpt"
