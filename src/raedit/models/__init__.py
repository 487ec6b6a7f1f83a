"""Stage-2 denoisers on RAE latents: LightningDiT (Sec. 4) and DiT^DH (Sec. 5), sizes S, B, L, XL."""

from __future__ import annotations

from typing import Any

from torch import nn

from raedit.errors import RaeditError
from raedit.models.dit import DIT_SIZES, LightningDiT
from raedit.models.ditdh import DiTDH

__all__ = ["DIT_SIZES", "MODEL_FAMILIES", "DiTDH", "LightningDiT", "build_model"]

MODEL_FAMILIES: dict[str, type[nn.Module]] = {"dit": LightningDiT, "ditdh": DiTDH}


def build_model(name: str, latent_shape: tuple[int, int, int], **overrides: Any) -> LightningDiT | DiTDH:
    """Build a model by name, e.g. "ditdh-xl" or "dit-s", for latents of shape (C, h, w).

    The size sets depth, width and heads of the (backbone) DiT; DiT^DH keeps its default head (2 blocks of
    width 2048, 16 heads). `overrides` are constructor arguments (e.g. num_classes=10, head_width=512).
    """
    family, _, size = name.lower().partition("-")
    if family not in MODEL_FAMILIES or size.upper() not in DIT_SIZES:
        known = ", ".join(f"{f}-{s.lower()}" for f in MODEL_FAMILIES for s in DIT_SIZES)
        raise RaeditError(f"unknown model {name!r}; known: {known}")
    depth, width, num_heads = DIT_SIZES[size.upper()]
    kwargs: dict[str, Any] = dict(depth=depth, width=width, num_heads=num_heads)
    kwargs.update(overrides)
    try:
        return MODEL_FAMILIES[family](tuple(latent_shape), **kwargs)  # type: ignore[return-value]
    except TypeError as error:
        raise RaeditError(f"bad arguments for model {name!r}: {error}") from None
