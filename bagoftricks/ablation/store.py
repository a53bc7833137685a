"""The output folder of an ablation: atomic writes (``os.replace``), ``flock`` locks (released when a process
dies), the plan, the records, the predictions and the exports."""

from __future__ import annotations

import csv
import dataclasses
import errno
import fcntl
import io
import json
import os
import pickle
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import torch

from bagoftricks.ablation.design import Design, design
from bagoftricks.ablation.plan import PlannedRun
from bagoftricks.ablation.record import RunRecord
from bagoftricks.ablation.spec import Spec, step_folder
from bagoftricks.errors import DataError, UserError

# Write failures a user fixes by freeing space or choosing another folder (not bugs: no traceback).
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
# One row per run in results.csv (an export for spreadsheets; nothing reads it back): the record's scalar fields.
COLUMNS = [f.name for f in dataclasses.fields(RunRecord) if f.name not in ("val_top1_curve", "configs", "overrides", "extra")]


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; on success it replaces ``path``, on failure it is removed."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


@contextmanager
def _flock(path: Path, shared: bool = False) -> Iterator[bool]:
    """True while this process holds the lock on ``path`` (``shared``: with other shared holders); False (at
    once) when another process holds it in a conflicting way."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_predictions(path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A run's ``predictions.pt`` as {split: (top-1 class, label) per image}; a damaged or edited file is named."""
    try:
        data = torch.load(path, weights_only=True)
        splits = {split: (data[split]["topk"][:, 0], data[split]["labels"]) for split in data}
        if "val" in splits and all(top1.shape == labels.shape for top1, labels in splits.values()):
            return splits
    except (pickle.UnpicklingError, EOFError, RuntimeError, KeyError, TypeError, IndexError, AttributeError):
        pass
    raise DataError(f"{path} is not a run's predictions (cut short or edited); delete it and the image-by-image section leaves that run out.")


class Store:
    """The output folder ``out`` of one spec's ablation."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.plan_json = self.out / "plan.json"
        self.results_csv = self.out / "results.csv"
        self.results_md = self.out / "results.md"
        self.slurm = self.out / "slurm"  # submitit's scripts, pickles and logs

    @contextmanager
    def disk_errors(self) -> Iterator[None]:
        """A write that fails for lack of space or permission becomes one sentence (a ``UserError``)."""
        try:
            yield
        except OSError as err:
            if err.errno not in DISK_ERRNOS:
                raise
            raise UserError(
                f"writing {err.filename or f'a file in {self.out}'} failed ({err.strerror or os.strerror(err.errno)}); free space "
                "or choose another --out and repeat the command: finished runs are kept and the interrupted one starts again."
            ) from err

    @contextmanager
    def lock(self, shared: bool = False) -> Iterator[None]:
        """This process's hold on the folder; a file, a folder it cannot write or another ``ablate`` there is refused,
        but ``shared`` holders (``--only`` calls: W&B sweep agents) train beside each other under their run locks."""
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {self.out} is a file, not a folder; name a folder (a new one, or this spec's earlier output).")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / ".ablate.lock").touch()
        except OSError as err:
            raise UserError(f"cannot write to --out {self.out} ({err.strerror}); choose a folder you can write to.") from None
        with _flock(self.out / ".ablate.lock", shared) as held:
            if not held:
                raise UserError(
                    f"another `bagoftricks ablate` is running on --out {self.out}; wait for it to end (its finished runs "
                    "count for yours) or choose another --out."
                )
            yield

    def run_lock(self, run: PlannedRun) -> AbstractContextManager[bool]:
        return _flock(self.out / ".locks" / f"{run.run_dir.parent.name}-{run.run_dir.name}.lock")

    def write_plan(self, runs: list[PlannedRun], spec: Spec) -> None:
        data = {"spec": str(spec.path), "name": spec.name, "runs": [run.to_json() for run in runs]}
        if spec.design is not None:
            data["design"] = {"factors": list(spec.design.factors), "runs_per_seed": len(spec.design.matrix)}  # row i: step i
        atomic_write(self.plan_json, json.dumps(data, indent=1) + "\n")

    def read_plan(self) -> tuple[list[PlannedRun], Design | None]:
        """The planned runs of ``plan.json`` and its factorial design (None in other modes); a damaged file is named."""
        try:
            data = json.loads(self.plan_json.read_text())
            runs = [PlannedRun.from_json(run) for run in data["runs"]]
            return runs, design(data["design"]["factors"], data["design"]["runs_per_seed"]) if data.get("design") else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise UserError(f"{self.plan_json} cannot be read ({err!r}); delete it and repeat the command to plan again.") from None

    def design(self) -> Design | None:
        """The factorial design of ``plan.json``, or None."""
        if (old := self.out / "design.json").is_file() and not self.plan_json.is_file():
            raise DataError(
                f"{old} is an older version's design file; repeat the `bagoftricks ablate` command to plan again."
            )
        return self.read_plan()[1] if self.plan_json.is_file() else None

    def record(self, run: PlannedRun) -> RunRecord | None:
        """The record of ``run`` if it is finished (read, so a damaged one is named here, not skipped or retrained)."""
        return RunRecord.from_json(run.run_dir / "result.json") if (run.run_dir / "result.json").is_file() else None

    def write_record(self, record: RunRecord) -> None:
        atomic_write(self.out / record.run_dir / "result.json", record.to_json())

    def records(self, spec: Spec | None = None) -> list[RunRecord]:
        """Every record in the folder (with ``spec``: of its steps, whichever seeds and ``--only`` trained them),
        by step, then seed. A damaged record is named, never dropped."""
        if not self.out.is_dir():
            raise UserError(f"{self.out} does not exist; run `bagoftricks ablate SPEC --out {self.out}` first.")
        if spec is not None:
            folders = {step_folder(i, step.name): step.name for i, step in enumerate(spec.steps)}
            paths = [p for folder in folders for p in (self.out / folder).glob("seed*/result.json")]
        else:
            paths = list(self.out.glob("*/seed*/result.json"))
        records = []
        for path in paths:
            record = RunRecord.from_json(path)
            if spec is None or record.step == folders[path.parent.parent.name]:
                records.append(dataclasses.replace(record, run_dir=path.parent.relative_to(self.out).as_posix()))
        return sorted(records, key=lambda r: (r.step_index, r.seed))

    def write_predictions(self, run: PlannedRun, predictions: dict[str, dict[str, torch.Tensor]]) -> None:
        with replacing(run.run_dir / "predictions.pt") as tmp:
            torch.save(predictions, tmp)

    def correct(self, records: list[RunRecord]) -> tuple[str, dict[str, dict[int, torch.Tensor]], torch.Tensor] | None:
        """The split used, each step's per-seed top-1 correctness (bool [N]) and the labels; None without predictions."""
        paths = {(r.step, r.seed): self.out / r.run_dir / "predictions.pt" for r in records}
        loaded = {key: _read_predictions(path) for key, path in paths.items() if path.is_file()}
        if not loaded:
            return None
        split = "test" if all("test" in p for p in loaded.values()) else "val"
        labels = next(iter(loaded.values()))[split][1]
        correct: dict[str, dict[int, torch.Tensor]] = {}
        for (step, seed), p in loaded.items():
            if torch.equal(p[split][1], labels):  # runs over another split size cannot be paired image by image
                correct.setdefault(step, {})[seed] = p[split][0] == labels
        return split, correct, labels

    def export_csv(self, records: list[RunRecord]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for record in records:
            row = {k: getattr(record, k) for k in COLUMNS}
            writer.writerow({k: "; ".join(v) if isinstance(v, tuple) else "" if v is None else v for k, v in row.items()})
        atomic_write(self.results_csv, buffer.getvalue())

    def save_figure(self, name: str, figure) -> None:
        with replacing(self.out / name) as tmp:
            figure.savefig(tmp, dpi=120, format=Path(name).suffix.lstrip("."))

    def wandb_id(self, run: PlannedRun, resuming: bool) -> str | None:
        """The W&B run id, kept in the run folder so a resumed run continues the same W&B run."""
        if run.wandb is None:
            return None
        path = run.run_dir / "wandb-id"
        if resuming and path.is_file():
            return path.read_text().strip()
        atomic_write(path, run_id := uuid.uuid4().hex[:8])
        return run_id
