"""What the benchmark scripts share: the clock and its flags, the cases, the library's CLI objects,
in-memory data, the paired timing loop (``Alternate``) and the plain loop the library is compared with.

The scripts are run as files (``python benchmarks/throughput.py``), which puts benchmarks/ on
sys.path, so each imports this module as ``common``; none imports another script.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import shlex
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, TensorDataset

from bagoftricks.cli import BagOfTricksCLI, cli_main, ignore_known_warnings
from bagoftricks.data import DigitsDataModule
from bagoftricks.models import create_model

NUM_CLASSES = 10
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
DIGITS, CIFAR10 = EXPERIMENTS / "digits", EXPERIMENTS / "cifar10"
# The compute dtype of each mixed precision (fp32 otherwise): what a matmul rate is measured in.
COMPUTE_DTYPES = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}

# Which clock every timing reads: "wall" (perf_counter), or "cpu", this process's CPU seconds
# (process_time), which other processes' load does not stretch; apply_clock_args sets it.
CLOCK = {"kind": "wall"}


def clock(device: torch.device = torch.device("cpu")) -> float:
    """Seconds on the chosen clock, after the device has finished its queued work (CUDA is asynchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.process_time() if CLOCK["kind"] == "cpu" else time.perf_counter()


def add_clock_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall",
        help="cpu: this process's CPU time, for a CPU shared with other jobs (use with --threads 1)",
    )  # fmt: skip


def apply_clock_args(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    CLOCK["kind"] = args.clock


def quiet() -> None:
    """Keep the printed tables readable: Lightning's per-fit banners and the expected warnings off."""
    for name in ("lightning.pytorch", "lightning.fabric", "bagoftricks"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ignore_known_warnings()
    for message in ("You defined a `validation_step`", "`ModelCheckpoint", "LightningCLI's args"):
        warnings.filterwarnings("ignore", message=message)


def summary(values: list[float], fmt: str = "{:.2f}") -> str:
    """Median [interquartile range]."""
    if len(values) < 2:
        return fmt.format(values[0])
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return f"{fmt.format(q2)} [{fmt.format(q1)}..{fmt.format(q3)}]"


@dataclass
class Case:
    """A model trained on random in-memory images (no decoding or augmentation is timed)."""

    model: str
    image_size: int  # px
    batch_size: int  # images per step
    kwargs: dict = field(default_factory=dict)  # create_model flags

    def __str__(self) -> str:
        flags = "".join(f", {k}={v}" for k, v in self.kwargs.items())
        return f"{self.model}{flags}, {self.image_size} px, batch {self.batch_size}"


# Sized so that each case takes a minute or two on a 2-core CPU; "digits" is the named case of
# experiments/digits/base.yaml on its real data (see throughput.py).
CASES = {"a": Case("resnet18", 32, 16, {"stem": "cifar"}), "b": Case("resnet50d", 128, 8)}
QUICK_CASES = {"a": Case("resnet18", 16, 4, {"stem": "cifar"}), "b": Case("resnet50d", 32, 2)}


def add_library_args(parser: argparse.ArgumentParser) -> None:
    """The cases and the library's settings, shared by throughput.py and profile_step.py."""
    parser.add_argument(
        "--cases", nargs="+", choices=(*CASES, "digits"), default=[*CASES, "digits"],
        help="a: resnet18 cifar stem 32 px; b: resnet50d 128 px; digits: experiments/digits/base.yaml as "
        "`bagoftricks fit` builds it, on the real digits",
    )  # fmt: skip
    parser.add_argument("--model", help="this model instead of cases a and b (e.g. resnet50d)")
    parser.add_argument("--batch-size", type=int, help="images per step of cases a and b (default: the case's)")
    parser.add_argument("--image-size", type=int, help="pixels of cases a and b (default: the case's; 128 for a --model)")
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


def select_cases(args) -> list[Case]:
    """Cases a and b among ``--cases`` (or the one ``--model`` names), with ``--batch-size`` and ``--image-size``."""
    table = QUICK_CASES if args.quick else CASES
    cases = [table[name] for name in args.cases if name in table]
    if args.model and cases:
        cases = [next((c for c in cases if c.model == args.model), Case(args.model, 128, 16))]
    return [Case(c.model, args.image_size or c.image_size, args.batch_size or c.batch_size, c.kwargs) for c in cases]


# Off in every benchmark fit but the digits case's: a plain loop has no progress bar, no summary
# and no sanity check, and no validation unless asked.
UNTIMED = [
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    "--trainer.num_sanity_val_steps", "0",
]  # fmt: skip
NO_VALIDATION = ["--trainer.limit_val_batches", "0"]


def library_cli(argv: list[str], root: str) -> BagOfTricksCLI:
    """The module, data and Trainer that ``bagoftricks fit ARGV`` builds, writing under ``root``; nothing is run."""
    return cli_main([*argv, "--trainer.default_root_dir", root], run=False)


def case_argv(case: Case, args) -> list[str]:
    """`bagoftricks fit` with its defaults for a synthetic case (the data is replaced at fit time)."""
    return [
        "--model.backbone", case.model, "--model.backbone_kwargs", json.dumps(case.kwargs),
        # Any data class: the CLI reads only its num_classes; the fit gets the synthetic data.
        "--data", "bagoftricks.data.DigitsDataModule",
        "--trainer.accelerator", args.device, "--trainer.devices", "1", "--trainer.precision", args.precision,
        "--trainer.max_epochs", "1", *NO_VALIDATION, *UNTIMED, "--model.compile", str(args.compile).lower(),
        *shlex.split(args.library_args),
    ]  # fmt: skip


def digits_argv(args) -> list[str]:
    """`bagoftricks fit -c experiments/digits/base.yaml` as a new user runs it, plus ``--library-args``."""
    accelerator = [] if args.device == "cpu" else ["--trainer.accelerator", args.device]
    return ["-c", str(DIGITS / "base.yaml"), *accelerator, *shlex.split(args.library_args)]


def digits_config() -> dict:
    """experiments/digits/base.yaml, parsed."""
    return yaml.safe_load((DIGITS / "base.yaml").read_text())


def random_images(count: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random images and labels, the same on every call."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(count, 3, image_size, image_size, generator=generator)
    return images, torch.randint(NUM_CLASSES, (count,), generator=generator)


def synthetic_loader(data: tuple[torch.Tensor, torch.Tensor], batch_size: int, device: torch.device) -> DataLoader:
    return DataLoader(TensorDataset(*data), batch_size, shuffle=True, drop_last=True, pin_memory=device.type == "cuda")


class SyntheticData(L.LightningDataModule):
    """In-memory batches (those the plain loops read) as a datamodule for the Trainer."""

    num_classes = NUM_CLASSES

    def __init__(self, data: tuple[torch.Tensor, torch.Tensor], batch_size: int, device: torch.device) -> None:
        super().__init__()
        self.data, self.batch_size, self.device = data, batch_size, device

    def train_dataloader(self) -> DataLoader:
        return synthetic_loader(self.data, self.batch_size, self.device)


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


class Alternate(L.Callback):
    """Interleaves other timed work with the library's steps, one step of each at a time.

    At the start of every library step it calls each of ``extras`` (name -> a function that does
    one step of something else and returns its seconds), in an order that rotates, and ``switch``
    (which may reconfigure the library's next step and returns its label). The library's step is
    the time from this callback's end to its next start (step, hooks, logging, the next batch's
    fetch: everything a step costs), so the extras' time is cut out of it. ``times`` maps every
    name and label to its seconds per step; library step k sits between the extras of steps k and
    k + 1 and is paired with those of step k. Comparing neighbours in time cancels most of the load
    of other processes on a shared machine, which otherwise swings separate runs by 20% or more.
    With ``stop_after``, training stops after that many steps, however long the recipe's schedule is.
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
        self.label, self.leave, self.steps = "library", None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        enter = clock(self.device)
        if self.leave is not None:
            self.times.setdefault(self.label, []).append(enter - self.leave)
        names = list(self.extras)
        first = self.steps % len(names) if names else 0
        for name in names[first:] + names[:first]:
            self.times[name].append(self.extras[name]())
        if self.switch is not None:
            self.label = self.switch(self.steps)
        self.steps += 1
        self.leave = clock(self.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.stop_after is not None and self.steps >= self.stop_after:
            trainer.should_stop = True


class PlainLoop:
    """The loop a user writes by hand, one step per call: fetch, forward, loss, backward, step.

    ``optimizer`` builds the optimizer from the parameters at the first step (so it can copy one
    that exists only once the library's fit has started). ``precision`` is Lightning's name; the
    loop autocasts for a mixed one. With ``compile``, the model is ``torch.compile``'d. With
    ``deterministic`` set, each step runs with ``torch.use_deterministic_algorithms(deterministic)``
    whatever the process's setting (a Trainer with ``deterministic: true`` sets it process-wide).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        batches: Iterator,
        optimizer: Callable[[list], torch.optim.Optimizer],
        device: torch.device,
        memory_format: torch.memory_format = torch.contiguous_format,
        precision: str = "32-true",
        compile: bool = False,
        deterministic: bool | None = None,
    ) -> None:
        self.device, self.memory_format, self.batches, self.make_optimizer = device, memory_format, batches, optimizer
        self.model, self.optimizer = model.to(device, memory_format=memory_format).train(), None
        if compile:
            self.model.compile()
        self.mixed = precision in COMPUTE_DTYPES
        self.dtype = COMPUTE_DTYPES.get(precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
        self.deterministic = deterministic

    def step(self) -> float:
        if self.deterministic is None:
            return self.timed_step()
        previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
        torch.use_deterministic_algorithms(self.deterministic)
        try:
            return self.timed_step()
        finally:
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])

    def timed_step(self) -> float:
        if self.optimizer is None:
            self.optimizer = self.make_optimizer(list(self.model.parameters()))
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


def endless(loader) -> Iterator:
    """The loader's batches epoch after epoch, as a training loop reads them."""
    while True:
        yield from loader


def copy_of(optimizer: Callable[[], torch.optim.Optimizer]) -> Callable[[list], torch.optim.Optimizer]:
    """An optimizer factory with the class and settings of the one ``optimizer()`` returns."""

    def make(params: list) -> torch.optim.Optimizer:
        reference = optimizer()
        accepted = inspect.signature(type(reference)).parameters  # defaults also hold derived settings
        return type(reference)(params, **{k: v for k, v in reference.defaults.items() if k in accepted})

    return make


def digits_plain_loop(device: torch.device, like: BagOfTricksCLI | None = None) -> PlainLoop:
    """The loop a new user writes for base.yaml: the same model and data module, SGD with the YAML's settings.

    With ``like``, the loop takes that fit's memory format, a copy of its optimizer (fused, its groups'
    settings) and the process's deterministic mode, so it differs from the library only by the framework.
    """
    config = digits_config()
    data = DigitsDataModule(**config["data"]["init_args"])
    data.setup("fit")
    torch.manual_seed(0)
    model = create_model(config["model"]["backbone"], data.num_classes)
    if like is not None:
        memory_format = torch.channels_last if like.model.hparams.channels_last else torch.contiguous_format
        # The library's optimizer exists once its fit has started, before the first step.
        optimizer = copy_of(lambda trainer=like.trainer: trainer.optimizers[0])
        return PlainLoop(model, endless(data.train_dataloader()), optimizer, device, memory_format)
    sgd = config["model"]["optimizer"]["init_args"]
    # Nothing in a user's script switches deterministic algorithms on; the YAML's Trainer does, process-wide.
    make_sgd = lambda params: torch.optim.SGD(params, **sgd)  # noqa: E731
    return PlainLoop(model, endless(data.train_dataloader()), make_sgd, device, deterministic=False)
