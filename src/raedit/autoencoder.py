"""The Representation Autoencoder (Sec. 3): frozen encoder + latent normalization + trainable ViT decoder.

    encode:  images [0, 1] -> encoder tokens B x N x C -> (+ noise, training only) -> B x C x h x w
             -> (z - mean) / sqrt(var + eps)                       (per position and channel)
    decode:  latents -> z * sqrt(var + eps) + mean -> tokens -> decoder -> de-normalized pixels [0, 1]

`save_pretrained` writes the decoder and the statistics (safetensors) and a JSON config naming the encoder;
the frozen encoder's own weights are loaded from its source by name. The saved RAE is the one owner of its latent
statistics: a denoiser trained in its latent space names the RAE, and `store_latent_stats` adds statistics to a
saved RAE (`raedit stats ... rae=DIR`). With a pixel-patch encoder and
decoder_size "unpatchify" the RAE is the identity up to patchify (Table 11's pixel-diffusion baseline): nothing
to train, and `RAE(config).save_pretrained(directory)` gives stage 2 its `rae=<directory>`.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from raedit.core.config import Rule, above, at_least, one_of
from raedit.core.errors import RaeditError
from raedit.core.files import read_json, read_state_dict, save_tensors, write_json
from raedit.core.state_dicts import check_fits, weights_of
from raedit.core.tokens import latents_to_tokens, tokens_to_latents
from raedit.decoder import DecoderConfig, PatchUnpatchify, ViTDecoder
from raedit.encoders import NO_WEIGHTS, Encoder, build_encoder, decode_only_encoder, get_spec
from raedit.encoders.base import LAYER_COMBINES
from raedit.encoders.pixels import PixelPatchEncoder
from raedit.interop.official_decoder import official_decoder_to_raedit
from raedit.latent_stats import checked_stats, load_latent_stats

CONFIG_FILE = "rae_config.json"
STATS_KEYS = ("latent_mean", "latent_var")  # the statistics in a saved RAE's weights
WEIGHTS_FILE = "rae.safetensors"
NOISE_DISTRIBUTIONS = ("uniform", "halfnormal")
UNPATCHIFY = "unpatchify"  # decoder_size of the parameter-free inverse of a pixels-* encoder


def latent_space_name(encoder: str, layers: list[int] | None = None, layer_combine: str = "mean") -> str:
    """`encoder`, or for a multi-layer latent RAEv2's style of name: "dinov3-l[layers=11,13,15]" (their mean),
    "dinov3-l[layers=11,13,15;sum]"."""
    if layers is None:
        return encoder
    return f"{encoder}[layers={','.join(map(str, layers))}{'' if layer_combine == 'mean' else ';' + layer_combine}]"


def _saved_latent_space(config: dict) -> str:
    """`latent_space_name` of a saved RAE's config (saved before multi-layer latents: the encoder's name)."""
    return latent_space_name(config["encoder"], config.get("encoder_layers"),
                             config.get("encoder_layer_combine", "mean"))


@dataclass
class AutoencoderConfig:
    """What an RAE is made of. Keys are the YAML keys under `autoencoder:`."""

    VALID: ClassVar[dict[str, Rule]] = {"encoder_input_size": at_least(1), "decoder_patch_size": at_least(1),
                                        "stats_eps": above(0), "encoder_layer_combine": one_of(LAYER_COMBINES)}

    encoder: str = "dinov2-b"
    encoder_weights: str | None = None  # hub id or local directory / file; None: the registry's source
    encoder_input_size: int | None = None  # only for encoders with a free input size (EfficientNet-Lite)
    # RAEv2's multi-layer latent: the encoder blocks (0-based) whose tokens are combined, by their "mean" (RAEv2's)
    # or "sum", plus the deepest block's spatial mean (`raedit.encoders.base.combine_layers`); None: the last block.
    encoder_layers: list[int] | None = None
    encoder_layer_combine: str = "mean"
    decoder_size: str = "XL"  # a ViT decoder size (`decoder_architecture`), or "unpatchify" (pixels-* encoders)
    decoder_patch_size: int = 16  # 16: 256 px from 16 x 16 tokens; 32: 512 px (Sec. 6.1)
    stats: str | None = None  # latent statistics file; None: no normalization
    stats_eps: float = 1e-5
    # Sec. 4.3: noise-augmented decoder training, z + sigma * eps with sigma = tau * u per sample;
    # u ~ U(0, 1) ("uniform", the official code) or sigma ~ |N(0, tau^2)| ("halfnormal").
    noise_tau: float = 0.8
    noise_distribution: str = "uniform"
    # Grayscale data (Fashion-MNIST as RGB): decode to the mean of the decoder's three channels, repeated, so the
    # decoded images carry no colour the data never have (colour noise costs FID; docs/results/demo.md).
    grayscale: bool = False

    def __post_init__(self) -> None:
        if self.noise_distribution not in NOISE_DISTRIBUTIONS:
            raise RaeditError(f"unknown noise_distribution '{self.noise_distribution}'; "
                              f"use one of {', '.join(NOISE_DISTRIBUTIONS)}")
        if self.noise_tau < 0:
            raise RaeditError(f"noise_tau must be >= 0, got {self.noise_tau}")

    @property
    def latent_space(self) -> str:
        """The encoder's name, with its layers when several are combined: what tells latent caches, statistics and
        denoisers of different latents apart (`latent_space_name`)."""
        return latent_space_name(self.encoder, self.encoder_layers, self.encoder_layer_combine)

    def build_encoder(self, decode_only: bool = False, channels: int | None = None) -> Encoder:
        """The frozen encoder this config names, at its input size and with its `encoder_layers`. decode_only:
        without its weights (its shape and pixel normalization only, enough to decode; `channels` wide, default the
        registry's; the layers don't change those), unless it has none to load."""
        if decode_only and get_spec(self.encoder).source != NO_WEIGHTS:
            return decode_only_encoder(self.encoder, self.encoder_input_size, channels)
        options = {"input_size": self.encoder_input_size} if self.encoder_input_size else {}
        if self.encoder_layers is not None:
            options.update(layers=self.encoder_layers, layer_combine=self.encoder_layer_combine)
        return build_encoder(self.encoder, self.encoder_weights, **options)


class RAE(nn.Module):
    """Frozen `encoder` + latent statistics + trainable `decoder`. Latents are B x C x h x w."""

    def __init__(self, config: AutoencoderConfig, encoder: Encoder | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder = config.build_encoder() if encoder is None else encoder
        channels, (h, w) = self.encoder.channels, self.encoder.grid
        self.latent_shape = (channels, h, w)
        self.decoder = self._build_decoder()
        self.register_buffer("latent_mean", torch.zeros(self.latent_shape))
        self.register_buffer("latent_var", torch.ones(self.latent_shape))
        self.normalized = False
        if config.stats:
            self.set_stats(*load_latent_stats(config.stats, self.latent_shape, config.latent_space))

    def _build_decoder(self) -> nn.Module:
        """The ViT decoder of `config.decoder_size`, or the exact `PatchUnpatchify` of a pixel-patch encoder."""
        config, (channels, h, w) = self.config, self.latent_shape
        if config.decoder_size != UNPATCHIFY:
            return ViTDecoder(DecoderConfig(config.decoder_size, channels, (h, w), config.decoder_patch_size))
        if not isinstance(self.encoder, PixelPatchEncoder) or self.encoder.patch_size != config.decoder_patch_size:
            raise RaeditError(f"decoder_size unpatchify needs a pixels-* encoder of patch size decoder_patch_size="
                              f"{config.decoder_patch_size}, got encoder '{self.encoder.name}' of patch size "
                              f"{self.encoder.patch_size}")
        return PatchUnpatchify((h, w), config.decoder_patch_size)

    @property
    def image_size(self) -> tuple[int, int]:
        """Size of the decoded images (the token grid times the decoder's patch size)."""
        _, h, w = self.latent_shape
        return h * self.config.decoder_patch_size, w * self.config.decoder_patch_size

    def set_stats(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Use these C x h x w statistics for the latent normalization."""
        if tuple(mean.shape) != self.latent_shape or tuple(var.shape) != self.latent_shape:
            raise RaeditError(f"latent statistics of shape {tuple(mean.shape)} do not fit latents "
                              f"{self.latent_shape} of encoder '{self.config.encoder}'")
        self.latent_mean.copy_(mean)
        self.latent_var.copy_(var)
        self.normalized = True

    def add_noise(self, tokens: torch.Tensor) -> torch.Tensor:
        """Sec. 4.3: z + sigma * eps, one sigma per sample (tau * U(0,1), or |N(0, tau^2)|)."""
        shape = (tokens.shape[0],) + (1,) * (tokens.ndim - 1)
        u = torch.rand(shape, device=tokens.device, dtype=tokens.dtype)
        if self.config.noise_distribution == "halfnormal":
            u = torch.randn(shape, device=tokens.device, dtype=tokens.dtype).abs()
        return tokens + self.config.noise_tau * u * torch.randn_like(tokens)

    def normalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw B x C x h x w -> (z - mean) / sqrt(var + eps)."""
        if not self.normalized:
            return latents
        return (latents - self.latent_mean) / torch.sqrt(self.latent_var + self.config.stats_eps)

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        if not self.normalized:
            return latents
        return latents * torch.sqrt(self.latent_var + self.config.stats_eps) + self.latent_mean

    def encode_raw(self, images: torch.Tensor) -> torch.Tensor:
        """Images B x 3 x H x W in [0, 1] -> raw (unnormalized, noise-free) latents B x C x h x w."""
        return self.encoder.encode_latents(images)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images B x 3 x H x W in [0, 1] -> normalized latents B x C x h x w.

        In training mode with noise_tau > 0 the raw tokens are noise-augmented first (as the official code,
        before normalization).
        """
        return self.prepare_latents(tokens_to_latents(self.encoder.encode(images), self.encoder.grid))

    def prepare_latents(self, raw_latents: torch.Tensor) -> torch.Tensor:
        """Raw latents B x C x h x w (encoded now, or read from a latent cache) -> what `encode` gives: in
        training mode with noise_tau > 0 noise-augmented first (Sec. 4.3), then normalized."""
        if self.training and self.config.noise_tau > 0:
            raw_latents = self.add_noise(raw_latents)
        return self.normalize(raw_latents)

    def decode(self, latents: torch.Tensor, clamp: bool = True, decoder: nn.Module | None = None) -> torch.Tensor:
        """Normalized latents B x C x h x w -> images B x 3 x H x W in [0, 1] (unclamped with clamp=False,
        for losses; three equal channels with `grayscale`). `decoder` stands in for `self.decoder` (its DDP
        wrapper, or EMA weights)."""
        if latents.ndim != 4 or tuple(latents.shape[1:]) != self.latent_shape:
            raise RaeditError(f"latents must be B x {' x '.join(map(str, self.latent_shape))} for encoder "
                              f"'{self.config.encoder}', got {tuple(latents.shape)}")
        decoder = self.decoder if decoder is None else decoder
        pixels = self.encoder.denormalize(decoder(latents_to_tokens(self.denormalize(latents))))
        if self.config.grayscale:
            pixels = pixels.mean(dim=1, keepdim=True).expand_as(pixels)
        return pixels.clamp(0.0, 1.0) if clamp else pixels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruct: images -> latents -> unclamped images."""
        return self.decode(self.encode(images), clamp=False)

    # -- weights -------------------------------------------------------------------------------------------

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The decoder and the statistics: all an RAE stores (the encoder is frozen and loaded by name)."""
        state = {f"decoder.{key}": value for key, value in self.decoder.state_dict().items()}
        if self.normalized:
            state["latent_mean"], state["latent_var"] = self.latent_mean, self.latent_var
        return state

    def load_decoder_state_dict(self, state_dict: dict[str, torch.Tensor], source: str) -> None:
        """Load decoder weights (raedit keys, or the released decoders' keys); a missing or unexpected key, or a
        shape that doesn't fit, is an error naming the first."""
        if any(key.startswith("decoder_") for key in state_dict):
            state_dict = official_decoder_to_raedit(state_dict)
        check_fits(self.decoder.state_dict(), state_dict, f"the decoder weights in {source}")
        self.decoder.load_state_dict(state_dict)

    def load_decoder(self, path: str | Path) -> None:
        """Decoder weights from a safetensors file or a `.pt` state dict (e.g. a released `model.pt`)."""
        state = read_state_dict(path, "decoder weights")
        state = weights_of(state, str(path))
        state = {key.removeprefix("decoder."): value for key, value in state.items() if not key.startswith("latent_")}
        self.load_decoder_state_dict(state, str(path))

    def save_pretrained(self, directory: str | Path, decoder_state: dict[str, torch.Tensor] | None = None) -> None:
        """Write `rae.safetensors` (decoder + statistics) and `rae_config.json` into `directory`.

        decoder_state: the decoder's full weights, when this module holds only shards of them (FSDP2)."""
        directory = Path(directory)
        weights = self.trainable_state_dict()
        if decoder_state is not None:
            weights.update({f"decoder.{key}": value for key, value in decoder_state.items()})
        save_tensors(directory / WEIGHTS_FILE, weights)
        write_json(directory / CONFIG_FILE, {**asdict(self.config), "stats": None,
                                             "latent_shape": list(self.latent_shape), "normalized": self.normalized})

    @classmethod
    def from_pretrained(cls, directory: str | Path, encoder: Encoder | None = None, decode_only: bool = False,
                        **overrides) -> "RAE":
        """Load what `save_pretrained` wrote. `overrides` replace config fields (e.g. encoder_weights).
        decode_only: without the encoder's weights (`AutoencoderConfig.build_encoder`); `encode` is then an error."""
        config_path, weights_path = saved_rae_files(directory)
        stored = read_json(config_path, "RAE config")
        try:
            latent_shape, normalized = tuple(int(size) for size in stored.pop("latent_shape")), stored.pop("normalized")
            config = AutoencoderConfig(**{**stored, **overrides})
        except (KeyError, TypeError, ValueError) as error:
            raise RaeditError(f"{config_path} is not an RAE config: {error!r}") from None
        if encoder is None and decode_only:
            encoder = config.build_encoder(decode_only=True, channels=latent_shape[0])
        rae = cls(config, encoder)
        if rae.latent_shape != latent_shape:
            raise RaeditError(f"{config_path.parent} was saved for latents {latent_shape}, but encoder "
                              f"'{config.encoder}' gives {rae.latent_shape}")
        weights = read_state_dict(weights_path, "RAE weights")
        statistics = list(STATS_KEYS) if normalized else []
        unexpected = [key for key in weights if not key.startswith("decoder.") and key not in statistics]
        if unexpected:
            raise RaeditError(f"{weights_path} holds an unexpected {unexpected[0]!r}")
        rae.load_decoder_state_dict({key.removeprefix("decoder."): value for key, value in weights.items()
                                     if key.startswith("decoder.")}, str(weights_path))
        if normalized:
            rae.set_stats(*checked_stats(weights, STATS_KEYS, weights_path, rae.latent_shape))
        return rae


def saved_rae_files(directory: str | Path) -> tuple[Path, Path]:
    """The config and weights files of the RAE saved in `directory`; a `RaeditError` when either is missing."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise RaeditError(f"{directory} is not a saved RAE (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    return config_path, weights_path


def saved_latent_stats(directory: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent statistics (mean, var), each C x h x w, of the RAE saved in `directory`; its encoder is not
    loaded. An RAE without statistics is a `RaeditError`."""
    config_path, weights_path = saved_rae_files(directory)
    if not read_json(config_path, "RAE config")["normalized"]:
        raise RaeditError(f"the RAE in {config_path.parent} holds no latent statistics")
    weights = read_state_dict(weights_path, "RAE weights")
    return checked_stats(weights, STATS_KEYS, weights_path)


def store_latent_stats(directory: str | Path, mean: torch.Tensor, var: torch.Tensor,
                       encoder: str | None = None) -> None:
    """Make `mean` and `var` (C x h x w) the latent statistics of the RAE saved in `directory`, replacing any it
    had; its encoder is not loaded. `encoder`: the latent space they were computed in (`AutoencoderConfig.
    latent_space`), checked against the RAE's."""
    config_path, weights_path = saved_rae_files(directory)
    config = read_json(config_path, "RAE config")
    if encoder is not None and encoder != _saved_latent_space(config):
        raise RaeditError(f"latent statistics of encoder '{encoder}' cannot go into the RAE in {config_path.parent}, "
                          f"whose encoder is '{_saved_latent_space(config)}'")
    latent_shape = tuple(config["latent_shape"])
    if tuple(mean.shape) != latent_shape or tuple(var.shape) != latent_shape:
        raise RaeditError(f"latent statistics of shape {tuple(mean.shape)} do not fit the latents {latent_shape} of "
                          f"the RAE in {config_path.parent} (encoder '{config['encoder']}')")
    weights = read_state_dict(weights_path, "RAE weights")
    save_tensors(weights_path, {**weights, "latent_mean": mean.float(), "latent_var": var.float()})
    write_json(config_path, {**config, "normalized": True})



def adopt_trained_decoder(rae_dir: str | Path, trained_dir: str | Path) -> None:
    """Make the RAE saved in `rae_dir` (a latent space: its statistics) decode with the decoder stage 1 saved in
    `trained_dir` (trained on raw latents): the trained RAE takes `rae_dir`'s statistics and is copied over it."""
    encoder = _saved_latent_space(read_json(saved_rae_files(rae_dir)[0], "RAE config"))
    store_latent_stats(trained_dir, *saved_latent_stats(rae_dir), encoder)
    shutil.copytree(trained_dir, rae_dir, dirs_exist_ok=True)
