"""Per-image evidence: each run's ``predictions.pt`` and the paired comparisons they allow (McNemar on the
images only one step gets right, a paired bootstrap over images and seeds, the classes that move most)."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from bagoftricks.ablation.stats import mcnemar
from bagoftricks.ablation.store import replacing

TOP_K = 5  # enough for top-5 accuracy and for "which classes does it confuse"


class PredictionRecorder(Callback):
    """Keeps the top-k class ids and the labels of every batch ``trainer.predict`` sees."""

    def __init__(self) -> None:
        self.topk: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.topk.append(outputs.topk(min(TOP_K, outputs.shape[-1]), dim=-1).indices.to("cpu", torch.int16))
        self.labels.append(batch[1].to("cpu", torch.int16))


def predict_split(trainer: L.Trainer, model: L.LightningModule, loader) -> dict[str, torch.Tensor]:
    """``{"topk": int16 [N, k], "labels": int16 [N]}`` of the final weights on one loader, in its (fixed) order."""
    recorder = PredictionRecorder()
    trainer.callbacks.append(recorder)
    try:
        trainer.predict(model, dataloaders=loader, return_predictions=False)
    finally:
        trainer.callbacks.remove(recorder)
    return {"topk": torch.cat(recorder.topk), "labels": torch.cat(recorder.labels)}


def save_predictions(path: Path, trainer: L.Trainer, model: L.LightningModule, datamodule, with_test: bool) -> None:
    """``predictions.pt`` of one run: its val (and test) predictions; under DDP rank 0 alone predicts every image."""
    if not trainer.is_global_zero:
        return
    if trainer.world_size > 1:
        root = trainer.strategy.root_device
        trainer = L.Trainer(accelerator=root.type, devices=[root.index] if root.type == "cuda" else 1, logger=False,
                            enable_progress_bar=False, enable_model_summary=False, precision=trainer.precision)  # fmt: skip
    predictions = {"val": predict_split(trainer, model, datamodule.val_dataloader())}
    if with_test:
        predictions["test"] = predict_split(trainer, model, datamodule.test_dataloader())
    with replacing(path) as tmp:
        torch.save(predictions, tmp)


def load_correct(out_dir: Path, records: list) -> tuple[str, dict[str, dict[int, torch.Tensor]], torch.Tensor] | None:
    """The split used, each step's per-seed top-1 correctness (bool [N]) and the labels; None without predictions."""
    loaded = {}
    for record in records:
        path = out_dir / record.run_dir / "predictions.pt"
        if path.is_file():
            loaded[(record.step, record.seed)] = torch.load(path, weights_only=True)
    if not loaded:
        return None
    split = "test" if all("test" in p for p in loaded.values()) else "val"
    labels = next(iter(loaded.values()))[split]["labels"]
    correct: dict[str, dict[int, torch.Tensor]] = {}
    for (step, seed), p in loaded.items():
        if torch.equal(p[split]["labels"], labels):  # runs over another split size cannot be paired image by image
            correct.setdefault(step, {})[seed] = p[split]["topk"][:, 0] == labels
    return split, correct, labels


def bootstrap_difference(a: torch.Tensor, b: torch.Tensor, samples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of mean(a) - mean(b) (in points) for correctness ``[seeds, images]``,
    resampling images and seeds together (the same images and seeds for both: a paired bootstrap)."""
    generator = torch.Generator().manual_seed(seed)
    difference = a.float() - b.float()  # [S, N]
    seeds, images = difference.shape
    means = []
    for start in range(0, samples, 250):  # chunks bound the memory to 250 x S x N
        n = min(250, samples - start)
        seed_index = torch.randint(seeds, (n, seeds), generator=generator)
        image_index = torch.randint(images, (n, images), generator=generator)
        resampled = difference[seed_index.unsqueeze(-1), image_index.unsqueeze(1)]  # [n, S, N]
        means.append(resampled.mean(dim=(1, 2)))
    low, high = torch.quantile(torch.cat(means), torch.tensor([0.025, 0.975])).tolist()
    return 100 * low, 100 * high


def per_class_delta(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, top: int = 3) -> list[tuple[int, float]]:
    """The ``top`` classes whose accuracy (mean over seeds, points) changes most from ``b`` to ``a``."""
    deltas = []
    for cls in labels.unique().tolist():
        mask = labels == cls
        deltas.append((cls, 100 * (a[:, mask].float().mean() - b[:, mask].float().mean()).item()))
    return sorted(deltas, key=lambda item: -abs(item[1]))[:top]


def per_image_section(out_dir: Path, records: list, comparisons: list[tuple[str, str]], largest: int = 3) -> str:
    """The markdown section of results.md on the runs' predictions; empty without ``predictions.pt`` files."""
    found = load_correct(out_dir, records)
    if found is None:
        return ""
    split, correct, labels = found
    lines = [f"### Image by image ({split} split, {len(labels)} images)", ""]
    lines += ["| step | vs | seeds | only vs right | only step right | McNemar mid-p | Δ top-1 [95% bootstrap] |", "|---|---|---|---|---|---|---|"]
    effects = []
    for step, reference in comparisons:
        seeds = sorted(set(correct.get(step, {})) & set(correct.get(reference, {})))
        if not seeds:
            continue
        a = torch.stack([correct[step][s] for s in seeds])
        b = torch.stack([correct[reference][s] for s in seeds])
        only_b, only_a = int((b & ~a).sum()), int((a & ~b).sum())
        _, mid_p = mcnemar(only_a, only_b)
        delta = 100 * (a.float().mean() - b.float().mean()).item()
        low, high = bootstrap_difference(a, b)
        lines.append(f"| {step} | {reference} | {len(seeds)} | {only_b} | {only_a} | {mid_p:.3g} | {delta:+.2f} [{low:+.2f}, {high:+.2f}] |")
        effects.append((abs(delta), step, reference, per_class_delta(a, b, labels)))
    lines += ["", "Only vs / only step right: images (summed over the paired seeds) one run of the pair gets right and the other "
              "does not (equal accuracy, different mistakes shows here); McNemar's mid-p treats them as fair coins under no "
              "effect; the bootstrap resamples images and seeds together.", ""]
    for _, step, reference, classes in sorted(effects, key=lambda e: -e[0])[:largest]:
        moves = ", ".join(f"class {cls} {d:+.1f}" for cls, d in classes if not math.isclose(d, 0.0, abs_tol=1e-9)) or "none"
        lines.append(f"- {step} vs {reference}: largest per-class accuracy changes (points): {moves}.")
    return "\n".join([*lines, ""])
