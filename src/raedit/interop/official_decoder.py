"""Key renames from the released RAE decoders (nyu-visionx/RAE-collections `decoders/.../model.pt`) to
`raedit.decoder.ViTDecoder`. Renaming alone suffices: shapes and the function computed are the same."""

from __future__ import annotations

import re

import torch

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


def rename_official_decoder_key(key: str) -> str:
    for pattern, replacement in DECODER_RENAMES:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    return key


def official_decoder_to_raedit(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official decoder state dict with raedit's key names (tensors shared, not copied)."""
    return {rename_official_decoder_key(key): value for key, value in state_dict.items()}
