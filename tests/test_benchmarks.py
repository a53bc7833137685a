"""The benchmark scripts still run: each one's --quick smoke run, on its smallest selection.

Timings are never asserted (a shared CI machine makes them meaningless); the tables must print,
with every ratio a positive number.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys

import pytest
import torch
from conftest import ROOT
from miniatures import make_image_folder, make_imagenette

from bagoftricks.models import list_models

sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import benchmarks/common.py as a sibling

QUICK = ["--quick", "--threads", "1"]
# Each script trains or times real steps: together minutes on a 2-core CPU, so `pytest -m slow` runs them.
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def restore_process_state():
    """The scripts set threads, log levels and (via the digits recipe) deterministic mode for the process."""
    loggers = {name: logging.getLogger(name).level for name in ("lightning.pytorch", "lightning.fabric", "bagoftricks")}
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    for name, level in loggers.items():
        logging.getLogger(name).setLevel(level)


def ratios(pattern: str, out: str) -> list[float]:
    """Every number that ``pattern``'s group captures in ``out``, each checked to be positive."""
    values = [float(value) for value in re.findall(pattern, out)]
    assert all(value > 0 for value in values), values
    return values


def test_throughput_quick(capsys):
    import throughput

    throughput.main([*QUICK, "--cases", "a", "digits", "--model", "resnet18", "--image-size", "16", "--batch-size", "2"])
    out = capsys.readouterr().out
    # One speed ratio for case a and one for the named digits case, which times base.yaml's own batch.
    assert len(ratios(r"library speed / plain loop's \(target >= 1.00x\): (\d+\.\d+)x", out)) == 2
    assert re.search(r"^digits \(experiments/digits/base.yaml: resnet18, 32 px, batch 64, SGD\)", out, re.MULTILINE)
    assert re.search(r"^library \(bagoftricks fit -c base.yaml\) +\d+ +\d+\.\d$", out, re.MULTILINE)
    # Case a against its optimized loop; the digits against the loop with the library's layout and optimizer.
    assert len(re.findall(r"^framework overhead: .*: [+-]\d+\.\d", out, re.MULTILINE)) == 2
    assert len(ratios(r"matmul FLOP/s \(target >= 0.80\): (\d+\.\d+)", out)) == 1


def test_throughput_timm_comparison_quick(capsys):
    pytest.importorskip("timm")
    import throughput

    torch.set_num_threads(1)  # as QUICK does; two threads on a busy 2-core CI can take 20x longer
    args = argparse.Namespace(device="cpu", precision="32-true", timm_steps=1)
    throughput.versus_timm(throughput.Case("resnet50d", 32, 2), args)
    out = capsys.readouterr().out
    # The same architecture: equal parameter and MAC counts, then a ratio per memory format.
    params = re.search(r"params ([\d,]+) vs ([\d,]+), MACs (\d+) M vs (\d+) M", out)
    assert params and params[1] == params[2] and params[3] == params[4]
    assert len(ratios(r"our speed / timm's \(target >= 0.98x\): (\d+\.\d+)x", out)) == 2


def test_profile_step_quick(capsys):
    import profile_step

    profile_step.main([*QUICK, "--cases", "a", "digits", "--plain", "--model", "resnet18", "--image-size", "16",
                       "--batch-size", "2"])  # fmt: skip
    out = capsys.readouterr().out
    tables = re.split(r"^(library|plain loop) step under torch.profiler", out, flags=re.MULTILINE)[1:]
    # case a, the digits config, then the digits' plain loop: (name, table) pairs
    assert tables[::2] == ["library", "library", "plain loop"]
    tables = tables[1::2]
    for table in tables:
        shares = [float(share) for share in re.findall(r" ms +(\d+\.\d)%", table)]
        assert len(shares) >= 4 and abs(sum(shares) - 100) < 1  # every op's own time lands in exactly one bin


def test_tricks_quick(capsys):
    import tricks

    tricks.main([*QUICK, "--only", "mixup", "distillation", "EMA (every step)", "progressive (0.5x side)", "stochastic depth", "BlurPool"])
    out = capsys.readouterr().out
    for name in ("baseline", "mixup", "distillation", "EMA (every step)", "stochastic depth"):
        assert re.search(rf"^{re.escape(name)} +\d+ +\d\.\d{{3}} +<= \d\.\d{{3}}", out, re.MULTILINE), name
    # The teacher's forward is timed inside the distillation steps only: switched on and off through module.tricks.
    assert ratios(r"teacher forward (\d+) ms", out)
    assert re.search(r"^progressive \(0\.5x side\) .* speedup \d+\.\d\dx$", out, re.MULTILINE)
    # BlurPool is a bigger model: its row gives its multiply-adds over the baseline's (1.29x for resnet18 at 32 px).
    assert re.search(r"^BlurPool .* MACs 1\.29x$", out, re.MULTILINE)


def test_time_to_accuracy_quick(capsys):
    import time_to_accuracy

    time_to_accuracy.main([*QUICK, "--recipes", "recipe (base.yaml)"])
    out = capsys.readouterr().out
    assert re.search(r"recipe \(base.yaml\) vs plain \(Adam, one-cycle\) at \d\.\d{3}", out)


def test_time_to_accuracy_image_folder_quick(tmp_path, capsys):
    import time_to_accuracy

    root = make_image_folder(tmp_path / "photos", per_class=6)
    time_to_accuracy.main([*QUICK, "--recipes", "recipe + tricks", "--data-root", str(root)])
    out = capsys.readouterr().out
    assert re.search(rf"^{re.escape(str(root))} \(experiments/cifar10/base.yaml\)", out, re.MULTILINE)
    assert re.search(r"recipe \+ tricks vs plain \(Adam, one-cycle\) at \d\.\d{3} \(.*plain's final top-1\)", out)
    assert re.search(r"final top-1, median: recipe \+ tricks \d\.\d{3} vs plain \(Adam, one-cycle\) \d\.\d{3}", out)


def test_data_pipeline_quick(capsys):
    import data_pipeline

    data_pipeline.main(["--quick"])
    out = capsys.readouterr().out
    # (a) the ImageFolder baseline, (b) to (d) the module's three caches, (e) with the paper's jitter.
    assert len(ratios(r"steady +\d+ img/s \((\d+\.\d+)x\)", out)) == 5
    assert re.search(r"^\(a\) ImageFolder \+ PIL transforms .* \(1\.00x\)", out, re.MULTILINE)


def test_model_table_quick(capsys):
    import model_table

    model_table.main(["--quick"])
    rows = re.findall(r"^\| `(\w+)` \| ([\d,]+) \| (\d+\.\d\d) \|$", capsys.readouterr().out, re.MULTILINE)
    assert sorted(name for name, _, _ in rows) == sorted(n for n in list_models() if n.startswith("resnet18"))
    assert all(int(params.replace(",", "")) > 0 for _, params, _ in rows)


def test_plain_loop_quick_and_resumed_from_its_log(tmp_path, capsys):
    import plain_loop

    make_imagenette(tmp_path, "imagenette2-96", per_class=7, side=64)  # 70 images: one batch of 64
    log = tmp_path / "runs.jsonl"
    plain_loop.main([*QUICK, "--data-root", str(tmp_path), "--seeds", "0", "1", "--runs", "plain", "--log", str(log)])
    assert "recipe - plain" not in capsys.readouterr().out  # one side only: nothing to pair yet
    plain_loop.main([*QUICK, "--data-root", str(tmp_path), "--seeds", "0", "1", "--log", str(log)])
    out = capsys.readouterr().out
    assert [json.loads(line)["name"] for line in log.read_text().splitlines()] == ["plain", "plain", "recipe", "recipe"]
    assert re.search(r"recipe - plain, paired by seed: [+-]\d+\.\d\d points, 95% CI \[", out)
