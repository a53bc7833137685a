"""Load weights into a model: a torchvision or bagoftricks state dict, a Lightning
checkpoint of ClassificationModule, or a torchvision weights name.

Files are read with `weights_only=True` (no arbitrary unpickling), and only
the classifier head may differ from the model (fine-tuning to new classes).
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from bagoftricks.errors import ConfigError, DataError, MissingDataError


def read_checkpoint(
    path: str | os.PathLike, *, role: str = "weights file", weights_only: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The network's tensors and the saved hyperparameters ({} for a bare state dict) of a weights file.

    The one reader of weights in this library: teachers, ``pretrained`` files and ``--ckpt_path``
    checks all come here. It takes a torchvision or bagoftricks state dict or a Lightning checkpoint
    of ClassificationModule, whose network keys lose their ``backbone.`` prefix. ``role`` names the
    setting in the messages (``model.teacher``); each failure has one wording, as a DataError.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{role} {path} is a directory, not a weights file; name the .ckpt or .pt file inside it.")
    if not path.is_file():
        raise MissingDataError(f"{role} {path} does not exist; fix the path (or train and save the model first).")
    not_torch = DataError(f"{role} {path} is not a file written by torch.save (empty, text or corrupt); pass the right file.")
    with open(path, "rb") as f:  # a zip archive (torch >= 1.6) or a bare pickle (older torch.save)
        if not (zipfile.is_zipfile(f) or f.seek(0) == 0 and f.read(1) == b"\x80"):
            raise not_torch
    try:
        # weights_only: unpickling arbitrary objects can run arbitrary code.
        checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as error:  # what weights-only loading raises for objects beyond tensors
        raise DataError(
            f"{role} {path} holds Python objects besides tensors, which are not unpickled for safety: save a "
            "state_dict instead, or for a Lightning checkpoint you trust pass --weights_only false."
        ) from error
    except Exception as error:  # torch.load fails in many ways on a file that is not its own
        raise not_torch from error
    hparams: dict[str, Any] = {}
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:  # a Lightning checkpoint
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        checkpoint = checkpoint["state_dict"]
    if not (isinstance(checkpoint, dict) and checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values())):
        raise DataError(f"{role} {path} does not hold a state dict (a dict of tensors); save model.state_dict() instead.")
    # ClassificationModule keeps the network under `backbone.`; other entries (metrics) are not the network's.
    if any(key.startswith("backbone.") for key in checkpoint):
        checkpoint = {k.removeprefix("backbone."): v for k, v in checkpoint.items() if k.startswith("backbone.")}
    return checkpoint, hparams


def _torchvision_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The weights of a torchvision weights name, downloaded into torch's hub cache."""
    try:
        weights = torchvision.models.get_weight(name)
    except (KeyError, ValueError) as error:
        raise ConfigError(
            f"Unknown torchvision weights {name!r}; use a name such as 'ResNet50_Weights.IMAGENET1K_V2'."
        ) from error
    try:
        return weights.get_state_dict(progress=True)
    except OSError as error:  # URLError is an OSError: no network, a proxy, a full disk
        raise DataError(
            f"Downloading {name} from {weights.url} failed ({error}); download the file by hand and pass its "
            "path as the weights file instead."
        ) from error


def fit_report(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> str:
    """What keeps ``state_dict`` from loading into ``model`` strictly ('' when it fits)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong_shape = [k for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    return "; ".join(
        f"{label}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
        if keys
    )


def load_pretrained(model: nn.Module, source: str | os.PathLike) -> nn.Module:
    """Load weights into `model` in place and return it.

    `source` is a weights file or a torchvision weights name. A head (`fc`) of
    another shape, e.g. 1000 ImageNet classes into a 10-class model, is left
    freshly initialised for fine-tuning; any other difference is an error.
    """
    if isinstance(source, str) and "_Weights." in source and not Path(source).exists():
        state_dict = _torchvision_state_dict(source)
    else:
        state_dict, _ = read_checkpoint(source, role="model.pretrained")
    own = model.state_dict()
    # A head for another label set is what fine-tuning expects: keep the model's fresh one.
    both = [k for k in ("fc.weight", "fc.bias") if k in own and k in state_dict]
    head = [k for k in both if state_dict[k].shape != own[k].shape]
    # Files saved before PyTorch 0.4.1 lack BN's step counter, which holds no weights.
    kept = [k for k in own if k in head or (k.endswith("num_batches_tracked") and k not in state_dict)]
    state_dict = {**state_dict, **{k: own[k] for k in kept}}
    problems = fit_report(model, state_dict)
    if problems:
        raise ConfigError(
            f"The weights in {source} do not fit this architecture ({problems}); check the model name and its flags."
        )
    if head:
        warnings.warn(f"The head (fc) in {source} has another shape; the model keeps its new, untrained head.")
    model.load_state_dict(state_dict, strict=True)
    return model
