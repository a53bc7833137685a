"""``bagoftricks ablate --launcher slurm`` without a cluster: fake ``sbatch``/``srun``/``sacct``/``squeue``/
``scontrol`` (``tests/fake_slurm/``, a few lines of shell each) on ``PATH`` record the submitted script and run the
array's tasks here with the ``SLURM_*`` variables a cluster sets; a task preempted the way SLURM does it (USR2
before the time limit) is requeued by submitit and resumes from its checkpoint."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console
from test_ablation import TINY_SET, TINY_STEPS, write_spec

from bagoftricks.ablation import Store, ablate, ablate_main, load_spec, plan
from bagoftricks.ablation import launch as slurm_launcher
from bagoftricks.errors import UserError

FAKE_SLURM = Path(__file__).parent / "fake_slurm"
# Two epochs, so a run can be preempted after its first checkpoint and resume from it.
TWO_EPOCHS = {**TINY_SET, "trainer.max_epochs": 2}


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """The fake SLURM commands first on PATH; their state (job counter, task states, scripts) in a folder."""
    state = tmp_path / "fake_slurm_state"
    state.mkdir()
    monkeypatch.setenv("PATH", f"{FAKE_SLURM}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(state))
    # The tasks import this checkout, as the login node's environment would.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    return state


def records(out: Path) -> dict[tuple[str, int], dict]:
    keys = ("val_top1_curve", "val_loss", "test_top1", "test_top5", "val_top5", "epochs", "global_step", "status")
    found = {}
    for path in sorted(out.glob("*/seed*/result.json")):
        result = json.loads(path.read_text())
        found[result["step"], result["seed"]] = {k: result[k] for k in keys}
    return found


def test_missing_submitit_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    with pytest.raises(UserError, match=r'needs submitit, which is not installed; pip install -e "\.\[slurm\]"'):
        slurm_launcher.executor(Store(tmp_path), {})


def test_no_slurm_on_this_machine_is_one_sentence(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun anywhere
    with pytest.raises(UserError, match="found no SLURM here .*; run it on the cluster's login node, or train here with --jobs"):
        slurm_launcher.executor(Store(tmp_path), {})


def test_submitted_script_and_the_command_that_reports(tmp_path, fake_slurm, monkeypatch, capsys):
    """Without --wait: one array of the unfinished runs is submitted, its job id and the report command printed."""
    pytest.importorskip("submitit")
    monkeypatch.setenv("FAKE_SLURM_HOLD", "1")  # record the script, run nothing
    spec = write_spec(tmp_path / "spec.yaml", seeds=[0, 1, 2])
    out = tmp_path / "out"
    argv = [str(spec), "--out", str(out), "--launcher", "slurm", "--slurm.partition", "gpu", "--slurm.gpus_per_node", "2",
            "--slurm.cpus_per_task", "8", "--slurm.mem_gb", "32", "--slurm.timeout_min", "90", "--slurm.array_parallelism", "4",
            "--slurm.account", "vision", "--slurm.qos", "high", "--slurm.constraint", "a100", "--slurm.sbatch", "gres=gpu:a100:2",
            "--only", "1,2,3,4,5"]  # fmt: skip
    ablate_main(argv)
    printed = capsys.readouterr().out
    assert "Submitted job array 1001: 5 run(s), one per task" in printed
    assert f"bagoftricks ablate {spec} --out {out} --report" in " ".join(printed.split())
    script = (fake_slurm / "submitted_1001.sh").read_text()
    for line in ("--partition=gpu", "--gpus-per-node=2", "--cpus-per-task=8", "--mem=32GB", "--time=90", "--array=0-4%4",
                 "--account=vision", "--qos=high", "--constraint=a100", "--gres=gpu:a100:2", "--signal=USR2@90",
                 f"--output={out}/slurm/%A_%a_0_log.out", "--ntasks-per-node=1", "--nodes=1"):  # fmt: skip
        assert f"#SBATCH {line}\n" in script, line
    assert (out / "plan.json").is_file() and not list(out.glob("*/seed*/result.json"))


def test_a_refused_submission_is_one_sentence(tmp_path, fake_slurm, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("FAKE_SLURM_REFUSE", "Invalid partition name specified")
    spec = write_spec(tmp_path / "spec.yaml", seeds=[0])
    with pytest.raises(UserError) as info:
        ablate_main([str(spec), "--out", str(tmp_path / "out"), "--launcher", "slurm", "--slurm.partition", "gpu-typo"])
    assert str(info.value) == (
        "sbatch refused the job array (sbatch: error: Invalid partition name specified); fix the --slurm.* option it "
        "names and repeat the command."
    )


@pytest.mark.slow
def test_a_failed_task_is_one_sentence_naming_its_log(tmp_path, fake_slurm):
    """--wait: a task that fails (here a value only the run's own parse sees) stops the report in one sentence; one
    unfinished run goes out as a plain job, not an array."""
    pytest.importorskip("submitit")
    spec = load_spec(write_spec(tmp_path / "spec.yaml", seeds=[0]))
    store = Store(tmp_path / "out")
    run = dataclasses.replace(plan(spec, store.out)[0], overrides=("--trainer.max_epochs", "many"))
    with pytest.raises(UserError, match=r"1 of 1 task\(s\) of job \d+ failed; see \S+\.err, then repeat the command"):
        slurm_launcher.submit(store, [run], {}, True, spec, Console(file=io.StringIO()))


@pytest.mark.slow
def test_array_gives_the_records_of_a_sequential_run_and_a_preempted_task_resumes(tmp_path, fake_slurm, monkeypatch):
    """The same runs trained in this process, one after another, and as a fake SLURM array (one CPU thread each),
    run 1 preempted after its first epoch: the records are equal number for number."""
    pytest.importorskip("submitit")
    spec = write_spec(tmp_path / "spec.yaml", steps=TINY_STEPS[:1], seeds=[0, 1], set=TWO_EPOCHS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ablate(spec, out=tmp_path / "sequential", report=False)
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "array"
    monkeypatch.setenv("FAKE_SLURM_PREEMPT", f"1:{out}/00-baseline/seed1/checkpoints/last.ckpt")
    console = io.StringIO()
    ablate(spec, out=out, launcher="slurm", slurm={"cpus_per_task": 1, "timeout_min": 30}, wait=True,
           console=Console(file=console, width=200))  # fmt: skip
    assert records(out) == records(tmp_path / "sequential") and len(records(out)) == 2
    preempted = json.loads((out / "00-baseline" / "seed1" / "result.json").read_text())
    assert preempted["resumed_from"].endswith("last.ckpt") and preempted["cpu_threads"] == 1
    log = "".join(p.read_text() for p in (out / "slurm").glob("1001_1_0_log.*"))
    assert "Caught signal SIGUSR2" in log and "Requeued job 1001_1" in log
    assert "job array 1001: all 2 tasks done" in console.getvalue() and (out / "results.md").is_file()
    # Repeating the command trains nothing again, whichever launcher ran the runs.
    mtimes = [p.stat().st_mtime_ns for p in sorted(out.glob("*/seed*/result.json"))]
    ablate(spec, out=out, jobs=1, report=False)
    assert [p.stat().st_mtime_ns for p in sorted(out.glob("*/seed*/result.json"))] == mtimes


@pytest.mark.slow
def test_submitit_local_executor_trains_the_plan(tmp_path):
    """submitit's local executor: the same task and protocol, with processes on this machine instead of SLURM."""
    pytest.importorskip("submitit")
    spec = write_spec(tmp_path / "spec.yaml", seeds=[0])
    out = ablate(spec, out=tmp_path / "out", launcher="slurm", slurm={"cluster": "local", "timeout_min": 30}, wait=True)
    assert {key: value["status"] for key, value in records(out).items()} == {("baseline", 0): "finished", ("+label smoothing", 0): "finished"}
    assert list((out / "slurm").glob("*_log.out"))
