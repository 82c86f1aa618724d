"""Mixup (Zhang et al. 2018): train on convex mixes of sample pairs and of their losses.

Each training batch is mixed with a random permutation of itself by a weight ``lam`` drawn from
Beta(alpha, alpha); the loss is the same mix of the losses against both labels, which equals the
loss against the mixed soft label for cross-entropy. Draws come from torch's global generator,
which the fit loop seeds per epoch, so a resumed epoch replays exactly. Evaluation is unmixed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from medcad.training.loop import StepOutput, move_to, unpack_batch


def mixed_output(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: Callable,
                 alpha: float) -> StepOutput:
    """One mixup step on a batch (a plain step when ``alpha <= 0``, out of training, or one sample)."""
    if not model.training or alpha <= 0 or inputs.shape[0] < 2:
        outputs = model(inputs)
        return StepOutput(loss_fn(outputs, targets), outputs, targets, int(targets.shape[0]))
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = torch.randperm(inputs.shape[0]).to(inputs.device)
    outputs = model(lam * inputs + (1 - lam) * inputs[partner])
    loss = lam * loss_fn(outputs, targets) + (1 - lam) * loss_fn(outputs, targets[partner])
    return StepOutput(loss, outputs, targets, int(targets.shape[0]))


def mixup_step(alpha: float) -> Callable:
    """A fit-loop step for (inputs, targets) batches with mixup in training mode."""

    def step(model: nn.Module, batch, loss_fn: Callable, device: torch.device) -> StepOutput:
        inputs, targets = move_to(unpack_batch(batch), device)
        return mixed_output(model, inputs, targets, loss_fn, alpha)

    return step
