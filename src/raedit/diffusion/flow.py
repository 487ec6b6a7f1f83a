"""Flow matching on RAE latents (Sec. 4, Appx. J): the linear interpolant, training-time distributions, the
dimension-dependent time shift (Sec. 4.2) and the velocity loss (with RAEv2's x-prediction target and base-head
term as options).

Convention: t = 0 is data, t = 1 is noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from raedit.core.errors import RaeditError
from raedit.models.predictions import velocity_from_x

# Sec. 4.2: the base dimension of the shift (n = 4096, as in Esser et al. 2024).
SHIFT_BASE_DIM = 4096

# A denoiser as the loss sees it: (x_t (B, C, h, w), t (B,), labels (B,)) -> velocity (B, C, h, w).
VelocityModel = Callable[[Tensor, Tensor, Tensor], Tensor]


def shift_alpha(latent_shape: Sequence[int], base_dim: int = SHIFT_BASE_DIM) -> float:
    """Sec. 4.2: alpha = sqrt(m / n) with m = tokens x channels of a latent of shape (C, h, w), n = base_dim.

    Derived from the shape, never typed by hand: DINOv2-B at 256 px, (768, 16, 16) -> sqrt(48) = 6.93.
    """
    if len(latent_shape) != 3 or any(int(size) <= 0 for size in latent_shape):
        raise RaeditError(f"a latent shape is (C, h, w) with positive sizes, got {tuple(latent_shape)}")
    if base_dim <= 0:
        raise RaeditError(f"the shift base dimension must be positive, got {base_dim}")
    return math.sqrt(math.prod(int(size) for size in latent_shape) / base_dim)


def shift_time(t: Tensor, alpha: float) -> Tensor:
    """Sec. 4.2: dimension-dependent shift t' = alpha t / (1 + (alpha - 1) t); maps [0, 1] onto [0, 1]."""
    return alpha * t / (1 + (alpha - 1) * t)


def interpolate(x: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """Sec. 4: x_t = (1 - t) x + t eps; x, noise (B, ...), t (B,) -> (B, ...)."""
    t = t.view(-1, *([1] * (x.dim() - 1)))
    return (1 - t) * x + t * noise


def velocity_target(x: Tensor, noise: Tensor) -> Tensor:
    """Sec. 4: the velocity d x_t / d t = eps - x."""
    return noise - x


@dataclass(frozen=True)
class TimeDistribution:
    """The training distribution of t before the shift, on [0, t_max].

    kind "uniform": t ~ U(0, t_max); kind "logit-normal": logit(t) ~ N(mu, sigma^2), truncated to [0, t_max].
    """

    kind: str = "logit-normal"
    mu: float = 0.0
    sigma: float = 1.0
    t_max: float = 0.999

    def __post_init__(self) -> None:
        if self.kind not in ("uniform", "logit-normal"):
            raise RaeditError(f"unknown time distribution {self.kind!r}; known: uniform, logit-normal")
        if self.sigma <= 0:
            raise RaeditError(f"the logit-normal sigma must be positive, got {self.sigma}")
        if not 0 < self.t_max <= 1:
            raise RaeditError(f"t_max must be in (0, 1], got {self.t_max}")

    def sample(self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> Tensor:
        """n times in [0, t_max], shape (n,), float32."""
        u = torch.rand(n, generator=generator, device=device)
        if self.kind == "uniform":
            return u * self.t_max
        # Inverse-CDF sampling of N(mu, sigma^2) truncated to logit(t) <= logit(t_max), then the sigmoid.
        z_max = math.inf if self.t_max >= 1 else (math.log(self.t_max / (1 - self.t_max)) - self.mu) / self.sigma
        cdf_max = 0.5 * (1 + math.erf(z_max / math.sqrt(2))) if math.isfinite(z_max) else 1.0
        z = torch.special.ndtri((u * cdf_max).clamp(min=1e-12))
        return torch.sigmoid(self.mu + self.sigma * z).clamp(max=self.t_max)


def x_prediction_velocity_target(x: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
    """RAEv2's training target for an x-predicting model: (x_t - x) / max(t, t_min), the velocity its conversion
    (`raedit.models.predictions.velocity_from_x`) gives for a perfect x. It is eps - x for t >= t_min; below, the
    target shrinks with t, as the model's velocity does. MSE on it is an x-MSE weighted by 1 / max(t, t_min)^2."""
    return velocity_from_x(x, x_t, t)


def flow_matching_loss(
    model: VelocityModel,
    x: Tensor,
    labels: Tensor,
    time_distribution: TimeDistribution,
    alpha: float,
    generator: torch.Generator | None = None,
    prediction: str = "velocity",
    base_loss_weight: float | None = None,
) -> Tensor:
    """Sec. 4: unweighted MSE between model(x_t, t', y) and eps - x, with t' the shifted training time.

    x: clean latents (B, C, h, w); labels: (B,); alpha: the shift (see `shift_alpha`). Returns a scalar.
    prediction: the model's parametrization; for "x" (RAEv2) the target is `x_prediction_velocity_target`.
    base_loss_weight: RAEv2's internal guidance: the model's base head learns the same target, its MSE added with
    this weight (the model is called with `with_base=True`).
    """
    t = shift_time(time_distribution.sample(x.shape[0], x.device, generator), alpha)  # fp32 even for bf16 x
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_t = interpolate(x, noise, t).to(x.dtype)
    target = velocity_target(x, noise) if prediction == "velocity" else x_prediction_velocity_target(x, x_t, t)
    target = target.float()
    if base_loss_weight is None:
        return (model(x_t, t, labels).float() - target).pow(2).mean()
    full, base = model(x_t, t, labels, with_base=True)
    return (full.float() - target).pow(2).mean() + base_loss_weight * (base.float() - target).pow(2).mean()
