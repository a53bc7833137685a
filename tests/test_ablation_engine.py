"""The ablation engine's contracts (issue 24) and hostile inputs (issue 27) that need little or no training:
plan once (plan.json, the CLI's own parser, checks before any run), one record per run (old result.json files
load, damaged ones are named), one store (a lock a killed process does not leave stale), and what the report
does with diverged runs and intervals it cannot compute."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import shutil
import time
from pathlib import Path

import pytest
from conftest import DIGITS_BASE
from test_ablation import TINY_STEPS, write_spec
from test_ablation_faults import user_error

from bagoftricks.ablation import RunRecord, Store, ablate_main, load_spec, plan, write_report
from bagoftricks.ablation import launch
from bagoftricks.ablation.plan import fit_parser
from bagoftricks.errors import ConfigError, DataError

# A result.json as the version before the engine wrote it (every key it had, no status/device/torch/git).
LEGACY = {
    "index": 3, "step_index": 1, "step": "+label smoothing", "parent": "baseline", "seed": 1, "tricks": ["label smoothing"],
    "budget": None, "unbudgeted": "", "val_top1": 12.5, "val_top1_best": 12.5, "val_top5": 50.0, "val_loss": 3.25,
    "test_top1": 6.25, "test_top5": 62.5, "val_ema_top1": None, "val_top1_tta": None, "test_ema_top1": None,
    "test_top1_tta": None, "epochs": 1, "time_per_epoch_s": 0.152, "val_top1_curve": [12.5], "wall_time_s": 1.21,
    "params": 11181642, "macs": 15549440, "global_step": 2, "cpu_threads": 2, "resumed_from": None,
    "run_dir": "01-label-smoothing/seed1", "configs": ["experiments/digits/base.yaml"],
    "overrides": ["--model.label_smoothing", "0.1"], "finished": "2026-12-06T18:13:14+00:00",
}  # fmt: skip


def write_record(out, step_index, step, seed, top1, **values) -> None:
    run_dir = out / f"{step_index:02d}-{step.strip('+').replace(' ', '-')}" / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    record = RunRecord(step_index=step_index, step=step, seed=seed, run_dir=f"{run_dir.parent.name}/{run_dir.name}", val_top1=top1,
                       val_top1_curve=(top1,) if top1 is not None else (), **values)  # fmt: skip
    (run_dir / "result.json").write_text(record.to_json())


def fake_execute(calls):
    """Stands in for training: writes the run's record at once and counts the call."""

    def execute(run, store):
        calls.append(run.index)
        record = RunRecord(step_index=run.step_index, step=run.step, seed=run.seed, run_dir=run.run_dir.relative_to(store.out).as_posix(),
                           index=run.index, parent=run.parent, val_top1=50.0 + run.index, val_top1_curve=(50.0,), wall_time_s=0.0,
                           configs=run.configs, overrides=run.overrides)  # fmt: skip
        run.run_dir.mkdir(parents=True, exist_ok=True)
        store.write_record(record)
        return record

    return execute


# ----------------------------------------------------------------------------- plan once


def test_parse_entry_gives_the_config_cli_main_runs_with(tmp_path):
    from bagoftricks.cli import cli_main

    run = plan(load_spec(write_spec(tmp_path / "spec.yaml")), out=tmp_path / "out")[3]
    ours = fit_parser().parse_args(run.fit_args()).as_dict()
    theirs = cli_main(run.fit_args(), run=False).config.as_dict()
    assert ours == theirs and ours["model"]["label_smoothing"] == 0.1 and ours["seed_everything"] == 1
    assert not (tmp_path / "out").exists()  # building the CLI to compare wrote nothing either


def test_the_readme_spec_plans(tmp_path):
    """The annotated spec of README.md, "Run an ablation", beside the digits configs it names: a spec that plans."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (tmp_path / "spec.yaml").write_text(readme.split("A spec (", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0])
    for name in ("base.yaml", "cosine.yaml"):
        shutil.copy(DIGITS_BASE.parent / name, tmp_path / name)
    spec = load_spec(tmp_path / "spec.yaml")
    assert spec.name == "my-ablation" and [s.unbudgeted for s in spec.steps[:4]] == ["baseline", "+warmup", "+cosine", "cosine + LS"]
    runs = plan(spec, seeds=[0], files=False)
    assert len(runs) == 12 and runs[3].tricks == ("warmup", "cosine", "LS") and runs[-1].budget == 4.0


def test_plan_json_holds_the_plan_and_only_1_1_trains_once(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(launch, "execute", fake_execute(calls))
    spec = write_spec(tmp_path / "spec.yaml")
    flags = ["--out", str(tmp_path / "out"), "--jobs", "1", "--set", "data.batch_size=8"]
    ablate_main([str(spec), *flags, "--only", "1,1", "--no-report"])
    assert calls == [1]
    saved, design = Store(tmp_path / "out").read_plan()
    assert saved == plan(load_spec(spec), out=tmp_path / "out", extra={"data.batch_size": 8}) and design is None
    assert [r.seed for r in saved] == [0, 1, 0, 1] and saved[3].overrides[-4:-2] == ("--model.label_smoothing", "0.1")
    config = json.loads((tmp_path / "out" / "plan.json").read_text())["runs"][3]["config"]  # as `fit` parses it
    assert config["seed_everything"] == 1 and config["data"]["init_args"]["batch_size"] == 8
    ablate_main([str(spec), *flags])  # the rest; run 1 is not trained again
    assert sorted(calls) == [0, 1, 2, 3]
    assert "| 1 | +label smoothing | 2 |" in (tmp_path / "out" / "results.md").read_text()


@pytest.mark.parametrize(
    ("set_", "words"),
    [
        ({"model.label_smoothing": 1.5}, "model.label_smoothing must be in [0, 1)"),
        ({"data.image_size": 8}, "data.image_size 8 is smaller than model.backbone resnet18 takes (16 px)"),
        ({"trainer.max_epochs": 0}, "must be positive: 0 trains nothing"),
        ({"trainer.limit_train_batches": 0}, "limit_train_batches 0 trains nothing"),
        ({"model.teacher": "nowhere.ckpt"}, "model.teacher nowhere.ckpt does not exist"),
        ({"checkpoint.monitor": "val/acc"}, "checkpoint.monitor val/acc is not a metric this run logs"),
        ({"trainer.limit_val_batches": 1.5}, "trainer.limit_val_batches must be a fraction in [0, 1]"),
    ],
    ids=["constructor-value", "image-smaller-than-backbone", "zero-epochs", "zero-batches", "missing-teacher", "unlogged-monitor",
         "trainer-value"],  # fmt: skip
)
def test_a_bad_last_step_is_refused_before_any_run(tmp_path, monkeypatch, set_, words):
    calls = []
    monkeypatch.setattr(launch, "execute", fake_execute(calls))
    spec = write_spec(tmp_path / "spec.yaml", steps=[*TINY_STEPS, {"name": "bad", "set": set_}])
    message = user_error([str(spec), "--out", str(tmp_path / "out"), "--jobs", "1"])
    assert message.startswith(f"{spec}: step 'bad': ") and words in message
    assert calls == [] and not (tmp_path / "out").exists()


def test_a_gpu_spec_plans_on_a_cpu_login_node(tmp_path, capsys):
    """The accelerator is the run's machine's to check: a login node without a GPU plans a GPU spec for SLURM."""
    spec = write_spec(tmp_path / "spec.yaml", steps=[{"name": "baseline", "set": {"trainer.accelerator": "gpu"}}])
    ablate_main([str(spec), "--out", str(tmp_path / "out"), "--dry-run"])
    assert "--trainer.accelerator gpu" in capsys.readouterr().out


# ----------------------------------------------------------------------------- command-line values


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--only", ""], "--only '' names no run"),
        (["--out", ""], "--out '' names no folder"),
        (["--seeds", "-3"], "seed -3 is outside numpy's seed range 0 to 4294967295"),
        (["--seeds", "1,1"], "repeat a seed"),
        (["--set", "model.label_smoothing=[0.1"], "the value of model.label_smoothing is not valid YAML"),
        (["--set", "model.label_smoothing=0.1: x: y"], "is not valid YAML"),
        (["--wait"], "apply to --launcher slurm"),
    ],
    ids=["empty-only", "empty-out", "negative-seed", "repeated-seed", "set-unclosed-list", "set-bad-mapping", "wait-without-slurm"],
)
def test_bad_flag_is_one_sentence(tmp_path, argv, words):
    spec = write_spec(tmp_path / "spec.yaml")
    assert words in user_error([str(spec), "--dry-run", *argv])


def test_out_of_range_seed_in_the_spec(tmp_path):
    with pytest.raises(ConfigError, match=r"seeds: seed 4294967296 is outside numpy's seed range"):
        load_spec(write_spec(tmp_path / "spec.yaml", seeds=[0, 2**32]))


@pytest.mark.parametrize("where", ["folder", "missing-parent"])
def test_export_sweep_needs_a_file_in_an_existing_folder(tmp_path, where):
    spec = write_spec(tmp_path / "spec.yaml")
    target = tmp_path if where == "folder" else tmp_path / "no" / "sweep.yaml"
    message = user_error([str(spec), "--export-sweep", str(target)])
    assert "is not a file in an existing folder; name the sweep file" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("base: base.yaml\nsteps: [{name: a}]\n".encode("utf-16"), "is UTF-16 or UTF-32 text; save it as UTF-8"),
        ("base: base.yaml\n".encode("utf-16-le"), "is UTF-16 or UTF-32 text"),
        (bytes(range(256)) * 4, "is binary (it holds NUL bytes)"),
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(200), "is binary"),
        ("base: r\xe9snet.yaml\n".encode("latin-1"), "is not UTF-8 text"),
    ],
    ids=["utf16-bom", "utf16-no-bom", "binary", "png", "latin-1"],
)
def test_binary_or_utf16_spec_is_one_sentence(tmp_path, content, words):
    (tmp_path / "spec.yaml").write_bytes(content)
    message = user_error([str(tmp_path / "spec.yaml"), "--dry-run"])
    assert str(tmp_path / "spec.yaml") in message and words in message


# ----------------------------------------------------------------------------- records


def test_result_json_of_the_previous_version_loads(tmp_path):
    run_dir = tmp_path / "01-label-smoothing" / "seed1"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps(LEGACY))
    (record,) = Store(tmp_path).records()
    assert (record.step, record.seed, record.val_top1, record.tricks, record.status) == ("+label smoothing", 1, 12.5, ("label smoothing",), "finished")
    assert record.device == "" and record.git_commit == ""  # not known then
    write_report(tmp_path)
    assert "| 1 | +label smoothing | 1 | 12.50 |" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{}", "is not a valid result file"),
        ("", "is not a valid result file"),
        ("[1, 2]", "is not a valid result file"),
        ('{"step": "baseline", "seed": 0}', "lacks step_index"),
        (json.dumps({**LEGACY, "val_top1": "high"}), "val_top1 is 'high', not a number"),
        (json.dumps({**LEGACY, "seed": 1.5}), "seed is 1.5, not a number"),
        (json.dumps({**LEGACY, "val_top1_curve": ["x"]}), "val_top1_curve is not a list of numbers"),
        (json.dumps({**LEGACY, "epochs": True}), "epochs is True, not a number"),
        (json.dumps({**LEGACY, "tricks": "label smoothing; mixup"}), "an older version (lists joined with '; '); delete it"),
    ],
    ids=["empty-object", "empty-file", "list", "no-step-index", "text-top1", "fractional-seed", "text-curve", "bool-epochs", "joined"],
)
def test_damaged_record_is_named_never_dropped(tmp_path, text, words):
    run_dir = tmp_path / "out" / "01-label-smoothing" / "seed1"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(text)
    with pytest.raises(DataError) as info:
        write_report(tmp_path / "out")
    assert str(run_dir / "result.json") in str(info.value) and words in str(info.value)
    assert (run_dir / "result.json").read_text() == text


# ----------------------------------------------------------------------------- the report: diverged runs, intervals it cannot compute


def test_diverged_runs_are_shown_and_kept_out_of_the_statistics(tmp_path):
    for seed, top1 in enumerate([80.0, 82.0, 84.0]):
        write_record(tmp_path, 0, "baseline", seed, top1)
    write_record(tmp_path, 1, "+high lr", 0, 81.0, parent="baseline")
    write_record(tmp_path, 1, "+high lr", 1, 84.0, parent="baseline")
    write_record(tmp_path, 1, "+high lr", 2, 10.0, parent="baseline", status="diverged", val_loss=math.nan, note="val_loss not finite")
    write_report(tmp_path)
    text = (tmp_path / "results.md").read_text()
    # n = 2, mean of 81 and 84; the diverged seed's chance-level 10% is in no number.
    assert "| 1 | +high lr † | 2 | 82.50 ± 2.12 |" in text
    assert "**Diverged runs** (left out of every number above):\n- +high lr, seed 2: val_loss not finite (01-high-lr/seed2)" in text
    assert "+1.50 [-4.85, +7.85] ~" in text  # seeds 0 and 1 paired: +1, +2; t(1) * 0.707 / sqrt(2) = 6.35


def test_intervals_from_zero_variance_or_one_seed_are_never_marked(tmp_path):
    for seed, top1 in enumerate([80.0, 82.0]):
        write_record(tmp_path, 0, "baseline", seed, top1)
        write_record(tmp_path, 1, "+a", seed, top1 + 2.0, parent="baseline")  # +2 on both seeds: no spread
    write_record(tmp_path, 2, "+b", 0, 90.0, parent="+a")  # one seed
    write_report(tmp_path)
    rows = {line.split("|")[2].strip(): line for line in (tmp_path / "results.md").read_text().splitlines() if line.startswith("| ")}
    assert "| +2.00 (no spread) | +2.00 (no spread) |" in rows["+a"] and "*" not in rows["+a"]
    assert "| +8.00 | +10.00 |" in rows["+b"]


# ----------------------------------------------------------------------------- one process per output folder


def test_second_process_on_one_out_is_refused(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml")
    with Store(tmp_path / "out").lock():
        message = user_error([str(spec), "--out", str(tmp_path / "out"), "--jobs", "1"])
    assert f"another `bagoftricks ablate` is running on --out {tmp_path / 'out'}" in message


def test_only_calls_share_the_folder_as_sweep_agents_do(tmp_path, monkeypatch):
    """Two W&B sweep agents (``--only``) train beside each other; a whole ablation waits for them, and they for it."""
    calls = []
    monkeypatch.setattr(launch, "execute", fake_execute(calls))
    spec, out = write_spec(tmp_path / "spec.yaml"), tmp_path / "out"
    with Store(out).lock(shared=True):  # the first agent, training run 0
        ablate_main([str(spec), "--out", str(out), "--jobs", "1", "--only", "1"])
        assert calls == [1]
        assert "another `bagoftricks ablate` is running" in user_error([str(spec), "--out", str(out), "--jobs", "1"])
    with Store(out).lock():
        assert "another `bagoftricks ablate` is running" in user_error([str(spec), "--out", str(out), "--only", "2"])


def test_lock_of_a_killed_process_is_not_stale(tmp_path, monkeypatch):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from bagoftricks.ablation.store import Store\n"
         "with Store(sys.argv[1]).lock():\n    print('held', flush=True); time.sleep(600)", str(tmp_path / "out")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        spec = write_spec(tmp_path / "spec.yaml")
        assert "another `bagoftricks ablate` is running" in user_error([str(spec), "--out", str(tmp_path / "out"), "--report"])
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    time.sleep(0.1)
    calls = []
    monkeypatch.setattr(launch, "execute", fake_execute(calls))
    ablate_main([str(spec), "--out", str(tmp_path / "out"), "--jobs", "1", "--no-report"])
    assert sorted(calls) == [0, 1, 2, 3]
