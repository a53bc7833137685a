"""Per-image evidence: the predictions.pt comparisons on written prediction files (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bagoftricks.ablation import mcnemar, write_report
from bagoftricks.ablation.stats import bootstrap_difference, per_class_delta

N = 40  # images; labels 0..3, ten of each
LABELS = torch.arange(N) % 4


def write_run(out: Path, step_index: int, step: str, parent: str, seed: int, wrong: list[int]) -> None:
    """A finished run whose test predictions get exactly the ``wrong`` images wrong."""
    run_dir = out / f"{step_index:02d}-{step}" / f"seed{seed}"
    run_dir.mkdir(parents=True)
    top1 = LABELS.clone()
    top1[wrong] = (LABELS[wrong] + 1) % 4
    topk = torch.stack([top1, *[(top1 + i) % 4 for i in (1, 2, 3)]], dim=1).to(torch.int16)
    split = {"topk": topk, "labels": LABELS.to(torch.int16)}
    torch.save({"val": split, "test": split}, run_dir / "predictions.pt")
    accuracy = 100 * (N - len(wrong)) / N
    result = {"step_index": step_index, "step": step, "parent": parent, "seed": seed, "val_top1": accuracy,
              "val_top1_curve": [accuracy], "run_dir": run_dir.relative_to(out).as_posix()}  # fmt: skip
    (run_dir / "result.json").write_text(json.dumps(result))


def section_rows(text: str) -> dict[tuple[str, str], list[str]]:
    section = text.split("### Image by image")[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return {(r[0], r[1]): r for r in rows[1:]}


def test_same_accuracy_different_mistakes_is_not_identical(tmp_path):
    # base gets images 0-3 wrong; "same" makes the same mistakes; "swapped" as many, on images 4-7.
    # "better" fixes 0-3 for seeds 0 and 1 and keeps them for seed 2.
    for seed in (0, 1, 2):
        write_run(tmp_path, 0, "base", "", seed, [0, 1, 2, 3])
        write_run(tmp_path, 1, "same", "base", seed, [0, 1, 2, 3])
        write_run(tmp_path, 2, "swapped", "same", seed, [4, 5, 6, 7])
        write_run(tmp_path, 3, "better", "swapped", seed, [4, 5, 6, 7] + ([0, 1, 2, 3] if seed == 2 else []))
    write_report(tmp_path)
    rows = section_rows((tmp_path / "results.md").read_text())
    assert "(test split, 40 images)" in (tmp_path / "results.md").read_text()
    assert rows[("same", "base")][3:6] == ["0", "0", "1"]  # identical predictions: no discordant image
    swapped = rows[("swapped", "same")]
    assert swapped[3:5] == ["12", "12"] and swapped[5] == "1" and swapped[6].startswith("+0.00")
    # better vs swapped: right only in "swapped" never, only in "better" never, except seed 2 adds 4 errors.
    better = rows[("better", "swapped")]
    assert better[3:5] == ["4", "0"] and float(better[5]) == pytest.approx(mcnemar(0, 4)[1], rel=1e-2)
    # vs the base, summed over seeds: only the base right on 4-7 (every seed), only "better" right on 0-3 (seeds 0, 1).
    assert rows[("better", "base")][3:5] == ["12", "8"]
    # The largest effect's per-class changes: "better" vs "swapped" loses images 0-3 (one per class) in seed 2.
    assert "- better vs swapped: largest per-class accuracy changes (points): class 0 -3.3, class 1 -3.3, class 2 -3.3." in (
        tmp_path / "results.md"
    ).read_text()


def test_bootstrap_interval():
    a = torch.ones(3, 50, dtype=torch.bool)
    b = torch.zeros(3, 50, dtype=torch.bool)
    assert bootstrap_difference(a, b) == (100.0, 100.0)  # every image and seed gains: no doubt left
    b[:, :25] = True  # half the images gain 1, half 0: mean 50 points, resampling images varies it
    low, high = bootstrap_difference(a, b, samples=4000)
    # The seeds share their 50 images, so resampling images is what varies: a mean of 50 Bernoulli(1/2)
    # draws, in points about 50 +- 1.96 * 50 / sqrt(50) = 50 +- 13.9 (not +- 8, as 150 independent images would give).
    assert 33 < low < 40 and 60 < high < 67
    assert bootstrap_difference(a, b, samples=4000) == (low, high)  # fixed generator: reproducible


def test_per_class_delta_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    a = torch.tensor([[1, 1, 1, 0, 1, 1], [1, 1, 0, 0, 1, 1]], dtype=torch.bool)
    b = torch.tensor([[0, 0, 1, 0, 1, 1], [0, 1, 1, 0, 1, 1]], dtype=torch.bool)
    # class 0: a 4/4, b 1/4 -> +75; class 1: a 1/4, b 2/4 -> -25; class 2: equal.
    assert per_class_delta(a, b, labels) == [(0, 75.0), (1, -25.0), (2, 0.0)]
