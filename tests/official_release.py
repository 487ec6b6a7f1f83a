"""A small copy of the official release (nyu-visionx/RAE-collections): files at the released paths, with the
released key layout, saved with `torch.save` as the official code saves them, and the raedit modules holding the
same weights (the native path the imports are compared with).

The key layout is the released one: `key_patterns` of every file equals that of the released checkpoints'
key lists in tests/data/official-rae (checked by the tests)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from raedit.autoencoder import RAE, AutoencoderConfig
from raedit.core.state_dicts import rename_key
from raedit.encoders import decode_only_encoder
from raedit.jobs.releases import PRESETS
from raedit.models import DiTDH, DiTDHConfig

OFFICIAL_LAYOUTS = Path(__file__).resolve().parent / "data" / "official-rae"
ENCODER = "dinov2-b"  # latents 768 x 16 x 16, as the released 256 px models
LATENT_SHAPE = (768, 16, 16)
# Renames raedit -> official (the inverse of raedit.interop's tables).
DECODER_TO_OFFICIAL = [
    (r"^token_embed\.", "decoder_embed."), (r"^pos_embed$", "decoder_pos_embed"),
    (r"^cls_token$", "trainable_cls_token"),
    (r"^blocks\.(\d+)\.norm1\.", r"decoder_layers.\1.layernorm_before."),
    (r"^blocks\.(\d+)\.norm2\.", r"decoder_layers.\1.layernorm_after."),
    (r"^blocks\.(\d+)\.attn\.(query|key|value)\.", r"decoder_layers.\1.attention.attention.\2."),
    (r"^blocks\.(\d+)\.attn\.out\.", r"decoder_layers.\1.attention.output.dense."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"decoder_layers.\1.intermediate.dense."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"decoder_layers.\1.output.dense."),
    (r"^norm\.", "decoder_norm."), (r"^head\.", "decoder_pred."),
]
DITDH_TO_OFFICIAL = [
    (r"^backbone_embedder\.", "s_embedder."), (r"^head_embedder\.", "x_embedder."),
    (r"^head_projector\.", "s_projector."), (r"^backbone_rope\.", "enc_feat_rope."),
    (r"^head_rope\.", "dec_feat_rope."),
]


def key_patterns(keys) -> set[str]:
    """Keys with their block / layer index replaced by N: the layout, whatever the depth."""
    return {re.sub(r"^(blocks|decoder_layers)\.\d+\.", r"\1.N.", key) for key in keys}


def released_patterns(name: str) -> set[str]:
    return key_patterns(json.loads((OFFICIAL_LAYOUTS / f"{name}.json").read_text())["state_dict"])


def randomized(module: torch.nn.Module, seed: int, scale: float = 0.2) -> torch.nn.Module:
    """`module` with every parameter (not the fixed position tables) drawn from N(0, scale^2)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name != "pos_embed":
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return module.eval()


def small_ditdh(seed: int, depth: int = 2, width: int = 64, num_heads: int = 2) -> DiTDH:
    config = DiTDHConfig(LATENT_SHAPE, depth=depth, width=width, num_heads=num_heads, head_depth=1, head_width=96,
                         head_num_heads=2)
    return randomized(DiTDH(config), seed, scale=0.05)


def official_ditdh_state(model: DiTDH) -> dict[str, torch.Tensor]:
    """The model's weights as the official DiTwDDTHead names them (head blocks after the backbone's)."""
    depth, state = model.config.depth, {}
    for key, value in model.state_dict().items():
        if key.startswith("head_blocks."):
            _, index, rest = key.split(".", 2)
            key = f"blocks.{int(index) + depth}.{rest}"
        state[rename_key(key, DITDH_TO_OFFICIAL)] = value.clone()
    return state


def small_rae(seed: int) -> RAE:
    """A decode-only RAE of the tiny decoder on DINOv2-B latents, with statistics of every position its own."""
    rae = RAE(AutoencoderConfig(encoder=ENCODER, decoder_size="tiny"), decode_only_encoder(ENCODER))
    randomized(rae.decoder, seed, scale=0.05)
    generator = torch.Generator().manual_seed(seed + 1)
    rae.set_stats(torch.randn(LATENT_SHAPE, generator=generator) * 0.5,
                  torch.rand(LATENT_SHAPE, generator=generator) + 0.5)
    return rae


def official_decoder_state(rae: RAE) -> dict[str, torch.Tensor]:
    return {rename_key(key, DECODER_TO_OFFICIAL): value.clone() for key, value in rae.decoder.state_dict().items()}


def write_release(root: Path, preset: str = "ditdh-xl-256-ag") -> dict:
    """The files of `preset` under `root` at their released paths; returns the raedit modules they hold:
    {"rae": RAE, "denoiser": DiTDH, "guide": DiTDH}. The denoiser is a training checkpoint (its `ema` entry beside
    `model`, optimizer and scheduler), the guide a bare state dict whose keys carry torch.compile's prefix."""
    chosen = PRESETS[preset]
    rae, denoiser, guide = small_rae(seed=1), small_ditdh(seed=2, depth=3), small_ditdh(seed=3, width=32, num_heads=1)

    def save(name: str, value) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(value, path)

    save(chosen.decoder, official_decoder_state(rae))
    save(chosen.stats, {"mean": rae.latent_mean.clone(), "var": rae.latent_var.clone()})
    online = official_ditdh_state(small_ditdh(seed=4, depth=3))  # the live weights: not the ones to sample with
    save(chosen.denoiser, {"step": 10, "epoch": 1, "model": online, "ema": official_ditdh_state(denoiser),
                           "optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "params": [0, 1]}]},
                           "scheduler": {"last_epoch": 10}})
    save(chosen.guide, {f"_orig_mod.{key}": value for key, value in official_ditdh_state(guide).items()})
    return {"rae": rae, "denoiser": denoiser, "guide": guide}
