"""The released RAE decoders (nyu-visionx/RAE-collections `decoders/.../model.pt`) as `raedit.decoder.ViTDecoder`:
the architecture read off the tensors' shapes, and key renames. Renaming alone suffices: shapes and the function
computed are the same."""

from __future__ import annotations

import math

import torch

from raedit.core.errors import RaeditError
from raedit.core.state_dicts import rename_key
from raedit.decoder import DECODER_SIZES, DecoderConfig, decoder_size_name

# (official pattern, raedit replacement), applied in order to each key.
DECODER_RENAMES: list[tuple[str, str]] = [
    (r"^decoder_embed\.", "token_embed."),
    (r"^decoder_pos_embed$", "pos_embed"),
    (r"^trainable_cls_token$", "cls_token"),
    (r"^decoder_layers\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"^decoder_layers\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"^decoder_layers\.(\d+)\.attention\.attention\.(query|key|value)\.", r"blocks.\1.attn.\2."),
    (r"^decoder_layers\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.out."),
    (r"^decoder_layers\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"^decoder_layers\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
    (r"^decoder_norm\.", "norm."),
    (r"^decoder_pred\.", "head."),
]


def official_decoder_to_raedit(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official decoder state dict with raedit's key names (tensors shared, not copied)."""
    return {rename_key(key, DECODER_RENAMES): value for key, value in state_dict.items()}


def official_decoder_config(state_dict: dict[str, torch.Tensor], heads: int | None = None) -> DecoderConfig:
    """The architecture of an official decoder state dict, read off its tensors' shapes. The number of heads
    leaves no trace in the shapes: a (depth, width, MLP) of a named size takes that size's heads (the released
    B, L and XL decoders), any other needs `heads`."""
    def shape(key: str, ndim: int) -> tuple[int, ...]:
        if key not in state_dict or state_dict[key].ndim != ndim:
            raise RaeditError(f"not an official RAE decoder: it has no {ndim}-d {key!r}")
        return tuple(state_dict[key].shape)

    width, in_channels = shape("decoder_embed.weight", 2)
    depth = len({key.split(".")[1] for key in state_dict if key.startswith("decoder_layers.")})
    mlp_hidden = shape("decoder_layers.0.intermediate.dense.weight", 2)[0]
    tokens = shape("decoder_pos_embed", 3)[1] - 1  # one extra position: the CLS token's
    outputs = shape("decoder_pred.weight", 2)[0]
    side, patch_size = math.isqrt(tokens), math.isqrt(outputs // 3)
    if side * side != tokens or 3 * patch_size**2 != outputs:
        raise RaeditError(f"not an official RAE decoder: {tokens} tokens or a head of {outputs} outputs is not a "
                          f"square grid of RGB patches")
    if heads is None:
        named = [size for size, (d, w, _, m) in DECODER_SIZES.items() if (d, w, m) == (depth, width, mlp_hidden)]
        if not named:
            raise RaeditError(f"a decoder of depth {depth}, width {width}, MLP {mlp_hidden} is none of the named "
                              f"sizes, and its number of heads can't be read off its weights: give it")
        heads = DECODER_SIZES[named[0]][2]
    return DecoderConfig(decoder_size_name(depth, width, heads, mlp_hidden), in_channels, (side, side), patch_size)
