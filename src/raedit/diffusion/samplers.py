"""ODE and SDE samplers of the flow (Sec. 4, Appx. J), integrating from noise at t = 1 to data at t = 0.

A sampler knows only a velocity function v(x, t) (x (B, ...), t (B,) -> (B, ...)), not models or training;
guidance is built into the velocity function (see `raedit.diffusion.guidance`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from raedit.core.errors import RaeditError
from raedit.diffusion.flow import shift_time

VelocityFn = Callable[[Tensor, Tensor], Tensor]
# One generator for the batch, or one per sample (then the noise of a sample doesn't depend on the batch).
Generators = torch.Generator | Sequence[torch.Generator] | None

SAMPLERS = ("euler", "heun", "sde")
# The official sampler's last time point before the shift: its grid is 1 - linspace(0, 1 - 1e-3, steps + 1).
OFFICIAL_T_END = 1e-3


def time_grid(num_steps: int, alpha: float = 1.0, t_end: float = 0.0, device: torch.device | str = "cpu") -> Tensor:
    """The sampling grid (num_steps + 1,) from t = 1 down to t_end, uniform before the shift (Sec. 4.2).

    The paper samples with Euler on 50 time points: num_steps=49. The official code stops at t_end =
    `OFFICIAL_T_END` (before the shift; about 0.0069 after it for alpha = sqrt(48)) and decodes that latent.
    """
    if num_steps < 1:
        raise RaeditError(f"the number of sampling steps must be at least 1, got {num_steps}")
    if not 0 <= t_end < 1:
        raise RaeditError(f"t_end must be in [0, 1), got {t_end}")
    grid = torch.linspace(1.0, t_end, num_steps + 1, dtype=torch.float64, device=device)
    return shift_time(grid, alpha)


def _times(x: Tensor, t: Tensor) -> Tensor:
    """The time t for each sample of x, (B,); fp32 (fp64 for fp64 x) so bf16 latents don't round the grid."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.full((x.shape[0],), float(t), device=x.device, dtype=dtype)


def standard_normal_like(x: Tensor, generator: Generators = None) -> Tensor:
    """N(0, 1) noise of x's shape (B, ...), from one generator or from generator[i] for sample i."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if len(generator) != x.shape[0]:
        raise RaeditError(f"got {len(generator)} generators for a batch of {x.shape[0]} samples")
    return torch.stack([torch.randn(x.shape[1:], generator=g, device=x.device, dtype=x.dtype) for g in generator])


def euler_sample(velocity: VelocityFn, noise: Tensor, grid: Tensor) -> Tensor:
    """Euler ODE: x <- x + (t_next - t) v(x, t) along the grid; noise (B, ...) at grid[0] -> x at grid[-1]."""
    x = noise
    for t_cur, t_next in zip(grid[:-1], grid[1:]):
        x = x + float(t_next - t_cur) * velocity(x, _times(x, t_cur))
    return x


def heun_sample(velocity: VelocityFn, noise: Tensor, grid: Tensor) -> Tensor:
    """Heun ODE (2nd order, two velocity evaluations a step): Euler predictor, trapezoidal corrector."""
    x = noise
    for t_cur, t_next in zip(grid[:-1], grid[1:]):
        step = float(t_next - t_cur)
        v_cur = velocity(x, _times(x, t_cur))
        x_pred = x + step * v_cur
        x = x + 0.5 * step * (v_cur + velocity(x_pred, _times(x, t_next)))
    return x


def euler_maruyama_sample(
    velocity: VelocityFn,
    noise: Tensor,
    grid: Tensor,
    diffusion: float = 1.0,
    generator: Generators = None,
) -> Tensor:
    """Euler-Maruyama on the reverse SDE with the marginals of the flow, diffusion g(t)^2 = 2 * diffusion * t.

    With score(x, t) = -(x + (1 - t) v) / t for the linear interpolant, the reverse-time drift is
    v - (g^2 / 2) score = v + diffusion * (x + (1 - t) v). The last step adds no noise (it returns the mean).
    """
    x = noise
    steps = len(grid) - 1
    for index, (t_cur, t_next) in enumerate(zip(grid[:-1], grid[1:])):
        dt = float(t_cur - t_next)
        t = float(t_cur)
        v = velocity(x, _times(x, t_cur))
        x = x - dt * (v + diffusion * (x + (1 - t) * v))
        if index < steps - 1:
            x = x + (2 * diffusion * t * dt) ** 0.5 * standard_normal_like(x, generator)
    return x


def sample(
    velocity: VelocityFn,
    noise: Tensor,
    method: str = "euler",
    num_steps: int = 49,
    alpha: float = 1.0,
    t_end: float = 0.0,
    diffusion: float = 1.0,
    generator: Generators = None,
) -> Tensor:
    """Integrate from noise (B, ...) at t = 1 to a sample at t_end with `method` in euler | heun | sde,
    on the shifted grid of `time_grid(num_steps, alpha, t_end)`, without gradients."""
    if method not in SAMPLERS:
        raise RaeditError(f"unknown sampler {method!r}; known: {', '.join(SAMPLERS)}")
    grid = time_grid(num_steps, alpha, t_end)  # on the CPU: reading its values never waits for a GPU
    with torch.no_grad():
        if method == "euler":
            return euler_sample(velocity, noise, grid)
        if method == "heun":
            return heun_sample(velocity, noise, grid)
        return euler_maruyama_sample(velocity, noise, grid, diffusion=diffusion, generator=generator)
