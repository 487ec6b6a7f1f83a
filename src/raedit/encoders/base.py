"""The interface every frozen representation encoder implements (Sec. 3: the RAE encoder E)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from raedit.core.errors import RaeditError
from raedit.core.tokens import tokens_to_latents
from raedit.encoders.spec import EncoderSpec


class Encoder(nn.Module, ABC):
    """A frozen image encoder whose patch tokens are the RAE latent space.

    Subclasses set `input_size` (pixels, square), `patch_size` (pixels per token side), `channels` (token
    dimension), `pixel_mean` / `pixel_std` (3 values each, the normalization the network was trained with) and
    `resize_mode` / `resize_antialias`, and implement `forward_tokens` on normalized input. The default resize,
    bicubic without antialiasing, is the official RAE code's (it fixes the 256 -> 224 step of DINOv2, and so the
    released statistics and decoders).
    """

    name: str
    input_size: int
    patch_size: int
    channels: int
    resize_mode: str = "bicubic"
    resize_antialias: bool = False

    def __init__(self, pixel_mean: tuple[float, float, float], pixel_std: tuple[float, float, float]) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid (h, w) for an input of `input_size` pixels."""
        side = self.input_size // self.patch_size
        return side, side

    @property
    def num_tokens(self) -> int:
        h, w = self.grid
        return h * w

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W in [0, 1] -> resized to `input_size` and mean/std normalized."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise RaeditError(f"{self.name} expects images of shape B x 3 x H x W, got {tuple(images.shape)}")
        if images.shape[-2:] != (self.input_size, self.input_size):
            images = F.interpolate(
                images, size=(self.input_size, self.input_size), mode=self.resize_mode,
                align_corners=False, antialias=self.resize_antialias,
            )
        return (images - self.pixel_mean) / self.pixel_std

    def denormalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Inverse of the mean/std step: the decoder predicts pixels in the encoder's normalized space."""
        return pixels * self.pixel_std + self.pixel_mean

    @abstractmethod
    def forward_tokens(self, normalized: torch.Tensor) -> torch.Tensor:
        """Normalized B x 3 x input_size x input_size -> tokens B x N x C."""

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W in [0, 1] -> tokens B x N x C (N = grid h * w, C = `channels`)."""
        return self.forward_tokens(self.normalize(images))

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W in [0, 1] -> raw latents B x C x h x w (the tokens on their grid)."""
        return tokens_to_latents(self.encode(images), self.grid)

    def train(self, mode: bool = True) -> "Encoder":
        """The encoder is frozen: it always stays in eval mode (BatchNorm statistics, no dropout)."""
        return super().train(False)


LAYER_COMBINES = ("mean", "sum")


def checked_layers(name: str, layers: list[int] | None, valid: range) -> list[int] | None:
    """`layers` as a list, when it is a non-empty, strictly increasing list of indices in `valid`; else a RaeditError.

    Increasing, so that the last listed block is the deepest one, as in RAEv2's code (`combine_layers`)."""
    if layers is None:
        return None
    layers = list(layers)
    if not layers or any(isinstance(index, bool) or not isinstance(index, int) or index not in valid
                         for index in layers) or any(a >= b for a, b in pairwise(layers)):
        raise RaeditError(f"{name}: layers must be strictly increasing block indices in {valid.start}.."
                          f"{valid.stop - 1}, got {layers!r}")
    return layers


def check_layer_combine(name: str, layer_combine: str) -> None:
    if layer_combine not in LAYER_COMBINES:
        raise RaeditError(f"{name}: unknown layer_combine {layer_combine!r}; use one of {', '.join(LAYER_COMBINES)}")


def combine_layers(per_layer: list[torch.Tensor], layer_combine: str) -> torch.Tensor:
    """RAEv2's multi-layer latent (arXiv 2605.18324), as its code's `DINOv3MultiLayerSimpleAddEncoder` computes it.

    per_layer: the chosen blocks' tokens, each B x N x C, shallowest first. Returns their mean ("mean", RAEv2's) or
    sum ("sum") over the blocks, plus the last (deepest) block's per-image mean over its N tokens (B x 1 x C, the
    same tokens as they entered the mean, nothing renormalized), added to every token. RAEv2's code adds that
    spatial mean for any number of blocks, one included; its K=1 latent is the plain encoder (`layers` None).
    The paper's text calls the combination a sum, its code takes the mean; its DINOv2 variant adds no spatial mean
    and its EUPE variant sums without one, neither of which is reproduced here.
    """
    stacked = torch.stack(per_layer)
    combined = stacked.mean(dim=0) if layer_combine == "mean" else stacked.sum(dim=0)
    return combined + per_layer[-1].mean(dim=1, keepdim=True)


class TransformersViTEncoder(Encoder):
    """A transformers ViT whose tokens go through its final LayerNorm without the affine weight and bias
    (Sec. 3, as the official release): the model's own final norm (attribute `final_norm`) is replaced by an
    identity, and `final_norm_without_affine` applies the plain normalization, so every token has zero mean and
    unit variance over channels.

    `layers` (0-based block indices, strictly increasing; None: the last block only) makes the latent RAEv2's
    combination of several blocks (`combine_layers`): each block's patch tokens through the same non-affine
    LayerNorm, then their mean ("mean") or sum ("sum", `layer_combine`), plus the deepest block's spatial mean.
    The block outputs are the model's `hidden_states` (index 0: the embeddings; index i + 1: block i's output).
    RAEv2's SigLIP2 variant normalizes with `post_layernorm`'s affine kept; here every family uses the non-affine
    norm of its single-layer latent. A family sets `num_prefix_tokens` (CLS and register tokens before the patch
    tokens) and implements `run_model`.
    """

    num_prefix_tokens: int = 0

    def __init__(self, spec: EncoderSpec, model: nn.Module, final_norm: str, input_size: int | None = None,
                 layers: list[int] | None = None, layer_combine: str = "mean") -> None:
        super().__init__(spec.pixel_mean, spec.pixel_std)
        self.name = spec.name
        self.input_size = input_size or spec.input_size
        if self.input_size % spec.patch_size:
            raise RaeditError(f"{spec.name}: input_size must be a multiple of the patch size {spec.patch_size}, "
                              f"got {self.input_size}")
        self.patch_size = spec.patch_size
        self.channels = model.config.hidden_size
        self.final_norm_eps = model.config.layer_norm_eps
        self.layers = checked_layers(spec.name, layers, range(model.config.num_hidden_layers))
        check_layer_combine(spec.name, layer_combine)
        self.layer_combine = layer_combine
        setattr(model, final_norm, nn.Identity())  # last_hidden_state is then the last block's output
        self.model = model

    @abstractmethod
    def run_model(self, normalized: torch.Tensor, **kwargs) -> Any:
        """The model's output for normalized B x 3 x input_size x input_size (`kwargs` go to the model)."""

    def final_norm_without_affine(self, tokens: torch.Tensor) -> torch.Tensor:
        """B x N x C -> the same, LayerNorm over channels without affine weight and bias."""
        return F.layer_norm(tokens, (self.channels,), eps=self.final_norm_eps)

    def forward_tokens(self, normalized: torch.Tensor) -> torch.Tensor:
        """Normalized B x 3 x input_size x input_size -> B x N x C patch tokens, LayerNorm without affine (of the
        last block, or the `layers` combined)."""
        if self.layers is None:
            hidden = self.run_model(normalized).last_hidden_state
            return self.final_norm_without_affine(hidden[:, self.num_prefix_tokens:])
        hidden_states = self.run_model(normalized, output_hidden_states=True).hidden_states
        per_layer = [self.final_norm_without_affine(hidden_states[index + 1][:, self.num_prefix_tokens:])
                     for index in self.layers]
        return combine_layers(per_layer, self.layer_combine)


class DecodeOnlyEncoder(Encoder):
    """What decoding needs of an encoder without its network: the token shape and the pixel normalization the
    decoder's output is de-normalized with. Sampling a denoiser runs on it, so it needs no encoder weights;
    encoding is an error."""

    def __init__(self, spec: EncoderSpec, input_size: int | None = None, channels: int | None = None) -> None:
        super().__init__(spec.pixel_mean, spec.pixel_std)
        self.name = spec.name
        self.input_size = input_size or spec.input_size
        self.patch_size = spec.patch_size
        self.channels = channels or spec.channels

    def forward_tokens(self, normalized: torch.Tensor) -> torch.Tensor:
        raise RaeditError(f"the {self.name} encoder was not loaded (decode only): load the RAE with its encoder "
                          f"weights to encode images")
