"""Training throughput: the library's defaults against the plain PyTorch loop a user would write.

    python benchmarks/throughput.py                      # (a) resnet18 cifar stem 32 px, (b) resnet50d 128 px, CPU
    python benchmarks/throughput.py --model resnet50d --batch-size 8 --rounds 5
    python benchmarks/throughput.py --device cuda --precision 16-mixed --batch-size 256 --image-size 128 --model resnet50d
    python benchmarks/throughput.py --quick              # a smoke run of every code path, a few seconds

Three ways of training the same model on the same in-memory random images (so no decoding or
augmentation is timed) with the same batch size and optimizer (AdamW with torch's defaults, the
module's default):

* plain loop: the hand-written loop a user would otherwise write: NCHW, fp32;
* plain loop, same optimizations: that loop with channels_last and the library's precision;
* library: ``ClassificationModule`` and the Trainer that ``bagoftricks fit`` builds, with its
  defaults: channels_last, the LRSchedule callback, torchmetrics top-1, a TensorBoard logger
  writing every step, ModelCheckpoint. Only the progress bar, the model summary and the validation
  loop are off (the plain loops have none of them).

Each way runs ``--warmup`` + ``--steps`` steps per round; a step's time is the period between the
starts of consecutive steps (data fetch, step, hooks, logging: everything a step costs), and a
round's figure is the median step. The ways run one after another in every round, in a rotating
order, so load from other processes hits them alike; the printed ratios are the median over the
rounds, with their range. Training FLOP/s count 3 x forward MACs x 2 per image (forward +
backward = 3 forwards; MACs from ``model_stats``) and are set against a matmul rate measured in
the same rounds. For resnet50d the script also times forward + backward of ours against timm's
``resnet50d`` on the same input, alternating step by step.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
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


def clock(device: torch.device) -> float:
    """Wall time after the device has finished its queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


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


class StepClock(L.Callback):
    """The time at the start of every training step (the batch is fetched and on the device).

    With ``stop_after``, training stops after that many steps, however long the schedule is.
    """

    def __init__(self, device: torch.device, stop_after: int | None = None) -> None:
        self.device, self.stop_after, self.stamps = device, stop_after, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.stamps.append(clock(self.device))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.stop_after is not None and len(self.stamps) >= self.stop_after:
            trainer.should_stop = True


def periods(stamps: list[float], warmup: int) -> list[float]:
    return [b - a for a, b in zip(stamps, stamps[1:])][warmup:]


def run_library(case: Case, args, data: tuple[torch.Tensor, torch.Tensor], root: str) -> tuple[list[float], float]:
    """Per-step times, and seconds to the first step, of ``bagoftricks fit`` with its defaults."""
    steps = args.warmup + args.steps + 1  # one more start stamp closes the last timed step
    argv = [
        "--model.backbone", case.model, "--model.backbone_kwargs", json.dumps(case.kwargs),
        # Any data class: the CLI reads only its num_classes; the fit below gets the synthetic data.
        "--data", "bagoftricks.data.DigitsDataModule",
        "--trainer.accelerator", args.device, "--trainer.devices", "1", "--trainer.precision", args.precision,
        "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", root,
    ]  # fmt: skip
    device = torch.device(args.device)
    start = clock(device)
    cli = cli_main(argv, run=False)
    step_clock = StepClock(device)
    cli.trainer.callbacks.append(step_clock)
    cli.trainer.fit(cli.model, datamodule=SyntheticData(*data, case.batch_size, device))
    return periods(step_clock.stamps, args.warmup), step_clock.stamps[0] - start


def run_plain(
    case: Case, args, data: tuple[torch.Tensor, torch.Tensor], optimized: bool
) -> tuple[list[float], float]:
    """Per-step times, and seconds to the first step, of the loop a user writes by hand;
    ``optimized`` adds channels_last and the library's precision."""
    device = torch.device(args.device)
    start = clock(device)
    torch.manual_seed(0)
    memory_format = torch.channels_last if optimized else torch.contiguous_format
    model = create_model(case.model, NUM_CLASSES, **case.kwargs).to(device, memory_format=memory_format).train()
    optimizer = torch.optim.AdamW(model.parameters())
    mixed = optimized and args.precision in ("16-mixed", "bf16-mixed")
    dtype = torch.float16 if args.precision == "16-mixed" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=mixed and args.precision == "16-mixed")
    stamps = []
    for step, (x, y) in enumerate(synthetic_loader(*data, case.batch_size, device)):
        x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        stamps.append(clock(device))
        if step == args.warmup + args.steps:
            break
        with torch.autocast(device.type, dtype=dtype, enabled=mixed):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return periods(stamps, args.warmup), stamps[0] - start


def matmul_flops(device: torch.device, seconds: float, n: int = 2048) -> float:
    """fp32 FLOP/s of an n x n matmul, run for about ``seconds``."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b  # warm up
    count, start = 0, clock(device)
    while clock(device) - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (clock(device) - start)


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}..{fmt.format(max(values))}]"


def throughput(case: Case, args) -> None:
    device = torch.device(args.device)
    count = (args.warmup + args.steps + 2) * case.batch_size
    generator = torch.Generator().manual_seed(0)
    data = (torch.randn(count, 3, case.image_size, case.image_size, generator=generator),
            torch.randint(NUM_CLASSES, (count,), generator=generator))  # fmt: skip
    ways = {
        "plain loop (NCHW, fp32)": lambda root: run_plain(case, args, data, optimized=False),
        f"plain loop + channels_last, {args.precision}": lambda root: run_plain(case, args, data, optimized=True),
        "library defaults (bagoftricks fit)": lambda root: run_library(case, args, data, root),
    }
    plain, same, library = ways
    step_s: dict[str, list[float]] = {name: [] for name in ways}
    setup_s: dict[str, list[float]] = {name: [] for name in ways}
    matmul: list[float] = []
    names = list(ways)
    with tempfile.TemporaryDirectory() as root:
        for r in range(args.rounds):
            matmul.append(matmul_flops(device, args.matmul_seconds))
            for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate who goes first
                times, setup = ways[name](root)
                step_s[name].append(statistics.median(times))
                setup_s[name].append(setup)

    macs = model_stats(create_model(case.model, NUM_CLASSES, **case.kwargs), case.image_size)["macs"]
    print(f"\n{case}, {args.device}, {args.precision}: {args.steps} timed steps after {args.warmup} warmup, "
          f"{args.rounds} rounds; median over rounds [min..max]")  # fmt: skip
    print(f"{'':<44} {'step ms':>22} {'img/s':>8} {'set-up s':>9}")
    for name in ways:
        ms = [1e3 * t for t in step_s[name]]
        print(f"{name:<44} {spread(ms, '{:.0f}'):>22} {case.batch_size / statistics.median(step_s[name]):8.1f} "
              f"{statistics.median(setup_s[name]):9.2f}")  # fmt: skip
    speedup = [p / lib for p, lib in zip(step_s[plain], step_s[library])]
    overhead = [100 * (lib / s - 1) for s, lib in zip(step_s[same], step_s[library])]
    print(f"library / plain loop speed (target >= 1.00x): {spread(speedup)}x")
    print(f"framework overhead, library vs plain loop with the same optimizations (target <= 5%): "
          f"{spread(overhead, '{:+.1f}')}%")  # fmt: skip
    achieved = [6 * macs * case.batch_size / t for t in step_s[library]]
    fraction = [a / m for a, m in zip(achieved, matmul)]
    print(f"training FLOP/s of the library: {statistics.median(achieved) / 1e9:.1f} G = {spread(fraction)} of the "
          f"fp32 {2048}x{2048} matmul rate {statistics.median(matmul) / 1e9:.1f} G (target >= 0.80); "
          f"{macs / 1e6:.0f} M forward MACs per image")  # fmt: skip
    print("set-up s: from the start of a way to its first step (model, optimizer, Trainer, logger); not in img/s")


def versus_timm(case: Case, args) -> None:
    """Forward + backward of our resnet50d and timm's, same input and memory format, step by step alternating."""
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
        models = {name: copy.deepcopy(m).to(memory_format=memory_format).train() for name, m in (("ours", ours), ("timm", theirs))}
        xm = x.contiguous(memory_format=memory_format)
        times: dict[str, list[float]] = {name: [] for name in models}
        for i in range(1 + args.timm_steps):  # the first step of each warms up
            for name in (list(models) if i % 2 else list(models)[::-1]):
                model = models[name]
                model.zero_grad(set_to_none=True)
                start = clock(device)
                with torch.autocast(device.type, dtype=dtype, enabled=mixed):
                    loss = model(xm).float().logsumexp(1).mean()
                loss.backward()
                if i:
                    times[name].append(clock(device) - start)
        ratio = [t / o for t, o in zip(times["timm"], times["ours"])]
        print(f"  {str(memory_format).removeprefix('torch.'):<18} ours {1e3 * statistics.median(times['ours']):7.0f} ms, "
              f"timm {1e3 * statistics.median(times['timm']):7.0f} ms; our speed / timm's (target >= 0.98x): "
              f"{spread(ratio)}x (median over {len(ratio)} step pairs)")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="one model instead of the two default cases (e.g. resnet50d)")
    parser.add_argument("--batch-size", type=int, help="images per step (default: the case's)")
    parser.add_argument("--image-size", type=int, help="pixels (default: the case's; 128 for a --model)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="32-true", help="Lightning precision: 32-true, 16-mixed, bf16-mixed")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per way and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--rounds", type=int, default=3, help="repeats, interleaved; the median is printed")
    parser.add_argument("--timm-steps", type=int, default=6, help="timed step pairs of the timm comparison")
    parser.add_argument("--matmul-seconds", type=float, default=1.0)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--no-timm", action="store_true", help="skip the comparison with timm's resnet50d")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round: a smoke test of the script")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.warmup, args.rounds, args.timm_steps, args.matmul_seconds = 2, 1, 1, 1, 0.05
    cases = QUICK_CASES if args.quick else CPU_CASES
    if args.model:
        known = {case.model: case for case in cases}
        base = known.get(args.model, Case(args.model, 128, 16))
        cases = [Case(args.model, args.image_size or base.image_size, args.batch_size or base.batch_size, base.kwargs)]
    elif args.batch_size or args.image_size:
        cases = [Case(c.model, args.image_size or c.image_size, args.batch_size or c.batch_size, c.kwargs) for c in cases]
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} CPU threads")
    for case in cases:
        throughput(case, args)
        if case.model == "resnet50d" and not args.no_timm:
            versus_timm(case, args)


if __name__ == "__main__":
    main()
