"""Step time of every trick relative to the baseline step, through the Trainer that users run.

    python benchmarks/tricks.py [--steps 8] [--warmup 2] [--rounds 3] [--threads 1]
    python benchmarks/tricks.py --quick      # a smoke run of every code path, a few seconds

Each way is the shipped digits recipe, ``bagoftricks fit -c experiments/digits/base.yaml``, alone
(the baseline) or with one trick's experiment file stacked on it, exactly as the README runs them.
The fit trains on in-memory random images of the digits' shape (3 x 32 x 32, 10 classes, the
recipe's batch of 64), so the step, not image loading, is timed. A step's time is the period
between the starts of consecutive training steps (step, hooks, LR setting, logging); a round's
figure is the median step; the ways run one after another in every round, in a rotating order,
and the printed ratios are the median over rounds, with their range.

Targets: every trick <= 1.03x the baseline step, except distillation, whose teacher forward is
real work: <= 1 + teacher forward / baseline step + 0.05. The teacher's forward is timed inside
the same steps by hooks on it. The teacher is teacher.yaml's resnet34 with random weights (the
weights do not change its cost). CutMix runs on every batch here (``mix_prob 1``), so its cost is
not halved by cutmix.yaml's ``mix_prob 0.5``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bagoftricks.cli import cli_main
from bagoftricks.models import create_model

# A sibling script, not a package: `python benchmarks/tricks.py` puts benchmarks/ on sys.path.
from throughput import StepClock, SyntheticData, periods, spread

DIGITS = Path(__file__).resolve().parents[1] / "experiments" / "digits"
IMAGE_SIZE, NUM_CLASSES = 32, 10

# name -> arguments after `-c base.yaml` (a trick's experiment file, and what this benchmark changes).
TRICKS = {
    "baseline": [],
    "label smoothing": ["-c", "label_smoothing.yaml"],
    "mixup": ["-c", "mixup.yaml"],
    "CutMix (every batch)": ["-c", "cutmix.yaml", "--model.mix_prob", "1.0"],
    "no bias decay": ["-c", "no_bias_decay.yaml"],
    "warmup": ["-c", "warmup.yaml"],
    "cosine": ["-c", "cosine.yaml"],
    "distillation": ["-c", "distillation.yaml"],  # the teacher's path is set in main()
}


class ForwardClock:
    """Seconds spent in a module's forward, summed over its calls, read off forward hooks."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.seconds: list[float] = []
        module.register_forward_pre_hook(lambda *_: setattr(self, "start", time.perf_counter()))
        module.register_forward_hook(lambda *_: self.seconds.append(time.perf_counter() - self.start))


def run(extra: list[str], args, batch_size: int, root: str) -> tuple[list[float], list[float]]:
    """Step times of one fit of base.yaml + ``extra``, and the teacher's forward times if it has one."""
    configs = [arg if not arg.endswith(".yaml") else str(DIGITS / arg) for arg in extra]
    steps = args.warmup + args.steps + 1  # one more start stamp closes the last timed step
    argv = [
        "-c", str(DIGITS / "base.yaml"), *configs,
        "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", root,
    ]  # fmt: skip
    cli = cli_main(argv, run=False)
    # The recipe's epochs stay, so warmup and cosine see its real length; the clock stops the fit.
    step_clock = StepClock(torch.device("cpu"), stop_after=steps)
    cli.trainer.callbacks.append(step_clock)
    teacher = cli.model.teacher and ForwardClock(cli.model.teacher)
    count = steps * batch_size  # an epoch of exactly `steps` batches: the warmup epoch fits in the recipe
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(count, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    labels = torch.randint(NUM_CLASSES, (count,), generator=generator)
    cli.trainer.fit(cli.model, datamodule=SyntheticData(images, labels, batch_size, torch.device("cpu")))
    return periods(step_clock.stamps, args.warmup), (teacher.seconds[args.warmup :] if teacher else [])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per way and round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--rounds", type=int, default=3, help="repeats, interleaved; the median is printed")
    parser.add_argument("--batch-size", type=int, default=64, help="base.yaml's batch")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="tiny run: a smoke test of the script")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.warmup, args.rounds, args.batch_size = 1, 0, 1, 4

    with tempfile.TemporaryDirectory() as root:
        teacher_path = Path(root) / "teacher.pt"
        torch.save(create_model("resnet34", NUM_CLASSES).state_dict(), teacher_path)
        ways = dict(TRICKS)
        ways["distillation"] = [*ways["distillation"], "--model.teacher", str(teacher_path),
                                "--model.teacher_backbone", "resnet34"]  # fmt: skip
        batch = ["--data.init_args.batch_size", str(args.batch_size)]
        step_s: dict[str, list[float]] = {name: [] for name in ways}
        teacher_s: list[float] = []
        names = list(ways)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate who goes first
                times, teacher = run([*ways[name], *batch], args, args.batch_size, root)
                step_s[name].append(statistics.median(times))
                if teacher:
                    teacher_s.append(statistics.median(teacher))

    base = step_s["baseline"]
    print(f"\ndigits recipe (experiments/digits/base.yaml: resnet18, {IMAGE_SIZE} px, batch {args.batch_size}, SGD), "
          f"random in-memory images, {torch.get_num_threads()} CPU threads: {args.steps} timed steps after "
          f"{args.warmup} warmup, {args.rounds} rounds; median over rounds [min..max]")  # fmt: skip
    print(f"{'trick':<22} {'step ms':>20} {'vs baseline':>22} {'target':>9}")
    for name in ways:
        ratio = [t / b for t, b in zip(step_s[name], base)]
        if name == "distillation":
            bound = [1 + t / b + 0.05 for t, b in zip(teacher_s, base)]
            target, ok = statistics.median(bound), statistics.median(ratio) <= statistics.median(bound)
        else:
            target, ok = 1.03, statistics.median(ratio) <= 1.03
        ms = [1e3 * t for t in step_s[name]]
        verdict = "" if name == "baseline" else ("met" if ok else "MISSED")
        print(f"{name:<22} {spread(ms, '{:.0f}'):>20} {spread(ratio, '{:.3f}'):>22} {'<= ' + format(target, '.3f'):>9} {verdict}")
    if teacher_s:
        print(f"distillation bound = 1 + teacher forward {1e3 * statistics.median(teacher_s):.0f} ms / baseline step "
              f"{1e3 * statistics.median(base):.0f} ms + 0.05 (teacher: resnet34, forward timed by hooks in the same steps)")  # fmt: skip


if __name__ == "__main__":
    main()
