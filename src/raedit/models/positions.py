"""Positions on the token grid (row-major, `raedit.core.tokens`): the fixed 2D sin-cos embedding of the ViT
decoder and the DiT inputs, and the 2D rotary embedding (RoPE) of the DiT attention (Sec. 4, Appx. D)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from raedit.core.errors import RaeditError


def sincos_position_embedding_2d(dim: int, grid: tuple[int, int]) -> Tensor:
    """Fixed 2D sin-cos position embedding, (h * w, dim).

    The first half of the channels encodes the column index, the second half the row index (the layout of the
    official `get_2d_sincos_pos_embed`, and of the MAE/ViT convention the released decoders were trained with);
    each half is [sin(pos * omega), cos(pos * omega)] with omega_i = 10000^(-i / (dim / 4)).
    """
    if dim % 4:
        raise RaeditError(f"the sin-cos position embedding needs a width divisible by 4, got {dim}")
    height, width = grid
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )

    def encode(positions: Tensor) -> Tensor:
        angles = torch.outer(positions.reshape(-1), omega)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()


def rope_2d_tables(head_dim: int, grid: tuple[int, int], theta: float = 10000.0) -> tuple[Tensor, Tensor]:
    """Cos and sin tables of the 2D rotary embedding, each (h * w, head_dim).

    Half of the head dimension rotates with the row index, the other half with the column index (rows first).
    Within each half, channel pairs (2i, 2i + 1) rotate together at frequency theta^(-2i / (head_dim / 2)), so
    every frequency appears twice in a row, as in the EVA-02 rotary embedding the official code uses.
    """
    if head_dim % 4:
        raise RaeditError(f"2D RoPE needs a head dimension divisible by 4, got {head_dim}")
    axis_dim = head_dim // 2
    freqs = 1.0 / (theta ** (torch.arange(0, axis_dim, 2).float() / axis_dim))  # (axis_dim / 2,)
    height, width = grid
    row_angles = torch.outer(torch.arange(height).float(), freqs).repeat_interleave(2, dim=-1)  # (h, axis_dim)
    col_angles = torch.outer(torch.arange(width).float(), freqs).repeat_interleave(2, dim=-1)  # (w, axis_dim)
    angles = torch.cat(
        [
            row_angles[:, None, :].expand(height, width, axis_dim),
            col_angles[None, :, :].expand(height, width, axis_dim),
        ],
        dim=-1,
    ).reshape(height * width, head_dim)
    return angles.cos(), angles.sin()


def rotate_pairs(x: Tensor) -> Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...) along the last dimension."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


class RotaryEmbedding2D(nn.Module):
    """2D RoPE for a fixed token grid; the tables are persistent buffers (they are in the released checkpoints).

    `unrotated_tokens` tokens after the grid's (RAEv2's time and class tokens) get angle 0: no position."""

    def __init__(self, head_dim: int, grid: tuple[int, int], theta: float = 10000.0, unrotated_tokens: int = 0) -> None:
        super().__init__()
        freqs_cos, freqs_sin = rope_2d_tables(head_dim, grid, theta)
        freqs_cos = torch.cat([freqs_cos, torch.ones(unrotated_tokens, head_dim)])
        freqs_sin = torch.cat([freqs_sin, torch.zeros(unrotated_tokens, head_dim)])
        self.register_buffer("freqs_cos", freqs_cos)
        self.register_buffer("freqs_sin", freqs_sin)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, heads, N, head_dim) -> rotated, same shape."""
        return x * self.freqs_cos + rotate_pairs(x) * self.freqs_sin
