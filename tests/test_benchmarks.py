"""The benchmark scripts still run: each one's --quick smoke run, on its smallest selection.

Timings are never asserted (a shared CI machine makes them meaningless); the tables must print.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

import pytest
import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import each other as siblings

QUICK = ["--quick", "--threads", "1"]


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


def test_throughput_quick(capsys):
    import throughput

    throughput.main([*QUICK, "--model", "resnet18", "--image-size", "16", "--batch-size", "2"])
    out = capsys.readouterr().out
    assert re.search(r"library speed / plain loop's \(target >= 1.00x\): \d+\.\d+x", out)
    assert re.search(r"framework overhead: .*: [+-]\d+\.\d%", out)
    assert re.search(r"matmul FLOP/s \(target >= 0.80\): \d+\.\d+", out)


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
    assert len(re.findall(r"our speed / timm's \(target >= 0.98x\): \d+\.\d+x", out)) == 2


def test_profile_step_quick(capsys):
    import profile_step

    profile_step.main([*QUICK, "--model", "resnet18", "--image-size", "16", "--batch-size", "2"])
    shares = [float(share) for share in re.findall(r" ms +(\d+\.\d)%", capsys.readouterr().out)]
    assert len(shares) >= 4 and abs(sum(shares) - 100) < 1  # every op's own time lands in exactly one bin


def test_tricks_quick(capsys):
    import tricks

    tricks.main([*QUICK, "--only", "mixup", "distillation"])
    out = capsys.readouterr().out
    for name in ("baseline", "mixup", "distillation"):
        assert re.search(rf"^{name} .* <= \d\.\d{{3}}", out, re.MULTILINE), name
    assert "distillation target = 1 + teacher forward" in out


def test_time_to_accuracy_quick(capsys):
    import time_to_accuracy

    time_to_accuracy.main([*QUICK, "--recipes", "recipe (base.yaml)"])
    out = capsys.readouterr().out
    assert re.search(r"recipe \(base.yaml\) vs plain \(Adam, one-cycle\) at \d\.\d{3}", out)
