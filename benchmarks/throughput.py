"""Training throughput: the library's defaults against the plain PyTorch loop a user would write.

    python benchmarks/throughput.py                      # (a) resnet18 cifar stem 32 px, (b) resnet50d 128 px, CPU
    python benchmarks/throughput.py --threads 1 --clock cpu   # the same on a CPU shared with other jobs
    python benchmarks/throughput.py --model resnet50d --batch-size 8 --steps 8
    python benchmarks/throughput.py --device cuda --precision 16-mixed --batch-size 256 --image-size 128 --model resnet50d
    python benchmarks/throughput.py --compile            # torch.compile in the library and the optimized loop
    python benchmarks/throughput.py --quick              # a smoke run of every code path

(benchmarks/profile_step.py shows where the library's step time goes.)

Three ways of training the same model on the same in-memory random images (so no decoding or
augmentation is timed) with the same batch size and optimizer (AdamW, the module's default):

* plain loop: the hand-written loop a user would otherwise write: NCHW, fp32;
* plain loop, same optimizations: that loop with channels_last, the library's precision, a
  copy of the library's optimizer settings and, with ``--compile``, ``model.compile()``, so it
  differs from the library only by the framework;
* library: ``ClassificationModule`` and the Trainer that ``bagoftricks fit`` builds, with its
  defaults: channels_last, the LRSchedule callback, torchmetrics top-1, a TensorBoard logger
  writing every step, ModelCheckpoint. Only the progress bar, the model summary and the validation
  loop are off (the plain loops have none of them).

The ways alternate step by step: at the start of every library step a callback runs one step of
each plain loop and one short matmul, and the library's step is the time from that callback's
end to its next start (step, hooks, logging, the next batch's fetch: everything a step costs).
Comparing neighbours in time cancels most of the load of other processes on a shared machine,
which otherwise swings separate runs by 20% or more. Ratios are medians over the paired steps of
all rounds, after ``--warmup`` steps per round, with the interquartile range in brackets.
Training FLOP/s count 3 x forward MACs x 2 per image (forward + backward = 3 forwards; MACs from
``model_stats``) against the FLOP/s of a 2048 x 2048 matmul in the library's compute dtype (fp32,
or fp16/bf16 under mixed precision). For resnet50d the script also times forward +
backward of ours against timm's ``resnet50d`` on the same input, alternating step by step.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import logging
import shlex
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from bagoftricks.cli import cli_main
from bagoftricks.models import create_model, model_stats

NUM_CLASSES = 10


@dataclass
class Case:
    model: str
    image_size: int  # px
    batch_size: int  # images per step
    kwargs: dict = field(default_factory=dict)  # create_model flags

    def __str__(self) -> str:
        flags = "".join(f", {k}={v}" for k, v in self.kwargs.items())
        return f"{self.model}{flags}, {self.image_size} px, batch {self.batch_size}"


# Sized so that both cases take a minute or two on a 2-core CPU.
CPU_CASES = [Case("resnet18", 32, 16, {"stem": "cifar"}), Case("resnet50d", 128, 8)]
QUICK_CASES = [Case("resnet18", 16, 4, {"stem": "cifar"}), Case("resnet50d", 32, 2)]


# Which clock every timing reads: "wall" (perf_counter), or "cpu", this process's CPU seconds
# (process_time), which other processes' load does not stretch; main() sets it from --clock.
CLOCK = {"kind": "wall"}


def clock(device: torch.device) -> float:
    """Seconds on the chosen clock, after the device has finished its queued work (CUDA is asynchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.process_time() if CLOCK["kind"] == "cpu" else time.perf_counter()


def synthetic_loader(images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device) -> DataLoader:
    return DataLoader(
        TensorDataset(images, labels), batch_size, shuffle=True, drop_last=True, pin_memory=device.type == "cuda"
    )


class SyntheticData(L.LightningDataModule):
    """The same in-memory random batches the plain loops read, as a datamodule for the Trainer."""

    num_classes = NUM_CLASSES

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device) -> None:
        super().__init__()
        self.images, self.labels, self.batch_size, self.device = images, labels, batch_size, device

    def train_dataloader(self) -> DataLoader:
        return synthetic_loader(self.images, self.labels, self.batch_size, self.device)


class Alternate(L.Callback):
    """Interleaves other timed work with the library's steps, one step of each at a time.

    At the start of every library step it calls each of ``extras`` (name -> a function that does
    one step of something else and returns its seconds), in an order that rotates, and ``switch``
    (which may reconfigure the library's next step and returns its label). The library's step is
    the time from this callback's end to its next start, so the extras' time is cut out of it.
    ``times`` maps every name and label to its seconds per step. With ``stop_after``, training
    stops after that many steps, however long the recipe's schedule is.
    """

    def __init__(
        self,
        device: torch.device,
        extras: dict[str, Callable[[], float]] | None = None,
        switch: Callable[[int], str] | None = None,
        stop_after: int | None = None,
    ) -> None:
        self.device, self.extras, self.switch, self.stop_after = device, extras or {}, switch, stop_after
        self.times: dict[str, list[float]] = {name: [] for name in self.extras}
        self.label, self.leave = "library", None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        enter = clock(self.device)
        if self.leave is not None:
            self.times.setdefault(self.label, []).append(enter - self.leave)
        names = list(self.extras)
        first = batch_idx % len(names) if names else 0
        for name in names[first:] + names[:first]:
            self.times[name].append(self.extras[name]())
        if self.switch is not None:
            self.label = self.switch(batch_idx)
        self.leave = clock(self.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.stop_after is not None and batch_idx + 1 >= self.stop_after:
            trainer.should_stop = True


class PlainLoop:
    """The loop a user writes by hand, one step per call.

    ``optimized`` adds channels_last, the library's mixed precision (none for 32-true) and, with
    ``--compile``, torch.compile, and
    ``like`` (called at the first step) gives an optimizer whose class and settings it copies:
    the library's, so that loop differs from the library only by the framework. Without it, the
    loop uses ``AdamW()`` with torch's defaults, as a user would.
    """

    def __init__(
        self,
        case: Case,
        args,
        data: tuple[torch.Tensor, torch.Tensor],
        optimized: bool,
        like: Callable[[], torch.optim.Optimizer] | None = None,
    ) -> None:
        self.device = torch.device(args.device)
        self.memory_format = torch.channels_last if optimized else torch.contiguous_format
        torch.manual_seed(0)
        model = create_model(case.model, NUM_CLASSES, **case.kwargs)
        self.model = model.to(self.device, memory_format=self.memory_format).train()
        if optimized and args.compile:
            self.model.compile()
        self.like, self.optimizer = like, None if like else torch.optim.AdamW(self.model.parameters())
        self.mixed = optimized and args.precision in ("16-mixed", "bf16-mixed")
        self.dtype = torch.float16 if args.precision == "16-mixed" else torch.bfloat16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.mixed and args.precision == "16-mixed")
        self.batches = iter(synthetic_loader(*data, case.batch_size, self.device))

    def step(self) -> float:
        if self.optimizer is None:
            reference = self.like()
            accepted = inspect.signature(type(reference)).parameters  # defaults also hold derived settings
            settings = {k: v for k, v in reference.defaults.items() if k in accepted}
            self.optimizer = type(reference)(self.model.parameters(), **settings)
        start = clock(self.device)
        x, y = next(self.batches)
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        y = y.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.mixed):
            loss = F.cross_entropy(self.model(x), y)
        self.optimizer.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return clock(self.device) - start


class Matmul:
    """FLOP/s of an n x n matmul in ``dtype``, one ``seconds``-long burst per call."""

    def __init__(self, device: torch.device, seconds: float, dtype: torch.dtype, n: int = 2048) -> None:
        self.a, self.b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        self.device, self.seconds, self.flops, self.rates = device, seconds, 2 * n**3, []
        self.a @ self.b  # warm up

    def step(self) -> float:
        count, start = 0, clock(self.device)
        while (elapsed := clock(self.device) - start) < self.seconds:
            self.a @ self.b
            count += 1
        self.rates.append(self.flops * count / elapsed)
        return elapsed


def select_cases(args) -> list[Case]:
    """The default cases, or the one ``--model`` names, with ``--batch-size`` and ``--image-size`` applied."""
    cases = QUICK_CASES if args.quick else CPU_CASES
    if args.model:
        cases = [next((c for c in cases if c.model == args.model), Case(args.model, 128, 16))]
    return [Case(c.model, args.image_size or c.image_size, args.batch_size or c.batch_size, c.kwargs) for c in cases]


def library_argv(case: Case, args, root: str) -> list[str]:
    """`bagoftricks fit` with its defaults for this case (the data is replaced at fit time)."""
    return [
        "--model.backbone", case.model, "--model.backbone_kwargs", json.dumps(case.kwargs),
        # Any data class: the CLI reads only its num_classes; the fit gets the synthetic data.
        "--data", "bagoftricks.data.DigitsDataModule",
        "--trainer.accelerator", args.device, "--trainer.devices", "1", "--trainer.precision", args.precision,
        "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", root, "--model.compile", str(args.compile).lower(),
        *shlex.split(args.library_args),
    ]  # fmt: skip


def quiet() -> None:
    """Keep the printed tables readable: Lightning's per-fit banners and the expected warnings off."""
    for name in ("lightning.pytorch", "lightning.fabric", "bagoftricks"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in ("You defined a `validation_step`", "`ModelCheckpoint", "LightningCLI's args", ".*LeafSpec"):
        warnings.filterwarnings("ignore", message=message)


def summary(values: list[float], fmt: str = "{:.2f}") -> str:
    """Median [interquartile range]."""
    if len(values) < 2:
        return f"{fmt.format(values[0])}"
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return f"{fmt.format(q2)} [{fmt.format(q1)}..{fmt.format(q3)}]"


def synthetic_data(case: Case, batches: int) -> tuple[torch.Tensor, torch.Tensor]:
    count, generator = batches * case.batch_size, torch.Generator().manual_seed(0)
    images = torch.randn(count, 3, case.image_size, case.image_size, generator=generator)
    return images, torch.randint(NUM_CLASSES, (count,), generator=generator)


# The library's compute dtype: mixed precision runs its convolutions in 16 bits.
COMPUTE_DTYPES = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def throughput(case: Case, args) -> None:
    device = torch.device(args.device)
    steps = args.warmup + args.steps + 1  # one more library step closes the last timed one
    data = synthetic_data(case, steps + 1)
    matmul_dtype = COMPUTE_DTYPES.get(args.precision, torch.float32)
    compiled = ", compiled" if args.compile else ""
    plain, same, library = "plain loop (NCHW, fp32)", f"plain loop + channels_last, {args.precision}{compiled}", "library"
    times: dict[str, list[float]] = {plain: [], same: [], library: []}
    rates: list[float] = []
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.rounds):
            cli = cli_main(library_argv(case, args, root), run=False)
            loops = {
                plain: PlainLoop(case, args, data, optimized=False),
                # The library's optimizer exists once its fit has started, before the first step.
                same: PlainLoop(case, args, data, optimized=True, like=lambda trainer=cli.trainer: trainer.optimizers[0]),
            }
            matmul = Matmul(device, args.matmul_seconds, matmul_dtype)
            extras = {name: loop.step for name, loop in loops.items()} | {"matmul": matmul.step}
            alternate = Alternate(device, extras, stop_after=steps)
            cli.trainer.callbacks.insert(0, alternate)
            cli.trainer.fit(cli.model, datamodule=SyntheticData(*data, case.batch_size, device))
            # Library step k sits between the extras of steps k and k + 1; pair it with those of step k.
            for name in times:
                times[name] += alternate.times[name][args.warmup : args.warmup + args.steps]
            rates += matmul.rates[args.warmup : args.warmup + args.steps]

    macs = model_stats(create_model(case.model, NUM_CLASSES, **case.kwargs), case.image_size)["macs"]
    print(f"\n{case}, {args.device}, {args.precision}{compiled}: {len(times[library])} paired steps ({args.rounds} rounds of "
          f"{args.steps} after {args.warmup} warmup); median [interquartile range]")  # fmt: skip
    labels = {name: "library (bagoftricks fit)" if name == library else name for name in times}
    width = max(map(len, labels.values()))
    print(f"{'':<{width}} {'step ms':>20} {'img/s':>8}")
    for name, seconds in times.items():
        print(f"{labels[name]:<{width}} {summary([1e3 * t for t in seconds], '{:.0f}'):>20} "
              f"{case.batch_size / statistics.median(seconds):8.1f}")  # fmt: skip
    speed = [p / lib for p, lib in zip(times[plain], times[library])]
    overhead = [100 * (lib / s - 1) for s, lib in zip(times[same], times[library])]
    fraction = [6 * macs * case.batch_size / lib / rate for lib, rate in zip(times[library], rates)]
    print(f"library speed / plain loop's (target >= 1.00x): {summary(speed)}x")
    print(f"framework overhead: library vs plain loop with the same optimizations (target <= 5%): "
          f"{summary(overhead, '{:+.1f}')}%")  # fmt: skip
    dtype = str(matmul_dtype).removeprefix("torch.")
    print(f"training FLOP/s of the library / {dtype} 2048x2048 matmul FLOP/s (target >= 0.80): {summary(fraction)} "
          f"({6 * macs * case.batch_size / statistics.median(times[library]) / 1e9:.1f} G / "
          f"{statistics.median(rates) / 1e9:.1f} G; {macs / 1e6:.0f} M forward MACs per image)")  # fmt: skip


def versus_timm(case: Case, args) -> None:
    """Forward + backward of our resnet50d and timm's, same input and memory format, alternating step by step."""
    import timm

    device = torch.device(args.device)
    torch.manual_seed(0)
    ours = create_model("resnet50d", NUM_CLASSES).to(device)
    theirs = timm.create_model("resnet50d", num_classes=NUM_CLASSES).to(device)
    stats = {name: model_stats(m, case.image_size) for name, m in (("ours", ours), ("timm", theirs))}
    x = torch.randn(case.batch_size, 3, case.image_size, case.image_size, device=device)
    mixed = args.precision in ("16-mixed", "bf16-mixed")
    dtype = torch.float16 if args.precision == "16-mixed" else torch.bfloat16
    print(f"\nresnet50d forward + backward, ours vs timm {timm.__version__}: {case.image_size} px, batch "
          f"{case.batch_size}, {args.precision}; params {stats['ours']['params']:,} vs {stats['timm']['params']:,}, "
          f"MACs {stats['ours']['macs'] / 1e6:.0f} M vs {stats['timm']['macs'] / 1e6:.0f} M")  # fmt: skip
    for memory_format in (torch.channels_last, torch.contiguous_format):
        models = {"ours": copy.deepcopy(ours), "timm": copy.deepcopy(theirs)}
        models = {name: m.to(memory_format=memory_format).train() for name, m in models.items()}
        xm = x.contiguous(memory_format=memory_format)
        times: dict[str, list[float]] = {name: [] for name in models}
        for i in range(1 + args.timm_steps):  # the first step of each warms up
            for name in list(models) if i % 2 else list(models)[::-1]:
                model = models[name]
                model.zero_grad(set_to_none=True)
                start = clock(device)
                with torch.autocast(device.type, dtype=dtype, enabled=mixed):
                    loss = model(xm).float().logsumexp(1).mean()
                loss.backward()
                if i:
                    times[name].append(clock(device) - start)
        ratio = [t / o for t, o in zip(times["timm"], times["ours"])]
        ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
        print(f"  {str(memory_format).removeprefix('torch.'):<18} ours {ms['ours']:7.0f} ms, timm {ms['timm']:7.0f} ms; "
              f"our speed / timm's (target >= 0.98x): {summary(ratio)}x over {len(ratio)} step pairs")  # fmt: skip


def add_clock_args(parser: argparse.ArgumentParser) -> None:
    """``--threads`` and ``--clock``, shared by the benchmark scripts."""
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall",
        help="cpu: this process's CPU time, for a CPU shared with other jobs (use with --threads 1)",
    )  # fmt: skip


def apply_clock_args(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    CLOCK["kind"] = args.clock


def add_library_args(parser: argparse.ArgumentParser) -> None:
    """The case and the library's settings, shared with profile_step.py."""
    parser.add_argument("--model", help="one model instead of the two default cases (e.g. resnet50d)")
    parser.add_argument("--batch-size", type=int, help="images per step (default: the case's)")
    parser.add_argument("--image-size", type=int, help="pixels (default: the case's; 128 for a --model)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="32-true", help="Lightning precision: 32-true, 16-mixed, bf16-mixed")
    parser.add_argument(
        "--compile", action="store_true",
        help="torch.compile (inductor) the library's model (--model.compile true) and the optimized loop's; "
        "the first step, which compiles, is a --warmup step",
    )  # fmt: skip
    parser.add_argument(
        "--library-args", default="", metavar="ARGS",
        help="more `bagoftricks fit` flags, e.g. '--model.optimizer torch.optim.AdamW --model.optimizer.fused true'",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_library_args(parser)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per way and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--rounds", type=int, default=2, help="fresh models and Trainer each round")
    parser.add_argument("--timm-steps", type=int, default=8, help="timed step pairs of the timm comparison")
    parser.add_argument("--matmul-seconds", type=float, default=0.25, help="length of each matmul burst")
    add_clock_args(parser)
    parser.add_argument("--no-timm", action="store_true", help="skip the comparison with timm's resnet50d")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round: a smoke test of the script")
    args = parser.parse_args(argv)
    if args.clock == "cpu" and args.device != "cpu":
        parser.error("--clock cpu measures CPU time; time a GPU with the wall clock.")
    apply_clock_args(args)
    if args.quick:
        args.steps, args.warmup, args.rounds, args.timm_steps, args.matmul_seconds = 1, 0, 1, 1, 0.01
    quiet()
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} CPU threads, {args.clock} clock")
    for case in select_cases(args):
        throughput(case, args)
        if case.model == "resnet50d" and not args.no_timm:
            versus_timm(case, args)


if __name__ == "__main__":
    main()
