"""Checkpoints: tensors in safetensors, the rest in JSON; exact round trips; atomic folders."""

from __future__ import annotations

import json

import pytest
import torch

from medcad.errors import InputError
from medcad.training.checkpoint import (
    LATEST,
    TrainingState,
    join_tensors,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    split_tensors,
)


def _optimizer_with_state():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.8, 0.95))
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_split_and_join_restore_int_keys_tuples_and_tensors():
    _, optimizer = _optimizer_with_state()
    state = optimizer.state_dict()
    tree, tensors = split_tensors(state)
    json.dumps(tree)  # plain JSON, no pickles
    restored = join_tensors(json.loads(json.dumps(tree)), tensors)
    assert set(restored["state"]) == {0, 1}
    assert restored["param_groups"][0]["betas"] == (0.8, 0.95)
    for index in (0, 1):
        for name, value in state["state"][index].items():
            assert torch.equal(restored["state"][index][name], value)


def test_checkpoint_round_trip_resumes_optimizer_exactly(tmp_path):
    model, optimizer = _optimizer_with_state()
    state = TrainingState(epoch=3, model=model.state_dict(), optimizer=optimizer.state_dict(),
                          early_stopping={"best": 0.5, "bad_epochs": 1}, best={"epoch": 2, "score": 0.5},
                          history=[{"epoch": 1, "val_loss": 0.7}], config={"epochs": 9}, extra={"classes": ["a", "b"]})
    folder = save_checkpoint(tmp_path / "checkpoints", state)
    assert folder.name == "epoch-0003" and (tmp_path / "checkpoints" / LATEST).read_text().strip() == "epoch-0003"
    loaded = load_checkpoint(tmp_path / "checkpoints")
    assert loaded.epoch == 3 and loaded.history == state.history and loaded.extra == state.extra
    assert loaded.early_stopping == state.early_stopping
    twin, twin_optimizer = torch.nn.Linear(3, 2), None
    twin.load_state_dict(loaded.model)
    twin_optimizer = torch.optim.AdamW(twin.parameters(), lr=0.5)
    twin_optimizer.load_state_dict(loaded.optimizer)
    batch = torch.randn(4, 3)
    for net, opt in ((model, optimizer), (twin, twin_optimizer)):
        opt.zero_grad()
        net(batch).sum().backward()
        opt.step()
    assert torch.equal(model.weight, twin.weight) and torch.equal(model.bias, twin.bias)


def test_keeps_newest_folders_and_finds_latest(tmp_path):
    model, optimizer = _optimizer_with_state()
    root = tmp_path / "checkpoints"
    for epoch in (1, 2, 3):
        save_checkpoint(root, TrainingState(epoch, model.state_dict(), optimizer.state_dict()), keep=2)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["epoch-0002", "epoch-0003"]
    (root / LATEST).unlink()  # a crash before the pointer was written: the newest complete folder
    assert latest_checkpoint(root).name == "epoch-0003"
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no training checkpoint"):
        load_checkpoint(tmp_path)
