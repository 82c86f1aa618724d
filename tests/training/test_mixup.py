"""Mixup step: the mixed batch and the mixed loss, replayed from the same torch seed; off in eval mode."""

import torch
from torch import nn
from torch.nn import functional as F

from medcad.training.mixup import mixed_output, mixup_step


def _model():
    torch.manual_seed(1)
    return nn.Linear(3, 2)


def test_mixup_mixes_inputs_and_losses_with_one_beta_draw():
    model = _model().train()
    inputs, targets = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 1, 0])
    torch.manual_seed(7)
    step = mixed_output(model, inputs, targets, F.cross_entropy, alpha=0.4)
    torch.manual_seed(7)
    lam = float(torch.distributions.Beta(0.4, 0.4).sample())
    partner = torch.randperm(6)
    outputs = model(lam * inputs + (1 - lam) * inputs[partner])
    expected = lam * F.cross_entropy(outputs, targets) + (1 - lam) * F.cross_entropy(outputs, targets[partner])
    assert 0 < lam < 1
    torch.testing.assert_close(step.outputs, outputs)
    torch.testing.assert_close(step.loss, expected)
    plain = F.cross_entropy(model(inputs), targets)
    assert not torch.allclose(step.loss, plain)


def test_mixup_is_plain_in_eval_mode_and_with_alpha_zero():
    model = _model()
    inputs, targets = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    plain = F.cross_entropy(model(inputs), targets)
    step = mixup_step(0.0)(model.train(), (inputs, targets), F.cross_entropy, torch.device("cpu"))
    torch.testing.assert_close(step.loss, plain)
    step = mixup_step(1.0)(model.eval(), (inputs, targets), F.cross_entropy, torch.device("cpu"))
    torch.testing.assert_close(step.loss, plain)
    assert step.batch_size == 4
