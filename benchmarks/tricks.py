"""Step time of every trick relative to the baseline step, through the Trainer that users run.

    python benchmarks/tricks.py [--steps 6] [--warmup 1] [--rounds 2] [--threads 1 --clock cpu]
    python benchmarks/tricks.py --quick      # a smoke run of every code path

Every way is the shipped digits recipe, ``bagoftricks fit -c experiments/digits/base.yaml``,
alone (the baseline) or with one trick's experiment file stacked on it, as the README runs them;
each is built by the CLI. One Trainer fit of the baseline then runs them in turn, one step each:
before every step a callback gives the module, the LR schedule and the Trainer the next way's
settings (its backbone, its hyperparameters, its schedule, its optimizer with its own parameter
groups, its teacher), so every step is ``ClassificationModule.training_step`` through the Trainer, as
configured by that file, and every way's steps are neighbours in time of the baseline's (on a
CPU shared with other jobs, separate runs differ by more than the 3% being measured). A step's
time is the period between the starts of consecutive steps with the switching cut out (LR
setting, step, hooks, logging, the next fetch). The images are random, in memory, of the digits'
shape (3 x 32 x 32, 10 classes, the recipe's batch of 64), so no image loading is timed. Ratios
are medians over the cycles of all rounds (a cycle = one step of every way), interquartile range
in brackets.

Targets: every trick <= 1.03x the baseline step, except distillation, whose teacher forward is
real work: <= 1 + teacher forward / baseline step + 0.05, with the teacher's forward timed by hooks
inside the same steps. The teacher is teacher.yaml's resnet34 with random weights (weights do not
change its cost). CutMix runs on every batch here (``mix_prob 1``), so its cost is not halved by
cutmix.yaml's ``mix_prob 0.5``. EMA updates its average after every step (``ema_every_n_steps 1``,
the costliest setting): its target is the same 1.03x. Progressive resizing reports its speedup
instead: its steps at the first phase's size (``progressive.initial_scale 0.5``: 16 px, the batch
downsampled on its device), whose time over the baseline's is the saving of that phase. BlurPool
changes the model (its strided convs run at stride 1 before the blur subsamples), so it is shown
with its multiply-adds over the baseline's instead of a target. Repeated augmentation (the
sampler's order), flip TTA and test resolution (evaluation only) and mixup's last epochs off (no
mixing) add nothing to a training step and have no row.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import tempfile
from dataclasses import fields
from pathlib import Path

import torch

# A sibling module, not a package: `python benchmarks/tricks.py` puts benchmarks/ on sys.path.
from common import (
    DIGITS,
    NO_VALIDATION,
    NUM_CLASSES,
    UNTIMED,
    Alternate,
    SyntheticData,
    add_clock_args,
    apply_clock_args,
    clock,
    library_cli,
    quiet,
    random_images,
    summary,
)

from bagoftricks.callbacks import LRSchedule, ProgressiveResizing
from bagoftricks.models import create_model, model_stats
from bagoftricks.module import Tricks
from bagoftricks.tricks import scaled_side

IMAGE_SIZE = 32  # the digits recipe's, px

# name -> arguments after `-c base.yaml`: the trick's experiment file, and what this benchmark changes.
TRICKS = {
    "baseline": [],
    "label smoothing": ["-c", "label_smoothing.yaml"],
    "mixup": ["-c", "mixup.yaml"],
    "CutMix (every batch)": ["-c", "cutmix.yaml", "--model.mix_prob", "1.0"],
    "no bias decay": ["-c", "no_bias_decay.yaml"],
    "warmup": ["-c", "warmup.yaml"],
    "cosine": ["-c", "cosine.yaml"],
    "distillation": ["-c", "distillation.yaml"],  # main() points it at a teacher file
    "random erasing": ["--model.random_erasing", "0.25"],
    "EMA (every step)": ["--model.ema_decay", "0.9998"],  # ema_every_n_steps 1: the costliest setting
    "progressive (0.5x side)": ["--progressive.initial_scale", "0.5"],  # a speedup, not an overhead
    "stochastic depth": ["--model.backbone_kwargs", "{drop_path_rate: 0.1}"],
    "BlurPool": ["--model.backbone_kwargs", "{blur_pool: true}"],  # a bigger model: compared with its MACs
}


class ForwardClock:
    """Seconds of each forward of a module, read off forward hooks."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.seconds: list[float] = []
        module.register_forward_pre_hook(lambda *_: setattr(self, "start", clock()))
        module.register_forward_hook(lambda *_: self.seconds.append(clock() - self.start))


def build(extra: list[str], args, root: str):
    """The CLI's module and Trainer for base.yaml + ``extra`` (nothing is run)."""
    configs = [str(DIGITS / arg) if arg.endswith(".yaml") else arg for arg in extra]
    argv = ["-c", str(DIGITS / "base.yaml"), *configs, "--data.init_args.batch_size", str(args.batch_size)]
    cli = library_cli([*argv, *NO_VALIDATION, *UNTIMED], root)
    sizes = next(cb for cb in cli.trainer.callbacks if isinstance(cb, ProgressiveResizing))
    if sizes.initial_scale < 1:  # the way's steps at the size of its first phase
        cli.model.tricks.image_size = scaled_side(IMAGE_SIZE, sizes.initial_scale, sizes.size_increment)
    return cli


def schedule_of(trainer) -> LRSchedule:
    return next(cb for cb in trainer.callbacks if isinstance(cb, LRSchedule))


class Ways:
    """Gives the running module, schedule and Trainer one way's settings before each step, through
    their public attributes: the module's ``backbone``, ``tricks`` and ``ema``, the schedule's
    settings, the Trainer's optimizers."""

    def __init__(self, clis: dict, trainer, module) -> None:
        self.clis, self.trainer, self.module, self.names = clis, trainer, module, list(clis)
        self.optimizers: dict = {}

    def prepare(self) -> None:
        """Each way's optimizer over that way's backbone, built by the running module itself from
        that way's settings (no_bias_decay, the optimizer's class and arguments)."""
        own = dict(self.module.hparams), self.module.optimizer, self.module.backbone
        for name in self.names:
            way = self.clis[name].model
            self.module.hparams.update(way.hparams)
            self.module.optimizer, self.module.backbone = way.optimizer, way.backbone
            self.optimizers[name] = self.module.configure_optimizers()
        self.module.hparams.update(own[0])
        self.module.optimizer, self.module.backbone = own[1], own[2]

    def __call__(self, step: int) -> str:
        if not self.optimizers:
            self.prepare()
        name = self.names[step % len(self.names)]
        way = self.clis[name].model
        self.module.backbone = way.backbone  # its own model (drop path, BlurPool), in channels_last as setup left it
        for setting in fields(Tricks):  # the teacher too
            setattr(self.module.tricks, setting.name, getattr(way.tricks, setting.name))
        self.module.ema = way.ema  # the way's weight average, updated after its steps (None: off)
        schedule, source = schedule_of(self.trainer), schedule_of(self.clis[name].trainer)
        for setting in inspect.signature(LRSchedule).parameters:
            setattr(schedule, setting, getattr(source, setting))
        schedule.on_train_start(self.trainer, self.module)  # warmup and total steps for this Trainer
        self.trainer.optimizers = [self.optimizers[name]]
        return name


def run_round(clis: dict, args, root: str) -> tuple[dict[str, list[float]], list[float]]:
    """One fit that cycles through the ways; per-way step times and the teacher's forward times."""
    cycle = args.warmup + args.steps
    steps = len(clis) * cycle + 1  # one more step closes the last timed one
    runner = build(TRICKS["baseline"], args, root)
    switch = Ways(clis, runner.trainer, runner.model)
    alternate = Alternate(torch.device("cpu"), switch=switch, stop_after=steps)
    # First, so the LR schedule sets the LR of the optimizer this step will use.
    runner.trainer.callbacks.insert(0, alternate)
    teachers = [ForwardClock(cli.model.tricks.teacher) for cli in clis.values() if cli.model.tricks.teacher is not None]
    data = random_images((steps + 1) * args.batch_size, IMAGE_SIZE)
    runner.trainer.fit(runner.model, datamodule=SyntheticData(data, args.batch_size, torch.device("cpu")))
    times = {name: alternate.times[name][args.warmup : cycle] for name in clis}
    return times, [t for teacher in teachers for t in teacher.seconds[args.warmup : cycle]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per way and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per way and round before them")
    parser.add_argument("--rounds", type=int, default=2, help="fresh Trainer and models each round")
    parser.add_argument("--batch-size", type=int, default=64, help="base.yaml's batch")
    parser.add_argument("--only", nargs="+", choices=list(TRICKS)[1:], help="time only these tricks")
    add_clock_args(parser)
    parser.add_argument("--quick", action="store_true", help="tiny run: a smoke test of the script")
    args = parser.parse_args(argv)
    apply_clock_args(args)
    if args.quick:
        args.steps, args.warmup, args.rounds, args.batch_size = 1, 0, 1, 4
    quiet()
    names = ["baseline", *(args.only or list(TRICKS)[1:])]

    times: dict[str, list[float]] = {name: [] for name in names}
    teacher_s: list[float] = []
    with tempfile.TemporaryDirectory() as root:
        teacher_path = Path(root) / "teacher.pt"
        torch.save(create_model("resnet34", NUM_CLASSES).state_dict(), teacher_path)
        teacher = ["--model.teacher", str(teacher_path), "--model.teacher_backbone", "resnet34"]
        for _ in range(args.rounds):
            clis = {name: build(TRICKS[name] + (teacher if name == "distillation" else []), args, root) for name in names}
            macs = {name: model_stats(cli.model.backbone, IMAGE_SIZE)["macs"] for name, cli in clis.items()}
            for cli in clis.values():
                cli.model.setup("fit")  # channels_last for the teacher, as the Trainer's setup does
            round_times, round_teacher = run_round(clis, args, root)
            for name in names:
                times[name] += round_times[name]
            teacher_s += round_teacher

    base = times["baseline"]
    print(f"\ndigits recipe (experiments/digits/base.yaml: resnet18, {IMAGE_SIZE} px, batch {args.batch_size}, SGD), "
          f"random in-memory images, {torch.get_num_threads()} CPU threads, {args.clock} clock: {len(base)} cycles "
          f"({args.rounds} rounds of {args.steps} after {args.warmup} warmup); median [interquartile range]")  # fmt: skip
    print(f"{'trick':<22} {'step ms':>18} {'vs baseline':>22} {'target':>9}")
    for name in names:
        ratio = [t / b for t, b in zip(times[name], base)]
        if name == "distillation":
            target = 1 + statistics.median(teacher_s) / statistics.median(base) + 0.05
        else:
            target = 1.03
        bound, verdict = f"<= {target:.3f}", "" if name == "baseline" else ("met" if statistics.median(ratio) <= target else "MISSED")
        if name.startswith("progressive"):  # a speedup: no overhead target
            bound, verdict = "-", f"speedup {1 / statistics.median(ratio):.2f}x"
        elif macs[name] != macs["baseline"]:  # a bigger model: its cost is its multiply-adds, not an overhead
            bound, verdict = "-", f"MACs {macs[name] / macs['baseline']:.2f}x"
        ms = summary([1e3 * t for t in times[name]], "{:.0f}")
        print(f"{name:<22} {ms:>18} {summary(ratio, '{:.3f}'):>22} {bound:>9} {verdict}")
    if teacher_s:
        print(f"distillation target = 1 + teacher forward {1e3 * statistics.median(teacher_s):.0f} ms / baseline "
              f"step {1e3 * statistics.median(base):.0f} ms + 0.05 (resnet34 teacher, timed inside the same steps)")  # fmt: skip


if __name__ == "__main__":
    main()
