"""LightningDiT on RAE latents (Sec. 4): patch size 1 on the latent grid, class-conditional, predicts velocity."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from raedit.errors import RaeditError
from raedit.models.blocks import (
    DiTBlock,
    FinalLayer,
    GaussianFourierTimeEmbedding,
    LabelEmbedder,
    LatentEmbed,
    RotaryEmbedding2D,
    sincos_pos_embed_2d,
)

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


def tokens_to_latent(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, h * w, C) row-major tokens -> (B, C, h, w)."""
    return tokens.transpose(1, 2).unflatten(2, grid)


class LightningDiT(nn.Module):
    """LightningDiT: latents (B, C, h, w), time t (B,), labels (B,) -> velocity (B, C, h, w).

    Tokens get a fixed sin-cos position embedding and 2D RoPE in every block; the blocks and the final layer are
    modulated by t_emb + class_emb (adaLN-Zero).
    """

    def __init__(
        self,
        latent_shape: tuple[int, int, int],
        depth: int = 28,
        width: int = 1152,
        num_heads: int = 16,
        num_classes: int = 1000,
        class_dropout_prob: float = 0.1,
        mlp_ratio: float = 4.0,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        channels, height, width_tokens = latent_shape
        self.latent_shape = (channels, height, width_tokens)
        self.grid = (height, width_tokens)
        self.num_classes = num_classes
        self._config: dict[str, Any] = dict(
            latent_shape=list(self.latent_shape),
            depth=depth,
            width=width,
            num_heads=num_heads,
            num_classes=num_classes,
            class_dropout_prob=class_dropout_prob,
            mlp_ratio=mlp_ratio,
            qk_norm=qk_norm,
        )
        warn_if_narrower_than_latent(width, channels, "LightningDiT")

        self.x_embedder = LatentEmbed(channels, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, height * width_tokens, width), requires_grad=False)
        self.t_embedder = GaussianFourierTimeEmbedding(width)
        self.y_embedder = LabelEmbedder(num_classes, width, class_dropout_prob)
        self.rope = RotaryEmbedding2D(width // num_heads, self.grid)
        self.blocks = nn.ModuleList(
            [DiTBlock(width, num_heads, mlp_ratio=mlp_ratio, qk_norm=qk_norm) for _ in range(depth)]
        )
        self.final_layer = FinalLayer(width, channels)
        self.initialize_weights()

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments, enough to rebuild the model."""
        return dict(self._config)

    @property
    def null_label(self) -> int:
        """The class id of the unconditional (null) embedding."""
        return self.num_classes

    def initialize_weights(self) -> None:
        """Official LightningDiT init: xavier Linear layers, zero adaLN and output layers (adaLN-Zero)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.pos_embed.copy_(sincos_pos_embed_2d(self.pos_embed.shape[-1], self.grid).unsqueeze(0))
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

    def forward(self, x: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        """x: (B, C, h, w) latents at time t (B,) in [0, 1]; labels: (B,) -> velocity (B, C, h, w)."""
        check_latent_shape(x, self.latent_shape, "LightningDiT")
        tokens = self.x_embedder(x) + self.pos_embed
        cond = self.t_embedder(t) + self.y_embedder(labels, self.training)  # (B, D)
        for block in self.blocks:
            tokens = block(tokens, cond, rope=self.rope)
        return tokens_to_latent(self.final_layer(tokens, cond), self.grid)
