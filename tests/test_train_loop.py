"""The generic training loop: accumulation, bit-identical resume, NaN stop, image grids, data errors."""

from __future__ import annotations

import json
import math
import signal

import pytest
import torch
from safetensors.torch import load_file
from train_toy import ToyData, build_loop, toy_config, toy_model

from raedit.core.distributed import DistContext
from raedit.core.errors import RaeditError
from raedit.train.checkpoint import latest_checkpoint
from raedit.train.ema import EMA
from raedit.train.loop import NonFiniteLossError, Phase, TrainLoop, steps_per_epoch
from raedit.train.optim import build_adamw
from raedit.train.run_dir import RunDir
from raedit.train.schedules import build_schedule

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _sgd_loop(run_root, micro_batch_size: int, grad_accum_steps: int, calls: list) -> tuple[TrainLoop, torch.nn.Module]:
    config = toy_config(micro_batch_size=micro_batch_size, grad_accum_steps=grad_accum_steps, stop_after_steps=2)
    model = toy_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def loss_fn(batch, ctx):
        _, x, y = batch
        calls.append((ctx.step, ctx.micro_index, len(x)))
        return (model(x) - y).pow(2).mean(), {}

    run_dir = RunDir(run_root)
    run_dir.create("")
    return TrainLoop(config, CPU, [Phase("model", model, optimizer, loss_fn)], ToyData(), run_dir), model


def test_two_micro_batches_update_like_one_batch_of_twice_the_size(tmp_path):
    calls_accumulated, calls_whole = [], []
    accumulated, model_a = _sgd_loop(tmp_path / "a", 4, 2, calls_accumulated)
    whole, model_b = _sgd_loop(tmp_path / "b", 8, 1, calls_whole)
    start = [p.detach().clone() for p in model_a.parameters()]
    accumulated.run()
    whole.run()
    # Two optimizer steps: four micro-batches of 4 against two batches of 8.
    assert calls_accumulated == [(0, 0, 4), (0, 1, 4), (1, 0, 4), (1, 1, 4)]
    assert calls_whole == [(0, 0, 8), (1, 0, 8)]
    for p_a, p_b, p_0 in zip(model_a.parameters(), model_b.parameters(), start):
        assert not torch.allclose(p_a, p_0)
        torch.testing.assert_close(p_a, p_b, rtol=1e-6, atol=1e-7)


def _state(loop: TrainLoop) -> dict[str, torch.Tensor]:
    phase = loop.phases[0]
    state = {f"model.{k}": v for k, v in phase.model.state_dict().items()}
    state.update({f"ema.{k}": v for k, v in phase.ema.state_dict().items()})
    for index, (param, values) in enumerate(phase.optimizer.state.items()):
        state.update({f"optim.{index}.{k}": v for k, v in values.items()})
    return state


@pytest.mark.parametrize("stop_after", [5, 8, 11])  # mid-epoch 0, at the epoch's end, mid-epoch 1
def test_stopped_and_resumed_run_ends_bit_identical(tmp_path, stop_after):
    config = toy_config(epochs=2, **{"checkpoint.every_steps": 3})
    seen_whole: list[int] = []
    whole = build_loop(tmp_path / "whole", config, seen=seen_whole)
    assert whole.run().reason == "finished"

    seen_parts: list[int] = []
    first = build_loop(tmp_path / "parts", toy_config(epochs=2, stop_after_steps=stop_after), seen=seen_parts)
    result = first.run()
    assert (result.reason, result.progress.step) == ("stopped", stop_after)
    torch.manual_seed(999)  # the resumed run must not depend on the RNG state it starts with
    second = build_loop(tmp_path / "parts", toy_config(epochs=2), seen=seen_parts)
    assert second.run(resume=True).reason == "finished"

    assert seen_parts == seen_whole  # the same items in the same order, none repeated at the resume
    whole_state, resumed_state = _state(whole), _state(second)
    assert whole_state.keys() == resumed_state.keys()
    for key in whole_state:
        assert torch.equal(whole_state[key], resumed_state[key]), key


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    model_holder = {}

    def loss_fn(batch, ctx):
        _, x, y = batch
        loss = (model_holder["model"](x) - y).pow(2).mean()
        return (loss * math.nan if ctx.step == 5 else loss), {}

    loop = build_loop(tmp_path, toy_config(**{"checkpoint.every_steps": 2}), loss_fn=loss_fn)
    model_holder["model"] = loop.phases[0].model
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss nan in phase 'model' at step 6 .*step-00000004"):
        loop.run()
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-00000004"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    assert all(torch.isfinite(p).all() for p in loop.phases[0].model.parameters())  # the bad step was not taken


def test_inf_gradient_also_stops(tmp_path):
    model_holder = {}

    def loss_fn(batch, ctx):
        _, x, y = batch
        scale = torch.tensor(math.inf if ctx.step == 1 else 1.0)
        out = model_holder["model"](x)
        return (out - y).pow(2).mean() + 0.0 * (out * scale).sum().clamp(max=0.0), {}

    loop = build_loop(tmp_path, toy_config(), loss_fn=loss_fn)
    model_holder["model"] = loop.phases[0].model
    with pytest.raises(NonFiniteLossError, match="at step 2 "):
        loop.run()


def test_periodic_image_grids_and_run_directory(tmp_path):
    overrides = {"logging.image_every_steps": 2, "logging.every_steps": 2}
    loop = build_loop(tmp_path, toy_config(stop_after_steps=4, **overrides))
    loop.images_fn = lambda: {"recon": torch.rand(4, 3, 8, 8)}
    loop.run()
    grids = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert grids == ["recon-step00000002.png", "recon-step00000004.png"]
    assert (tmp_path / "config.yaml").read_text() == "toy: true\n"
    lines = [json.loads(line) for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    assert {"model/loss", "model/mse", "model/lr", "model/grad_norm", "speed/samples_per_s"} <= set(lines[0])
    assert lines[0]["model/loss"] == pytest.approx(lines[0]["model/mse"])


def test_an_ema_too_slow_for_the_run_is_warned_about(tmp_path, caplog):
    # 2 epochs of 64 items in steps of 8: 16 steps; 0.9 ** 16 = 0.19 of the initial weights would remain
    build_loop(tmp_path / "slow", toy_config(**{"ema.decay": 0.9})).run()
    assert "an EMA of decay 0.9 keeps 19% of the initial weights after this run's 16 steps" in caplog.text
    caplog.clear()
    build_loop(tmp_path / "fast", toy_config(**{"ema.decay": 0.8})).run()  # 0.8 ** 16 = 0.03
    assert "EMA" not in caplog.text


def test_empty_or_too_small_data_is_a_user_error(tmp_path):
    with pytest.raises(RaeditError, match="empty"):
        build_loop(tmp_path, toy_config(), dataset=ToyData(size=0))
    with pytest.raises(RaeditError, match="smaller than one optimizer step"):
        build_loop(tmp_path, toy_config(), dataset=ToyData(size=7))


def test_bf16_autocast_reaches_the_loss_and_training_still_learns(tmp_path):
    dtypes, holder = [], {}

    def loss_fn(batch, ctx):
        _, x, y = batch
        out = holder["model"](x)
        dtypes.append(out.dtype)
        return (out.float() - y).pow(2).mean(), {}

    overrides = {"precision.autocast": "bf16", "logging.every_steps": 4, "epochs": 4, "optim.lr": 0.05}
    loop = build_loop(tmp_path, toy_config(**overrides), loss_fn=loss_fn)
    holder["model"] = loop.phases[0].model
    loop.run()
    assert set(dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in loop.phases[0].model.parameters())  # fp32 master weights
    losses = [json.loads(line)["model/loss"] for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0]


def test_second_ctrl_c_stops_at_once(tmp_path):
    loop = build_loop(tmp_path, toy_config())
    loop._on_signal(signal.SIGINT, None)  # the first asks for a checkpoint after the step
    with pytest.raises(KeyboardInterrupt):
        loop._on_signal(signal.SIGINT, None)


def _two_phase_loop(run_root, config) -> TrainLoop:
    """Stage-1 shape: a generator with EMA, then a discriminator that starts at epoch 1 and reads the
    generator's outputs of the same step."""
    generator = toy_model(seed=0, dropout=0.1)
    torch.manual_seed(1)
    discriminator = torch.nn.Linear(2, 1)
    steps = steps_per_epoch(64, config, 1)
    g_opt = build_adamw(generator.parameters(), config.optim)
    d_opt = build_adamw(discriminator.parameters(), config.optim)

    fakes: list[torch.Tensor] = []  # this step's generator outputs, per micro-batch, for the discriminator

    def g_loss(batch, ctx):
        _, x, y = batch
        fake = generator(x + 0.01 * torch.randn_like(x))
        if ctx.micro_index == 0:
            fakes.clear()
        fakes.append(fake.detach())
        gan = -discriminator(fake).mean() if ctx.epoch >= 1 else torch.zeros(())
        return (fake - y).pow(2).mean() + 0.1 * gan, {}

    def d_loss(batch, ctx):
        _, _, y = batch
        fake = fakes[ctx.micro_index]
        return torch.relu(1 - discriminator(y)).mean() + torch.relu(1 + discriminator(fake)).mean(), {}

    run_dir = RunDir(run_root)
    run_dir.create("")
    phases = [
        Phase("generator", generator, g_opt, g_loss, build_schedule(g_opt, config.schedule, steps, config.epochs),
              EMA(generator, 0.9), grad_clip=1.0),
        Phase("discriminator", discriminator, d_opt, d_loss,
              build_schedule(d_opt, config.schedule, steps, config.epochs), start_epoch=1),
    ]
    return TrainLoop(config, CPU, phases, ToyData(), run_dir)


def test_two_phases_start_in_turn_and_resume_bit_identical(tmp_path):
    config = dict(epochs=2, **{"checkpoint.every_epochs": 1, "logging.every_steps": 1})
    whole = _two_phase_loop(tmp_path / "whole", toy_config(**config))
    d_start = {k: v.clone() for k, v in whole.phases[1].model.state_dict().items()}
    whole.run()
    epoch_0_end = tmp_path / "whole" / "checkpoints" / "step-00000008"
    after_epoch_0 = load_file(str(epoch_0_end / "model-discriminator.safetensors"))
    assert all(torch.equal(after_epoch_0[k], d_start[k]) for k in d_start)  # no discriminator step in epoch 0
    assert not torch.equal(whole.phases[1].model.weight, d_start["weight"])
    logged = [json.loads(line) for line in (tmp_path / "whole" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in logged if "discriminator/loss" in line] == list(range(9, 17))
    # its schedule counts only its own steps: no rate before its first
    assert [line["step"] for line in logged if "discriminator/lr" in line] == list(range(9, 17))

    first = _two_phase_loop(tmp_path / "parts", toy_config(stop_after_steps=11, **config))
    first.run()
    torch.manual_seed(5)
    second = _two_phase_loop(tmp_path / "parts", toy_config(**config))
    second.run(resume=True)
    for phase_whole, phase_resumed in zip(whole.phases, second.phases):
        for a, b in zip(phase_whole.model.parameters(), phase_resumed.model.parameters()):
            assert torch.equal(a, b), phase_whole.name
    ema_whole, ema_resumed = whole.phases[0].ema.state_dict(), second.phases[0].ema.state_dict()
    assert all(torch.equal(ema_whole[k], ema_resumed[k]) for k in ema_whole)


def test_a_training_step_reads_the_device_only_at_sync_points(tmp_path, monkeypatch):
    """No host read (item, tolist, float(), bool(), ...) inside an optimizer step, and after it only at the log
    steps (every 4 here), where losses are logged and the non-finite records read."""
    loop = build_loop(tmp_path, toy_config(stop_after_steps=8, **{"logging.every_steps": 4}))
    where: dict[str, str | None] = {"in": None}
    reads: list[tuple[str | None, int]] = []
    for method in ("_optimizer_step", "_after_step"):
        def inside(*args, _run=getattr(loop, method), _method=method):
            where["in"] = _method
            try:
                return _run(*args)
            finally:
                where["in"] = None
        monkeypatch.setattr(loop, method, inside)
    for name in ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"):
        def counting(self, *args, _original=getattr(torch.Tensor, name), **kwargs):
            reads.append((where["in"], loop.progress.step))
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counting)
    loop.run()
    assert [read for read in reads if read[0] == "_optimizer_step"] == []
    assert {step for place, step in reads if place == "_after_step"} == {4, 8}
