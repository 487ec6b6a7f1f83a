"""`raedit import-diffusers`, `raedit export-diffusers`: diffusers' `AutoencoderRAE` to and from a raedit saved RAE, on
the files alone (raedit does not import diffusers).

A diffusers RAE directory holds `config.json` and `diffusion_pytorch_model.safetensors`, whose tensors are the
frozen encoder (a transformers model, under `encoder.`), the decoder (the released decoders' layout with diffusers'
attention names, under `decoder.`), the pixel normalization (`encoder_mean`, `encoder_std`) and the latent
statistics (`_latents_mean`, `_latents_std`). The encoders compute the same function as raedit's, and the decoders
too up to one fixed table (below); the two write the latent normalization of Sec. 3 differently:

    diffusers:  z_n = (z - latents_mean) / (latents_std + 1e-5) * scaling_factor
    raedit:     z_n = (z - mean) / sqrt(var + stats_eps)

so the two are the same normalization exactly when mean = latents_mean and
sqrt(var + stats_eps) = (latents_std + 1e-5) / scaling_factor, each per channel and position (C x h x w).

The decoders' fixed table: diffusers computes the sin-cos positions of a side x side token grid at
the positions i * 16 / side (`get_2d_sincos_pos_embed`'s base_size 16), raedit and the official code at i, so
the two agree on the 16 x 16 grids of the released models only. An imported RAE keeps diffusers' table (raedit
saves the decoder's positions with its weights); an RAE whose table is not diffusers' does not export.

Diffusers builds its encoder from the config's sizes alone (`encoder_hidden_size`, `encoder_patch_size`,
`encoder_num_hidden_layers`, with heads of 64 channels and transformers' defaults otherwise), so an RAE exports
only when its encoder's architecture is that one, as it is for the registry's encoders.
"""

from __future__ import annotations

import inspect
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Dinov2WithRegistersModel, PretrainedConfig, PreTrainedModel, SiglipVisionModel, ViTMAEModel

from raedit.autoencoder import RAE, AutoencoderConfig
from raedit.core.errors import RaeditError, first_line
from raedit.core.files import read_json, read_state_dict, save_tensors, write_json
from raedit.core.state_dicts import check_fits, rename_key
from raedit.decoder import ViTDecoder, decoder_architecture, decoder_size_name
from raedit.encoders import ENCODERS, EncoderSpec
from raedit.encoders.hub import load_pretrained

DIFFUSERS_CONFIG = "config.json"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_CLASS = "AutoencoderRAE"
DIFFUSERS_STD_EPS = 1e-5  # diffusers divides by latents_std + 1e-5
ENCODER_DIR = "encoder"  # the imported RAE's encoder weights, a transformers model directory
HEAD_CHANNELS = 64  # diffusers builds every encoder with hidden_size // 64 attention heads
REQUIRED_TENSORS = ("encoder_mean", "encoder_std", "_latents_mean", "_latents_std")
# Encoder config fields that fix its weights' shapes or the function it computes: an exported encoder must have
# the values diffusers builds it with. A field a family's config lacks reads as None on both sides.
ARCHITECTURE_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "mlp_ratio", "patch_size",
    "image_size", "num_channels", "hidden_act", "layer_norm_eps", "qkv_bias", "use_swiglu_ffn", "num_register_tokens",
)


@dataclass(frozen=True)
class EncoderType:
    """How diffusers builds the encoder of one `encoder_type`; raedit's registry names that family
    `{encoder_type}-s/b/l`."""

    model_class: type[PreTrainedModel]  # the transformers model raedit's family loads
    image_size: int  # the config's image_size diffusers builds it with (the size of its position table)
    final_norm: str  # its final LayerNorm, whose affine diffusers removes and raedit ignores


ENCODER_TYPES: dict[str, EncoderType] = {
    "dinov2": EncoderType(Dinov2WithRegistersModel, 518, "layernorm"),
    "siglip2": EncoderType(SiglipVisionModel, 256, "post_layernorm"),
    "mae": EncoderType(ViTMAEModel, 224, "layernorm"),
}

# (raedit ViTDecoder key pattern, diffusers key under `decoder.`); the first match wins. raedit's `pos_embed` has
# no entry: diffusers computes its sin-cos table itself and does not save it (`diffusers_decoder_positions`).
DECODER_KEYS: list[tuple[str, str]] = [
    (r"^token_embed\.", "decoder_embed."),
    (r"^cls_token$", "trainable_cls_token"),
    (r"^blocks\.(\d+)\.norm1\.", r"decoder_layers.\1.layernorm_before."),
    (r"^blocks\.(\d+)\.norm2\.", r"decoder_layers.\1.layernorm_after."),
    (r"^blocks\.(\d+)\.attn\.query\.", r"decoder_layers.\1.attention.to_q."),
    (r"^blocks\.(\d+)\.attn\.key\.", r"decoder_layers.\1.attention.to_k."),
    (r"^blocks\.(\d+)\.attn\.value\.", r"decoder_layers.\1.attention.to_v."),
    (r"^blocks\.(\d+)\.attn\.out\.", r"decoder_layers.\1.attention.to_out.0."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"decoder_layers.\1.intermediate.dense."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"decoder_layers.\1.output.dense."),
    (r"^norm\.", "decoder_norm."),
    (r"^head\.", "decoder_pred."),
]
DECODER_POSITIONS = "pos_embed"
DIFFUSERS_POSITIONS = "decoder.decoder_pos_embed"  # not saved by diffusers, and recomputed (ignored) when it is
# The diffusers config's decoder architecture, in the order of `decoder_size_name`: depth, width, heads, MLP hidden.
DECODER_SETTINGS = ("decoder_num_hidden_layers", "decoder_hidden_size", "decoder_num_attention_heads",
                    "decoder_intermediate_size")
POSITION_BASE = 16  # diffusers' get_2d_sincos_pos_embed(base_size=16) spreads any grid over the positions [0, 16)


def import_diffusers_rae(source: str | Path, out: str | Path) -> Path:
    """Write the diffusers `AutoencoderRAE` in `source` (a local directory, or a hub id to download) as a raedit
    saved RAE into `out`, with its encoder's weights in `out/encoder` (a transformers model directory the RAE's
    `encoder_weights` names), so that `RAE.from_pretrained(out)` loads offline and encodes and decodes as the
    diffusers model does. Returns `out`."""
    directory = _diffusers_directory(source)
    settings = read_json(directory / DIFFUSERS_CONFIG, "diffusers AutoencoderRAE config")
    weights = read_state_dict(directory / DIFFUSERS_WEIGHTS, "diffusers AutoencoderRAE weights")
    _check_importable(settings, weights, directory)
    encoder_type = _setting(settings, "encoder_type", directory)
    spec = _registry_encoder(encoder_type, _setting(settings, "encoder_hidden_size", directory))
    _check_encoder(spec, settings, weights, directory)

    out = Path(out)
    encoder_dir = (out / ENCODER_DIR).resolve()
    _save_encoder(encoder_type, spec, settings, weights, encoder_dir)
    input_size = settings["encoder_input_size"]
    decoder_size = decoder_size_name(*(_setting(settings, key, directory) for key in DECODER_SETTINGS))
    rae = RAE(AutoencoderConfig(
        encoder=spec.name, encoder_weights=str(encoder_dir),
        encoder_input_size=input_size if input_size != spec.input_size else None, decoder_size=decoder_size,
        decoder_patch_size=_setting(settings, "patch_size", directory), noise_tau=settings.get("noise_tau", 0.0),
    ))
    rae.load_decoder_state_dict(_raedit_decoder_state(rae.decoder, weights, directory), str(directory))
    scaling_factor = settings.get("scaling_factor", 1.0)
    rae.set_stats(*raedit_stats(weights["_latents_mean"], weights["_latents_std"], scaling_factor, rae.latent_shape,
                                rae.config.stats_eps, directory))
    rae.save_pretrained(out)
    return out


def export_diffusers_rae(rae_dir: str | Path, out: str | Path) -> Path:
    """Write the raedit RAE saved in `rae_dir` (loaded with its encoder's weights) as a diffusers `AutoencoderRAE`
    into `out` (`config.json` and `diffusion_pytorch_model.safetensors`), which `AutoencoderRAE.from_pretrained`
    loads and which encodes and decodes as the RAE does. Returns `out`."""
    rae = RAE.from_pretrained(rae_dir)
    if rae.config.encoder_layers is not None:
        raise RaeditError(f"diffusers' AutoencoderRAE encodes with one layer; the RAE in {rae_dir} combines layers "
                          f"({rae.config.latent_space})")
    name, encoder = rae.config.encoder, rae.encoder
    encoder_type = name.split("-")[0]
    if encoder_type not in ENCODER_TYPES or not isinstance(rae.decoder, ViTDecoder):
        raise RaeditError(f"diffusers' AutoencoderRAE has no encoder like '{name}' (it has "
                          f"{', '.join(ENCODER_TYPES)}) or no decoder like '{rae.config.decoder_size}'")
    model_config = encoder.model.config
    expected = diffusers_encoder_config(encoder_type, model_config.hidden_size, encoder.patch_size,
                                        model_config.num_hidden_layers)
    pairs = {field: (getattr(model_config, field, None), getattr(expected, field, None))
             for field in ARCHITECTURE_FIELDS}
    different = [f"{field} {own} (diffusers: {theirs})" for field, (own, theirs) in pairs.items() if own != theirs]
    if different:
        raise RaeditError(f"diffusers builds a {encoder_type} encoder from its size alone, and the encoder of "
                          f"{rae_dir} differs from that one in {', '.join(different)}")
    depth, width, heads, mlp_hidden = decoder_architecture(rae.config.decoder_size)
    side = rae.latent_shape[1]
    if not torch.allclose(rae.decoder.pos_embed, diffusers_decoder_positions(width, side), rtol=0, atol=1e-6):
        raise RaeditError(f"diffusers decodes a {side} x {side} token grid with the sin-cos positions of a "
                          f"{POSITION_BASE} x {POSITION_BASE} grid, not the ones the decoder of {rae_dir} has")
    latents_mean, latents_std = diffusers_stats(rae)
    settings = {
        "_class_name": DIFFUSERS_CLASS, "encoder_type": encoder_type, "encoder_hidden_size": encoder.channels,
        "encoder_patch_size": encoder.patch_size, "encoder_num_hidden_layers": model_config.num_hidden_layers,
        "decoder_hidden_size": width, "decoder_num_hidden_layers": depth, "decoder_num_attention_heads": heads,
        "decoder_intermediate_size": mlp_hidden, "patch_size": rae.config.decoder_patch_size,
        "encoder_input_size": encoder.input_size, "image_size": rae.image_size[0], "num_channels": 3,
        "encoder_norm_mean": encoder.pixel_mean.flatten().tolist(),
        "encoder_norm_std": encoder.pixel_std.flatten().tolist(),
        "latents_mean": latents_mean.tolist(), "latents_std": latents_std.tolist(), "noise_tau": rae.config.noise_tau,
        "reshape_to_2d": True, "use_encoder_loss": False, "scaling_factor": 1.0,
    }
    tensors = {
        **{f"encoder.{key}": value for key, value in encoder.model.state_dict().items()},
        **{_diffusers_decoder_key(key): value for key, value in rae.decoder.state_dict().items()
           if key != DECODER_POSITIONS},
        "encoder_mean": encoder.pixel_mean, "encoder_std": encoder.pixel_std,
        "_latents_mean": latents_mean, "_latents_std": latents_std,
    }
    out = Path(out)
    save_tensors(out / DIFFUSERS_WEIGHTS, tensors, metadata={"format": "pt"})
    write_json(out / DIFFUSERS_CONFIG, settings)
    return out


def raedit_stats(latents_mean: torch.Tensor, latents_std: torch.Tensor, scaling_factor: float,
                 latent_shape: tuple[int, int, int], stats_eps: float, source: str | Path
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Diffusers' latent statistics (Sec. 3 normalization `(z - mean) / (std + 1e-5) * scaling_factor`) as
    raedit's (mean, var) of `latent_shape`, normalizing `(z - mean) / sqrt(var + stats_eps)`: the scaling factor
    folds into the scale, var = ((std + 1e-5) / scaling_factor)**2 - stats_eps."""
    mean = _per_position(latents_mean, latent_shape, "latents_mean", source)
    std = _per_position(latents_std, latent_shape, "latents_std", source)
    scale = (std.double() + DIFFUSERS_STD_EPS) / scaling_factor
    if not bool((scale > 0).all()):
        raise RaeditError(f"{source}: (latents_std + 1e-5) / scaling_factor is not positive everywhere, and raedit's "
                          f"latent scale sqrt(var + eps) can only be positive")
    return mean.float(), (scale**2 - stats_eps).float()


def diffusers_stats(rae: RAE) -> tuple[torch.Tensor, torch.Tensor]:
    """The RAE's latent normalization as diffusers' (latents_mean, latents_std), each C x h x w, with scaling
    factor 1: std = sqrt(var + stats_eps) - 1e-5 (Sec. 3). An RAE without statistics normalizes nothing: mean 0
    and scale 1."""
    mean, scale = torch.zeros(rae.latent_shape), torch.ones(rae.latent_shape, dtype=torch.float64)
    if rae.normalized:
        mean, scale = rae.latent_mean.double(), torch.sqrt(rae.latent_var.double() + rae.config.stats_eps)
    return mean.float(), (scale - DIFFUSERS_STD_EPS).float()


def diffusers_encoder_config(encoder_type: str, hidden_size: int, patch_size: int, layers: int) -> PretrainedConfig:
    """The transformers config diffusers builds its encoder from: these sizes, heads of 64 channels, its fixed
    image size, and transformers' defaults for everything else."""
    kind = ENCODER_TYPES[encoder_type]
    return kind.model_class.config_class(
        hidden_size=hidden_size, patch_size=patch_size, image_size=kind.image_size,
        num_attention_heads=hidden_size // HEAD_CHANNELS, num_hidden_layers=layers,
    )


def diffusers_decoder_positions(width: int, side: int) -> torch.Tensor:
    """The decoder positions diffusers computes (`get_2d_sincos_pos_embed(width, side, cls_token=True,
    extra_tokens=1)`), 1 x (1 + side**2) x width: a zero row for the CLS token, then raedit's 2D sin-cos table
    (`raedit.models.positions.sincos_position_embedding_2d`: column, then row; sin, then cos) at the positions
    i * 16 / side, computed in float32 as diffusers does, instead of i."""
    positions = (torch.arange(side, dtype=torch.float32) / (side / POSITION_BASE)).double()
    omega = 1.0 / 10000 ** (torch.arange(width // 4, dtype=torch.float64) / (width / 4))
    rows, cols = torch.meshgrid(positions, positions, indexing="ij")

    def encode(axis_positions: torch.Tensor) -> torch.Tensor:
        angles = torch.outer(axis_positions.reshape(-1), omega)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([encode(cols), encode(rows)], dim=1).float()
    return torch.cat([torch.zeros(1, width), table]).unsqueeze(0)


def _diffusers_directory(source: str | Path) -> Path:
    """`source` as a local directory: itself, or its download from the hub."""
    directory = Path(source).expanduser()
    if not directory.is_dir():
        from huggingface_hub import snapshot_download

        try:
            directory = Path(snapshot_download(str(source), allow_patterns=[DIFFUSERS_CONFIG, DIFFUSERS_WEIGHTS]))
        except Exception as error:  # noqa: BLE001 - an invalid id, a missing repository and no network alike
            raise RaeditError(f"cannot get the diffusers AutoencoderRAE '{source}': no such directory, and the hub "
                              f"download failed ({first_line(error)})") from None
    if not (directory / DIFFUSERS_CONFIG).is_file() or not (directory / DIFFUSERS_WEIGHTS).is_file():
        raise RaeditError(f"{directory} is not a diffusers AutoencoderRAE (needs {DIFFUSERS_CONFIG} and "
                          f"{DIFFUSERS_WEIGHTS})")
    return directory


def _setting(settings: dict, key: str, directory: Path):
    """A value of the diffusers config that has no default here."""
    if key not in settings:
        raise RaeditError(f"{directory / DIFFUSERS_CONFIG} lacks '{key}'")
    return settings[key]


def _check_importable(settings: dict, weights: dict[str, torch.Tensor], directory: Path) -> None:
    """What raedit's RAE cannot represent: another model class, another encoder family, latents as tokens, other
    than RGB images, or missing normalization tensors."""
    if settings.get("_class_name", DIFFUSERS_CLASS) != DIFFUSERS_CLASS:
        raise RaeditError(f"{directory} holds a diffusers {settings['_class_name']}, not an {DIFFUSERS_CLASS}")
    if _setting(settings, "encoder_type", directory) not in ENCODER_TYPES:
        raise RaeditError(f"{directory}: unknown encoder_type '{settings['encoder_type']}'; raedit has "
                          f"{', '.join(ENCODER_TYPES)}")
    if not settings.get("reshape_to_2d", True) or settings.get("num_channels", 3) != 3:
        raise RaeditError(f"{directory}: raedit's RAE has latents B x C x h x w and RGB images, not reshape_to_2d="
                          f"{settings.get('reshape_to_2d')} and num_channels={settings.get('num_channels')}")
    missing = [key for key in REQUIRED_TENSORS if key not in weights]
    if missing:
        raise RaeditError(f"{directory / DIFFUSERS_WEIGHTS} lacks the tensors {', '.join(missing)}")


def _registry_encoder(encoder_type: str, hidden_size: int) -> EncoderSpec:
    """The registry entry for a diffusers encoder: the family's with its width, else the family's "-b" (the
    imported weights fix the real size)."""
    family = [spec for name, spec in ENCODERS.items() if name.startswith(f"{encoder_type}-")]
    return next((spec for spec in family if spec.channels == hidden_size), ENCODERS[f"{encoder_type}-b"])


def _check_encoder(spec: EncoderSpec, settings: dict, weights: dict[str, torch.Tensor], directory: Path) -> None:
    """The diffusers encoder must patchify, resize and normalize pixels as raedit's `spec` encoder does."""
    patch_size = _setting(settings, "encoder_patch_size", directory)
    input_size = _setting(settings, "encoder_input_size", directory)
    if patch_size != spec.patch_size:
        raise RaeditError(f"{directory}: encoder_patch_size {patch_size}, but raedit's {spec.name} encoder has "
                          f"patch size {spec.patch_size}")
    if input_size != spec.input_size and "input_size" not in inspect.signature(spec.family.from_weights).parameters:
        raise RaeditError(f"{directory}: encoder_input_size {input_size}, but raedit's {spec.name} encoder takes only "
                          f"{spec.input_size} px")
    for key, raedit_values in (("encoder_mean", spec.pixel_mean), ("encoder_std", spec.pixel_std)):
        values = weights[key].flatten()
        if values.shape != (3,) or not torch.allclose(values, torch.tensor(raedit_values)):
            raise RaeditError(f"{directory}: pixels normalized with {key} {values.tolist()}, but raedit's {spec.name} "
                              f"encoder uses {list(raedit_values)}")


def _save_encoder(encoder_type: str, spec: EncoderSpec, settings: dict, weights: dict[str, torch.Tensor],
                  directory: Path) -> None:
    """Save the diffusers file's encoder as a transformers model directory that raedit's `spec` family loads.

    The tensors go through transformers' `from_pretrained` (which reads the names of the transformers version
    that wrote them, old or new) and out through `save_pretrained` (the names every version reads). The final
    LayerNorm, whose affine diffusers removed, gets the identity affine raedit ignores anyway."""
    kind = ENCODER_TYPES[encoder_type]
    hidden_size = settings["encoder_hidden_size"]
    config = diffusers_encoder_config(encoder_type, hidden_size, settings["encoder_patch_size"],
                                      _setting(settings, "encoder_num_hidden_layers", directory))
    state = {key.removeprefix("encoder."): value for key, value in weights.items() if key.startswith("encoder.")}
    state.setdefault(f"{kind.final_norm}.weight", torch.ones(hidden_size))
    state.setdefault(f"{kind.final_norm}.bias", torch.zeros(hidden_size))
    with tempfile.TemporaryDirectory() as staging:
        config.save_pretrained(staging)
        save_tensors(Path(staging) / "model.safetensors", state, metadata={"format": "pt"})
        model = load_pretrained(kind.model_class, spec, staging)
    model.save_pretrained(directory)


def _diffusers_decoder_key(key: str) -> str:
    """The diffusers name of a raedit decoder tensor, with its `decoder.` prefix."""
    return f"decoder.{rename_key(key, DECODER_KEYS)}"


def _raedit_decoder_state(decoder: ViTDecoder, weights: dict[str, torch.Tensor],
                          directory: Path) -> dict[str, torch.Tensor]:
    """The diffusers file's decoder tensors under `decoder`'s keys, checked against its shapes, with the sin-cos
    positions diffusers computes for them."""
    own = decoder.state_dict()
    names = {key: _diffusers_decoder_key(key) for key in own if key != DECODER_POSITIONS}
    given = {key: value for key, value in weights.items() if key.startswith("decoder.") and key != DIFFUSERS_POSITIONS}
    check_fits({names[key]: own[key] for key in names}, given, f"the decoder in {directory / DIFFUSERS_WEIGHTS}")
    positions = diffusers_decoder_positions(decoder.token_embed.out_features, decoder.config.grid[0])
    return {**{key: given[name] for key, name in names.items()}, DECODER_POSITIONS: positions}


def _per_position(statistic: torch.Tensor, latent_shape: tuple[int, int, int], what: str,
                  source: str | Path) -> torch.Tensor:
    """A diffusers latent statistic (anything that broadcasts against B x C x h x w latents) as C x h x w."""
    try:
        return torch.broadcast_to(statistic, (1, *latent_shape))[0]
    except RuntimeError:
        raise RaeditError(f"{source}: {what} of shape {tuple(statistic.shape)} does not broadcast to the latents "
                          f"{latent_shape}") from None
