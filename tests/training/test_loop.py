"""The shared loop: learning happens, best weights come back, early stopping, clipping, exact resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medcad.errors import MedcadError
from medcad.models.store import load_state_dict
from medcad.training.config import EarlyStoppingConfig, FitConfig, OptimizerConfig, SchedulerConfig
from medcad.training.loop import EarlyStopping, _amp_dtype, fit, train_one_epoch
from medcad.training.metrics import ClassifierMetrics


def _blobs(n: int, seed: int):
    """Two Gaussian blobs in 8 dimensions, labels 0 / 1."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=generator)
    points = torch.randn(n, 8, generator=generator) + 1.5 * (2 * labels[:, None] - 1)
    return torch.utils.data.TensorDataset(points, labels)


def _loaders(batch_size: int = 16):
    train = torch.utils.data.DataLoader(_blobs(128, 0), batch_size=batch_size, shuffle=True)
    val = torch.utils.data.DataLoader(_blobs(64, 1), batch_size=batch_size)
    return train, val


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))


def _config(**changes) -> FitConfig:
    base = dict(epochs=4, optimizer=OptimizerConfig(name="sgd", lr=0.05), scheduler=SchedulerConfig(name="cosine"),
                early_stopping=EarlyStoppingConfig(patience=0), tensorboard=False, device="cpu")
    base.update(changes)
    return FitConfig(**base)


def test_fit_learns_and_returns_the_best_weights(tmp_path):
    train, val = _loaders()
    result = fit(_net(), train, val, nn.CrossEntropyLoss(), _config(epochs=5), run_dir=tmp_path,
                 metrics=ClassifierMetrics())
    losses = [row["val_loss"] for row in result.history]
    assert losses[-1] < losses[0]
    assert result.history[-1]["val_accuracy"] > 0.9 and result.history[-1]["val_auc"] > 0.95
    assert result.best_epoch == 1 + losses.index(min(losses))
    saved = load_state_dict(tmp_path / "model" / "model.safetensors")
    for name, value in result.model.state_dict().items():
        assert torch.equal(value, saved[name])
    assert (tmp_path / "history.csv").read_text().count("\n") == 6
    assert (tmp_path / "history.png").stat().st_size > 5000


def test_early_stopping_stops_after_patience_without_improvement():
    train, val = _loaders()
    stalled = _config(epochs=10, optimizer=OptimizerConfig(name="sgd", lr=1e-12), scheduler=SchedulerConfig(name="none"),
                      early_stopping=EarlyStoppingConfig(patience=2, min_delta=1e-3))
    result = fit(_net(), train, val, nn.CrossEntropyLoss(), stalled)
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1
    stopper = EarlyStopping("max", patience=2)
    assert [stopper.update(v) for v in (0.5, 0.6, 0.6, 0.55)] == [True, True, False, False] and stopper.should_stop


def test_gradient_clipping_bounds_the_step():
    model = _net()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    loader = torch.utils.data.DataLoader(_blobs(16, 3), batch_size=16)
    train_one_epoch(model, loader, nn.CrossEntropyLoss(), optimizer, grad_clip_norm=1e-3)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert 0 < (after - before).norm() <= 1e-3 + 1e-7


def test_resume_after_an_interruption_ends_with_the_same_weights(tmp_path):
    config = _config(epochs=4, optimizer=OptimizerConfig(name="adamw", lr=0.01), ema_decay=0.9,
                     scheduler=SchedulerConfig(name="cosine", warmup_epochs=1))
    train, val = _loaders()
    straight = fit(_net(), train, val, nn.CrossEntropyLoss(), config, run_dir=tmp_path / "straight")

    def crash_after_epoch_2(row, model):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_net(), train, val, nn.CrossEntropyLoss(), config, run_dir=tmp_path / "resumed",
            callbacks=[crash_after_epoch_2])
    resumed = fit(_net(seed=7), train, val, nn.CrossEntropyLoss(), config, run_dir=tmp_path / "resumed", resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in straight.history]
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_unknown_monitor_and_missing_checkpoint_are_errors(tmp_path):
    train, val = _loaders()
    with pytest.raises(MedcadError, match="val_f2"):
        fit(_net(), train, val, nn.CrossEntropyLoss(), _config(epochs=1, monitor="val_f2"))
    with pytest.raises(MedcadError, match="no training checkpoint"):
        fit(_net(), train, val, nn.CrossEntropyLoss(), _config(epochs=1), run_dir=tmp_path, resume=True)


def test_mixed_precision_is_for_cuda_only():
    assert _amp_dtype(torch.device("cpu"), True) is None
    assert _amp_dtype(torch.device("cuda"), False) is None


def test_ema_warm_up_follows_the_model_early_then_the_decay():
    from torch.optim.swa_utils import AveragedModel

    from medcad.training.loop import WarmupEma

    model = nn.Linear(1, 1, bias=False)
    ema = AveragedModel(model, multi_avg_fn=WarmupEma(0.9), use_buffers=True)
    expected = None
    for n, value in enumerate([1.0, 3.0, 5.0, 7.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update_parameters(model)
        rate = min(0.9, (1 + n) / (10 + n))  # n updates averaged so far
        expected = value if expected is None else rate * expected + (1 - rate) * value
        assert ema.module.weight.item() == pytest.approx(expected)
