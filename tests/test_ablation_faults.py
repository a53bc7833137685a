"""`bagoftricks ablate` under a user's mistakes and a hostile disk (issue 12, items 3, 6, 7, 8): each fault is one
`UserError` sentence naming the spec, step, key or file, raised before anything trains, and nothing on disk
is lost or left half-written. Reporting is tested on written result.json files, without training."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console
from conftest import DIGITS_BASE
from test_ablation import TINY_SET, TINY_STEPS, write_spec

from bagoftricks.ablation import ablate, ablate_main, load_spec, plan, write_report
from bagoftricks.ablation import launch
from bagoftricks.ablation.store import atomic_write
from bagoftricks.errors import ConfigError, UserError


def user_error(argv: list[str]) -> str:
    """The one sentence `bagoftricks ablate ARGV` ends with (the console prints exactly a UserError's message)."""
    with pytest.raises(UserError) as info:
        ablate_main(argv)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def no_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a run trained although the spec is wrong")

    monkeypatch.setattr(launch, "execute", fail)


def fake_result(out: Path, step_index: int, step: str, seed: int, top1: float) -> None:
    """A finished run as the runner leaves it: its folder and its result.json."""
    run_dir = out / f"{step_index:02d}-{step.strip('+').replace(' ', '-')}" / f"seed{seed}"
    run_dir.mkdir(parents=True)
    result = {"index": 0, "step_index": step_index, "step": step, "parent": "", "seed": seed, "tricks": [],
              "val_top1": top1, "val_top1_curve": [top1], "epochs": 1, "params": 1, "macs": 1,
              "run_dir": run_dir.relative_to(out).as_posix(), "configs": [], "overrides": []}  # fmt: skip
    (run_dir / "result.json").write_text(json.dumps(result))


def csv_rows(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as f:
        return [(row["step"], row["seed"]) for row in csv.DictReader(f)]


# ----------------------------------------------------------------------------- results from the whole folder


def test_tables_hold_every_finished_run_of_the_spec(tmp_path, monkeypatch):
    no_training(monkeypatch)
    spec = write_spec(tmp_path / "spec.yaml", seeds=[0, 1, 2])
    out = tmp_path / "out"
    for i, step in enumerate(["baseline", "+label smoothing"]):
        for seed in (0, 1, 2):
            fake_result(out, i, step, seed, 90.0 + i + seed)
    fake_result(out, 5, "+removed step", 0, 10.0)  # a step the spec no longer has
    # Issue 12's cases: a subset of seeds and one run index; the tables still hold all six runs.
    ablate_main([str(spec), "--out", str(out), "--seeds", "1", "--only", "0"])
    expected = [(step, str(seed)) for step in ("baseline", "+label smoothing") for seed in (0, 1, 2)]
    assert csv_rows(out / "results.csv") == expected
    assert "| 1 | +label smoothing | 3 |" in (out / "results.md").read_text()


def test_empty_seed_list_is_an_error(tmp_path, monkeypatch):
    no_training(monkeypatch)
    spec = write_spec(tmp_path / "spec.yaml")
    fake_result(tmp_path / "out", 0, "baseline", 0, 90.0)
    (tmp_path / "out" / "results.csv").write_text("kept\n")
    assert "--seeds" in user_error([str(spec), "--out", str(tmp_path / "out"), "--seeds", ""])
    assert (tmp_path / "out" / "results.csv").read_text() == "kept\n"


def test_corrupt_result_json_is_named(tmp_path, monkeypatch):
    no_training(monkeypatch)
    spec = write_spec(tmp_path / "spec.yaml", seeds=[0])
    fake_result(tmp_path / "out", 0, "baseline", 0, 90.0)
    broken = tmp_path / "out" / "00-baseline" / "seed0" / "result.json"
    broken.write_text('{"step": "baseline", "val_to')
    message = user_error([str(spec), "--out", str(tmp_path / "out")])
    assert str(broken) in message and "delete it" in message


# ----------------------------------------------------------------------------- every run parsed first


@pytest.mark.parametrize(
    ("steps", "extra", "words"),
    [
        ([{"name": "b", "set": {"model.label_smothing": 0.1}}], [], ["step 'b'", "model.label_smothing", "did you mean model.label_smoothing"]),
        ([{"name": "b", "set": {"data.batch_sz": 8}}], [], ["step 'b'", "data.batch_sz", "data.batch_size"]),
        ([{"name": "b", "set": {"model.blur_pool": True}}], [], ["step 'b': its `set` names model.blur_pool", "model.backbone_kwargs: {blur_pool: ...}"]),
        ([{"name": "b", "set": {"trainer.max_epochs": "many"}}], [], ["step 'b'", "trainer.max_epochs", "many"]),
        ([{"name": "b"}], ["--set", "trainer.max_epoch=2"], ["--set names trainer.max_epoch", "trainer.max_epochs"]),
        ([{"name": "b", "set": {"schedule.warmup_epochs": 5}}], [], ["step 'b'", "warmup_epochs (5)", "max_epochs (1)", "train longer"]),
    ],
    ids=["step-key", "subclass-key", "backbone-flag", "value-type", "set-flag", "warmup-longer-than-training"],
)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_bad_step_key_is_found_before_any_run(tmp_path, monkeypatch, steps, extra, words, dry_run):
    no_training(monkeypatch)
    spec = write_spec(tmp_path / "spec.yaml", steps=[{"name": "a"}, *steps])
    with pytest.raises(ConfigError) as info:
        ablate_main([str(spec), "--out", str(tmp_path / "out"), *extra, *(["--dry-run"] if dry_run else [])])
    message = str(info.value)
    assert message.startswith(f"{spec}: ") and "\n" not in message
    for word in words:
        assert word in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key", ["seed_everything", "ckpt_path", "trainer.default_root_dir", "checkpoint.dirpath"])
def test_set_of_a_key_the_ablation_chooses_per_run_is_refused(tmp_path, key):
    spec = write_spec(tmp_path / "spec.yaml")
    message = user_error([str(spec), "--dry-run", "--set", f"{key}=5"])
    assert message == f"--set names {key}, which the ablation chooses per run (seeds by --seeds, folders by --out); remove it."


def test_warmup_covering_all_epochs_warns_naming_the_step(tmp_path):
    steps = [{"name": "baseline"}, {"name": "+warmup", "set": {"schedule.warmup_epochs": 1}}]
    spec = write_spec(tmp_path / "spec.yaml", steps=steps)
    buffer = io.StringIO()
    ablate(spec, dry_run=True, overrides={"trainer.max_epochs": 1}, console=Console(file=buffer, width=400))
    warning = buffer.getvalue()
    assert "warmup_epochs covers all of trainer.max_epochs" in warning and "'+warmup' (1 of 1)" in warning
    assert "'baseline'" not in warning
    buffer = io.StringIO()
    ablate(spec, dry_run=True, overrides={"trainer.max_epochs": 2}, console=Console(file=buffer))
    assert "warning" not in buffer.getvalue()


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just words\n"], ids=["list", "scalar"])
def test_a_config_that_is_no_mapping_is_one_sentence(tmp_path, text):
    (tmp_path / "base.yaml").write_text(text)
    (tmp_path / "spec.yaml").write_text("base: base.yaml\nsteps: [{name: b}]\n")
    message = user_error([str(tmp_path / "spec.yaml"), "--dry-run"])
    assert f"step 'b': its config files ({tmp_path / 'base.yaml'}) do not parse" in message


@pytest.mark.parametrize("name", ["/tmp/elsewhere", "a/b", "..", ".", 5, [1, 2]])
def test_a_spec_name_that_is_no_folder_name_is_refused(tmp_path, name):
    spec = write_spec(tmp_path / "spec.yaml", name=name)
    assert f"name {name!r} must be one folder's name as text" in user_error([str(spec), "--dry-run"])


def test_the_users_wandb_logger_settings_stay_and_a_malformed_logger_is_refused(tmp_path):
    wandb = {"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {"project": "mine", "entity": "team"}}
    spec = write_spec(tmp_path / "spec.yaml", name="tricks", steps=[{"name": "a", "set": {"trainer.logger": wandb}}])
    (run,) = plan(load_spec(spec), tmp_path / "out", seeds=[0], files=False)
    assert {k: run.wandb[k] for k in ("project", "entity", "group", "name")} == {"project": "mine", "entity": "team", "group": "tricks", "name": "a s0"}
    assert [logger["class_path"] for logger in run.config["trainer"]["logger"]] == ["lightning.pytorch.loggers.CSVLogger", wandb["class_path"]]
    spec = write_spec(tmp_path / "spec.yaml", steps=[{"name": "a", "set": {"trainer.logger": {**wandb, "init_args": 3}}}])
    assert f"{spec}: step 'a': Parser key \"trainer.logger\"" in user_error([str(spec), "--dry-run"])


@pytest.mark.parametrize(
    ("text", "line"),
    [("base: base.yaml\nsteps: [{name: a}\nseeds: [0]\n", 3), ("base: base.yaml\n  steps: 1\n", 2)],
)
def test_malformed_yaml_spec_names_file_and_line(tmp_path, text, line):
    (tmp_path / "spec.yaml").write_text(text)
    message = user_error([str(tmp_path / "spec.yaml"), "--dry-run"])
    assert f"{tmp_path / 'spec.yaml'}, line {line} is not valid YAML" in message


@pytest.mark.parametrize("text", ["{broken", "[1]", '{"runs": [], "design": 5}', '{"runs": [], "design": {"factors": ["a"], "runs_per_seed": 3}}'])
def test_a_damaged_plan_json_is_named_and_planned_again_once_deleted(tmp_path, text):
    spec = write_spec(tmp_path / "spec.yaml", seeds=[0])
    out = tmp_path / "out"
    fake_result(out, 0, "baseline", 0, 50.0)
    (out / "plan.json").write_text(text)
    argv = [str(spec), "--out", str(out), "--report"]
    assert user_error(argv).startswith(f"{out / 'plan.json'} cannot be read (")
    assert user_error(argv).endswith("delete it and repeat the command to plan again.")
    (out / "plan.json").unlink()
    ablate_main(argv)
    assert "| 0 | baseline | 1 | 50.00 |" in (out / "results.md").read_text()


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("predictions.pt", b"cut short", "is not a run's predictions (cut short or edited); delete it"),
        ("predictions.pt", {"val": 5}, "is not a run's predictions (cut short or edited); delete it"),
        ("metrics.csv", b"step,train/lr\n0,abc\n", "is not the CSVLogger's numbers (could not convert string to float: 'abc')"),
    ],
    ids=["predictions-bytes", "predictions-edited", "metrics-text"],
)
def test_a_damaged_run_file_is_named_by_the_report(tmp_path, name, content, words):
    spec = write_spec(tmp_path / "spec.yaml", seeds=[0])
    out = tmp_path / "out"
    fake_result(out, 0, "baseline", 0, 50.0)
    path = out / "00-baseline" / "seed0" / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    assert user_error([str(spec), "--out", str(out), "--report"]).startswith(f"{path} {words}")


def test_a_fit_config_given_to_ablate_names_the_command_that_runs_it():
    message = user_error([str(DIGITS_BASE)])
    assert message == f"{DIGITS_BASE} is a config for `bagoftricks fit -c {DIGITS_BASE}`, not an ablation spec (a spec names it under base:)."


def test_a_folder_for_a_spec_and_a_report_of_no_runs_are_named(tmp_path):
    assert user_error([str(tmp_path)]).startswith(f"Ablation spec {tmp_path} is a folder; name its YAML file")
    with pytest.raises(UserError, match="holds no finished run .*: nothing to report"):
        write_report(tmp_path)
    assert not list(tmp_path.iterdir())  # no empty table or figures written


# ----------------------------------------------------------------------------- the output folder and the disk


def test_out_is_a_file(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml")
    (tmp_path / "out").write_text("mine\n")
    assert f"--out {tmp_path / 'out'} is a file" in user_error([str(spec), "--out", str(tmp_path / "out")])
    assert (tmp_path / "out").read_text() == "mine\n"


def test_out_is_read_only(tmp_path, monkeypatch):
    spec = write_spec(tmp_path / "spec.yaml")
    (tmp_path / "ro").mkdir()
    if os.geteuid() == 0:  # root writes through file modes: a read-only mount is what refuses it
        touch = Path.touch

        def read_only(self, *args, **kwargs):
            if self.parent == tmp_path / "ro":
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
            return touch(self, *args, **kwargs)

        monkeypatch.setattr(Path, "touch", read_only)
    else:
        (tmp_path / "ro").chmod(0o555)
    message = user_error([str(spec), "--out", str(tmp_path / "ro" / "out" if os.geteuid() else tmp_path / "ro")])
    assert "cannot write to --out" in message and "choose a folder" in message


def test_full_disk_mid_checkpoint_leaves_no_partial_file(tmp_path, monkeypatch):
    """The disk fills while a checkpoint is written: half a file at its final name, then ENOSPC."""
    from lightning.fabric.plugins.io import torch_io

    def half_then_full(checkpoint, path):
        Path(path).write_bytes(b"PK\x03\x04" + b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch_io, "_atomic_save", half_then_full)
    spec = write_spec(tmp_path / "spec.yaml", steps=TINY_STEPS[:1], seeds=[0])
    message = user_error([str(spec), "--out", str(tmp_path / "out")])
    assert "No space left on device" in message  # the checkpoint writer's own sentence, or the ablation's naming --out
    run_dir = tmp_path / "out" / "00-baseline" / "seed0"
    assert not (run_dir / "result.json").exists()
    assert all(zipfile.is_zipfile(p) for p in (run_dir / "checkpoints").glob("*.ckpt") if p.is_file())
    assert not [p for p in (tmp_path / "out").rglob("*") if ".tmp" in p.name]
    assert csv_rows(tmp_path / "out" / "results.csv") == []


def test_atomic_write_removes_its_temp_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "results.csv"
    target.write_text("old\n")

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError):
        atomic_write(target, "new\n")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_spec_yaml_is_unchanged_by_checks(tmp_path):
    """The checks parse; they never write into the spec's folder."""
    spec = write_spec(tmp_path / "spec.yaml")
    before = sorted(p.name for p in tmp_path.iterdir())
    ablate_main([str(spec), "--dry-run"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert yaml.safe_load(spec.read_text())["set"] == TINY_SET


@pytest.mark.parametrize("where", ["spec", "--set"])
def test_yaml_alias_bombs_in_a_spec_or_a_set_value_are_refused_at_once(where, tmp_path):
    from test_hostile import billion_laughs

    spec = write_spec(tmp_path / "spec.yaml")
    if where == "spec":
        spec.write_text(spec.read_text() + billion_laughs())
        argv = [str(spec), "--dry-run"]
    else:  # the same anchors as one flow mapping, the form a --set value takes
        flow = ", ".join(line for line in billion_laughs().splitlines() if line.startswith("a"))
        argv = [str(spec), "--dry-run", "--set", f"model.backbone_kwargs={{{flow}}}"]
    assert "expands its YAML aliases (*name) past 100,000 values" in user_error(argv)
