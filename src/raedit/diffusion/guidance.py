"""Guidance (Appx. I): classifier-free guidance on a time interval, AutoGuidance by a weaker model, and RAEv2's
internal guidance by the model's own base head (arXiv 2605.18324, Sec. 2.3).

Each function turns class-conditional models (x (B, ...), t (B,), labels (B,)) -> velocity into the velocity
function v(x, t) that the samplers integrate. Guidance acts on velocities: for an x-predicting model (RAEv2) the
velocity is affine in x_hat with the same x_t and t (`raedit.models.predictions`), so guiding the velocities is
guiding the x predictions, as RAEv2's code does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from raedit.core.errors import RaeditError
from raedit.diffusion.samplers import VelocityFn

ClassConditionalModel = Callable[[Tensor, Tensor, Tensor], Tensor]


def in_precision(model: ClassConditionalModel, device_type: str, bf16: bool) -> ClassConditionalModel:
    """`model` run in fp32, or under a bf16 autocast with `bf16`; its velocity is returned in fp32 either way, so the
    sampler integrates in fp32 (bf16 moves FIDs by tenths: use fp32 for final numbers)."""
    def forward(x: Tensor, t: Tensor, labels: Tensor, **options: bool) -> Tensor | tuple[Tensor, ...]:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            output = model(x, t, labels, **options)
        return tuple(part.float() for part in output) if isinstance(output, tuple) else output.float()
    return forward


def _check_interval(interval: tuple[float, float]) -> tuple[float, float]:
    t_min, t_max = float(interval[0]), float(interval[1])
    if not 0 <= t_min <= t_max <= 1:
        raise RaeditError(f"a guidance interval is (t_min, t_max) with 0 <= t_min <= t_max <= 1, got {interval}")
    return t_min, t_max


def _inside(t: Tensor, interval: tuple[float, float], ndim: int) -> Tensor:
    """Whether each t (B,) lies in [t_min, t_max], shaped (B, 1, ..., 1) to broadcast over ndim dimensions."""
    return ((t >= interval[0]) & (t <= interval[1])).view(-1, *([1] * (ndim - 1)))


def conditional(model: ClassConditionalModel, labels: Tensor) -> VelocityFn:
    """No guidance: v(x, t) = model(x, t, labels)."""
    return lambda x, t: model(x, t, labels)


def classifier_free_guidance(
    model: ClassConditionalModel,
    labels: Tensor,
    null_label: int,
    scale: float,
    interval: tuple[float, float] = (0.0, 1.0),
) -> VelocityFn:
    """CFG: v = v_uncond + scale * (v_cond - v_uncond) for t in [t_min, t_max], v_cond elsewhere.

    Conditional and unconditional branches run in one batched forward of 2B; steps with no t in the interval
    (or scale 1) run only the conditional batch. Deciding that reads t on the host (one device sync a step), except
    for the whole interval [0, 1], which every t is in.
    """
    interval = _check_interval(interval)
    null_labels = torch.full_like(labels, null_label)
    everywhere = interval == (0.0, 1.0)

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        inside = _inside(t, interval, x.dim())
        if scale == 1.0 or not (everywhere or bool(inside.any())):
            return model(x, t, labels)
        both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null_labels]))
        v_cond, v_uncond = both.chunk(2)
        guided = v_uncond + scale * (v_cond - v_uncond)
        return guided if everywhere else torch.where(inside, guided, v_cond)

    return velocity


def auto_guidance(
    model: ClassConditionalModel,
    guide: ClassConditionalModel,
    labels: Tensor,
    scale: float,
    interval: tuple[float, float] = (0.0, 1.0),
) -> VelocityFn:
    """AutoGuidance: v = v_guide + scale * (v_main - v_guide), both with the class labels (no null-label batch).

    The guide is a smaller or earlier checkpoint of the same latent space (the paper: DiT^DH-S, w = 1.42 at
    256 px). Outside [t_min, t_max] (or with scale 1) the guide is not evaluated and v = v_main; as for CFG, only
    the whole interval [0, 1] decides that without reading t on the host.
    """
    interval = _check_interval(interval)
    everywhere = interval == (0.0, 1.0)

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        v_main = model(x, t, labels)
        inside = _inside(t, interval, x.dim())
        if scale == 1.0 or not (everywhere or bool(inside.any())):
            return v_main
        v_guide = guide(x, t, labels)
        guided = v_guide + scale * (v_main - v_guide)
        return guided if everywhere else torch.where(inside, guided, v_main)

    return velocity


def _guide_by_base(full: Tensor, base: Tensor, t: Tensor, scale: float, interval: tuple[float, float]) -> Tensor:
    """RAEv2: v_base + scale * (v_full - v_base) for t in the interval, v_full elsewhere."""
    return torch.where(_inside(t, interval, full.dim()), base + scale * (full - base), full)


def internal_guidance(
    model: ClassConditionalModel,
    labels: Tensor,
    scale: float,
    interval: tuple[float, float] = (0.0, 1.0),
) -> VelocityFn:
    """Internal guidance (RAEv2, Sec. 2.3; Zhou et al. 2025): v = v_base + scale * (v_full - v_base) for t in
    [t_min, t_max], v_full elsewhere, where v_base is the model's own base head (an early exit trained on the same
    target). One forward of the conditional batch gives both, so it costs no second model and no null batch.
    RAEv2's ImageNet setting: scale 1.78 on [0.1, 1]."""
    interval = _check_interval(interval)

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        full, base = model(x, t, labels, with_base=True)
        return _guide_by_base(full, base, t, scale, interval)

    return velocity


def internal_and_classifier_free_guidance(
    model: ClassConditionalModel,
    labels: Tensor,
    null_label: int,
    ig_scale: float,
    ig_interval: tuple[float, float],
    cfg_scale: float,
    cfg_interval: tuple[float, float],
) -> VelocityFn:
    """RAEv2's combination: internal guidance on the conditional and the unconditional branch alike (one batched
    forward of 2B), then CFG between the two guided velocities on its own interval."""
    ig_interval, cfg_interval = _check_interval(ig_interval), _check_interval(cfg_interval)
    null_labels = torch.full_like(labels, null_label)

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        full, base = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null_labels]), with_base=True)
        v_cond, v_uncond = _guide_by_base(full, base, torch.cat([t, t]), ig_scale, ig_interval).chunk(2)
        return torch.where(_inside(t, cfg_interval, x.dim()), v_uncond + cfg_scale * (v_cond - v_uncond), v_cond)

    return velocity


def guided_velocity(
    model: ClassConditionalModel,
    labels: Tensor,
    null_label: int,
    cfg_scale: float = 1.0,
    cfg_interval: tuple[float, float] = (0.0, 1.0),
    guide: ClassConditionalModel | None = None,
    ag_scale: float = 1.0,
    ig_scale: float = 1.0,
    ig_interval: tuple[float, float] = (0.0, 1.0),
) -> VelocityFn:
    """The velocity function for sampling settings: AutoGuidance when a guide is given, else CFG and/or internal
    guidance (scale 1 = none).

    CFG and AutoGuidance together are refused: the paper uses one or the other; AutoGuidance with internal guidance
    too (both guide by a weaker prediction; RAEv2 does not combine them).
    """
    if guide is not None:
        if cfg_scale != 1.0 or ig_scale != 1.0:
            raise RaeditError("AutoGuidance goes alone: not with classifier-free or internal guidance")
        return auto_guidance(model, guide, labels, ag_scale, cfg_interval)
    if ag_scale != 1.0:
        raise RaeditError("AutoGuidance needs a guide model")
    if ig_scale != 1.0:
        if cfg_scale == 1.0:
            return internal_guidance(model, labels, ig_scale, ig_interval)
        return internal_and_classifier_free_guidance(model, labels, null_label, ig_scale, ig_interval, cfg_scale,
                                                     cfg_interval)
    if cfg_scale == 1.0:
        return conditional(model, labels)
    return classifier_free_guidance(model, labels, null_label, cfg_scale, cfg_interval)
