"""Time to a validation top-1: the shipped recipe against a plain Adam + one-cycle baseline.

    python benchmarks/time_to_accuracy.py [--target 0.99] [--seeds 0 1] [--threads 1 --clock cpu]
    python benchmarks/time_to_accuracy.py --recipes "recipe (base.yaml)"    # without the trick stack
    python benchmarks/time_to_accuracy.py --data-root ~/data/cifar10 --target 0.5   # real photos
    python benchmarks/time_to_accuracy.py --quick     # a smoke run of every code path

Every recipe trains resnet18 (resnet18d with the tricks' ResNet-D) at 32 px on the same data and
split, with the same augmentation, batch, epochs and validation, through ``bagoftricks fit``. The
data is the real digits (``experiments/digits/base.yaml``: batch 64, 6 epochs), or with
``--data-root`` an image folder (``experiments/cifar10/base.yaml`` on it: 500 training images per
class, batch 128, 10 epochs):

* recipe: the base file as shipped, the paper's baseline (SGD + Nesterov momentum 0.9, lr 0.1 per
  256 images, weight decay, step decay);
* recipe + tricks: the base file with the experiment files of the paper's refinements that pay off
  in these budgets stacked on it, in the paper's order (``TRICKS`` below; the digits' fragments,
  which set only trick keys, serve every base file);
* plain: the same base file with the optimizer a user reaches for first and nothing else: Adam at
  torch's default lr 1e-3 as the one-cycle peak, no weight decay, no other trick.

Validation runs every ``--val-every`` epochs. A run's clock starts with training and includes
everything a user waits for (steps, data loading, validation, checkpoints); its time to accuracy
is the clock at the end of the first validation with top-1 >= ``--target``. A recipe's time is
the median over seeds, where a run that never gets there counts as never (so a recipe that misses
in most runs has no time at all). Each recipe is also compared with plain at the best top-1 that
all runs of both reach, which gives a ratio even when one of them misses the target, and at plain's
final top-1 (its median over seeds): how much sooner the recipe gets to where plain ends.
Runs alternate between the recipes seed by seed, so other processes' load hits them alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import lightning as L
import torch

# A sibling module, not a package: `python benchmarks/time_to_accuracy.py` puts benchmarks/ on sys.path.
from common import CIFAR10, DIGITS, EXPERIMENTS, UNTIMED, add_clock_args, apply_clock_args, clock, library_cli, quiet

# The paper's refinements that pay off within base.yaml's 6 (digits) or 10 (image folder) epochs, stacked
# in its order. Left out: zero gamma, which cost 19.5 points top-1 alone on the digits
# (experiments/digits/each.yaml; it helps deep nets over long training), mixup, which needs longer
# training to pay off (He et al. 2019 sec. 5.4 train 200 epochs instead of 120 with it), and
# distillation, which needs a teacher.
TRICKS = ["warmup", "no_bias_decay", "resnet_d", "cosine", "label_smoothing"]
RECIPES = {
    "recipe (base.yaml)": [],
    "recipe + tricks": [arg for name in TRICKS for arg in ("-c", str(DIGITS / f"{name}.yaml"))],
    "plain (Adam, one-cycle)": [
        "--model.optimizer", '{"class_path": "torch.optim.Adam", "init_args": {"lr": 0.001, "weight_decay": 0.0}}',
        "--schedule.name", "onecycle",
    ],
}  # fmt: skip


class AccuracyClock(L.Callback):
    """(seconds since training started, val/top1) at the end of every validation."""

    def __init__(self) -> None:
        self.start, self.points = None, []

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = clock()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.start is not None and not trainer.sanity_checking:
            self.points.append((clock() - self.start, float(trainer.callback_metrics["val/top1"])))


def base_config(args) -> Path:
    """The base file: the digits', or with ``--data-root`` the image folder's."""
    return DIGITS / "base.yaml" if args.data_root is None else CIFAR10 / "base.yaml"


def base_argv(args) -> list[str]:
    return ["-c", str(base_config(args)), *([] if args.data_root is None else ["--data.root", args.data_root])]


def run(recipe: list[str], seed: int, args, root: str) -> list[tuple[float, float]]:
    argv = [*base_argv(args), *recipe, "--seed_everything", str(seed), "--trainer.val_check_interval", str(args.val_every)]
    if args.quick:
        argv += ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    cli = library_cli([*argv, *UNTIMED], root)
    accuracy_clock = AccuracyClock()
    cli.trainer.callbacks.append(accuracy_clock)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return accuracy_clock.points


def time_to(points: list[tuple[float, float]], target: float) -> float:
    """Seconds to the first validation at ``target`` or above; infinity if the run never gets there."""
    return next((seconds for seconds, top1 in points if top1 >= target), float("inf"))


def median_time(points: dict, name: str, seeds: list[int], level: float) -> float:
    return statistics.median(time_to(points[name, seed], level) for seed in seeds)


def seconds(value: float) -> str:
    return "never" if value == float("inf") else f"{value:.1f} s"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.99, help="validation top-1 to reach")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES), help="which to run")
    parser.add_argument("--val-every", type=float, default=0.5, help="validation interval in epochs (<= 1)")
    parser.add_argument(
        "--data-root", help="an image folder (train/<class>/, test/<class>/) to train experiments/cifar10/base.yaml on, "
        "instead of the digits",
    )  # fmt: skip
    add_clock_args(parser)
    parser.add_argument("--quick", action="store_true", help="two steps per run: a smoke test of the script")
    args = parser.parse_args(argv)
    apply_clock_args(args)
    if args.quick:
        args.seeds, args.val_every = args.seeds[:1], 1.0
    plain = "plain (Adam, one-cycle)"
    recipes = [name for name in RECIPES if name in args.recipes or name == plain]
    quiet()

    points: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as root:
        for i, seed in enumerate(args.seeds):
            names = recipes if i % 2 == 0 else recipes[::-1]  # alternate who goes first
            for name in names:
                points[name, seed] = run(RECIPES[name], seed, args, root)

    data = f"{args.data_root or 'digits'} ({base_config(args).relative_to(EXPERIMENTS.parent)})"
    print(f"\n{data}, validation every {args.val_every} epochs, {torch.get_num_threads()} CPU threads, "
          f"{args.clock} clock")  # fmt: skip
    print(f"{'recipe':<26} {'seed':>4} {'best top-1':>10} {'final top-1':>11} "
          f"{'s to ' + format(args.target, '.3f'):>10} {'total s':>8}")  # fmt: skip
    for (name, seed), p in points.items():
        print(f"{name:<26} {seed:>4} {max(t for _, t in p):10.3f} {p[-1][1]:11.3f} "
              f"{seconds(time_to(p, args.target)).removesuffix(' s'):>10} {p[-1][0]:8.1f}")  # fmt: skip

    # Each recipe against plain at the target, at the best top-1 that all runs of both reach, and at
    # plain's final top-1.
    best = {name: min(max(t for _, t in points[name, s]) for s in args.seeds) for name in recipes}
    final = {name: statistics.median(points[name, s][-1][1] for s in args.seeds) for name in recipes}
    print(f"time to top-1, median over seeds {args.seeds} (plain / recipe above 1: the recipe gets there sooner)")
    for name in recipes:
        if name == plain:
            continue
        levels: dict[float, list[str]] = {args.target: []}  # level -> what it is (two may coincide)
        if min(best[name], best[plain]) < args.target:
            levels.setdefault(min(best[name], best[plain]), []).append("the best both reach in every run")
        levels.setdefault(final[plain], []).append("plain's final top-1")
        for level, what in sorted(levels.items(), reverse=True):
            note = f" ({'; '.join(what)})" if what else ""
            median = {n: median_time(points, n, args.seeds, level) for n in (name, plain)}
            finite = max(median.values()) < float("inf")
            ratio_text = f", plain / recipe = {median[plain] / median[name]:.2f}x" if finite else ""
            print(f"  {name} vs {plain} at {level:.3f}{note}: {seconds(median[name])} vs "
                  f"{seconds(median[plain])}{ratio_text}")  # fmt: skip
        print(f"  final top-1, median: {name} {final[name]:.3f} vs {plain} {final[plain]:.3f}")


if __name__ == "__main__":
    main()
