"""The RAE decoder (Sec. 3, Appx. C): a ViT from encoder tokens back to pixels.

Tokens B x N x C_enc -> linear embed -> [learnable CLS] + tokens, plus fixed 2D sin-cos positions -> pre-LayerNorm
ViT blocks -> LayerNorm -> linear head to patch pixels -> CLS dropped -> image. The decoder patch size is free:
16 x 16 tokens decode to 256 px with patch 16, or to 512 px with patch 32 (Sec. 6.1, decoder upsampling). The
output is in the encoder's normalized pixel space; the autoencoder de-normalizes it.

The module layout mirrors the released decoders one to one, so `raedit.interop.official_decoder` maps their
state dicts here by renaming keys alone. `PatchUnpatchify` is the parameter-free exact decoder of the pixel-patch
"encoder" (`raedit.encoders.pixels`, Table 11's pixel-diffusion baseline).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from raedit.core.errors import RaeditError
from raedit.models.positions import sincos_position_embedding_2d

# (depth, width, heads, MLP hidden) per size; B/L/XL as the paper's decoders (recipe.md, "decoder").
DECODER_SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (2, 128, 2, 512),
    "S": (6, 384, 6, 1536),
    "B": (12, 768, 12, 3072),
    "L": (24, 1024, 16, 4096),
    "XL": (28, 1152, 16, 4096),
}
LAYER_NORM_EPS = 1e-12  # as the released decoders (HF ViT-MAE layers)


def decoder_architecture(size: str) -> tuple[int, int, int, int]:
    """(depth, width, heads, MLP hidden) of a decoder size: a name in `DECODER_SIZES`, or any other size written
    "DEPTHxWIDTHxHEADSxMLP" (e.g. "12x768x12x3072", what `raedit import-official` writes for unnamed sizes)."""
    if size in DECODER_SIZES:
        return DECODER_SIZES[size]
    parts = size.split("x")
    if len(parts) == 4 and all(part.isdigit() and int(part) > 0 for part in parts):
        depth, width, heads, mlp_hidden = (int(part) for part in parts)
        if width % heads == 0:
            return depth, width, heads, mlp_hidden
    raise RaeditError(f"unknown decoder size '{size}'; known sizes: {', '.join(DECODER_SIZES)}, or "
                      f"DEPTHxWIDTHxHEADSxMLP with WIDTH divisible by HEADS (e.g. 12x768x12x3072)")


def decoder_size_name(depth: int, width: int, heads: int, mlp_hidden: int) -> str:
    """The name of a decoder architecture: its entry in `DECODER_SIZES`, else "DEPTHxWIDTHxHEADSxMLP"."""
    named = {architecture: name for name, architecture in DECODER_SIZES.items()}
    return named.get((depth, width, heads, mlp_hidden), f"{depth}x{width}x{heads}x{mlp_hidden}")


@dataclass
class DecoderConfig:
    """Architecture of a `ViTDecoder`. `grid` is the token grid (h, w); output is grid * patch_size pixels."""

    size: str = "S"
    in_channels: int = 768
    grid: tuple[int, int] = (16, 16)
    patch_size: int = 16
    out_channels: int = 3

    def __post_init__(self) -> None:
        decoder_architecture(self.size)
        self.grid = tuple(int(side) for side in self.grid)  # type: ignore[assignment]
        if self.patch_size < 1 or min(self.grid) < 1 or self.in_channels < 1:
            raise RaeditError(f"invalid decoder shape: grid {self.grid}, patch {self.patch_size}, "
                              f"channels {self.in_channels}")

    @property
    def image_size(self) -> tuple[int, int]:
        return self.grid[0] * self.patch_size, self.grid[1] * self.patch_size

    def to_dict(self) -> dict:
        return {**asdict(self), "grid": list(self.grid)}


def position_table_with_cls(width: int, grid: tuple[int, int]) -> torch.Tensor:
    """Fixed positions of the decoder's sequence, (1 + h*w) x width: row 0 (the CLS slot) zeros, then the 2D
    sin-cos table of the token grid (the MAE/ViT convention the released decoders were trained with)."""
    return torch.cat([torch.zeros(1, width), sincos_position_embedding_2d(width, grid)])


class Attention(nn.Module):
    """Multi-head self-attention with separate query/key/value projections (SDPA)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise RaeditError(f"decoder width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B x L x D -> B x L x D."""
        batch, length, width = x.shape

        def split(projection: nn.Linear) -> torch.Tensor:
            return projection(x).view(batch, length, self.heads, width // self.heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(split(self.query), split(self.key), split(self.value))
        return self.out(attended.transpose(1, 2).reshape(batch, length, width))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(norm1(x)), then + mlp(norm2(x))."""

    def __init__(self, width: int, heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(width, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTDecoder(nn.Module):
    """Tokens B x N x C_in (N = h*w) -> pixels B x out_channels x (h*p) x (w*p), in normalized pixel space."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        depth, width, heads, mlp_hidden = decoder_architecture(config.size)
        self.token_embed = nn.Linear(config.in_channels, width)
        self.register_buffer("pos_embed", position_table_with_cls(width, config.grid).unsqueeze(0))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = nn.ModuleList(Block(width, heads, mlp_hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(width, config.patch_size**2 * config.out_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    @property
    def num_tokens(self) -> int:
        return self.config.grid[0] * self.config.grid[1]

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight the adaptive GAN weight differentiates against (Appx. C.2)."""
        return self.head.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: B x N x C_in -> pixels B x out_channels x H x W."""
        if tokens.ndim != 3 or tokens.shape[1:] != (self.num_tokens, self.config.in_channels):
            raise RaeditError(
                f"decoder expects tokens B x {self.num_tokens} x {self.config.in_channels} "
                f"(grid {self.config.grid[0]}x{self.config.grid[1]}), got {tuple(tokens.shape)}"
            )
        x = self.token_embed(tokens)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        patches = self.head(self.norm(x))[:, 1:]
        return self.unpatchify(patches)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """B x (h*w) x (p*p*c), each patch ordered (row, column, channel) -> B x c x (h*p) x (w*p)."""
        (h, w), p, c = self.config.grid, self.config.patch_size, self.config.out_channels
        pixels = patches.reshape(patches.shape[0], h, w, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return pixels.reshape(patches.shape[0], c, h * p, w * p)


class PatchUnpatchify(nn.Module):
    """The exact inverse of `PixelPatchEncoder`'s patchify, without parameters: tokens B x (h*w) x (c*p*p), each
    ordered (channel, row, column) as `F.unfold`, -> normalized pixels B x c x (h*p) x (w*p)."""

    def __init__(self, grid: tuple[int, int], patch_size: int, out_channels: int = 3) -> None:
        super().__init__()
        self.grid = tuple(int(side) for side in grid)
        self.patch_size = patch_size
        self.out_channels = out_channels

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: B x N x C -> pixels B x out_channels x H x W."""
        (h, w), p, c = self.grid, self.patch_size, self.out_channels
        if tokens.ndim != 3 or tokens.shape[1:] != (h * w, c * p * p):
            raise RaeditError(f"unpatchify expects tokens B x {h * w} x {c * p * p} (grid {h}x{w}), "
                              f"got {tuple(tokens.shape)}")
        pixels = tokens.reshape(tokens.shape[0], h, w, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return pixels.reshape(tokens.shape[0], c, h * p, w * p)
