"""Load weights into a model: a torchvision or bagoftricks state dict, a Lightning
checkpoint of ClassificationModule, or a torchvision weights name.

Files are read with `weights_only=True` (no arbitrary unpickling), and only
the classifier head may differ from the model (fine-tuning to new classes).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn


def _read_state_dict(source: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a weights file (torchvision, bagoftricks or Lightning) or a torchvision weights name."""
    path = Path(source)
    if not path.is_file():
        if isinstance(source, str) and "_Weights." in source:
            # e.g. "ResNet50_Weights.IMAGENET1K_V2": torchvision downloads and caches it.
            try:
                weights = torchvision.models.get_weight(source)
            except (KeyError, ValueError) as error:
                raise ValueError(
                    f"Unknown torchvision weights {source!r}; use a name such as 'ResNet50_Weights.IMAGENET1K_V2'."
                ) from error
            return weights.get_state_dict(progress=True)
        raise FileNotFoundError(
            f"No weights file at {path}; pass an existing file or a torchvision weights name "
            "such as 'ResNet50_Weights.IMAGENET1K_V2'."
        )
    try:
        # weights_only: unpickling arbitrary objects can run arbitrary code.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load fails in many ways on a file that is not its own
        if "Weights only load failed" in str(error):
            raise ValueError(
                f"{path} holds Python objects beyond tensors (e.g. a whole model), which are not "
                "unpickled for safety; save `model.state_dict()` with torch.save instead."
            ) from error
        raise ValueError(f"{path} is not a file written by torch.save; it may be corrupt.") from error
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:  # a Lightning checkpoint
        checkpoint = checkpoint["state_dict"]
    if not (isinstance(checkpoint, dict) and all(isinstance(v, torch.Tensor) for v in checkpoint.values())):
        raise ValueError(f"{path} does not hold a state dict (a dict of tensors).")
    # ClassificationModule keeps the network under `backbone.`; other entries (a teacher) are not ours.
    if any(key.startswith("backbone.") for key in checkpoint):
        checkpoint = {k.removeprefix("backbone."): v for k, v in checkpoint.items() if k.startswith("backbone.")}
    return checkpoint


def load_pretrained(model: nn.Module, source: str | os.PathLike) -> nn.Module:
    """Load weights into `model` in place and return it.

    `source` is a weights file or a torchvision weights name. A head (`fc`) of
    another shape, e.g. 1000 ImageNet classes into a 10-class model, is left
    freshly initialised for fine-tuning; any other difference is an error.
    """
    state_dict = _read_state_dict(source)
    own = model.state_dict()
    # A head for another label set is what fine-tuning expects: keep the model's fresh one.
    both = [k for k in ("fc.weight", "fc.bias") if k in own and k in state_dict]
    head = [k for k in both if state_dict[k].shape != own[k].shape]
    # Files saved before PyTorch 0.4.1 lack BN's step counter, which holds no weights.
    kept = [k for k in own if k in head or (k.endswith("num_batches_tracked") and k not in state_dict)]
    state_dict = {**state_dict, **{k: own[k] for k in kept}}

    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong_shape = [k for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    problems = [
        f"{label}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
        if keys
    ]
    if problems:
        raise ValueError(
            f"The weights in {source} do not fit this architecture ({'; '.join(problems)}); "
            "check the model name and its flags."
        )
    if head:
        warnings.warn(f"The head (fc) in {source} has another shape; the model keeps its new, untrained head.")
    model.load_state_dict(state_dict, strict=True)
    return model
