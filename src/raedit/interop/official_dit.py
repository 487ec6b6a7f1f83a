"""Key renames from the released RAE stage-2 models (official `DiTwDDTHead` = DiT^DH, `LightningDiT`) to
`raedit.models.DiTDH` and `raedit.models.LightningDiT`. Renaming alone suffices: shapes, buffers (RoPE tables,
the frozen time frequencies W, the sin-cos position embedding) and the function computed are the same."""

from __future__ import annotations

import re

import torch

from raedit.core.errors import RaeditError

# (official pattern, raedit replacement) for DiT^DH, applied in order; the first match wins. The official model
# keeps backbone and head blocks in one list; `official_to_raedit` moves the head's to `head_blocks` first.
DITDH_RENAMES: list[tuple[str, str]] = [
    (r"^s_embedder\.", "backbone_embedder."),
    (r"^x_embedder\.", "head_embedder."),
    (r"^s_projector\.", "head_projector."),
    (r"^enc_feat_rope\.", "backbone_rope."),
    (r"^dec_feat_rope\.", "head_rope."),
]

# The same for the plain LightningDiT; every other key is already raedit's.
DIT_RENAMES: list[tuple[str, str]] = [
    (r"^feat_rope\.", "rope."),
]

_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.*)$")


def _rename(key: str, renames: list[tuple[str, str]]) -> str:
    for pattern, replacement in renames:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    return key


def backbone_depth(state_dict: dict[str, torch.Tensor]) -> int:
    """Number of backbone blocks of an official DiT^DH: the blocks as wide as the position embedding."""
    if "pos_embed" not in state_dict:
        raise RaeditError("not an official DiT^DH state dict: it has no 'pos_embed'")
    width = state_dict["pos_embed"].shape[-1]
    depth = 0
    while f"blocks.{depth}.norm1.weight" in state_dict and state_dict[f"blocks.{depth}.norm1.weight"].shape[0] == width:
        depth += 1
    return depth


def official_to_raedit(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official DiT^DH state dict with raedit's key names (tensors shared, not copied).

    blocks.{i} with i >= backbone depth becomes head_blocks.{i - depth}; the rest follows `DITDH_RENAMES`.
    """
    depth = backbone_depth(state_dict)
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = _BLOCK_KEY.match(key)
        if match and int(match.group(1)) >= depth:
            key = f"head_blocks.{int(match.group(1)) - depth}.{match.group(2)}"
        renamed[_rename(key, DITDH_RENAMES)] = value
    return renamed


def official_dit_to_raedit(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official LightningDiT state dict with raedit's key names (tensors shared, not copied)."""
    return {_rename(key, DIT_RENAMES): value for key, value in state_dict.items()}
