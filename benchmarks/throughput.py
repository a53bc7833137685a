"""Training throughput: the library's defaults against the plain PyTorch loop a user would write.

    python benchmarks/throughput.py                      # cases a, b and digits below, CPU
    python benchmarks/throughput.py --threads 1 --clock cpu   # the same on a CPU shared with other jobs
    python benchmarks/throughput.py --cases digits --steps 10 --rounds 3   # the named digits case only
    python benchmarks/throughput.py --model resnet50d --batch-size 8 --steps 8 --cases b
    python benchmarks/throughput.py --device cuda --precision 16-mixed --batch-size 256 --image-size 128 --model resnet50d --cases b
    python benchmarks/throughput.py --compile            # torch.compile in the library and the optimized loop
    python benchmarks/throughput.py --quick              # a smoke run of every code path

(benchmarks/profile_step.py shows where the library's step time goes.)

Cases a (resnet18, cifar stem, 32 px, batch 16) and b (resnet50d, 128 px, batch 8) train the same
model on the same in-memory random images (so no decoding or augmentation is timed) with the
same batch size and optimizer (AdamW, the module's default) in three ways:

* plain loop: the hand-written loop a user would otherwise write: NCHW, fp32;
* plain loop, same optimizations: that loop with channels_last, the library's precision, a
  copy of the library's optimizer settings and, with ``--compile``, ``model.compile()``, so it
  differs from the library only by the framework;
* library: ``ClassificationModule`` and the Trainer that ``bagoftricks fit`` builds, with its
  defaults: channels_last, the LRSchedule callback, torchmetrics top-1, StepLog writing the raw
  loss and LR every ``log_every_n_steps`` to a TensorBoard logger, ModelCheckpoint. Only the
  progress bar, the model summary and the validation loop are off (the plain loops have none).

The named case ``digits`` is what a new user tries first: ``bagoftricks fit -c
experiments/digits/base.yaml`` (resnet18, 32 px, batch 64, SGD with momentum, step decay) with the
Trainer and module exactly as the CLI builds them (progress bar, summary, validation and
checkpoints included), at torch's default threads unless ``--threads`` is given, against the
loop that user would write: the same model, the digits DataModule's own train loader (so
augmentation and fetching cost the same), ``SGD`` with the YAML's settings, NCHW, fp32, no
logging, and no deterministic algorithms (the YAML's ``trainer.deterministic`` switches them on for
the whole process; nothing in a user's script does). A third way, that loop with the library's layout
(channels_last), a copy of its optimizer (fused) and the process's deterministic mode, differs from
the library only by the framework: the framework overhead. The epoch-end validation and checkpoint
fall into one library step every epoch; the medians leave them out, as they leave out the plain
loop's reshuffle.

The ways alternate step by step (``common.Alternate``): at the start of every library step a
callback runs one step of each plain loop (and, in cases a and b, one short matmul), and the
library's step is the time from that callback's end to its next start. Ratios are medians over
the paired steps of all rounds, after ``--warmup`` steps per round, with the interquartile range in
brackets. Training FLOP/s count 3 x forward MACs x 2 per image (forward + backward = 3 forwards;
MACs from ``model_stats``) against the FLOP/s of a 2048 x 2048 matmul in the library's compute
dtype. For resnet50d the script also times forward + backward of ours against timm's
``resnet50d`` on the same input, alternating step by step.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile

import torch
from common import (
    COMPUTE_DTYPES,
    NUM_CLASSES,
    Alternate,
    Case,
    Matmul,
    PlainLoop,
    SyntheticData,
    add_clock_args,
    add_library_args,
    apply_clock_args,
    case_argv,
    clock,
    copy_of,
    digits_argv,
    digits_config,
    digits_plain_loop,
    library_cli,
    quiet,
    random_images,
    select_cases,
    summary,
    synthetic_loader,
)

from bagoftricks.models import create_model, model_stats


def report(title: str, times: dict[str, list[float]], batch_size: int, plain: str, library: str) -> None:
    """Step ms and img/s of every way, and the library's speed relative to the plain loop's."""
    print(f"\n{title}; median [interquartile range]")
    width = max(map(len, times))
    print(f"{'':<{width}} {'step ms':>20} {'img/s':>8}")
    for name, seconds in times.items():
        print(f"{name:<{width}} {summary([1e3 * t for t in seconds], '{:.0f}'):>20} "
              f"{batch_size / statistics.median(seconds):8.1f}")  # fmt: skip
    speed = [p / lib for p, lib in zip(times[plain], times[library])]
    print(f"library speed / plain loop's (target >= 1.00x): {summary(speed)}x")


def throughput(case: Case, args) -> None:
    device = torch.device(args.device)
    steps = args.warmup + args.steps + 1  # one more library step closes the last timed one
    data = random_images((steps + 1) * case.batch_size, case.image_size)
    matmul_dtype = COMPUTE_DTYPES.get(args.precision, torch.float32)
    compiled = ", compiled" if args.compile else ""
    plain, same, library = "plain loop (NCHW, fp32)", f"plain loop + channels_last, {args.precision}{compiled}", "library"
    times: dict[str, list[float]] = {plain: [], same: [], library: []}
    rates: list[float] = []
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.rounds):
            cli = library_cli(case_argv(case, args), root)
            torch.manual_seed(0)
            models = [create_model(case.model, NUM_CLASSES, **case.kwargs) for _ in range(2)]
            loops = {
                plain: PlainLoop(models[0], iter(synthetic_loader(data, case.batch_size, device)), torch.optim.AdamW, device),
                # The library's optimizer exists once its fit has started, before the first step.
                same: PlainLoop(
                    models[1], iter(synthetic_loader(data, case.batch_size, device)),
                    copy_of(lambda trainer=cli.trainer: trainer.optimizers[0]), device,
                    torch.channels_last, args.precision, args.compile,
                ),
            }  # fmt: skip
            matmul = Matmul(device, args.matmul_seconds, matmul_dtype)
            alternate = Alternate(device, {name: loop.step for name, loop in loops.items()} | {"matmul": matmul.step}, stop_after=steps)
            cli.trainer.callbacks.insert(0, alternate)
            cli.trainer.fit(cli.model, datamodule=SyntheticData(data, case.batch_size, device))
            for name in times:
                times[name] += alternate.times[name][args.warmup : args.warmup + args.steps]
            rates += matmul.rates[args.warmup : args.warmup + args.steps]

    report(f"{case}, {args.device}, {args.precision}{compiled}: {len(times[library])} paired steps ({args.rounds} rounds "
           f"of {args.steps} after {args.warmup} warmup)", times, case.batch_size, plain, library)  # fmt: skip
    macs = model_stats(create_model(case.model, NUM_CLASSES, **case.kwargs), case.image_size)["macs"]
    overhead = [100 * (lib / s - 1) for s, lib in zip(times[same], times[library])]
    fraction = [6 * macs * case.batch_size / lib / rate for lib, rate in zip(times[library], rates)]
    print(f"framework overhead: library vs plain loop with the same optimizations (target <= 5%): "
          f"{summary(overhead, '{:+.1f}')}%")  # fmt: skip
    dtype = str(matmul_dtype).removeprefix("torch.")
    print(f"training FLOP/s of the library / {dtype} 2048x2048 matmul FLOP/s (target >= 0.80): {summary(fraction)} "
          f"({6 * macs * case.batch_size / statistics.median(times[library]) / 1e9:.1f} G / "
          f"{statistics.median(rates) / 1e9:.1f} G; {macs / 1e6:.0f} M forward MACs per image)")  # fmt: skip


def digits(args) -> None:
    """The named case: ``bagoftricks fit -c experiments/digits/base.yaml`` against a new user's plain loop."""
    config = digits_config()
    device = torch.device(args.device)
    steps = args.warmup + args.steps + 1
    plain, library = "plain loop (NCHW, fp32, SGD, no logging)", "library (bagoftricks fit -c base.yaml)"
    same = "plain loop, the library's layout, optimizer and deterministic mode"
    times: dict[str, list[float]] = {plain: [], same: [], library: []}
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.rounds):
            cli = library_cli(digits_argv(args), root)
            loops = {plain: digits_plain_loop(device), same: digits_plain_loop(device, cli)}
            alternate = Alternate(device, {name: loop.step for name, loop in loops.items()}, stop_after=steps)
            cli.trainer.callbacks.insert(0, alternate)
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            for name, key in ((plain, plain), (same, same), (library, "library")):
                times[name] += alternate.times[key][args.warmup : args.warmup + args.steps]
    report(f"digits (experiments/digits/base.yaml: {config['model']['backbone']}, "
           f"{config['data']['init_args']['image_size']} px, batch {config['data']['init_args']['batch_size']}, SGD), "
           f"real digits, {args.device}, {torch.get_num_threads()} CPU threads, {args.clock} clock: "
           f"{len(times[library])} paired steps ({args.rounds} rounds of {args.steps} after {args.warmup} warmup)",
           times, config["data"]["init_args"]["batch_size"], plain, library)  # fmt: skip
    overhead = [100 * (lib / s - 1) for s, lib in zip(times[same], times[library])]
    print(f"framework overhead: library vs the plain loop with its layout, optimizer and deterministic mode: "
          f"{summary(overhead, '{:+.1f}')}%")  # fmt: skip


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
    if "digits" in args.cases:
        digits(args)


if __name__ == "__main__":
    main()
