"""RAEv2's token-conditioned DiT^DH (arXiv 2605.18324; the code's `DiTwDDTHeadIG`): time and class are tokens of
the backbone's sequence instead of adaLN modulation.

    t_emb = MLP(Fourier(t))                                                  (B, D)
    tokens = [embed(x_t) | time_tokens + t_emb | class_tokens + class_emb]   256 + 4 + 8 tokens (ImageNet)
    tokens = backbone blocks(tokens)     no adaLN; RMSNorm, qk-RMSNorm, SwiGLU; 2D RoPE on the image tokens only
    then the v1 DiT^DH head on the image tokens (`DiTDH.head`: adaLN per token from SiLU(t_emb + tokens))

There is no absolute position embedding. The base head of internal guidance (after block `base_depth`) is
optional here as in every raedit denoiser; RAEv2's released model has one after block 8. The Fourier frequencies
W are trained (RAEv2's training un-freezes them). Released RAEv2 weights load through `raedit.interop.raev2_dit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from raedit.core.errors import RaeditError
from raedit.models.blocks import (
    GaussianFourierTimeEmbedding,
    LabelEmbedder,
    LatentEmbed,
    TransformerBlock,
    run_blocks,
    run_blocks_tapped,
)
from raedit.models.ditdh import DiTDH, DiTDHConfig
from raedit.models.positions import RotaryEmbedding2D


@dataclass
class DiTDHv2Config(DiTDHConfig):
    """The architecture of a `DiTDHv2`: a `DiTDHConfig` plus its condition tokens (RAEv2: 4 time, 8 class).
    RAEv2's ImageNet model: width 1440 x 28 blocks (20 heads), head 2048 x 2 (16 heads), base_depth 8, x-prediction."""

    qk_norm: bool = True
    num_time_tokens: int = 4
    num_class_tokens: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_time_tokens < 1 or self.num_class_tokens < 1:
            raise RaeditError(f"a DiT^DH v2 needs at least one time and one class token, got "
                              f"{self.num_time_tokens} and {self.num_class_tokens}")


class DiTDHv2(DiTDH):
    """RAEv2's DiT^DH: latents (B, C, h, w), time t (B,), labels (B,) -> velocity (B, C, h, w); the head, the
    base head and the output are `DiTDH`'s, the backbone is token-conditioned."""

    config: DiTDHv2Config

    def build_backbone(self, config: DiTDHv2Config) -> None:  # type: ignore[override]
        width = config.width
        self.backbone_embedder = LatentEmbed(config.latent_shape[0], width)
        self.t_embedder = GaussianFourierTimeEmbedding(width, trainable_frequencies=True)
        self.time_tokens = nn.Parameter(torch.empty(config.num_time_tokens, width))
        self.y_embedder = LabelEmbedder(config.num_classes, width, config.class_dropout_prob)
        self.class_tokens = nn.Parameter(torch.empty(config.num_class_tokens, width))
        self.backbone_rope = RotaryEmbedding2D(width // config.num_heads, self.grid,
                                               unrotated_tokens=config.num_time_tokens + config.num_class_tokens)
        self.blocks = nn.ModuleList(
            [TransformerBlock(width, config.num_heads, config.mlp_ratio, config.qk_norm) for _ in range(config.depth)]
        )

    def initialize_weights(self) -> None:
        """RAEv2's init: N(0, 1/D) condition tokens, and the rest as `DiTDH` (default Linear init, xavier embedders,
        N(0, 0.02) label table and time MLP, zero adaLN and output layers)."""
        for token_table in (self.time_tokens, self.class_tokens):
            nn.init.normal_(token_table, std=1 / math.sqrt(token_table.shape[-1]))
        self.initialize_embedders_and_outputs()

    def backbone(self, x: Tensor, t_emb: Tensor, labels: Tensor, with_base: bool) -> tuple[Tensor, Tensor | None]:
        """The image tokens (B, N, D) after the backbone, and with `with_base` those after block `base_depth`."""
        image = self.backbone_embedder(x)
        sequence = torch.cat([image, self.time_tokens + t_emb.unsqueeze(1),
                              self.class_tokens + self.y_embedder(labels, self.training).unsqueeze(1)], dim=1)
        tokens = image.shape[1]
        if with_base:
            sequence, tapped = run_blocks_tapped(self.blocks, sequence, None, self.backbone_rope,
                                                 self.checkpoint_activations, self.config.base_depth)
            return sequence[:, :tokens], tapped[:, :tokens]
        sequence = run_blocks(self.blocks, sequence, None, self.backbone_rope, self.checkpoint_activations)
        return sequence[:, :tokens], None
