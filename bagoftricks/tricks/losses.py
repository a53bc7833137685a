"""Loss-side tricks: label smoothing as soft targets, and knowledge distillation.

Label smoothing is expressed as a target distribution rather than a loss flag, so that
mixup/cutmix can mix the smoothed targets and smoothing is folded in exactly once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_smoothing(smoothing: float) -> None:
    """Refuse a smoothing outside [0, 1)."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}.")


def _check_distillation(temperature: float, alpha: float) -> None:
    """Refuse a temperature <= 0 or a hard-target weight outside [0, 1]."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")


def smooth_targets(target: Tensor, num_classes: int, smoothing: float) -> Tensor:
    """Class ids ``[N]`` to label-smoothed probabilities ``[N, C]``: ``(1 - s) * onehot + s / C``.

    Label smoothing, Szegedy et al. 2016 ("Rethinking the Inception Architecture"), sec. 7;
    He et al. 2019 sec. 5.2. This is exactly the target ``F.cross_entropy(label_smoothing=s)``
    uses: the ``s / C`` share also goes to the true class.

    Built by a scatter into a filled tensor rather than ``F.one_hot``, whose range check reads the
    labels' min and max on the host (a GPU sync per batch); an id outside ``[0, C)`` is still
    refused by the scatter (an error on the CPU, a device assert on a GPU).
    """
    _check_smoothing(smoothing)
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class ids, got dtype {target.dtype}; pass the labels as an integer tensor.")
    probs = torch.full((target.shape[0], num_classes), smoothing / num_classes, device=target.device)
    return probs.scatter_(1, target.long()[:, None], 1.0 - smoothing + smoothing / num_classes)


def soft_target_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Mean over the batch of ``sum_c -p_c * log_softmax(logits)_c``.

    The cross-entropy for soft targets (smoothed and/or mixed). The log-softmax runs in float32
    even under autocast: in half precision it loses the small probabilities that smoothing adds.
    """
    return F.cross_entropy(logits.float(), target_probs.float())  # torch takes class probabilities as targets


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    temperature: float,
    alpha: float,
) -> Tensor:
    """``alpha * CE(student, target) + (1 - alpha) * T^2 * KL(p_teacher^T || p_student^T)``.

    Knowledge distillation, Hinton et al. 2015 ("Distilling the Knowledge in a Neural Network");
    He et al. 2019 sec. 5.3. Both distributions are softened by the temperature ``T``; the
    ``T^2`` factor (Hinton et al. sec. 2) keeps the soft-target gradients on the same scale as
    the hard-target ones when ``T`` changes. The KL is averaged over the batch ("batchmean").

    Args:
        student_logits: ``[N, C]``.
        teacher_logits: ``[N, C]``; detached here, so the teacher never receives gradients.
        target: class ids ``[N]`` (plain CE) or probabilities ``[N, C]`` (soft CE, e.g. after
            mixup or label smoothing).
        temperature: ``T > 0``.
        alpha: weight of the true-label term, in ``[0, 1]``.
    """
    _check_distillation(temperature, alpha)
    student = student_logits.float()
    teacher = teacher_logits.detach().float()
    if target.is_floating_point() and target.ndim == student.ndim:
        hard = soft_target_cross_entropy(student, target)
    else:
        hard = F.cross_entropy(student, target)
    kl = F.kl_div(
        F.log_softmax(student / temperature, dim=-1),
        F.log_softmax(teacher / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * hard + (1.0 - alpha) * temperature**2 * kl
