"""Loss-side tricks: label smoothing as soft targets, and knowledge distillation.

Label smoothing is expressed as a target distribution rather than a loss flag, so that
mixup/cutmix can mix the smoothed targets and smoothing is folded in exactly once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def check_smoothing(smoothing: float) -> None:
    """Refuse a smoothing outside [0, 1) (a module checks its config with it at start-up)."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"model.label_smoothing must be in [0, 1), got {smoothing}.")


def check_distillation(temperature: float, alpha: float) -> None:
    """Refuse a temperature <= 0 or a hard-target weight outside [0, 1]."""
    if not temperature > 0:
        raise ValueError(f"model.distill_temperature must be > 0, got {temperature}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"model.distill_alpha must be in [0, 1], got {alpha}.")


def smooth_targets(target: Tensor, num_classes: int, smoothing: float) -> Tensor:
    """Class ids ``[N]`` to label-smoothed probabilities ``[N, C]``: ``(1 - s) * onehot + s / C``.

    Label smoothing, Szegedy et al. 2016 ("Rethinking the Inception Architecture"), sec. 7;
    He et al. 2019 sec. 5.2. This is exactly the target ``F.cross_entropy(label_smoothing=s)``
    uses: the ``s / C`` share also goes to the true class.
    """
    check_smoothing(smoothing)
    onehot = F.one_hot(target.long(), num_classes).float()
    return onehot * (1.0 - smoothing) + smoothing / num_classes


def soft_target_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Mean over the batch of ``sum_c -p_c * log_softmax(logits)_c``.

    The cross-entropy for soft targets (smoothed and/or mixed). The log-softmax runs in float32
    even under autocast: in half precision it loses the small probabilities that smoothing adds.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1)
    return torch.sum(-target_probs.float() * log_probs, dim=-1).mean()


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
    check_distillation(temperature, alpha)
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
