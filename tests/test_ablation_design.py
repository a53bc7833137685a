"""mode: leave-one-out and factorial: the design matrices (orthogonality, resolution, aliases), the rows a spec
expands to, and the effects against a hand-computed 2^2 example."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import yaml
from conftest import DIGITS_BASE
from test_ablation import TINY_SET

from bagoftricks.ablation import ablate_main, load_spec, plan, write_report
from bagoftricks.ablation.design import GENERATORS, LETTERS, design, effects
from bagoftricks.ablation.spec import step_folder
from bagoftricks.errors import ConfigError, DataError

TRICKS = [
    {"name": "+ls", "set": {"model.label_smoothing": 0.1}},
    {"name": "+mixup", "set": {"model.mixup_alpha": 0.2}},
    {"name": "+cosine", "set": {"schedule.name": "cosine"}},
]


def spec_file(tmp_path, mode, tricks=TRICKS, **extra):
    spec = {"base": str(DIGITS_BASE), "seeds": [0, 1], "mode": mode, "set": dict(TINY_SET),
            "steps": [{"name": "baseline"}, *tricks], **extra}  # fmt: skip
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return tmp_path / "spec.yaml"


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


@pytest.mark.parametrize(("k", "runs"), [(3, None), *GENERATORS])
def test_design_is_orthogonal_with_resolution_four_or_more(k, runs):
    plan = design([f"t{j}" for j in range(k)], runs)
    assert len(plan.matrix) == (runs or 2**k) and len(set(plan.matrix)) == len(plan.matrix)
    mains = [LETTERS[j] for j in range(k)]
    twos = ["".join(p) for p in itertools.combinations(mains, 2)]
    for main in mains:
        assert sum(plan.column(main)) == 0  # balanced: each trick on in half the runs
        # Resolution IV: a main effect is orthogonal to every other main effect and every two-way interaction.
        for other in [m for m in mains if m != main] + twos:
            assert dot(plan.column(main), plan.column(other)) == 0, (main, other)
    assert plan.resolution >= 4
    for word in plan.words:  # every word of the defining relation is the identity column
        assert set(plan.column(word)) == {1}


def test_textbook_fraction_and_its_aliases():
    # Montgomery, Example 8.4-style 2^(6-2)_IV with E = ABC, F = BCD: I = ABCE = BCDF = ADEF.
    plan = design(list("abcdef"), 16)
    assert plan.generators == ("E=ABC", "F=BCD") and plan.words == ["ABCE", "ADEF", "BCDF"] and plan.resolution == 4
    assert plan.aliases("AB")[:1] == ["CE"] and plan.column("AB") == plan.column("CE")
    assert design(list("abcde"), 16).resolution == 5 and design(list("abc")).resolution == math.inf
    with pytest.raises(ValueError, match="no resolution IV design of 5 factors in 8 runs"):
        design(list("abcde"), 8)


def test_effects_match_a_hand_computed_two_by_two():
    plan = design(["a", "b"])
    assert plan.matrix == ((-1, -1), (1, -1), (-1, 1), (1, 1))
    # seed 0: A = (90+98)/2 - (80+84)/2 = 12, B = (84+98)/2 - (80+90)/2 = 6, AB = (80+98)/2 - (90+84)/2 = 2;
    # seed 1: A = 11, B = 6, AB = 2.
    found = {e.word: e for e in effects(plan, {0: [80, 90, 84, 98], 1: [81, 90, 85, 98]})}
    assert [found[w].estimate for w in ("A", "B", "AB")] == [11.5, 6.0, 2.0]
    half_width = 12.706205 * math.sqrt(0.5) / math.sqrt(2)  # t(0.975, 1) * sd([12, 11]) / sqrt(2)
    assert found["A"].high - found["A"].estimate == pytest.approx(half_width, rel=1e-6)
    # Every seed agrees on B: zero variance gives no interval and no p-value (it would mark any shift significant).
    assert math.isnan(found["B"].low) and math.isnan(found["B"].p) and math.isnan(found["B"].p_holm)
    assert found["AB"].label == "a x b"
    # Holm over the p-values there are: A's alone, so it is multiplied by 1.
    assert found["A"].p_holm == pytest.approx(found["A"].p) and 0 < found["A"].p < 0.05


def test_leave_one_out_rows(tmp_path):
    spec = load_spec(spec_file(tmp_path, "leave-one-out"))
    assert [s.name for s in spec.steps] == ["baseline", "all tricks", "without ls", "without mixup", "without cosine"]
    runs = {r.step: r for r in plan(spec, out=tmp_path / "out", seeds=[0])}
    assert runs["all tricks"].tricks == ("ls", "mixup", "cosine")
    assert "--model.mixup_alpha" in runs["without ls"].overrides and "--model.label_smoothing" not in runs["without ls"].overrides
    assert runs["without ls"].parent == "all tricks" and runs["all tricks"].parent == "" and runs["baseline"].parent == ""


def test_factorial_rows(tmp_path):
    spec = load_spec(spec_file(tmp_path, "factorial"))
    names = [s.name for s in spec.steps]
    assert names == ["baseline", "ls", "mixup", "ls + mixup", "cosine", "ls + cosine", "mixup + cosine", "ls + mixup + cosine"]
    runs = plan(spec, out=tmp_path / "out", seeds=[0])
    assert ["--schedule.name" in r.overrides for r in runs] == [False] * 4 + [True] * 4
    five = [{"name": f"t{j}", "set": {"model.label_smoothing": 0.01 * (j + 1)}} for j in range(5)]
    assert len(load_spec(spec_file(tmp_path, "factorial", five, runs_per_seed=16)).steps) == 16


def test_fraction_without_a_baseline_row_is_planned(tmp_path):
    """E = ABCD: the design's first row switches E on, so no row is the baseline; every row still
    carries the baseline step's own keys, then exactly its tricks."""
    five = [{"name": f"t{j}", "set": {"model.label_smoothing": 0.01 * (j + 1)}} for j in range(5)]
    path = spec_file(tmp_path, "factorial", five, runs_per_seed=16)
    raw = yaml.safe_load(path.read_text())
    raw["steps"][0]["set"] = {"model.mix_prob": 0.5}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    spec = load_spec(path)
    assert spec.steps[0].trick_names == ("t4",)
    for step, run in zip(spec.steps, plan(spec, out=tmp_path / "out", seeds=[0])):
        assert run.tricks == step.trick_names
        assert "--model.mix_prob" in run.overrides
        assert ("--model.label_smoothing" in run.overrides) == bool(step.trick_names)
    with pytest.raises(ConfigError, match="runs_per_seed 8: no resolution IV design of 5 factors in 8 runs; choose runs from"):
        load_spec(spec_file(tmp_path, "factorial", five, runs_per_seed=8))
    for mode in ("each", "leave-one-out"):
        with pytest.raises(ConfigError, match="factorial only"):
            load_spec(spec_file(tmp_path, mode, runs_per_seed=8))


def test_factorial_report_from_written_results(tmp_path):
    """results.md's effects section on written results: a 2^2 design, the same numbers as by hand above."""
    spec = load_spec(spec_file(tmp_path, "factorial", TRICKS[:2]))
    responses = {0: [80, 90, 84, 98], 1: [81, 90, 85, 98]}
    results = [{"step_index": i, "step": step.name, "parent": "", "seed": seed, "val_top1": responses[seed][i],
                "run_dir": f"{i:02d}/seed{seed}"} for i, step in enumerate(spec.steps) for seed in (0, 1)]  # fmt: skip
    for result in results:
        (tmp_path / result["run_dir"]).mkdir(parents=True)
        (tmp_path / result["run_dir"] / "result.json").write_text(json.dumps({**result, "val_top1_curve": [1.0]}))
    (tmp_path / "design.json").write_text("{}")  # an older version's file: named, with the way out
    with pytest.raises(DataError, match="design.json is an older version's design file; repeat the `bagoftricks ablate`"):
        write_report(tmp_path)
    (tmp_path / "plan.json").write_text(json.dumps({"runs": [], "design": {"factors": ["ls", "mixup"], "runs_per_seed": 4}}))
    write_report(tmp_path)
    text = (tmp_path / "results.md").read_text()
    assert "### Factorial effects (2^2 full factorial; 4 runs per seed, 2 complete seed(s))" in text
    assert "| ls | +11.50 [+5.15, +17.85] ~ |" not in text  # the interval excludes 0: no `~`
    # Every seed gives the same estimate: no interval, no mark (a zero-variance t-interval would mark any shift).
    assert "| mixup | +6.00 (no spread) |" in text and "| ls x mixup | +2.00 (no spread) |" in text
    assert "| ls | +11.50 [" in text and "every effect is estimated free of every other" in text


def test_report_of_an_older_factorial_folder_plans_again(tmp_path):
    """`--report` on a folder an older version wrote (design.json, no plan.json) writes the plan, then the effects."""
    path = spec_file(tmp_path, "factorial", TRICKS[:2])
    spec, out = load_spec(path), tmp_path / "out"
    for i, step in enumerate(spec.steps):
        for seed in (0, 1):
            (out / step_folder(i, step.name) / f"seed{seed}").mkdir(parents=True)
            result = {"step_index": i, "step": step.name, "seed": seed, "val_top1": 80.0 + 5 * i + seed, "val_top1_curve": [1.0]}
            (out / step_folder(i, step.name) / f"seed{seed}" / "result.json").write_text(json.dumps(result))
    (out / "design.json").write_text("{}")
    ablate_main([str(path), "--out", str(out), "--report"])
    assert "### Factorial effects (2^2 full factorial; 4 runs per seed, 2 complete seed(s))" in (out / "results.md").read_text()
