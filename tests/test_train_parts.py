"""Schedules, EMA, the epoch sampler, image grids, precision and the training config of raedit.train."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from raedit.core.config import load_config
from raedit.core.errors import RaeditError
from raedit.core.images import save_image_grid
from raedit.train.config import ScheduleConfig, TrainLoopConfig
from raedit.train.ema import EMA
from raedit.train.epoch_shards import EpochShardSampler
from raedit.train.optim import build_adamw, clip_gradients
from raedit.train.precision import autocast_context, configure_matmul_precision
from raedit.train.schedules import LRSchedule, build_schedule
from raedit.train.tracking import ProgressBar


def _optimizer(lr: float = 2e-4) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _lrs(schedule: LRSchedule, steps: int) -> list[float]:
    values = []
    for _ in range(steps):
        values.append(schedule.get_last_lr()[0])
        schedule.step()
    return values


def test_cosine_schedule_with_warmup_hits_key_points():
    # Stage-1 recipe shape: 2e-4, 1 warm-up epoch of 10 steps, cosine to 2e-5 at 16 epochs.
    optimizer = _optimizer(2e-4)
    config = ScheduleConfig(kind="cosine", warmup_epochs=1, min_lr=2e-5)
    lrs = _lrs(build_schedule(optimizer, config, steps_per_epoch=10, epochs=16), 170)
    assert lrs[0] == pytest.approx(2e-4 / 10)
    assert lrs[4] == pytest.approx(2e-4 * 5 / 10)
    assert lrs[10] == pytest.approx(2e-4)  # end of warm-up: the peak
    assert lrs[10 + 75] == pytest.approx(2e-5 + (2e-4 - 2e-5) * 0.5)  # half-way through the cosine
    assert lrs[160] == pytest.approx(2e-5)
    assert lrs[169] == pytest.approx(2e-5)  # stays at the floor after the end
    assert all(a >= b for a, b in zip(lrs[10:160], lrs[11:161]))


def test_constant_then_linear_decay_hits_key_points():
    # Stage-2 recipe shape: constant for 40 epochs, then linear to 2e-5 at epoch 800 (here 1 step per epoch).
    optimizer = _optimizer(2e-4)
    config = ScheduleConfig(kind="linear_decay", decay_start_epoch=40, decay_end_epoch=800, min_lr=2e-5)
    lrs = _lrs(build_schedule(optimizer, config, steps_per_epoch=1, epochs=1000), 900)
    assert lrs[0] == pytest.approx(2e-4)
    assert lrs[39] == pytest.approx(2e-4)
    assert lrs[420] == pytest.approx(2e-4 + (2e-5 - 2e-4) * 0.5)
    assert lrs[800] == pytest.approx(2e-5)
    assert lrs[899] == pytest.approx(2e-5)


def test_schedule_state_round_trip_continues_the_curve():
    first = build_schedule(_optimizer(), ScheduleConfig(kind="cosine", warmup_epochs=2), 5, 10)
    _lrs(first, 17)
    second = build_schedule(_optimizer(), ScheduleConfig(kind="cosine", warmup_epochs=2), 5, 10)
    second.load_state_dict(first.state_dict())
    assert _lrs(second, 5) == _lrs(first, 5)


def test_unknown_schedule_kind_is_a_user_error():
    with pytest.raises(RaeditError, match="unknown schedule kind 'cosin'"):
        build_schedule(_optimizer(), ScheduleConfig(kind="cosin"), 10, 1)


def test_ema_follows_the_exponential_moving_average_formula():
    model = torch.nn.Linear(3, 2)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ema = EMA(model, decay=0.9)
    assert all(torch.equal(ema.state_dict()[k], start[k]) for k in start)  # starts equal to the model
    expected = {k: v.clone() for k, v in start.items()}
    for step in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(float(step + 1))
        ema.update(model)
        for k, v in model.state_dict().items():
            expected[k] = 0.9 * expected[k] + 0.1 * v
    for k in expected:
        torch.testing.assert_close(ema.state_dict()[k], expected[k])
    # Closed form: the weights stood at +1, +3, +6 after the three updates.
    shift = (0.9**2 * 0.1) * 1 + (0.9 * 0.1) * 3 + 0.1 * 6
    torch.testing.assert_close(ema.state_dict()["bias"], start["bias"] + shift)

    # The averages held in a module of the model's architecture: the same numbers, and the module runs them.
    torch.manual_seed(0)
    model, average = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    plain, held = EMA(model, decay=0.9), EMA(model, decay=0.9, average=average)
    assert torch.equal(average.weight, model.weight) and not average.weight.requires_grad
    for step in range(3):
        with torch.no_grad():
            model.weight.mul_(1.5)
        plain.update(model)
        held.update(model)
    assert all(torch.equal(plain.state_dict()[k], held.state_dict()[k]) for k in expected)
    assert torch.equal(average.weight, plain.state_dict()["weight"]) and not torch.equal(average.weight, model.weight)
    with pytest.raises(ValueError, match="other parameters"):
        EMA(model, 0.9, average=torch.nn.Linear(3, 2, bias=False))


def test_sampler_shards_are_disjoint_and_resume_mid_epoch():
    shards = [EpochShardSampler(10, rank=r, world_size=3, seed=5) for r in range(3)]
    for sampler in shards:
        sampler.set_epoch(2)
    indices = [list(s) for s in shards]
    assert all(len(i) == 3 for i in indices)
    flat = sum(indices, [])
    assert len(set(flat)) == 9  # drop_last: one item of 10 left out, none read twice
    shards[1].set_epoch(2, start=2)
    assert list(shards[1]) == indices[1][2:]
    shards[0].set_epoch(3)
    assert list(shards[0]) != indices[0]  # a new permutation each epoch


def test_image_grid_places_each_image_in_its_cell(tmp_path):
    images = torch.zeros(5, 3, 4, 6)
    for index in range(5):
        images[index, index % 3] = 1.0
    path = save_image_grid(images, tmp_path / "grid.png", nrow=3, padding=2)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (2 + 2 * (4 + 2), 2 + 3 * (6 + 2), 3)
    top, left = 2 + 1 * 6, 2 + 1 * 8  # image 4: row 1, column 1, green
    assert grid[top : top + 4, left : left + 6].tolist() == [[[0, 255, 0]] * 6] * 4
    assert grid[top:, 2 + 2 * 8 :].max() == 0  # empty sixth cell


def test_clip_gradients_bounds_the_global_norm():
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))]
    params[0].grad = torch.tensor([3.0, 0.0])
    params[1].grad = torch.tensor([4.0])
    norm = clip_gradients(params, max_norm=1.0)
    assert float(norm) == pytest.approx(5.0)
    total = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in params))
    assert total == pytest.approx(1.0, rel=1e-5)


def test_adamw_takes_the_config_values():
    config = TrainLoopConfig().optim
    optimizer = build_adamw(torch.nn.Linear(2, 2).parameters(), config)
    group = optimizer.param_groups[0]
    assert group["lr"] == 2e-4 and tuple(group["betas"]) == (0.9, 0.95) and group["weight_decay"] == 0.0


def test_bf16_autocast_runs_matmuls_in_bfloat16():
    layer = torch.nn.Linear(4, 4)
    with autocast_context(torch.device("cpu"), "bf16"):
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16
    with autocast_context(torch.device("cpu"), "fp32"):
        assert layer(torch.randn(2, 4)).dtype == torch.float32
    with pytest.raises(RaeditError, match="unknown autocast mode"):
        autocast_context(torch.device("cpu"), "fp16x")


def test_tf32_switch_sets_the_matmul_precision():
    before = torch.get_float32_matmul_precision()
    try:
        configure_matmul_precision(tf32=False)
        assert torch.get_float32_matmul_precision() == "highest"
        configure_matmul_precision(tf32=True)
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


def test_unknown_training_key_names_the_closest_one(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("micro_batch_size: 8\noptim:\n  lr: 1.0e-3\n")
    config = load_config(TrainLoopConfig, path, ["schedule.kind=linear_decay"])
    assert config.micro_batch_size == 8 and config.optim.lr == 1e-3 and config.schedule.kind == "linear_decay"
    with pytest.raises(RaeditError, match="unknown config key 'optim.betas1'.*did you mean 'optim.beta1'"):
        load_config(TrainLoopConfig, path, ["optim.betas1=0.5"])


def test_progress_bar_shows_steps_and_samples_per_second_on_rank_zero_only(capsys):
    bar = ProgressBar(total_steps=10, initial_step=2, samples_per_step=64, enabled=True)
    bar.advance({"model/loss": 0.5})
    bar.close()
    shown = capsys.readouterr().err
    assert "3/10" in shown and "steps/s" in shown and "samples/s" in shown and "model/loss=0.5" in shown
    silent = ProgressBar(total_steps=10, initial_step=0, samples_per_step=64, enabled=False)
    silent.advance({"model/loss": 0.5})
    silent.close()
    assert capsys.readouterr().err == ""


def test_the_global_batch_splits_over_processes_and_accumulation_or_says_why_not():
    def split(world_size: int, **batch) -> tuple[int, int]:
        config = TrainLoopConfig(**batch).for_processes(world_size)
        return config.micro_batch_size, config.grad_accum_steps

    assert split(8, global_batch_size=1024) == (128, 1)  # the paper's stage 2 on 8 GPUs
    assert split(4, global_batch_size=1024, grad_accum_steps=2) == (128, 2)
    assert split(8, global_batch_size=1024, micro_batch_size=64) == (64, 2)
    assert split(1, global_batch_size=512, micro_batch_size=64, grad_accum_steps=8) == (64, 8)
    assert split(3) == (32, 1) and split(3, micro_batch_size=5) == (5, 1)  # no global batch: per process
    failing = [(3, {}), (8, {"micro_batch_size": 48}), (8, {"micro_batch_size": 64, "grad_accum_steps": 1})]
    for world_size, batch in failing:
        with pytest.raises(RaeditError, match=r"global_batch_size=1024 doesn't split into") as error:
            split(world_size, global_batch_size=1024, **batch)
        assert "\n" not in str(error.value)


def test_the_stage1_recipe_states_the_papers_global_batch():
    from raedit.train.stage1 import Stage1Config

    config = load_config(Stage1Config, "stage1/dinov2-b_decoder-xl")
    assert config.train.global_batch_size == 512 and config.train.for_processes(8).micro_batch_size == 64
    assert (config.disc_schedule.kind, config.disc_schedule.warmup_epochs, config.disc_schedule.decay_end_epoch,
            config.disc_schedule.min_lr) == ("cosine", 1, 16, 2e-5)
