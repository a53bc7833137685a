"""Train one planned run in this process (``cli_main(args, run=False)``, checked by the CLI's ``before_fit``),
resuming it if it was killed, and write its ``RunRecord`` and ``predictions.pt`` (each image's top-k classes with the
final weights); a diverged run is recorded, not raised."""

from __future__ import annotations

import contextlib
import gc
import logging
import netrc
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from bagoftricks.ablation.plan import PlannedRun
from bagoftricks.ablation.record import DIVERGED, FINISHED, RunRecord, divergence, read_metrics, summarize_run
from bagoftricks.ablation.store import Store
from bagoftricks.cli import cli_main, ignore_known_warnings
from bagoftricks.errors import TrainingDivergedError
from bagoftricks.models import model_stats

# Set for the processes a multi-process strategy starts from this one: they train this run, nothing else.
RUN_ENV = "BAGOFTRICKS_ABLATION_RUN"
TOP_K = 5  # enough for top-5 accuracy and for "which classes does it confuse"


class EpochTimer(Callback):
    """Logs ``time/epoch_s``: wall time of each epoch, training, validation and checkpointing included."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log("time/epoch_s", time.perf_counter() - self.start, on_step=False, on_epoch=True)


class PredictionRecorder(Callback):
    """Keeps the top-k class ids and the labels of every batch ``trainer.predict`` sees."""

    def __init__(self) -> None:
        self.topk: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.topk.append(outputs.topk(min(TOP_K, outputs.shape[-1]), dim=-1).indices.to("cpu", torch.int16))
        self.labels.append(batch[1].to("cpu", torch.int16))


def predict(trainer: L.Trainer, model: L.LightningModule, datamodule, with_test: bool) -> dict[str, dict[str, torch.Tensor]]:
    """``predictions.pt``: per split (val, and test), ``{"topk": int16 [N, k], "labels": int16 [N]}`` of the final
    weights, in the loader's fixed order; under DDP, called on rank 0 alone, a one-device trainer predicts every image."""
    if trainer.world_size > 1:
        root = trainer.strategy.root_device
        trainer = L.Trainer(accelerator=root.type, devices=[root.index] if root.type == "cuda" else 1, logger=False,
                            enable_progress_bar=False, enable_model_summary=False, precision=trainer.precision)  # fmt: skip
    predictions = {}
    for split in ("val", "test") if with_test else ("val",):
        recorder = PredictionRecorder()
        trainer.callbacks.append(recorder)
        try:
            trainer.predict(model, dataloaders=getattr(datamodule, f"{split}_dataloader")(), return_predictions=False)
        finally:
            trainer.callbacks.remove(recorder)
        predictions[split] = {"topk": torch.cat(recorder.topk), "labels": torch.cat(recorder.labels)}
    return predictions


@contextlib.contextmanager
def quiet_lightning():
    """No per-run Lightning INFO lines (they would bury the progress line); each distinct warning once per
    ablation, not once per run, unless the user chose filters with ``-W``."""
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


def default_wandb_offline(console) -> None:
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
    """Resume from ``checkpoints/last.ckpt`` if a killed run left one, else start from an empty folder
    (DDP ranks other than 0 find the folder that rank 0 has prepared)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if int(os.environ.get("LOCAL_RANK", 0)) > 0:
        return last if last.is_file() else None
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


def _git_commit() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        root = Path(__file__).resolve().parents[2]
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return done.stdout.strip() if done.returncode == 0 else ""
    return ""


def _device(trainer: L.Trainer) -> str:
    root = trainer.strategy.root_device
    return torch.cuda.get_device_name(root) if root.type == "cuda" else f"{platform.machine()} {platform.processor() or 'cpu'}".strip()


def _no_lightning_requeue(trainer: L.Trainer) -> None:
    """Under SLURM submitit requeues a preempted task; Lightning's own handler would requeue it a second time."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    environment = trainer._accelerator_connector.cluster_environment  # where Lightning's signal connector reads it
    if isinstance(environment, SLURMEnvironment):
        environment.auto_requeue = False


def execute(run: PlannedRun, store: Store) -> RunRecord | None:
    """Train one run (resuming it if it was killed), write its record and return it (None on ranks other than 0)."""
    os.environ[RUN_ENV] = f"{store.out}:{run.index}"
    last = _prepare_run_dir(run.run_dir)
    start = time.perf_counter()
    note = ""
    try:
        with warnings.catch_warnings():
            # The folder holds the W&B id or, resuming, the checkpoints; the CSVLogger's warning does not apply.
            warnings.filterwarnings("ignore", "Experiment logs directory .* exists and is not empty")
            warnings.filterwarnings("ignore", "LightningCLI's args parameter")  # beside `ablate`'s own sys.argv, by design
            cli = cli_main(run.fit_args(store.wandb_id(run, last is not None or "LOCAL_RANK" in os.environ)), run=False)
        trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
        cli.before_fit()  # fit's checks before training
        trainer.callbacks.append(EpochTimer())
        _no_lightning_requeue(trainer)
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=str(last) if last else None)
        except TrainingDivergedError as err:
            note = str(err).split(";")[0]
        if not note and not trainer.state.finished:
            raise RuntimeError(f"Training of {run.run_dir} stopped before its end ({trainer.state.status}).")
        test_set = getattr(datamodule, "test_set", None)
        with_test = run.test and test_set is not None and test_set is not getattr(datamodule, "val_set", None)
        if with_test and not note:
            # The final weights, like the reported val top-1 (the best epoch's would be biased).
            trainer.test(model, datamodule=datamodule, verbose=False)
        if not note and trainer.is_global_zero:
            store.write_predictions(run, predict(trainer, model, datamodule, with_test))
        stats = model_stats(model.backbone, datamodule.image_size)
    finally:
        if run.wandb is not None:
            import wandb

            wandb.finish()
    if not trainer.is_global_zero:
        return None
    metrics = summarize_run(read_metrics(run.run_dir))
    note = note or divergence(metrics)
    record = RunRecord(
        step_index=run.step_index, step=run.step, seed=run.seed, run_dir=run.run_dir.relative_to(store.out).as_posix(),
        index=run.index, parent=run.parent, tricks=run.tricks, budget=run.budget, unbudgeted=run.unbudgeted,
        status=DIVERGED if note else FINISHED, note=note, **{**metrics, "val_top1_curve": tuple(metrics["val_top1_curve"])},
        wall_time_s=round(time.perf_counter() - start, 2), params=stats["params"], macs=stats["macs"], global_step=trainer.global_step,
        cpu_threads=torch.get_num_threads(), device=_device(trainer), torch_version=torch.__version__, git_commit=_git_commit(),
        resumed_from=str(last) if last else None, configs=run.configs, overrides=run.overrides,
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )  # fmt: skip
    store.write_record(record)
    if not run.keep_checkpoints:
        shutil.rmtree(run.run_dir / "checkpoints", ignore_errors=True)
    del cli, trainer, model, datamodule
    gc.collect()
    # With model.compile, every run compiles a new model; without a reset, torch.compile's
    # recompile limit would leave the later runs of a long ablation silently eager.
    torch.compiler.reset()
    return record
