"""LightningDiT building blocks (Sec. 4 and Appx. D): RMSNorm, SwiGLU, attention with 2D RoPE, adaLN-Zero blocks,
and the embedders of latents, time and class labels (positions: `raedit.models.positions`).

Parameter names and layouts follow the official RAE release, so its weights compute the same function here
(see `raedit.interop.official_dit`). Inside the transformer, tokens are (B, N, D) with N = h * w in row-major
order (token index = row * w + column).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from raedit.core.errors import RaeditError
from raedit.core.tokens import latents_to_tokens
from raedit.models.positions import RotaryEmbedding2D


class RMSNorm(nn.Module):
    """RMSNorm with a learned per-channel weight: x / sqrt(mean(x^2) + eps) * weight, computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., dim) -> (..., dim)."""
        x_float = x.float()
        normed = x_float * torch.rsqrt(x_float.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class SwiGLU(nn.Module):
    """SwiGLU feed-forward: w3(silu(a) * b) with [a, b] = w12(x) (one fused input projection)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden_dim)
        self.w3 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, N, dim) -> (B, N, dim)."""
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


def swiglu_hidden_dim(dim: int, mlp_ratio: float = 4.0) -> int:
    """LightningDiT's SwiGLU width int(2/3 * mlp_ratio * dim): about the parameters of a GELU MLP of ratio 4."""
    return int(2 / 3 * int(dim * mlp_ratio))


class Attention(nn.Module):
    """Multi-head self-attention with qkv bias, optional qk-norm (RMSNorm per head) and RoPE, via SDPA."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise RaeditError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm: nn.Module = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm: nn.Module = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: RotaryEmbedding2D | None = None) -> Tensor:
        """x: (B, N, dim) -> (B, N, dim)."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope(q).to(v.dtype), rope(k).to(v.dtype)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation x * (1 + scale) + shift; x (B, N, D), shift/scale (B, 1, D) or (B, N, D)."""
    return x * (1 + scale) + shift


class TransformerBlock(nn.Module):
    """A pre-norm block without modulation: RMSNorm -> attention (qk-norm, RoPE), RMSNorm -> SwiGLU, residuals.
    RAEv2's token-conditioned backbone (`DDTEncoderBlock`), where time and class are tokens of the sequence."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True) -> None:
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, swiglu_hidden_dim(dim, mlp_ratio))

    def forward(self, x: Tensor, cond: None = None, rope: RotaryEmbedding2D | None = None) -> Tensor:
        """x: (B, N, D) -> (B, N, D); `cond` is always None (the signature `run_blocks` calls)."""
        x = x + self.attn(self.norm1(x), rope=rope)
        return x + self.mlp(self.norm2(x))


class DiTBlock(nn.Module):
    """LightningDiT block with adaLN-Zero (Sec. 4, Appx. D).

    Six modulation vectors (shift, scale, gate for attention, then for the MLP) come from SiLU -> Linear of the
    condition, either one vector per sample (B, D) or one per token (B, N, D) as in the DiT^DH head (Sec. 5).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qk_norm: bool = False) -> None:
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, swiglu_hidden_dim(dim, mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, cond: Tensor, rope: RotaryEmbedding2D | None = None) -> Tensor:
        """x: (B, N, D); cond: (B, D) or (B, N, D) -> (B, N, D)."""
        if cond.dim() == 2:
            cond = cond.unsqueeze(1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(cond).chunk(6, dim=-1)
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rope=rope)
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


def run_blocks(blocks: nn.ModuleList, x: Tensor, cond: Tensor | None, rope: RotaryEmbedding2D | None,
               checkpointed: bool) -> Tensor:
    """x through each block (`DiTBlock`, or `TransformerBlock` with cond None) in turn. With `checkpointed` (and
    gradients on), each block's activations are recomputed in the backward pass instead of kept: the same
    gradients for about one more forward pass of memory traffic and compute, so that large batches of XL models
    fit."""
    for block in blocks:
        if checkpointed and torch.is_grad_enabled():
            x = checkpoint(block, x, cond, rope, use_reentrant=False)
        else:
            x = block(x, cond, rope=rope)
    return x


def run_blocks_tapped(blocks: nn.ModuleList, x: Tensor, cond: Tensor | None, rope: RotaryEmbedding2D | None,
                      checkpointed: bool, tap_depth: int) -> tuple[Tensor, Tensor]:
    """`run_blocks`, also returning the tokens after the first `tap_depth` blocks (the base head's input)."""
    tapped = run_blocks(blocks[:tap_depth], x, cond, rope, checkpointed)
    return run_blocks(blocks[tap_depth:], tapped, cond, rope, checkpointed), tapped


class FinalLayer(nn.Module):
    """RMSNorm, adaLN shift/scale (no gate) from the condition, then a Linear to the latent channels."""

    def __init__(self, dim: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = RMSNorm(dim)
        self.linear = nn.Linear(dim, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """x: (B, N, D); cond: (B, D) or (B, N, D) -> (B, N, out_channels)."""
        if cond.dim() == 2:
            cond = cond.unsqueeze(1)
        shift, scale = self.adaLN_modulation(cond).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class BaseHead(FinalLayer):
    """The base head of internal guidance (RAEv2, Sec. 2.3; `DiTwDDTHeadIG.base_final_layer`): after an
    intermediate block, z = SiLU(t_emb + h) goes through a final layer modulated per token by z itself. It starts
    at zero and learns the same target as the full model, so sampling can guide away from this weaker prediction
    (`raedit.diffusion.guidance.internal_guidance`)."""

    def __init__(self, dim: int, out_channels: int) -> None:
        with torch.random.fork_rng(devices=[]):  # every drawn weight is zeroed: a model's other draws stay v1's
            super().__init__(dim, out_channels)
        for layer in (self.adaLN_modulation[-1], self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """x: the tapped tokens (B, N, D); cond: the time embedding (B, D) -> (B, N, out_channels)."""
        z = F.silu(cond.unsqueeze(1) + x)
        return super().forward(z, z)


class LatentEmbed(nn.Module):
    """Patch size 1 on the latent grid: a per-token Linear C -> D, stored as a 1x1 convolution (official layout)."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, h, w) -> tokens (B, h * w, D)."""
        return F.linear(latents_to_tokens(x), self.proj.weight.flatten(1), self.proj.bias)


class GaussianFourierTimeEmbedding(nn.Module):
    """Time embedding: random frequencies W ~ N(0, 1) (256), [sin, cos](2 pi t W) (512) -> MLP.

    t is the raw flow time in [0, 1]. W is a parameter, so it is saved with the weights; it is frozen (v1), or
    trained with `trainable_frequencies` (RAEv2's training un-freezes it).
    """

    def __init__(self, dim: int, num_frequencies: int = 256, trainable_frequencies: bool = False) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(num_frequencies), requires_grad=trainable_frequencies)
        self.mlp = nn.Sequential(nn.Linear(2 * num_frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        """t: (B,) -> (B, dim) in fp32, also under a bf16 autocast: the MLP runs in fp32 (in bf16 its input, the sin
        and cos features, would keep 8 significant bits, and the embedding conditions every block)."""
        no_autocast = torch.autocast(t.device.type, enabled=False) if torch.amp.is_autocast_available(
            t.device.type) else contextlib.nullcontext()  # a meta device (counting operations) has no autocast
        with no_autocast:
            frequencies = self.W if self.W.requires_grad else self.W.detach()
            angles = t[:, None].float() * frequencies[None, :].float() * (2 * math.pi)
            return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))


class LabelEmbedder(nn.Module):
    """Class embedding table with a null class (index num_classes) for guidance; labels drop to null in training."""

    def __init__(self, num_classes: int, dim: int, dropout_prob: float = 0.1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: Tensor, train: bool) -> Tensor:
        """labels: (B,) int in [0, num_classes] -> (B, dim); with train, each drops to null with dropout_prob."""
        if train and self.dropout_prob > 0:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        return self.embedding_table(labels)
