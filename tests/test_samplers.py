"""Samplers on an analytic Gaussian data distribution, where the exact velocity is known in closed form."""

import math

import pytest
import torch

from raedit.core.errors import RaeditError
from raedit.diffusion import sample, shift_time, time_grid

# Data ~ N(mu_c, s_c^2) independently per channel c.
MU = torch.tensor([-1.0, 0.5, 2.0, 0.0], dtype=torch.float64).view(1, 4, 1, 1)
STD = torch.tensor([0.3, 1.0, 0.5, 2.0], dtype=torch.float64).view(1, 4, 1, 1)


@pytest.fixture(autouse=True)
def single_thread():
    """Small elementwise work: one thread avoids oversubscription on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[eps - x0 | x_t] for x_t = (1 - t) x0 + t eps, x0 ~ N(MU, STD^2), eps ~ N(0, 1)."""
    t = t.view(-1, 1, 1, 1).to(torch.float64)
    variance = (1 - t) ** 2 * STD**2 + t**2
    centered = x - (1 - t) * MU
    return (t - (1 - t) * STD**2) * centered / variance - MU


def noise(n: int = 1024) -> torch.Tensor:
    """Standard normal noise, standardized per channel: an ODE sampler maps it affinely per channel, so the
    moments of its output measure the integration error alone."""
    z = torch.randn(n, 4, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (z - z.mean(dim=(0, 2, 3), keepdim=True)) / z.std(dim=(0, 2, 3), keepdim=True)


def moment_errors(x: torch.Tensor) -> tuple[float, float]:
    """Largest errors over channels of the mean and of the standard deviation, relative to the data's std."""
    mean = x.mean(dim=(0, 2, 3)).view(1, 4, 1, 1)
    std = x.std(dim=(0, 2, 3)).view(1, 4, 1, 1)
    return ((mean - MU).abs() / STD).max().item(), ((std - STD).abs() / STD).max().item()


def test_time_grid():
    grid = time_grid(49, alpha=math.sqrt(48))
    assert grid.shape == (50,)
    assert grid[0] == 1 and grid[-1] == 0 and (grid.diff() < 0).all()
    middle = shift_time(torch.tensor(25 / 49, dtype=torch.float64), math.sqrt(48))
    assert grid[24].item() == pytest.approx(float(middle))
    official_end = time_grid(49, alpha=math.sqrt(48), t_end=1e-3)[-1].item()
    assert official_end == pytest.approx(0.00688, abs=1e-4)
    with pytest.raises(RaeditError, match="at least 1"):
        time_grid(0)


@pytest.mark.parametrize("method, steps", [("heun", 10), ("euler", 200)])
def test_accurate_samplers_land_on_the_data_distribution(method, steps):
    mean_error, std_error = moment_errors(sample(gaussian_velocity, noise(), method, steps))
    assert mean_error < 0.015
    assert std_error < 0.015


def test_few_step_euler_is_measurably_worse():
    _, euler_std_error = moment_errors(sample(gaussian_velocity, noise(), "euler", 5))
    _, heun_std_error = moment_errors(sample(gaussian_velocity, noise(), "heun", 5))
    assert euler_std_error > 0.15
    assert euler_std_error > 10 * heun_std_error


def test_shifted_grid_is_used():
    """The shift spends the steps near the noise end: with few Euler steps, a different (here worse) answer."""
    plain = sample(gaussian_velocity, noise(), "euler", 10, alpha=1.0)
    shifted = sample(gaussian_velocity, noise(), "euler", 10, alpha=math.sqrt(48))
    assert moment_errors(shifted)[1] > moment_errors(plain)[1] + 0.05
    # With many steps both converge.
    assert moment_errors(sample(gaussian_velocity, noise(), "heun", 100, alpha=math.sqrt(48)))[1] < 0.02


def test_euler_maruyama_sde_lands_on_the_data_distribution():
    generator = torch.Generator().manual_seed(1)
    x = sample(gaussian_velocity, noise(4096), "sde", 200, generator=generator)
    mean_error, std_error = moment_errors(x)
    assert mean_error < 0.04
    assert std_error < 0.03
    # Stochastic: another seed, other samples, same distribution.
    other = sample(gaussian_velocity, noise(4096), "sde", 200, generator=torch.Generator().manual_seed(2))
    assert (other - x).abs().mean() > 0.05


def test_sde_with_per_sample_generators_does_not_depend_on_the_batch():
    start = noise(4)

    def generators(indices):
        return [torch.Generator().manual_seed(100 + i) for i in indices]

    full = sample(gaussian_velocity, start, "sde", 20, generator=generators(range(4)))
    part = sample(gaussian_velocity, start[2:], "sde", 20, generator=generators(range(2, 4)))
    torch.testing.assert_close(part, full[2:])
    with pytest.raises(RaeditError, match="generators"):
        sample(gaussian_velocity, start, "sde", 20, generator=generators(range(3)))


def test_sampler_calls_velocity_with_per_sample_times():
    seen = []

    def velocity(x, t):
        seen.append(t.clone())
        return torch.zeros_like(x)

    sample(velocity, torch.zeros(3, 4, 2, 2), "heun", 2)
    assert [t.shape for t in seen] == [(3,)] * 4
    assert [t[0].item() for t in seen] == [1.0, 0.5, 0.5, 0.0]
    with pytest.raises(RaeditError, match="unknown sampler"):
        sample(velocity, torch.zeros(1, 4, 2, 2), "dpm", 2)


def test_the_default_sampling_grid_is_the_official_one():
    """The official sampler: t = 1 - linspace(0, 1 - 1/1000, 50) in float32, shifted, 49 Euler steps, and the
    latent at the last point (about 0.0069 at 256 px) decoded as it is."""
    from raedit.diffusion.samplers import OFFICIAL_T_END
    from raedit.jobs.sample import SampleConfig

    defaults = SampleConfig(ckpt="unused")
    assert (defaults.steps, defaults.t_end, defaults.sampler) == (49, OFFICIAL_T_END, "euler")
    alpha = math.sqrt(768 * 16 * 16 / 4096)
    t = 1 - torch.linspace(0, 1 - 1 / 1000, 50)
    official = alpha * t / (1 + (alpha - 1) * t)
    grid = time_grid(defaults.steps, alpha, defaults.t_end)
    torch.testing.assert_close(grid.float(), official, rtol=0, atol=1e-6)
    assert float(grid[-1]) == pytest.approx(0.00689, abs=1e-5)
