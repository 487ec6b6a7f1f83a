"""The token layout of latents, raedit's convention: (B, C, h, w) at module boundaries, (B, N, C) inside
transformers, with N = h * w tokens in row-major order (token index = row * w + column). Encoders emit tokens in
this order, the decoder and the denoisers read it."""

from __future__ import annotations

from torch import Tensor


def tokens_to_latents(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, h * w, C) row-major tokens -> (B, C, h, w)."""
    return tokens.transpose(1, 2).unflatten(2, tuple(grid))


def latents_to_tokens(latents: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, h * w, C) row-major tokens."""
    return latents.flatten(2).transpose(1, 2)
