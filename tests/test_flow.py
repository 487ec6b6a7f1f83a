"""Flow matching: the shift (Sec. 4.2), the interpolant, training-time distributions, the loss, and the width
rule (Sec. 4.1, Theorem 1) measured on a LightningDiT overfitting one latent."""

import math
import warnings

import pytest
import torch

from raedit.core.errors import RaeditError
from raedit.diffusion import TimeDistribution, flow_matching_loss, interpolate, shift_alpha, shift_time, velocity_target
from raedit.models import DiTConfig, LightningDiT


def test_shift_from_the_latent_shape():
    alpha = shift_alpha((768, 16, 16))  # DINOv2-B at 256 px: m = 196,608
    assert alpha == pytest.approx(math.sqrt(48))
    assert float(shift_time(torch.tensor(0.5), alpha)) == pytest.approx(0.874, abs=5e-4)
    assert shift_alpha((768, 32, 32)) == pytest.approx(math.sqrt(192))  # 512 px
    assert shift_alpha((64, 8, 8), base_dim=64) == pytest.approx(8.0)
    t = torch.linspace(0, 1, 101)
    shifted = shift_time(t, alpha)
    assert shifted[0] == 0 and shifted[-1] == pytest.approx(1.0)
    assert (shifted.diff() > 0).all() and (shifted[1:-1] > t[1:-1]).all()  # more time near the noise end
    assert torch.allclose(shift_time(t, 1.0), t)


@pytest.mark.parametrize("shape", [(768, 16), (0, 16, 16), (768, 16, 16, 1)])
def test_shift_rejects_bad_shapes(shape):
    with pytest.raises(RaeditError, match="latent shape"):
        shift_alpha(shape)


def test_interpolant_endpoints_and_velocity():
    x, noise = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    assert torch.equal(interpolate(x, noise, torch.zeros(4)), x)
    assert torch.equal(interpolate(x, noise, torch.ones(4)), noise)
    t, dt = torch.full((4,), 0.3), 1e-3
    finite_difference = (interpolate(x, noise, t + dt) - interpolate(x, noise, t)) / dt
    torch.testing.assert_close(finite_difference, velocity_target(x, noise), atol=1e-3, rtol=1e-3)


def test_time_distributions():
    generator = torch.Generator().manual_seed(0)
    uniform = TimeDistribution("uniform").sample(100_000, generator=generator)
    assert uniform.min() >= 0 and uniform.max() <= 0.999
    assert uniform.mean().item() == pytest.approx(0.4995, abs=5e-3)
    logit_normal = TimeDistribution("logit-normal", mu=0.5, sigma=0.8).sample(100_000, generator=generator)
    logits = torch.logit(logit_normal.double())
    assert logits.mean().item() == pytest.approx(0.5, abs=0.02)
    assert logits.std().item() == pytest.approx(0.8, abs=0.02)
    # Truncated at t_max: logit(t) is then a half-normal below 0, median -0.674 sigma.
    truncated = TimeDistribution("logit-normal", mu=0.0, sigma=1.0, t_max=0.5).sample(100_000, generator=generator)
    assert truncated.max() <= 0.5
    assert torch.logit(truncated.double()).median().item() == pytest.approx(-0.674, abs=0.03)
    with pytest.raises(RaeditError, match="unknown time distribution"):
        TimeDistribution("cosine")


def test_loss_uses_shifted_times_and_the_velocity_target():
    x = torch.randn(8, 4, 2, 2)
    seen = {}

    def zero_model(x_t, t, labels):
        seen["t"], seen["x_t"] = t, x_t
        return torch.zeros_like(x_t)

    distribution = TimeDistribution("uniform")
    generator = torch.Generator().manual_seed(5)
    loss = flow_matching_loss(zero_model, x, torch.zeros(8), distribution, alpha=3.0, generator=generator)
    replay = torch.Generator().manual_seed(5)
    expected_t = shift_time(distribution.sample(8, generator=replay), 3.0)
    noise = torch.randn(x.shape, generator=replay)
    torch.testing.assert_close(seen["t"], expected_t)
    torch.testing.assert_close(seen["x_t"], interpolate(x, noise, expected_t))
    assert loss.item() == pytest.approx((noise - x).pow(2).mean().item(), rel=1e-6)


def overfit_one_latent(latent: torch.Tensor, width: int, heads: int, steps: int = 600) -> float:
    """Train a one-block LightningDiT of the given width on a single latent; the final loss on fresh noise."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LightningDiT(
            DiTConfig(tuple(latent.shape), depth=1, width=width, num_heads=heads, num_classes=1, class_dropout_prob=0.0)
        )
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    distribution = TimeDistribution("uniform")
    generator = torch.Generator().manual_seed(1)
    batch = latent.expand(128, -1, -1, -1)
    labels = torch.zeros(128, dtype=torch.long)
    for _ in range(steps):
        loss = flow_matching_loss(model, batch, labels, distribution, alpha=1.0, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        evaluation = latent.expand(4096, -1, -1, -1)
        return flow_matching_loss(
            model, evaluation, torch.zeros(4096, dtype=torch.long), distribution, 1.0, torch.Generator().manual_seed(9)
        ).item()


def test_width_rule_single_latent_overfit():
    """Sec. 4.1: width d < n plateaus near (n - d) / n of the normalized loss (unit-variance noise); d >= n fits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest
    try:
        n = 64
        latent = torch.randn(n, 2, 2, generator=torch.Generator().manual_seed(0))
        narrow = {width: overfit_one_latent(latent, width=width, heads=2) for width in (16, 32)}
        wide = overfit_one_latent(latent, width=64, heads=4)
    finally:
        torch.set_num_threads(threads)
    for width, loss in narrow.items():  # measured: 0.786 for bound 0.75, 0.536 for bound 0.5
        bound = (n - width) / n
        assert bound - 0.02 < loss < bound + 0.08
    assert wide < 0.1  # measured: 0.047
