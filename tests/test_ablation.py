"""`bagoftricks ablate`: a tiny digits ablation end to end, its statistics by hand, skip/resume/crash
behaviour, dry runs and sweeps, W&B offline runs, the report notebook, and every shipped spec."""

from __future__ import annotations

import csv
import json
import math
import shlex
import shutil
import statistics
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import DIGITS_BASE, EXPERIMENTS, NARROW_WIDTHS, ROOT
from scipy.stats import t as student_t

from bagoftricks.ablation import (
    ablate,
    ablate_main,
    load_spec,
    mean_ci,
    plan,
    summarize,
)
from bagoftricks.ablation import execute as ablation_execute
from bagoftricks.ablation.record import RunRecord
from bagoftricks.__main__ import main  # the console entry (`bagoftricks ...`)
from bagoftricks.models import create_model

# Fast-run-sized: one epoch of 2 batches of 16 digits at 16 px, a narrow ResNet-18 (1.5 MB checkpoints).
TINY_SET = {
    "model.backbone_kwargs": {"channels": NARROW_WIDTHS},
    "trainer.max_epochs": 1,
    "trainer.limit_train_batches": 2,
    "trainer.limit_val_batches": 1,
    "trainer.limit_test_batches": 1,
    "data.batch_size": 16,
    "data.image_size": 16,
    # One checkpoint write per epoch: the latest (no monitor), and last.ckpt a link to it.
    "checkpoint.monitor": None,
    "checkpoint.save_last": "link",
}
NARROW_PARAMS = sum(p.numel() for p in create_model("resnet18", 10, channels=NARROW_WIDTHS).parameters())
TINY_STEPS = [{"name": "baseline"}, {"name": "+label smoothing", "set": {"model.label_smoothing": 0.1}}]
SHIPPED_SPECS = sorted(p for p in EXPERIMENTS.rglob("*.yaml") if "steps" in (yaml.safe_load(p.read_text()) or {}))


def write_spec(path: Path, steps=TINY_STEPS, seeds=(0, 1), **extra) -> Path:
    spec = {"base": str(DIGITS_BASE), "seeds": list(seeds), "set": dict(TINY_SET), "steps": steps, **extra}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A finished 2-step x 2-seed digits ablation: (spec path, output folder)."""
    root = tmp_path_factory.mktemp("ablation")
    spec = write_spec(root / "tiny.yaml", keep_checkpoints=False)
    out = ablate(spec, out=root / "out")
    return spec, out


def test_outputs_exist(tiny):
    _, out = tiny
    for name in ("results.csv", "results.md", "top1.png", "val_curves.png", "lr.png"):
        assert (out / name).stat().st_size > 0, name
    rows = read_csv(out / "results.csv")
    assert [(r["step"], r["seed"]) for r in rows] == [(step, seed) for step in ("baseline", "+label smoothing") for seed in "01"]
    for row in rows:
        run_dir = out / row["run_dir"]
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["seed_everything"] == int(row["seed"])
        assert config["model"]["label_smoothing"] == (0.1 if row["step"] == "+label smoothing" else 0.0)
        result = json.loads((run_dir / "result.json").read_text())
        assert result["epochs"] == 1 and result["global_step"] == 2
        # The metrics come from what the run logged, not from anywhere else.
        logged = [float(r["val/top1"]) for r in read_csv(run_dir / "metrics.csv") if r.get("val/top1")]
        assert float(row["val_top1"]) == pytest.approx(100 * logged[-1])
        assert row["test_top1"] != "" and int(row["params"]) == NARROW_PARAMS and int(row["macs"]) > 0
        assert not (run_dir / "checkpoints").exists()  # keep_checkpoints: false
        # predictions.pt: the final weights on the whole val and test splits, in loader order; the first
        # batch of 16 is the one val/top1 was logged on (limit_val_batches: 1).
        predictions = torch.load(run_dir / "predictions.pt", weights_only=True)
        assert predictions["val"]["topk"].shape == (269, 5) and predictions["test"]["labels"].shape == (269,)
        first = predictions["val"]["topk"][:16, 0] == predictions["val"]["labels"][:16]
        assert float(row["val_top1"]) == pytest.approx(100 * first.float().mean().item())
    assert rows[2]["tricks"] == "label smoothing" and rows[0]["tricks"] == ""
    table = (out / "results.md").read_text()
    assert table.split("### Image by image")[0].count("\n| ") == 3  # the header and one row per step
    assert "### Image by image (test split, 269 images)" in table and "| +label smoothing | baseline | 2 |" in table


def test_table_matches_hand_computation(tiny):
    _, out = tiny
    rows = read_csv(out / "results.csv")
    top1 = {step: [float(r["val_top1"]) for r in rows if r["step"] == step] for step in ("baseline", "+label smoothing")}
    cells = {}
    for line in (out / "results.md").read_text().split("### Image by image")[0].splitlines():
        parts = [c.strip() for c in line.strip("|").split("|")]
        if len(parts) > 3 and parts[1] in top1:
            cells[parts[1]] = parts
    for step, values in top1.items():
        mean, std = sum(values) / 2, statistics.stdev(values)
        ci = student_t.ppf(0.975, 1) * std / math.sqrt(2)  # 12.706 * s / sqrt(2)
        assert cells[step][3] == f"{mean:.2f} ± {std:.2f}"
        assert cells[step][4] == f"±{ci:.2f}"
    base, ls = top1["baseline"], top1["+label smoothing"]
    differences = [a - b for a, b in zip(ls, base)]  # paired by seed: the rows are in seed order
    delta = statistics.fmean(differences)
    half_width = student_t.ppf(0.975, 1) * statistics.stdev(differences) / math.sqrt(2)
    # One comparison in the table (the parent is the base), so Holm's adjustment changes nothing:
    # `*` exactly when the interval excludes 0.
    mark = " ~" if abs(delta) <= half_width else " *"
    expected = f"{delta:+.2f} [{delta - half_width:+.2f}, {delta + half_width:+.2f}]{mark}"
    if statistics.stdev(differences) == 0:  # two training steps often move both seeds alike: no interval, no mark
        expected = f"{delta:+.2f} (no spread)"
    assert cells["+label smoothing"][5] == expected and cells["+label smoothing"][6] == expected
    assert cells["baseline"][5] == "" and cells["baseline"][6] == ""


def test_statistics_against_reference_numbers():
    mean, std, ci = mean_ci([90.0, 92.0, 94.0])
    assert (mean, std) == (92.0, 2.0)
    assert ci == pytest.approx(4.302653 * 2 / math.sqrt(3), rel=1e-6)  # t(0.975, 2) = 4.302653
    rows = [record(i, s, k, v, parent=p, time_per_epoch_s=1.0, params=1, macs=1)
            for i, (s, p, values) in enumerate([("a", "", [90, 92, 94]), ("b", "a", [91, 94, 95]), ("c", "b", [99, 100, 101])])
            for k, v in enumerate(values)]  # fmt: skip
    summary = summarize(rows)
    assert summary[0].delta_prev is None and summary[0].delta_base is None
    # b - a per seed: 1, 2, 1 -> mean 4/3, sd 1/sqrt(3), half-width t(2) * sd / sqrt(3) = 4.302653 / 3.
    b = summary[1].delta_prev
    assert b.delta == pytest.approx(4 / 3) and b.high - b.delta == pytest.approx(4.302653 / 3, rel=1e-6)
    assert summary[1].delta_base == b and b.reference == "a"
    # c - b per seed: 8, 6, 6; c - a: 9, 8, 7 (both intervals exclude 0).
    assert summary[2].delta_prev.delta == pytest.approx(20 / 3) and summary[2].delta_base.delta == 8.0
    assert summary[2].delta_base.low == pytest.approx(8 - 4.302653 / math.sqrt(3), rel=1e-6)
    # Holm over the three distinct comparisons (b-a, c-b, c-a): the smallest p times 3, then 2, then 1.
    raw = sorted([b.p, summary[2].delta_prev.p, summary[2].delta_base.p])
    adjusted = sorted([b.p_holm, summary[2].delta_prev.p_holm, summary[2].delta_base.p_holm])
    assert adjusted[0] == pytest.approx(3 * raw[0]) and adjusted[2] == pytest.approx(max(raw[2], adjusted[1]))


def test_repeated_command_skips_finished_runs(tiny, monkeypatch):
    spec, out = tiny
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("result.json")}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(ablation_execute, "cli_main", no_training)
    ablate(spec, out=out)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("result.json")} == mtimes
    assert len(read_csv(out / "results.csv")) == 4


@pytest.mark.slow
def test_jobs_give_the_same_numbers_as_one_process(tiny, tmp_path, capsys, monkeypatch):
    """--jobs 2: two worker processes (`ablate --only ... --no-report`) train the runs; the tables equal the
    sequential ones, run by run (same seeds, same arguments, deterministic training, and, since CPU
    results depend on it, the thread count the sequential runs had)."""
    from bagoftricks.ablation import launch

    monkeypatch.setattr(launch.os, "cpu_count", lambda: 2 * torch.get_num_threads())
    spec, out = tiny
    ablate_main([str(spec), "--out", str(tmp_path / "out"), "--jobs", "2", "--seeds", "1"])  # 2 runs: one per worker
    assert f"2 runs in 2 worker processes, {torch.get_num_threads()} CPU thread(s) each" in capsys.readouterr().out
    columns = ("step", "seed", "val_top1", "val_top5", "test_top1", "epochs")
    sequential = [{k: r[k] for k in columns} for r in read_csv(out / "results.csv") if r["seed"] == "1"]
    assert [{k: r[k] for k in columns} for r in read_csv(tmp_path / "out" / "results.csv")] == sequential
    assert "| 1 | +label smoothing | 1 |" in (tmp_path / "out" / "results.md").read_text()  # written once, by the parent
    assert {r["cpu_threads"] for r in read_csv(tmp_path / "out" / "results.csv")} == {str(torch.get_num_threads())}


def record(step_index=0, step="baseline", seed=0, top1=None, **values) -> RunRecord:
    """A run record as a finished run writes it (only the fields a test needs)."""
    return RunRecord(step_index=step_index, step=step, seed=seed, run_dir=f"{step_index:02d}/seed{seed}", val_top1=top1, **values)


def test_mixed_thread_counts_are_named_in_the_report(tmp_path):
    from bagoftricks.ablation.render import more_sections

    assert "Mixed CPU thread counts" not in more_sections(tmp_path, [record(seed=0, cpu_threads=2), record(seed=1, cpu_threads=2)], [])
    assert "Mixed CPU thread counts** (1, 2)" in more_sections(tmp_path, [record(seed=0, cpu_threads=1), record(seed=1, cpu_threads=2)], [])


def test_ema_and_tta_readouts_are_paired_with_the_raw_top1_of_the_same_run():
    from bagoftricks.ablation.record import summarize_run
    from bagoftricks.ablation.render import readouts_section

    # A run's logged rows -> its readouts, in percent, from the last logged value (None when off).
    logged = [{"epoch": 0, "val/top1": 0.5, "val_ema/top1": 0.4}, {"epoch": 1, "val/top1": 0.6, "val_ema/top1": 0.7, "test_ema/top1": 0.65}]
    run = summarize_run(logged)
    assert (run["val_ema_top1"], run["test_ema_top1"]) == (pytest.approx(70.0), pytest.approx(65.0))
    assert run["val_top1_tta"] is None and run["test_top1_tta"] is None

    raw, ema = {0: 80.0, 1: 82.0, 2: 81.0}, {0: 81.0, 1: 82.5, 2: 83.0}
    records = [record(seed=s, top1=raw[s], val_ema_top1=ema[s]) for s in raw]
    assert readouts_section([record(seed=s, top1=raw[s]) for s in raw]) == ""
    differences = [ema[s] - raw[s] for s in raw]
    mean, half_width = statistics.fmean(differences), student_t.ppf(0.975, 2) * statistics.stdev(differences) / math.sqrt(3)
    line = next(line for line in readouts_section(records).splitlines() if line.startswith("| baseline"))
    mark = " ~" if mean - half_width <= 0 else ""
    expected = f"| baseline | {statistics.fmean(ema.values()):.2f} | {mean:+.2f} [{mean - half_width:+.2f}, {mean + half_width:+.2f}]{mark} |"
    assert line == expected


@pytest.mark.parametrize(("visible", "expected"), [(None, ["0", "1", "0"]), ("2,5", ["2", "5", "2"]), ("7", ["7", "7", "7"])])
def test_jobs_share_the_visible_gpus(monkeypatch, visible, expected):
    """Worker i sees GPU i mod the count, chosen among the devices CUDA_VISIBLE_DEVICES already allows."""
    from bagoftricks.ablation.launch import worker_env

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2 if visible is None else len(visible.split(",")))
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert [worker_env(job, 3)["CUDA_VISIBLE_DEVICES"] for job in range(3)] == expected


def test_killed_run_resumes_from_last_checkpoint(tmp_path, monkeypatch):
    spec = write_spec(tmp_path / "resume.yaml", steps=TINY_STEPS[:1], seeds=[0])
    spec.write_text(spec.read_text().replace("trainer.max_epochs: 1", "trainer.max_epochs: 2"))
    original = ablation_execute.EpochTimer.on_train_epoch_start

    def killed_in_second_epoch(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated kill")
        original(self, trainer, pl_module)

    monkeypatch.setattr(ablation_execute.EpochTimer, "on_train_epoch_start", killed_in_second_epoch)
    with pytest.raises(RuntimeError, match="simulated kill"):
        ablate(spec, out=tmp_path / "out")
    run_dir = tmp_path / "out" / "00-baseline" / "seed0"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "result.json").exists()
    assert read_csv(tmp_path / "out" / "results.csv") == []  # whole, with no finished run
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2

    monkeypatch.setattr(ablation_execute.EpochTimer, "on_train_epoch_start", original)
    ablate(spec, out=tmp_path / "out")
    result = json.loads((run_dir / "result.json").read_text())
    assert result["resumed_from"].endswith("last.ckpt")
    assert result["global_step"] == 4 and result["epochs"] == 2
    # The second part of the log continues at step 2; the first epoch's metrics survive in part 0.
    assert min(int(r["step"]) for r in read_csv(run_dir / "metrics.csv") if r.get("train/loss")) == 2
    assert len(result["val_top1_curve"]) == 2
    part0 = read_csv(run_dir / "metrics.part0.csv")
    assert [r["epoch"] for r in part0 if r.get("val/top1")] == ["0"]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["max_epochs"] == 2


def test_dry_run_prints_one_command_per_run(tiny, capsys):
    spec, _ = tiny
    ablate_main([str(spec), "--dry-run", "--out", "somewhere", "--seeds", "3,4"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    for line, (step, seed) in zip(lines, [("00-baseline", 3), ("00-baseline", 4), ("01-label-smoothing", 3), ("01-label-smoothing", 4)]):
        argv = shlex.split(line)
        assert argv[:2] == ["bagoftricks", "fit"]
        assert argv[argv.index("--seed_everything") + 1] == str(seed)
        assert argv[argv.index("--trainer.default_root_dir") + 1] == f"somewhere/{step}/seed{seed}"
    assert "--model.label_smoothing" in lines[2] and "--model.label_smoothing" not in lines[0]
    assert not Path("somewhere").exists()


def test_only_selects_one_run(tiny, capsys):
    spec, _ = tiny
    ablate_main([str(spec), "--dry-run"])
    every = capsys.readouterr().out.strip().splitlines()
    ablate_main([str(spec), "--dry-run", "--only", "2"])
    assert capsys.readouterr().out.strip().splitlines() == [every[2]]
    with pytest.raises(SystemExit) as exit_info:
        main(["ablate", str(spec), "--dry-run", "--only", "9"])
    assert "out of range" in str(exit_info.value.code)


def test_export_sweep(tiny, tmp_path):
    spec, _ = tiny
    ablate_main([str(spec), "--export-sweep", str(tmp_path / "sweep.yaml"), "--seeds", "0,1"])
    sweep = yaml.safe_load((tmp_path / "sweep.yaml").read_text())
    assert sweep["method"] == "grid"
    assert sweep["parameters"]["only"]["values"] == [0, 1, 2, 3]
    assert sweep["command"][:3] == ["bagoftricks", "ablate", str(spec)] and sweep["command"][-1] == "${args}"
    assert "--wandb" in sweep["command"] and "0,1" in sweep["command"]
    assert not (tmp_path / "runs").exists()


def wandb_records(path: Path):
    """The protobuf records of a W&B ``.wandb`` transaction log (a LevelDB-style log of 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, chunk, records = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def flushed_wandb_records(path: Path, timeout: float = 60.0):
    """``wandb_records`` once the file holds its run record: W&B's service writes the offline log on its own
    thread and may close it a moment after ``run.finish()`` returns (seen on a loaded 2-core machine)."""
    deadline = time.monotonic() + timeout
    records = wandb_records(path)
    while not any(r.WhichOneof("record_type") == "run" for r in records) and time.monotonic() < deadline:
        time.sleep(0.2)
        records = wandb_records(path)
    return records


def test_wandb_offline_run_holds_the_tricks(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    steps = [{"name": "+label smoothing + cosine", "set": {"model.label_smoothing": 0.1, "schedule.name": "cosine"}}]
    spec = write_spec(tmp_path / "wb.yaml", steps=steps, seeds=[0])
    ablate_main([str(spec), "--out", str(tmp_path / "out"), "--wandb"])
    files = list((tmp_path / "out" / "00-label-smoothing-cosine" / "seed0" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    records = flushed_wandb_records(files[0])
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.run_group == f"{tmp_path.name}-wb"  # the spec's name: <folder>-<file stem>
    assert run.display_name == "+label smoothing + cosine s0" and list(run.tags) == ["label smoothing", "cosine"]
    config = {}
    for record in records:
        kind = record.WhichOneof("record_type")  # wandb.init's config is in the run record, later updates in config records
        items = record.config.update if kind == "config" else record.run.config.update if kind == "run" else []
        config.update({item.key or ".".join(item.nested_key): json.loads(item.value_json) for item in items})
    assert config["ablation"]["tricks"] == ["label smoothing", "cosine"]
    assert config["model"]["label_smoothing"] == 0.1 and config["schedule"]["name"] == "cosine"  # the resolved config
    # The summary run: same group, the table (with its paired-interval columns) and the figures, the spec as config.
    files = list((tmp_path / "out" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    records = flushed_wandb_records(files[0])
    summary = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert summary.run_group == run.run_group and summary.display_name == f"{run.run_group} summary"
    assert summary.job_type == "ablation-summary"
    logged: dict[str, dict] = {}  # media are logged as nested keys: results._type, top1.path, ...
    for record in records:
        for item in record.history.item if record.WhichOneof("record_type") == "history" else []:
            if len(item.nested_key) == 2:
                logged.setdefault(item.nested_key[0], {})[item.nested_key[1]] = json.loads(item.value_json)
    assert {"results", "top1", "val_curves", "lr"} <= set(logged)
    assert logged["results"]["_type"] == "table-file" and logged["results"]["ncols"] == 12


@pytest.mark.slow  # a Jupyter kernel starts and runs every cell: a minute on a 2-core CPU
def test_notebook_executes(tiny, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    _, out = tiny
    monkeypatch.setenv("BAGOFTRICKS_RESULTS", str(out))
    notebook = nbformat.read(ROOT / "notebooks" / "ablation_report.ipynb", as_version=4)
    # "python3" is ipykernel's spec, whose "python" jupyter_client runs as this interpreter; the kernel
    # inherits BAGOFTRICKS_RESULTS and starts in notebooks/, as when a user opens the notebook.
    resources = {"metadata": {"path": str(ROOT / "notebooks")}}
    nbclient.NotebookClient(notebook, kernel_name="python3", timeout=120, resources=resources).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert any("+label smoothing" in o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert any("### Image by image (test split" in o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ({"base": "base.yaml", "mode": "sideways", "steps": [{"name": "a"}]}, "mode must be"),
        ({"base": "missing.yaml", "steps": [{"name": "a"}]}, "missing.yaml does not exist"),
        ({"base": "base.yaml", "steps": [{"name": "a"}, {"name": "a"}]}, "appears twice"),
        ({"base": "base.yaml", "steps": []}, "has no steps"),
        ({"base": "base.yaml", "steps": [{"name": "a", "from": "b"}]}, "names no earlier step"),
        ({"base": "base.yaml", "steps": [{"name": "a", "set": {"seed_everything": 1}}]}, "chooses per run"),
        ({"base": "base.yaml", "steps": [{"name": "a"}], "seed": [1]}, "unknown key"),
    ],
)
def test_bad_spec_is_one_clear_line(tmp_path, content, words):
    shutil.copy(DIGITS_BASE, tmp_path / "base.yaml")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(content))
    with pytest.raises(SystemExit) as exit_info:
        main(["ablate", str(tmp_path / "spec.yaml"), "--dry-run"])
    message = str(exit_info.value.code)
    assert words in message and "\n" not in message


def test_each_mode_and_from(tmp_path):
    steps = [{"name": "base"}, {"name": "a", "set": {"model.label_smoothing": 0.1}}, {"name": "b", "set": {"model.mixup_alpha": 0.2}},
             {"name": "a + b", "from": "a", "set": {"model.mixup_alpha": 0.2}}]  # fmt: skip
    runs = plan(load_spec(write_spec(tmp_path / "each.yaml", steps=steps, seeds=[0], mode="each")))
    assert ["--model.label_smoothing" in r.overrides for r in runs] == [False, True, False, True]
    assert ["--model.mixup_alpha" in r.overrides for r in runs] == [False, False, True, True]
    assert [r.parent for r in runs] == ["", "base", "base", "a"] and runs[3].tricks == ("a", "b")


# ----------------------------------------------------------------------------- every shipped spec


@pytest.mark.parametrize("spec", SHIPPED_SPECS, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_shipped_spec_dry_run(spec, capsys):
    ablate_main([str(spec), "--dry-run"])
    lines = capsys.readouterr().out.strip().splitlines()
    loaded = load_spec(spec)
    assert len(lines) == len(loaded.steps) * len(loaded.seeds) and len(loaded.seeds) >= 3
    assert spec.read_text().startswith(f"# bagoftricks ablate {spec.relative_to(ROOT)}")
