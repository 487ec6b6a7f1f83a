"""What a denoiser's last layer predicts, turned into the velocity that every loss, sampler and guidance sees.

v1 (RAE, Sec. 4) predicts the velocity v = eps - x directly. RAEv2 (arXiv 2605.18324, Sec. 2.3, and its code's
`transport.py`) predicts the clean latent x instead: with x_t = (1 - t) x + t eps, x_t - x = t (eps - x), so
v = (x_t - x) / t, evaluated with t clamped below at `X_PREDICTION_T_MIN` so that the last steps near t = 0 stay
finite. The model returns that velocity, so the rest of raedit never needs to know which parametrization it has.
"""

from __future__ import annotations

from torch import Tensor

from raedit.core.errors import RaeditError

PREDICTIONS = ("velocity", "x")
# RAEv2's `t_eps`: the smallest t the conversion (and the training target, `raedit.diffusion.flow`) divides by.
X_PREDICTION_T_MIN = 0.05


def check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise RaeditError(f"unknown prediction {prediction!r}; known: {', '.join(PREDICTIONS)}")


def velocity_from_x(x_hat: Tensor, x_t: Tensor, t: Tensor, t_min: float = X_PREDICTION_T_MIN) -> Tensor:
    """RAEv2: v = (x_t - x_hat) / max(t, t_min); x_hat, x_t (B, ...), t (B,) -> (B, ...) in fp32 (a bf16 output
    divided by a small t would keep 8 significant bits of a large velocity)."""
    t = t.float().clamp(min=t_min).view(-1, *([1] * (x_t.dim() - 1)))
    return (x_t.float() - x_hat.float()) / t


def as_velocity(output: Tensor, x_t: Tensor, t: Tensor, prediction: str) -> Tensor:
    """The velocity a network output means: itself for "velocity", `velocity_from_x` for "x"."""
    return output if prediction == "velocity" else velocity_from_x(output, x_t, t)
