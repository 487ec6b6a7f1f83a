"""The interface every frozen representation encoder implements (Sec. 3: the RAE encoder E)."""

from __future__ import annotations

from abc import ABC, abstractmethod

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


class TransformersViTEncoder(Encoder):
    """A transformers ViT whose tokens go through its final LayerNorm without the affine weight and bias
    (Sec. 3, as the official release): the model's own final norm (attribute `final_norm`) is replaced by an
    identity, and `final_norm_without_affine` applies the plain normalization, so every token has zero mean and
    unit variance over channels."""

    def __init__(self, spec: EncoderSpec, model: nn.Module, final_norm: str, input_size: int | None = None) -> None:
        super().__init__(spec.pixel_mean, spec.pixel_std)
        self.name = spec.name
        self.input_size = input_size or spec.input_size
        if self.input_size % spec.patch_size:
            raise RaeditError(f"{spec.name}: input_size must be a multiple of the patch size {spec.patch_size}, "
                              f"got {self.input_size}")
        self.patch_size = spec.patch_size
        self.channels = model.config.hidden_size
        self.final_norm_eps = model.config.layer_norm_eps
        setattr(model, final_norm, nn.Identity())  # last_hidden_state is then the last block's output
        self.model = model

    def final_norm_without_affine(self, tokens: torch.Tensor) -> torch.Tensor:
        """B x N x C -> the same, LayerNorm over channels without affine weight and bias."""
        return F.layer_norm(tokens, (self.channels,), eps=self.final_norm_eps)


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
