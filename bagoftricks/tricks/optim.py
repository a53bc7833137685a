"""Optimizer-side tricks: no bias decay, discriminative learning rates, the linear scaling rule."""

from __future__ import annotations

from torch import nn


def _check_layer_lr_decay(layer_lr_decay: float) -> None:
    """Refuse a discriminative-LR factor outside (0, 1]."""
    if not 0 < layer_lr_decay <= 1:
        raise ValueError(f"layer_lr_decay must be in (0, 1] (1 = off), got {layer_lr_decay}.")


def _stages(model: nn.Module) -> tuple[dict[str, int], list[str]]:
    """Top-level child name -> stage index, and the stage names.

    Children before the first ``layer*`` child are the stem (stage 0), each ``layer*`` child is
    its own stage, the children after the last one are the head. A child between two layers joins
    the layer before it. A model without ``layer*`` children is one stage.
    """
    names = [name for name, _ in model.named_children()]
    layers = [name for name in names if name.startswith("layer")]
    if not layers:
        return dict.fromkeys(names, 0), ["all"]
    stage_names, stage_of = ["stem"], {}
    last_layer = names.index(layers[-1])
    for i, name in enumerate(names):
        if name.startswith("layer"):
            stage_names.append(name)
        elif i > last_layer and stage_names[-1] != "head":
            stage_names.append("head")
        stage_of[name] = len(stage_names) - 1
    return stage_of, stage_names


def param_groups(
    model: nn.Module,
    weight_decay: float,
    no_bias_decay: bool = True,
    layer_lr_decay: float = 1.0,
) -> list[dict]:
    """Optimizer parameter groups for no bias decay and, optionally, discriminative LRs.

    No bias decay (He et al. 2019 sec. 3.1, after Jia et al. 2018): weight decay only on
    conv/linear weights (``ndim > 1``); biases and BN gamma/beta get none. With
    ``no_bias_decay=False`` every parameter is decayed. (torchvision's
    ``split_normalization_params`` groups by module type; ``ndim`` also catches biases.)

    Discriminative LRs (``layer_lr_decay < 1``; Howard & Ruder 2018, ULMFiT): stages are the stem,
    each ``layer*`` child, and the head (see ``_stages``); each group carries
    ``lr_scale = layer_lr_decay ** (last_stage - stage)`` (the head gets 1.0), which the caller
    multiplies into its LR. ``last_stage`` counts frozen parameters too, so freezing the head does
    not rescale the other stages. Each group also has a ``name`` such as ``"layer3/decay"``.

    Every parameter that requires grad is in exactly one group; frozen ones are left out, and
    empty groups are omitted.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    _check_layer_lr_decay(layer_lr_decay)
    stage_of, stage_names = _stages(model)
    named = list(model.named_parameters())  # shared parameters appear once
    # Parameters owned directly by the model (no child) count as stem.
    stage = [stage_of.get(name.split(".")[0], 0) for name, _ in named]
    if layer_lr_decay == 1:  # one LR everywhere: a group per stage would only clutter the logs
        stage, stage_names = [0] * len(named), ["all"]
    last_stage = max(stage, default=0)
    groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for (_, param), s in zip(named, stage):
        if param.requires_grad:
            decay = param.ndim > 1 or not no_bias_decay
            groups.setdefault((s, decay), []).append(param)
    return [
        {
            "params": groups[key],
            "weight_decay": weight_decay if key[1] else 0.0,
            "lr_scale": layer_lr_decay ** (last_stage - key[0]),
            "name": f"{stage_names[key[0]]}/{'decay' if key[1] else 'no_decay'}",
        }
        for key in sorted(groups, key=lambda k: (k[0], not k[1]))
    ]


def scaled_lr(base_lr: float, batch_size: int, reference: int = 256) -> float:
    """The linear scaling rule: ``base_lr * batch_size / reference``.

    Goyal et al. 2017 ("Accurate, Large Minibatch SGD"); He et al. 2019 sec. 3.1 use 0.1 per 256.
    ``base_lr`` is the LR per ``reference`` images.
    """
    if batch_size <= 0 or reference <= 0:
        raise ValueError(f"batch_size and reference must be positive, got {batch_size} and {reference}.")
    return base_lr * batch_size / reference
