"""LightningDiT on RAE latents (Sec. 4): patch size 1 on the latent grid, class-conditional, predicts velocity."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from raedit.core.errors import RaeditError
from raedit.core.tokens import tokens_to_latents
from raedit.models.blocks import (
    BaseHead,
    DiTBlock,
    FinalLayer,
    GaussianFourierTimeEmbedding,
    LabelEmbedder,
    LatentEmbed,
    run_blocks,
    run_blocks_tapped,
)
from raedit.models.positions import RotaryEmbedding2D, sincos_position_embedding_2d
from raedit.models.predictions import as_velocity, check_prediction

# Sizes (depth, width, heads), as in DiT / LightningDiT.
DIT_SIZES: dict[str, tuple[int, int, int]] = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}


def warn_if_narrower_than_latent(width: int, channels: int, what: str) -> None:
    """Sec. 4.1 (Theorem 1): a denoiser whose output comes from a width-d layer with d < n (the latent token
    dimension) cannot fit even one image; its loss stays above (n - d) / n. Allowed, but warned about."""
    if width < channels:
        warnings.warn(
            f"{what} width {width} is below the latent channel dimension {channels}: by the width rule "
            f"(RAE Sec. 4.1, Theorem 1) its flow-matching loss cannot go below (n - d) / n = "
            f"{(channels - width) / channels:.3f} of the normalized loss",
            UserWarning,
            stacklevel=3,
        )


def check_latent_shape(x: Tensor, latent_shape: tuple[int, int, int], model_name: str) -> None:
    """Raise RaeditError unless x is (B, C, h, w) with (C, h, w) == latent_shape."""
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(latent_shape):
        raise RaeditError(
            f"{model_name} was built for latents of shape (B, {', '.join(map(str, latent_shape))}), "
            f"got {tuple(x.shape)}"
        )


@dataclass
class DiTConfig:
    """The architecture of a `LightningDiT`: latents (C, h, w) in, velocity out; sizes in `DIT_SIZES`."""

    latent_shape: tuple[int, int, int]
    depth: int = 28
    width: int = 1152
    num_heads: int = 16
    num_classes: int = 1000
    class_dropout_prob: float = 0.1  # label dropout, for classifier-free guidance
    mlp_ratio: float = 4.0
    qk_norm: bool = False
    prediction: str = "velocity"  # what the last layer predicts: "velocity" (v1) or "x" (RAEv2's x-prediction)
    base_depth: int = 0  # RAEv2's internal guidance: a base head after this many backbone blocks (0: none)

    def __post_init__(self) -> None:
        self.latent_shape = tuple(int(size) for size in self.latent_shape)  # type: ignore[assignment]
        if len(self.latent_shape) != 3 or min(self.latent_shape) < 1:
            raise RaeditError(f"a latent shape is (C, h, w) with positive sizes, got {self.latent_shape}")
        check_prediction(self.prediction)
        if not 0 <= self.base_depth < self.depth:
            raise RaeditError(f"base_depth (the block after which the internal-guidance base head reads) must be in "
                              f"[0, depth={self.depth}), got {self.base_depth}")


def check_base_head(model: nn.Module, with_base: bool) -> None:
    """Internal guidance and its training loss need a model built with a base head."""
    if with_base and model.base_head is None:
        raise RaeditError("this model has no internal-guidance base head (its base_depth is 0): train one with "
                          "model.base_depth=N to use internal guidance")


class LightningDiT(nn.Module):
    """LightningDiT: latents (B, C, h, w), time t (B,), labels (B,) -> velocity (B, C, h, w).

    Tokens get a fixed sin-cos position embedding and 2D RoPE in every block; the blocks and the final layer are
    modulated by t_emb + class_emb (adaLN-Zero).
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        channels, height, width_tokens = config.latent_shape
        self.latent_shape = config.latent_shape
        self.grid = (height, width_tokens)
        self.num_classes = config.num_classes
        # Recompute block activations in the backward pass (`run_blocks`); not part of the architecture.
        self.checkpoint_activations = False
        width, num_heads = config.width, config.num_heads
        warn_if_narrower_than_latent(width, channels, "LightningDiT")

        self.x_embedder = LatentEmbed(channels, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, height * width_tokens, width), requires_grad=False)
        self.t_embedder = GaussianFourierTimeEmbedding(width)
        self.y_embedder = LabelEmbedder(config.num_classes, width, config.class_dropout_prob)
        self.rope = RotaryEmbedding2D(width // num_heads, self.grid)
        self.blocks = nn.ModuleList(
            [DiTBlock(width, num_heads, config.mlp_ratio, config.qk_norm) for _ in range(config.depth)]
        )
        self.final_layer = FinalLayer(width, channels)
        self.base_head = BaseHead(width, channels) if config.base_depth else None
        self.initialize_weights()

    @property
    def null_label(self) -> int:
        """The class id of the unconditional (null) embedding."""
        return self.num_classes

    def initialize_weights(self) -> None:
        """Official LightningDiT init: xavier Linear layers, zero adaLN and output layers (adaLN-Zero)."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and not name.startswith("base_head."):  # the base head starts at zero
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.pos_embed.copy_(sincos_position_embedding_2d(self.pos_embed.shape[-1], self.grid).unsqueeze(0))
        nn.init.xavier_uniform_(self.x_embedder.proj.weight.view(self.x_embedder.proj.weight.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor, with_base: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x: (B, C, h, w) latents at time t (B,) in [0, 1]; labels: (B,) -> velocity (B, C, h, w); with_base:
        (velocity, the base head's velocity) for internal guidance."""
        check_latent_shape(x, self.latent_shape, "LightningDiT")
        check_base_head(self, with_base)
        tokens = self.x_embedder(x) + self.pos_embed
        t_emb = self.t_embedder(t)
        cond = t_emb + self.y_embedder(labels, self.training)  # (B, D)
        if not with_base:
            tokens = run_blocks(self.blocks, tokens, cond, self.rope, self.checkpoint_activations)
            return self.velocity(self.final_layer(tokens, cond), x, t)
        tokens, tapped = run_blocks_tapped(self.blocks, tokens, cond, self.rope, self.checkpoint_activations,
                                           self.config.base_depth)
        return self.velocity(self.final_layer(tokens, cond), x, t), self.velocity(self.base_head(tapped, t_emb), x, t)

    def velocity(self, output_tokens: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """The velocity (B, C, h, w) that output tokens (B, N, C) mean for x_t = x at time t."""
        return as_velocity(tokens_to_latents(output_tokens, self.grid), x, t, self.config.prediction)
