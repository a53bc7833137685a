"""budgets: every step at several epoch multipliers, the schedule scaled with it, and the report against the budget."""

from __future__ import annotations

import json
import shlex

import pytest
import yaml
from conftest import DIGITS_BASE
from test_ablation import TINY_SET

from bagoftricks.ablation import ablate_main, load_spec, plan, write_report
from bagoftricks.errors import ConfigError

STEPS = [{"name": "baseline"}, {"name": "+warmup", "set": {"schedule.warmup_epochs": 0.5}}]


def spec_file(tmp_path, budgets, **extra):
    spec = {"base": str(DIGITS_BASE), "seeds": [0, 1], "set": {**TINY_SET, "trainer.max_epochs": 2}, "budgets": budgets,
            "steps": STEPS, **extra}  # fmt: skip
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return tmp_path / "spec.yaml"


def last_value(argv: list[str], key: str) -> str:
    return argv[len(argv) - 1 - argv[::-1].index(key) + 1]


def test_budget_scales_the_schedule(tmp_path, capsys):
    spec = spec_file(tmp_path, [1, 2])
    runs = plan(load_spec(spec), out=tmp_path / "out", seeds=[0])
    assert [r.step for r in runs] == ["baseline ×1", "+warmup ×1", "baseline ×2", "+warmup ×2"]
    assert [r.parent for r in runs] == ["", "baseline ×1", "", "baseline ×2"]  # Δ prev stays inside a budget
    assert [r.tricks for r in runs] == [(), ("warmup",), (), ("warmup",)]  # one trick, whatever the budget
    ablate_main([str(spec), "--dry-run", "--seeds", "0"])
    commands = [shlex.split(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [last_value(c, "--trainer.max_epochs") for c in commands] == ["2", "2", "4", "4"]
    assert last_value(commands[3], "--schedule.warmup_epochs") == "1.0"  # 0.5 epochs x 2
    assert "--schedule.warmup_epochs" not in commands[2] or last_value(commands[2], "--schedule.warmup_epochs") == "0.0"
    assert last_value(commands[2], "--schedule.milestones") == "[8.0, 10.0]"  # the base's [4, 5] x 2
    assert "--schedule.milestones" not in commands[0]  # budget 1: the spec's own arguments


@pytest.mark.parametrize(
    ("budgets", "words"),
    [([1, 1.25], "is not a whole number of epochs"), ([], "non-empty list of positive"), ([2, 2], "repeat a budget")],
)
def test_bad_budgets(tmp_path, budgets, words):
    with pytest.raises(ConfigError, match=words):
        ablate_main([str(spec_file(tmp_path, budgets)), "--dry-run"])


def test_budgets_refused_with_factorial(tmp_path):
    steps = [{"name": "baseline"}, *STEPS[1:], {"name": "ls", "set": {"model.label_smoothing": 0.1}}]
    with pytest.raises(ConfigError, match="do not combine with mode: factorial"):
        load_spec(spec_file(tmp_path, [1, 2], mode="factorial", steps=steps))


def test_report_against_the_budget(tmp_path):
    spec = load_spec(spec_file(tmp_path, [1, 2]))
    top1 = {("baseline ×1", 0): 90, ("baseline ×1", 1): 92, ("+warmup ×1", 0): 89, ("+warmup ×1", 1): 92,
            ("baseline ×2", 0): 93, ("baseline ×2", 1): 94, ("+warmup ×2", 0): 95, ("+warmup ×2", 1): 97}  # fmt: skip
    for run in plan(spec, out=tmp_path, seeds=[0, 1]):
        result = {"step_index": run.step_index, "step": run.step, "parent": run.parent, "seed": run.seed, "val_top1": top1[run.step, run.seed],
                  "val_top1_curve": [1.0], "run_dir": run.run_dir.relative_to(tmp_path).as_posix(), "budget": run.budget, "unbudgeted": run.unbudgeted}  # fmt: skip
        run.run_dir.mkdir(parents=True)
        (run.run_dir / "result.json").write_text(json.dumps(result))
    write_report(tmp_path)
    section = (tmp_path / "results.md").read_text().split("### Δ prev against the budget")[1]
    # +warmup: per-seed differences -1, 0 at x1 (mean -0.5), +2, +3 at x2 (mean +2.5; t(1) * 0.707 / 1.414 = 6.35).
    assert "| step | ×1 | ×2 |" in section
    assert "| +warmup | -0.50 [-6.85, +5.85] ~ | +2.50 [-3.85, +8.85] ~ |" in section
    assert (tmp_path / "budget.png").stat().st_size > 0
