"""Stage-2 denoisers on RAE latents: LightningDiT (Sec. 4), DiT^DH (Sec. 5) and RAEv2's token-conditioned DiT^DH,
sizes S, B, L, XL.

Each model takes one config dataclass (`DiTConfig`, `DiTDHConfig`), the whole description of its architecture:
`model.config` is what a saved denoiser stores, and `build_model(config)` rebuilds it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from raedit.core.errors import RaeditError
from raedit.models.dit import DIT_SIZES, DiTConfig, LightningDiT
from raedit.models.ditdh import DiTDH, DiTDHConfig
from raedit.models.ditdh_v2 import DiTDHv2, DiTDHv2Config

__all__ = ["DIT_SIZES", "MODEL_FAMILIES", "DiTConfig", "DiTDH", "DiTDHConfig", "DiTDHv2", "DiTDHv2Config",
           "Denoiser", "LightningDiT", "build_model", "model_config"]

Denoiser = LightningDiT | DiTDH | DiTDHv2
# family name -> (config class, model class)
MODEL_FAMILIES: dict[str, tuple[type[DiTConfig], type[Denoiser]]] = {
    "dit": (DiTConfig, LightningDiT),
    "ditdh": (DiTDHConfig, DiTDH),
    "ditdhv2": (DiTDHv2Config, DiTDHv2),
}


def family_of(config: DiTConfig) -> str:
    """The family name ("dit" | "ditdh" | "ditdhv2") of a model config."""
    return next(name for name, (config_class, _) in MODEL_FAMILIES.items() if type(config) is config_class)


def model_config(name: str, latent_shape: tuple[int, int, int], **overrides: Any) -> DiTConfig:
    """The config of a model named like "ditdh-xl" or "dit-s" for latents of shape (C, h, w).

    The size sets depth, width and heads of the (backbone) DiT; DiT^DH keeps its default head (2 blocks of
    width 2048, 16 heads). "ditdhv2-*" is RAEv2's token-conditioned DiT^DH (RAEv2's own XL is 1440 wide, 20 heads:
    set those as overrides). `overrides` are config fields (e.g. num_classes=10, head_width=512).
    """
    family, _, size = name.lower().partition("-")
    if family not in MODEL_FAMILIES or size.upper() not in DIT_SIZES:
        known = ", ".join(f"{f}-{s.lower()}" for f in MODEL_FAMILIES for s in DIT_SIZES)
        raise RaeditError(f"unknown model {name!r}; known: {known}")
    depth, width, num_heads = DIT_SIZES[size.upper()]
    config_class = MODEL_FAMILIES[family][0]
    fields = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise RaeditError(f"bad arguments for model {name!r}: {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(fields))})")
    return config_class(latent_shape=latent_shape, **{"depth": depth, "width": width, "num_heads": num_heads,
                                                      **overrides})


def build_model(config: DiTConfig) -> Denoiser:
    """The model (LightningDiT, DiT^DH or DiT^DH v2, by the config's class) of `config`."""
    return MODEL_FAMILIES[family_of(config)][1](config)
