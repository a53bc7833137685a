"""One run's facts, once: a frozen ``RunRecord``, the run's ``result.json``, from which every table, figure and
export is derived. Fields added since a record was written (status, device, ...) take their defaults."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bagoftricks.errors import DataError

FINISHED, DIVERGED = "finished", "diverged"


@dataclass(frozen=True)
class RunRecord:
    # what the run is
    step_index: int
    step: str
    seed: int
    run_dir: str  # relative to the output folder
    index: int = -1
    parent: str = ""
    tricks: tuple[str, ...] = ()
    budget: float | None = None
    unbudgeted: str = ""
    status: str = FINISHED  # or DIVERGED: kept out of the statistics
    note: str = ""  # why it diverged
    # what it reached (the last epoch's values; percent for accuracies)
    val_top1: float | None = None
    val_top5: float | None = None
    val_loss: float | None = None
    test_top1: float | None = None
    test_top5: float | None = None
    test_loss: float | None = None
    val_ema_top1: float | None = None  # the same run read out with its weight EMA and flip TTA; None when off
    val_top1_tta: float | None = None
    test_ema_top1: float | None = None
    test_top1_tta: float | None = None
    val_top1_curve: tuple[float, ...] = ()
    # what it cost
    epochs: int | None = None
    time_per_epoch_s: float | None = None
    wall_time_s: float | None = None  # of the invocation that finished the run
    params: int | None = None
    macs: int | None = None
    global_step: int | None = None
    # where and how it ran: CPU results depend on the thread count (the order of float sums) and the machine
    cpu_threads: int | None = None
    device: str = ""
    torch_version: str = ""
    git_commit: str = ""
    resumed_from: str | None = None
    configs: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    finished: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # keys this version does not know

    @property
    def diverged(self) -> bool:
        return self.status == DIVERGED

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data.update(data.pop("extra"))
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, path: Path) -> RunRecord:
        """A ``result.json``; an unreadable, empty or hand-corrupted one is named, with the way to train it again."""
        fix = "delete it and repeat the command to train that run again"
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict) or not data:
            raise DataError(f"{path} is not a valid result file (cut short, empty or edited); {fix}.")
        if missing := [key for key in ("step_index", "step", "seed") if key not in data]:
            raise DataError(f"{path} lacks {', '.join(missing)}, so it names no run; {fix}.")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        for f in dataclasses.fields(cls):  # the numbers, by their types as written above (strings: annotations)
            if f.type not in ("int", "int | None", "float | None"):
                continue
            value, integer = data.get(f.name), f.type.startswith("int")
            if not (value is None or isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)):
                kind = " (an integer)" if integer else ""
                raise DataError(f"{path}: {f.name} is {value!r}, not a number{kind}; restore the value or {fix}.")
        curve = data.get("val_top1_curve") or []
        if not (isinstance(curve, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in curve)):
            raise DataError(f"{path}: val_top1_curve is not a list of numbers; {fix}.")
        if any(isinstance(data.get(key), str) for key in ("tricks", "configs", "overrides")):
            raise DataError(f"{path} is a result file of an older version (lists joined with '; '); {fix}.")
        if not isinstance(data["step"], str) or data.get("status", FINISHED) not in (FINISHED, DIVERGED):
            raise DataError(f"{path}: step or status is not what a run writes; {fix}.")
        known = {k: v for k, v in data.items() if k in names}
        for key in ("tricks", "configs", "overrides", "val_top1_curve"):
            known[key] = tuple(known.get(key) or ())
        known.setdefault("run_dir", path.parent.as_posix())
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})


def by_step(records: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """The records grouped by step, in spec order, each group by seed."""
    steps: dict[str, list[RunRecord]] = {}
    for record in sorted(records, key=lambda r: (r.step_index, r.seed)):
        steps.setdefault(record.step, []).append(record)
    return steps


def divergence(metrics: dict[str, Any]) -> str:
    """Why a run's final metrics cannot be compared ('' when they can): a validation or test loss that is not finite."""
    bad = [key for key in ("val_loss", "test_loss") if metrics.get(key) is not None and not math.isfinite(metrics[key])]
    return f"{' and '.join(bad)} not finite" if bad else ""


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """The rows the CSVLogger wrote, over all parts of a resumed run, as floats (empty cells dropped).

    A resumed run's earlier parts are ``metrics.part<k>.csv`` (the CSVLogger deletes ``metrics.csv``
    when it starts); rows of an earlier part at or after the first step of the next one were
    computed again after the resume and are dropped.
    """
    parts = sorted(run_dir.glob("metrics.part*.csv"), key=lambda p: int(p.stem.removeprefix("metrics.part")))
    parts += [run_dir / "metrics.csv"] if (run_dir / "metrics.csv").is_file() else []
    tables = []
    for part in parts:
        with open(part, newline="") as f:
            try:
                tables.append([{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)])
            except (ValueError, TypeError, csv.Error) as err:
                raise DataError(f"{part} is not the CSVLogger's numbers ({err}); delete the run's folder and repeat the command to train it again.") from None
    rows: list[dict[str, float]] = []
    for i, table in enumerate(tables):
        later = [r["step"] for t in tables[i + 1 :] for r in t if "train/loss" in r]
        cut = min(later) if later else math.inf
        rows += [r for r in table if r.get("step", -1) < cut]
    return rows


def per_epoch(rows: list[dict[str, float]], key: str) -> dict[int, float]:
    """The value of an epoch-level metric for each epoch (the last logged one if an epoch repeats)."""
    return {int(r["epoch"]): r[key] for r in rows if key in r and "epoch" in r}


def last_value(rows: list[dict[str, float]], key: str, scale: float = 1.0) -> float | None:
    values = [r[key] for r in rows if key in r]
    return scale * values[-1] if values else None


def summarize_run(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Metrics of one finished run from its logged rows (percent for accuracies)."""
    val_top1 = per_epoch(rows, "val/top1")
    curve = [100 * val_top1[e] for e in sorted(val_top1)]
    times = per_epoch(rows, "time/epoch_s")
    epochs = max([*times, *val_top1], default=-1) + 1
    percent = ("val/top5", "test/top1", "test/top5", "val_ema/top1", "val/top1_tta", "test_ema/top1", "test/top1_tta")
    return {
        "val_top1": curve[-1] if curve else None,
        **{key.replace("/", "_"): last_value(rows, key, 100) for key in percent},
        "val_loss": last_value(rows, "val/loss"),
        "test_loss": last_value(rows, "test/loss"),
        "epochs": epochs,
        "time_per_epoch_s": statistics.fmean(times.values()) if times else None,
        "val_top1_curve": curve,
    }
