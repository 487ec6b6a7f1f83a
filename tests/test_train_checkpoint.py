"""Checkpoints: contents, atomic writes, skipping incomplete ones, pruning, mismatches."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import safetensors.torch
import torch

from raedit.core.distributed import DistContext
from raedit.core.errors import RaeditError
from raedit.train.checkpoint import (
    Progress,
    TrainComponents,
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from raedit.train.ema import EMA
from raedit.train.schedules import LRSchedule

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _components(seed: int) -> TrainComponents:
    torch.manual_seed(seed)
    generator, discriminator = torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)
    optimizers = {
        "generator": torch.optim.AdamW(generator.parameters(), lr=1e-3, betas=(0.9, 0.95)),
        "discriminator": torch.optim.AdamW(discriminator.parameters(), lr=1e-3),
    }
    for model, optimizer in zip((generator, discriminator), optimizers.values()):
        model(torch.randn(2, 3)).sum().backward()
        optimizer.step()
    return TrainComponents(
        models={"generator": generator, "discriminator": discriminator},
        optimizers=optimizers,
        schedulers={"generator": LRSchedule(optimizers["generator"], "cosine", total_steps=10, warmup_steps=2)},
        emas={"generator": EMA(generator, 0.99)},
    )


def test_save_then_load_restores_every_component(tmp_path):
    saved = _components(seed=1)
    saved.schedulers["generator"].step()
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    path = save_checkpoint(tmp_path, saved, Progress(step=12, epoch=1, batch_in_epoch=6, extra={"a": 1}), CPU, "x: 1\n")
    expected_draws = (random.random(), float(np.random.rand()), float(torch.rand(())))
    assert path.name == "step-00000012"
    assert sorted(p.name for p in path.iterdir()) == [
        "config.yaml", "ema-generator.safetensors", "manifest.json", "model-discriminator.safetensors",
        "model-generator.safetensors", "optimizer-discriminator.safetensors", "optimizer-generator.safetensors",
        "state.json",
    ]
    loaded = _components(seed=2)
    progress = load_checkpoint(path, loaded, CPU)
    assert progress == Progress(step=12, epoch=1, batch_in_epoch=6, extra={"a": 1})
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected_draws
    for name in ("generator", "discriminator"):
        for a, b in zip(saved.models[name].parameters(), loaded.models[name].parameters()):
            assert torch.equal(a, b)
        state_a, state_b = saved.optimizers[name].state_dict(), loaded.optimizers[name].state_dict()
        for key in state_a["state"]:
            for field in ("step", "exp_avg", "exp_avg_sq"):
                assert torch.equal(state_a["state"][key][field], state_b["state"][key][field])
        assert state_a["param_groups"][0]["betas"] == tuple(state_b["param_groups"][0]["betas"])
    assert loaded.schedulers["generator"].last_step == 1
    assert loaded.schedulers["generator"].get_last_lr() == saved.schedulers["generator"].get_last_lr()
    ema_a, ema_b = saved.emas["generator"].state_dict(), loaded.emas["generator"].state_dict()
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    assert (path / "config.yaml").read_text() == "x: 1\n"


def test_crash_during_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    components = _components(seed=1)
    first = save_checkpoint(tmp_path, components, Progress(step=1), CPU)
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    real_save = safetensors.torch.save_file
    calls = []

    def crash_on_second_file(tensors, filename, *args, **kwargs):
        calls.append(filename)
        if len(calls) == 2:
            real_save(tensors, filename, *args, **kwargs)
            with open(filename, "r+b") as handle:  # half written, then the process dies
                handle.truncate(10)
            raise KeyboardInterrupt("killed during save")
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr("raedit.core.files.save_file", crash_on_second_file)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, components, Progress(step=2), CPU)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) == first
    assert not (tmp_path / "step-00000002").exists()
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    # The next save clears the debris of the crashed one.
    save_checkpoint(tmp_path, components, Progress(step=3), CPU)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000001", "step-00000003"]


@pytest.mark.parametrize("damage", ["truncate_weights", "drop_manifest", "garble_state"])
def test_incomplete_newest_checkpoint_is_skipped_with_a_warning(tmp_path, caplog, damage):
    components = _components(seed=1)
    good = save_checkpoint(tmp_path, components, Progress(step=4), CPU)
    bad = save_checkpoint(tmp_path, components, Progress(step=8), CPU)
    if damage == "truncate_weights":
        weights = bad / "model-generator.safetensors"
        weights.write_bytes(weights.read_bytes()[:-7])
    elif damage == "drop_manifest":
        (bad / "manifest.json").unlink()
    else:
        state = bad / "state.json"
        state.write_bytes(b"{" + state.read_bytes()[1:].replace(b'"', b"'"))
    with caplog.at_level(logging.WARNING, logger="raedit.train.checkpoint"):
        assert latest_checkpoint(tmp_path) == good
    assert any("skipping incomplete checkpoint" in r.message and "step-00000008" in r.message for r in caplog.records)
    with pytest.raises(RaeditError, match="unusable"):
        load_checkpoint(bad, _components(seed=3), CPU)


def test_no_checkpoint_gives_none(tmp_path):
    assert latest_checkpoint(tmp_path / "absent") is None
    (tmp_path / "step-00000001").mkdir()  # a directory without a manifest
    assert latest_checkpoint(tmp_path) is None


def test_keep_last_prunes_older_checkpoints(tmp_path):
    components = _components(seed=1)
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, components, Progress(step=step), CPU, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000003", "step-00000004"]


def test_checkpoint_of_other_models_is_a_user_error(tmp_path):
    path = save_checkpoint(tmp_path, _components(seed=1), Progress(step=1), CPU)
    other = _components(seed=1)
    other.models["generator"] = torch.nn.Linear(3, 4)
    other.emas.clear()
    with pytest.raises(RaeditError, match="holds EMAs \\['generator'\\], this run has \\[\\]"):
        load_checkpoint(path, other, CPU)
    other.emas["generator"] = EMA(other.models["generator"], 0.9)
    with pytest.raises(RaeditError, match="does not fit this run"):
        load_checkpoint(path, other, CPU)


def test_rng_state_round_trip():
    state = capture_rng_state(torch.device("cpu"))
    draws = (random.random(), float(np.random.randn()), torch.randn(3))
    restore_rng_state(state, torch.device("cpu"))
    again = (random.random(), float(np.random.randn()), torch.randn(3))
    assert draws[:2] == again[:2] and torch.equal(draws[2], again[2])
