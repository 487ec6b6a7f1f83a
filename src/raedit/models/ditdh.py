"""DiT^DH (Sec. 5): a DiT backbone plus a shallow, wide head that re-embeds x_t and predicts the velocity.

    c = SiLU(t_emb + class_emb)                            global condition of the backbone blocks
    s = backbone blocks(embed(x_t) + pos_embed | c)        (B, N, D_backbone)
    s = Linear(SiLU(t_emb + s))                            per-token condition of the head, (B, N, D_head)
    h = head blocks(embed_head(x_t) | s)                   (B, N, D_head), modulated per token
    v = Linear(RMSNorm(h) * (1 + scale(s)) + shift(s))     (B, N, C)

This is the function of the official `DiTwDDTHead` (the backbone blocks see SiLU applied twice to t + y:
once here and once inside adaLN), so released weights load by renaming alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
from raedit.models.dit import DiTConfig, check_base_head, check_latent_shape, warn_if_narrower_than_latent
from raedit.models.positions import RotaryEmbedding2D, sincos_position_embedding_2d
from raedit.models.predictions import as_velocity


@dataclass
class DiTDHConfig(DiTConfig):
    """The architecture of a `DiTDH`: a `DiTConfig` backbone plus its head (Sec. 5: 2 blocks of width 2048)."""

    head_depth: int = 2
    head_width: int = 2048
    head_num_heads: int = 16


class DiTDH(nn.Module):
    """DiT^DH: latents (B, C, h, w), time t (B,), labels (B,) -> velocity (B, C, h, w)."""

    def __init__(self, config: DiTDHConfig) -> None:
        super().__init__()
        self.config = config
        channels, height, width_tokens = config.latent_shape
        self.latent_shape = config.latent_shape
        self.grid = (height, width_tokens)
        self.num_classes = config.num_classes
        # Recompute block activations in the backward pass (`run_blocks`); not part of the architecture.
        self.checkpoint_activations = False
        width, head_width = config.width, config.head_width
        # Sec. 4.1: the head produces the output, so its width is the one the width rule constrains.
        warn_if_narrower_than_latent(head_width, channels, "DiT^DH head")

        self.build_backbone(config)
        # Head (Sec. 5: shallow and wide, re-embeds x_t, modulated per token by the backbone output).
        self.head_projector: nn.Module = nn.Linear(width, head_width) if width != head_width else nn.Identity()
        self.head_embedder = LatentEmbed(channels, head_width)
        self.head_rope = RotaryEmbedding2D(head_width // config.head_num_heads, self.grid)
        self.head_blocks = nn.ModuleList(
            [DiTBlock(head_width, config.head_num_heads, config.mlp_ratio, config.qk_norm)
             for _ in range(config.head_depth)]
        )
        self.final_layer = FinalLayer(head_width, channels)
        # RAEv2's internal guidance: a base head on the backbone's tokens after block `base_depth` (zero-initialized).
        self.base_head = BaseHead(width, channels) if config.base_depth else None
        self.initialize_weights()

    def build_backbone(self, config: DiTDHConfig) -> None:
        """Sec. 5: the backbone, a standard DiT of width D_backbone modulated by time and class (adaLN)."""
        width = config.width
        self.backbone_embedder = LatentEmbed(config.latent_shape[0], width)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], width), requires_grad=False)
        self.t_embedder = GaussianFourierTimeEmbedding(width)
        self.y_embedder = LabelEmbedder(config.num_classes, width, config.class_dropout_prob)
        self.backbone_rope = RotaryEmbedding2D(width // config.num_heads, self.grid)
        self.blocks = nn.ModuleList(
            [DiTBlock(width, config.num_heads, config.mlp_ratio, config.qk_norm) for _ in range(config.depth)]
        )

    @property
    def null_label(self) -> int:
        """The class id of the unconditional (null) embedding."""
        return self.num_classes

    def initialize_weights(self) -> None:
        """Official DiT^DH init: default Linear init, xavier embedders, zero adaLN and output layers."""
        with torch.no_grad():
            self.pos_embed.copy_(sincos_position_embedding_2d(self.pos_embed.shape[-1], self.grid).unsqueeze(0))
        self.initialize_embedders_and_outputs()

    def initialize_embedders_and_outputs(self) -> None:
        """The init shared with RAEv2's DiT^DH: xavier latent embedders, N(0, 0.02) label table and time MLP, zero
        adaLN modulation and output layers (the base head zeroes itself)."""
        for embedder in (self.backbone_embedder, self.head_embedder):
            nn.init.xavier_uniform_(embedder.proj.weight.view(embedder.proj.weight.shape[0], -1))
            nn.init.zeros_(embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in [*self.blocks, *self.head_blocks]:
            if isinstance(block, DiTBlock):
                nn.init.zeros_(block.adaLN_modulation[-1].weight)
                nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor, with_base: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x: (B, C, h, w) latents at time t (B,) in [0, 1]; labels: (B,) -> velocity (B, C, h, w); with_base:
        (velocity, the base head's velocity) for internal guidance."""
        check_latent_shape(x, self.latent_shape, "DiT^DH")
        check_base_head(self, with_base)
        t_emb = self.t_embedder(t)  # (B, D)
        s, tapped = self.backbone(x, t_emb, labels, with_base)
        velocity = self.head(x, t, t_emb, s)
        return (velocity, self.velocity(self.base_head(tapped, t_emb), x, t)) if with_base else velocity

    def backbone(self, x: Tensor, t_emb: Tensor, labels: Tensor, with_base: bool) -> tuple[Tensor, Tensor | None]:
        """The backbone's tokens (B, N, D), and with `with_base` those after block `base_depth`."""
        cond = F.silu(t_emb + self.y_embedder(labels, self.training))
        s = self.backbone_embedder(x) + self.pos_embed
        if with_base:
            return run_blocks_tapped(self.blocks, s, cond, self.backbone_rope, self.checkpoint_activations,
                                     self.config.base_depth)
        return run_blocks(self.blocks, s, cond, self.backbone_rope, self.checkpoint_activations), None

    def head(self, x: Tensor, t: Tensor, t_emb: Tensor, backbone_tokens: Tensor) -> Tensor:
        """Sec. 5: the backbone output, with the time embedding, conditions the head per token -> velocity."""
        s = self.head_projector(F.silu(t_emb.unsqueeze(1) + backbone_tokens))  # (B, N, D_head)
        h = self.head_embedder(x)
        h = run_blocks(self.head_blocks, h, s, self.head_rope, self.checkpoint_activations)
        return self.velocity(self.final_layer(h, s), x, t)

    def velocity(self, output_tokens: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """The velocity (B, C, h, w) that output tokens (B, N, C) mean for x_t = x at time t."""
        return as_velocity(tokens_to_latents(output_tokens, self.grid), x, t, self.config.prediction)
