"""The library's recipe against the plain PyTorch loop a user writes first, on Imagenette or Imagewoof.

    python benchmarks/plain_loop.py --data-root ~/data --dataset imagenette [--seeds 0 1 2] [--threads 1]
    python benchmarks/plain_loop.py --data-root ~/data --dataset imagewoof
    python benchmarks/plain_loop.py --data-root DIR --quick     # a smoke run of every code path
    python benchmarks/plain_loop.py --data-root ~/data --runs plain --log runs.jsonl   # then --runs recipe

With ``--log FILE`` every finished run is appended to FILE and a run already there is not trained again,
so the two sides (or a killed benchmark) can be run in separate calls; the summary covers every run logged.

Both train a ResNet-18 (ImageNet stem) for the same epochs, at the same 48-px random-resized crops of
every image of the official ``train/``, with the same batch and threads, and are tested on the official
``val/`` resized to 55 px and centre-cropped to 48:

* plain: torchvision's ``ImageFolder``, ``resnet18`` and ``v2`` transforms (random-resized crop and
  flip), SGD with Nesterov momentum 0.9 and weight decay 1e-4 under ``OneCycleLR`` (peak lr 0.1), fp32,
  in a dozen lines of loop, no trick;
* recipe: ``bagoftricks fit`` with ``experiments/<dataset>/cpu.yaml``, the same one-cycle schedule, the
  tweaks that the task's ablation table (results/) shows pay at this budget and larger crops (``RECIPE``),
  with ``--data.val_fraction 0`` so that it, too, trains on every image of ``train/``.

Runs alternate between the two seed by seed, so other processes' load hits them alike. The script prints
each run's test top-1 and wall time, the means, and the recipe minus plain paired by seed with its 95%
t interval.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import EXPERIMENTS, UNTIMED, library_cli, quiet
from scipy import stats
from torch.utils.data import DataLoader
from torchvision import datasets, models
from torchvision.transforms import v2

# The library's recipe: the plain loop's schedule (one-cycle to a peak lr of 0.1, which the library's
# step-decay baseline at 0.025 trails by 7.9 test points) with what the task's Imagenette ablation
# (results/imagenette-cpu) and a first try showed pays at 5 epochs: ResNet-D, FP16 (bf16-mixed on a CPU: half
# the step time), no bias decay (neutral there), and the augmentation a 5-epoch run can learn from: random-resized crops of
# 35-100% of the image (fast.ai's Imagenette runs) without colour jitter and PCA lighting. Mixup, label
# smoothing and zero gamma cost top-1 at this budget; one-cycle has its own warmup and annealing.
RECIPE = [
    "--schedule.name", "onecycle",
    "--model.optimizer.init_args.lr", "0.1",
    "--trainer.precision", "bf16-mixed",
    "--model.no_bias_decay", "true",
    "--model.backbone", "resnet18d",
    "--data.color_jitter", "0",
    "--data.pca_lighting", "0",
    "--data.crop_scale", "[0.35, 1.0]",
]  # fmt: skip
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CROP, EVAL_RESIZE, BATCH, EPOCHS = 48, 55, 64, 5


def plain(root: Path, seed: int, epochs: int, limit: int | None) -> float:
    """Test top-1 of the plain loop: the whole of what a user writes, no library."""
    torch.manual_seed(seed)
    train_tf = v2.Compose([v2.RandomResizedCrop(CROP), v2.RandomHorizontalFlip(), v2.ToImage(),
                           v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])  # fmt: skip
    test_tf = v2.Compose([v2.Resize(EVAL_RESIZE), v2.CenterCrop(CROP), v2.ToImage(),
                          v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])  # fmt: skip
    train = DataLoader(datasets.ImageFolder(root / "train", train_tf), batch_size=BATCH, shuffle=True, drop_last=True)
    test = DataLoader(datasets.ImageFolder(root / "val", test_tf), batch_size=256)
    model = models.resnet18(num_classes=len(train.dataset.classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    steps = min(len(train), limit or len(train))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=epochs * steps)
    for _ in range(epochs):
        model.train()
        for i, (x, y) in enumerate(train):
            if i == steps:
                break
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for i, (x, y) in enumerate(test):
            if limit and i == limit:
                break
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct / total


def recipe(root: Path, dataset: str, seed: int, epochs: int, limit: int | None) -> float:
    """Test top-1 of ``bagoftricks fit`` with cpu.yaml and ``RECIPE``, trained on every image of ``train/``."""
    configs = ["-c", str(EXPERIMENTS / "imagenette" / "cpu.yaml")]
    if dataset == "imagewoof":
        configs += ["-c", str(EXPERIMENTS / "imagewoof" / "cpu.yaml")]
    argv = [*configs, *RECIPE, "--data.root", str(root.parent), "--data.folder", root.name, "--data.val_fraction", "0",
            "--seed_everything", str(seed), "--trainer.max_epochs", str(epochs), "--trainer.logger", "false",
            "--trainer.enable_checkpointing", "false", "--trainer.limit_val_batches", "0", *UNTIMED]  # fmt: skip
    if limit:
        argv += ["--trainer.limit_train_batches", str(limit), "--trainer.limit_test_batches", str(limit)]
    with tempfile.TemporaryDirectory() as out:
        cli = library_cli(argv, out)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        return cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]["test/top1"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True, help="the folder holding imagenette2-*/ or imagewoof2-*/")
    parser.add_argument("--dataset", choices=("imagenette", "imagewoof"), default="imagenette")
    parser.add_argument("--folder", help="the copy to read under --data-root (default: the one <dataset>2*/ there)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both (the ablations' one per run)")
    parser.add_argument("--runs", nargs="+", choices=("plain", "recipe"), default=["plain", "recipe"], help="which side to train")
    parser.add_argument("--log", type=Path, help="a JSON-lines file: finished runs are appended, logged runs not trained again")
    parser.add_argument("--quick", action="store_true", help="2 batches per epoch, 1 epoch: a smoke test")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet()
    copies = sorted(p for p in args.data_root.glob(f"{args.dataset}2*") if (p / "train").is_dir())
    root = args.data_root / args.folder if args.folder else (copies[0] if len(copies) == 1 else None)
    if root is None:
        parser.error(f"{args.data_root} holds {len(copies)} copies of {args.dataset}: name one with --folder.")
    epochs, limit = (1, 2) if args.quick else (EPOCHS, None)

    setting = {"data": str(root), "epochs": epochs, "limit": limit, "threads": args.threads}
    logged = [json.loads(line) for line in args.log.read_text().splitlines()] if args.log and args.log.exists() else []
    runs: dict[str, dict[int, tuple[float, float]]] = {"plain": {}, "recipe": {}}
    for run in logged:
        if run["setting"] == setting and (run["name"] == "plain" or run["recipe"] == RECIPE):
            runs[run["name"]][run["seed"]] = (run["top1"], run["seconds"])
    for i, seed in enumerate(args.seeds):
        for name in ("plain", "recipe") if i % 2 == 0 else ("recipe", "plain"):  # alternate who goes first
            if name not in args.runs or seed in runs[name]:
                continue
            start = time.perf_counter()
            top1 = plain(root, seed, epochs, limit) if name == "plain" else recipe(root, args.dataset, seed, epochs, limit)
            runs[name][seed] = (top1, time.perf_counter() - start)
            if args.log:
                with open(args.log, "a") as f:
                    f.write(json.dumps({"name": name, "seed": seed, "top1": top1, "seconds": runs[name][seed][1],
                                        "recipe": RECIPE if name == "recipe" else None, "setting": setting,
                                        "torch": torch.__version__}) + "\n")  # fmt: skip

    print(f"\n{root}, {epochs} epochs at {CROP} px, batch {BATCH}, {args.threads} thread(s), torch {torch.__version__}")
    print(f"{'':<8} {'seed':>4} {'test top-1':>10} {'wall s':>7}")
    for name, by_seed in runs.items():
        for seed, (top1, seconds) in sorted(by_seed.items()):
            print(f"{name:<8} {seed:>4} {top1:10.4f} {seconds:7.0f}")
    for name, by_seed in runs.items():
        if by_seed:
            print(f"{name}: mean test top-1 {statistics.mean(t for t, _ in by_seed.values()):.4f} over seeds {sorted(by_seed)}")
    diffs = [runs["recipe"][s][0] - runs["plain"][s][0] for s in args.seeds if s in runs["recipe"] and s in runs["plain"]]
    if not diffs:
        return
    mean = statistics.mean(diffs)
    if len(diffs) > 1:
        half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
        print(f"recipe - plain, paired by seed: {100 * mean:+.2f} points, 95% CI [{100 * (mean - half):+.2f}, {100 * (mean + half):+.2f}]")
    else:
        print(f"recipe - plain: {100 * mean:+.2f} points (one seed: no interval)")


if __name__ == "__main__":
    main()
