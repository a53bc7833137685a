"""Where the library's training step time goes: torch.profiler self time by kind of op.

    python benchmarks/profile_step.py --threads 1                  # the cases of throughput.py
    python benchmarks/profile_step.py --cases digits --steps 5     # the default digits config as `bagoftricks fit` runs it
    python benchmarks/profile_step.py --cases digits --plain       # ... and then the plain loop it is compared with
    python benchmarks/profile_step.py --model resnet50d --batch-size 8 --steps 5
    python benchmarks/profile_step.py --library-args "--model.optimizer torch.optim.AdamW --model.optimizer.fused true"
    python benchmarks/profile_step.py --compile                    # the torch.compile'd step
    python benchmarks/profile_step.py --quick                      # a smoke run

The same cases as ``throughput.py``: ``bagoftricks fit``'s defaults on random in-memory data (a, b),
and ``experiments/digits/base.yaml`` on the real digits as the CLI builds it (digits; with
``--library-args`` to try a setting), profiled for ``--steps`` steps after ``--warmup``. Every op's own (self) time is put in one bin: the optimizer
(its step and zero_grad), convolutions, batch norm, the fc matmul, elementwise ops, or Python
outside any op (Lightning's loop, hooks, logging). The convolutions' FLOP/s (3 x forward MACs x 2
per image, over their own time) are set against a 2048 x 2048 matmul's, which shows how much of
the gap between a step's FLOP/s and the matmul's is the convolutions' own efficiency. It also
counts the step's reads of tensor values on the host (each a device sync on a GPU), in all and
inside ``training_step`` and the backward pass. With ``--plain``, the digits case's plain loop
(``common.digits_plain_loop``) follows under the same profiler and bins, to read the two bin by bin.
"""

from __future__ import annotations

import argparse
import tempfile

import lightning as L
import torch

# A sibling module, not a package: `python benchmarks/profile_step.py` puts benchmarks/ on sys.path.
from common import (
    COMPUTE_DTYPES,
    NUM_CLASSES,
    Alternate,
    Case,
    Matmul,
    SyntheticData,
    add_clock_args,
    add_library_args,
    apply_clock_args,
    case_argv,
    digits_argv,
    digits_config,
    digits_plain_loop,
    library_cli,
    quiet,
    random_images,
    select_cases,
)

from bagoftricks.models import create_model, model_stats


class ProfilerStep(L.Callback):
    """Marks each training step for torch.profiler's schedule, and the module's training_step as a
    region: Lightning runs it inside ``optimizer.step(closure)``, so only the region tells the
    optimizer's own ops from the forward's."""

    def __init__(self, profiler) -> None:
        self.profiler = profiler

    def on_train_start(self, trainer, pl_module) -> None:
        step = pl_module.training_step

        def training_step(*args, **kwargs):
            with torch.profiler.record_function("training_step"):
                return step(*args, **kwargs)

        pl_module.training_step = training_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx:
            self.profiler.step()


def regions(event) -> list[str]:
    """The op's name and those of every region it ran in, innermost first."""
    chain = []
    while event is not None:
        chain.append(event.name)
        event = event.cpu_parent
    return chain


def in_step(event) -> bool:
    """Whether the op ran in the module's training_step or in the backward pass."""
    return any(n == "training_step" or n.startswith("autograd::engine") for n in regions(event))


# What every read of a tensor's value on the host ends in (.item(), float(t), an `if` on a tensor):
# on a GPU each one makes the CPU wait for the device to finish its queue.
HOST_READ = "aten::_local_scalar_dense"


def in_loader(event) -> bool:
    """Whether the op ran while the DataLoader made the next batch (torch names that region)."""
    return any(n.startswith("enumerate(DataLoader)") for n in regions(event))


def op_kind(event) -> str:
    """What an op's own time was spent on, from its name and the regions it ran in."""
    name = event.name
    if name.startswith("ProfilerStep"):
        return "outside any op (Python: Lightning, hooks, logging)"
    if name == "aten::fill_" and any(n.startswith("aten::empty") for n in regions(event)[1:3]):
        # torch.use_deterministic_algorithms fills every new tensor with NaN unless
        # torch.utils.deterministic.fill_uninitialized_memory is off (the CLI turns it off since issue 26)
        return "NaN fill of new tensors (deterministic mode)"
    if in_loader(event):
        return "data loading (the next batch: transforms, collate)"
    if not in_step(event) and any(n.startswith("Optimizer.") for n in regions(event)):
        return "optimizer step and zero_grad"
    if "conv" in name:
        return "convolution, forward + backward"
    if "batch_norm" in name:
        return "batch norm, forward + backward"
    if name in ("aten::mm", "aten::addmm"):
        return "matmul (the fc layer)"
    if name.startswith("## Call CompiledFxGraph"):  # torch.compile's generated kernels run inside this region
        return "compiled kernels (fused batch norm, ReLU, adds, ...)"
    if not name.startswith("aten::"):
        return "own time of named regions (Python)"
    return "elementwise, pooling, copies, loss"


def profile_library(case: Case | None, args) -> None:
    """Where the library's step time goes: torch.profiler self time by kind of op, per step.

    ``case`` None profiles the named digits case: ``bagoftricks fit -c experiments/digits/base.yaml``
    as the CLI builds it, on the real digits."""
    from torch.profiler import ProfilerActivity, profile, schedule

    device = torch.device(args.device)
    steps = max(1, args.warmup) + args.steps + 1
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    plan = schedule(wait=0, warmup=max(1, args.warmup), active=args.steps, repeat=1)
    with tempfile.TemporaryDirectory() as root, profile(activities=activities, schedule=plan) as profiler:
        if case is None:
            cli = library_cli(digits_argv(args), root)
            data, model, image_size = cli.datamodule, cli.model.hparams.backbone, cli.datamodule.image_size
            batch_size, kwargs = cli.datamodule.batch_size, {}
        else:
            cli = library_cli(case_argv(case, args), root)
            data = SyntheticData(random_images((steps + 2) * case.batch_size, case.image_size), case.batch_size, device)
            model, image_size, batch_size, kwargs = case.model, case.image_size, case.batch_size, case.kwargs
        cli.trainer.callbacks[:0] = [ProfilerStep(profiler), Alternate(device, stop_after=steps + 1)]
        cli.trainer.fit(cli.model, datamodule=data)
    print_profile("library step", profiler.events(), device, model, kwargs, image_size, batch_size, args.precision)


def profile_plain(args) -> None:
    """The digits case's plain loop (``common.digits_plain_loop``) under the same profiler and bins,
    so the library's profile can be read against it bin by bin."""
    from torch.profiler import ProfilerActivity, profile, schedule

    device = torch.device(args.device)
    loop = digits_plain_loop(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    plan = schedule(wait=0, warmup=max(1, args.warmup), active=args.steps, repeat=1)
    with profile(activities=activities, schedule=plan) as profiler:
        for _ in range(max(1, args.warmup) + args.steps):
            loop.step()
            profiler.step()
    config = digits_config()
    data = config["data"]["init_args"]
    print_profile("plain loop step", profiler.events(), device, config["model"]["backbone"], {}, data["image_size"],
                  data["batch_size"], "32-true")  # fmt: skip


def print_profile(title: str, events, device, model, kwargs, image_size, batch_size, precision) -> None:
    """The profiled steps' self time by kind of op, their host reads, and the convolutions' FLOP/s."""
    profiled = [e for e in events if e.name.startswith("ProfilerStep")]
    seconds = sum(e.cpu_time_total for e in profiled) / 1e6 / len(profiled)
    spent: dict[str, float] = {}
    for event in events:
        own = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
        spent[op_kind(event)] = spent.get(op_kind(event), 0.0) + own / 1e6 / len(profiled)  # us -> s per step
    macs = model_stats(create_model(model, NUM_CLASSES, **kwargs), image_size)["macs"]
    matmul = Matmul(device, 1.0, COMPUTE_DTYPES.get(precision, torch.float32))
    matmul.step()
    print(f"{title} under torch.profiler, {len(profiled)} steps: {1e3 * seconds:.0f} ms "
          f"({'device' if device.type == 'cuda' else 'CPU'} self time by kind of op)")  # fmt: skip
    for kind, t in sorted(spent.items(), key=lambda item: -item[1]):
        print(f"  {kind:<52} {1e3 * t:7.1f} ms {100 * t / seconds:5.1f}%")
    reads = [e for e in events if e.name == HOST_READ]
    loading = sum(map(in_loader, reads))
    stepping = sum(map(in_step, reads))
    print(f"  host reads of tensor values ({HOST_READ}) per step: {stepping / len(profiled):g} in training_step "
          f"and backward, {(len(reads) - loading - stepping) / len(profiled):g} in the loop and callbacks, "
          f"{loading / len(profiled):g} in data loading (of CPU tensors: no device wait)")  # fmt: skip
    conv = spent.get("convolution, forward + backward")
    if conv:
        print(f"  the convolutions alone run at {6 * macs * batch_size / conv / 1e9:.1f} GFLOP/s = "
              f"{6 * macs * batch_size / conv / matmul.rates[0]:.2f} of the matmul's "
              f"{matmul.rates[0] / 1e9:.1f} G")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_library_args(parser)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps")
    parser.add_argument("--warmup", type=int, default=1, help="unprofiled steps before them")
    add_clock_args(parser)
    parser.add_argument("--plain", action="store_true", help="after the digits case, profile its plain loop")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one step: a smoke test of the script")
    args = parser.parse_args(argv)
    apply_clock_args(args)
    if args.quick:
        args.steps, args.warmup = 1, 1
    quiet()
    for case in [*select_cases(args), *([None] if "digits" in args.cases else [])]:
        name = case or "digits: experiments/digits/base.yaml as `bagoftricks fit` builds it"
        print(f"\n{name}, {args.device}, {args.precision}, {torch.get_num_threads()} CPU threads")
        profile_library(case, args)
    if "digits" in args.cases and args.plain:
        profile_plain(args)


if __name__ == "__main__":
    main()
