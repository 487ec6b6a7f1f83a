"""RAEv2's released stage-2 models (`DiTwDDTHeadIG`, arXiv 2605.18324; HF nyu-visionx/RAEv2-models) as
`raedit.models.DiTDHv2`: the architecture read off the tensors' shapes, key renames, and the separate q/k/v and
SwiGLU input projections fused into raedit's `qkv` and `w12` (the same function: concatenated rows).

Two things the shapes cannot tell come from RAEv2's released configs, which all agree: the base head reads after
block `RAEV2_BASE_DEPTH` (`base_model_depth: 8`), and the model predicts x (`transport.prediction: x`).
"""

from __future__ import annotations

import math
import re

import torch

from raedit.core.errors import RaeditError
from raedit.core.state_dicts import rename_key
from raedit.models import DiTDHv2Config
from raedit.models.blocks import swiglu_hidden_dim

RAEV2_BASE_DEPTH = 8
RAEV2_PREDICTION = "x"

# (RAEv2 pattern, raedit replacement), the first match wins; blocks are split into backbone and head first.
RENAMES: list[tuple[str, str]] = [
    (r"^s_embedder\.", "backbone_embedder."),
    (r"^x_embedder\.", "head_embedder."),
    (r"^s_projector\.", "head_projector."),
    (r"^t_embedder\.learnable_tokens$", "time_tokens"),
    (r"^ctx_embedder\.learnable_tokens$", "class_tokens"),
    (r"^ctx_embedder\.embedding_table\.", "y_embedder.embedding_table."),
    (r"^enc_rope\.", "backbone_rope."),
    (r"^dec_rope\.", "head_rope."),
    (r"^base_final_layer\.", "base_head."),
]
_FINAL_NORM = re.compile(r"^(final_layer|base_head)\.norm\.")
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.*)$")
_FUSED = {"attn.qkv": ("attn.q", "attn.k", "attn.v"), "mlp.w12": ("mlp.w1", "mlp.w2")}


def is_raev2_denoiser(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether `state_dict` has RAEv2's layout (learned time tokens beside the Fourier time embedding)."""
    return "t_embedder.learnable_tokens" in state_dict


def _shape(state_dict: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise RaeditError(f"not a RAEv2 denoiser: the state dict has no {key!r}")
    return tuple(state_dict[key].shape)


def _head_blocks(state_dict: dict[str, torch.Tensor]) -> set[int]:
    """RAEv2 keeps backbone and head blocks in one list; the head's are the ones with adaLN modulation."""
    return {int(match.group(1)) for match in map(_BLOCK_KEY.match, state_dict)
            if match and match.group(2).startswith("adaln_modulation.")}


def raev2_model_config(state_dict: dict[str, torch.Tensor]) -> DiTDHv2Config:
    """The architecture of a RAEv2 `DiTwDDTHeadIG` state dict: widths from the embedders, depths from the blocks
    (the head's have adaLN), heads from the qk-norm widths, condition tokens from the learned token tables,
    classes from the label table (one extra row: the null class), the grid from the head's RoPE table."""
    width, channels = _shape(state_dict, "s_embedder.proj.weight")[:2]
    head_width = _shape(state_dict, "x_embedder.proj.weight")[0]
    blocks = {int(match.group(1)) for match in map(_BLOCK_KEY.match, state_dict) if match}
    head = _head_blocks(state_dict)
    depth = len(blocks - head)
    if not depth or not head or blocks != set(range(len(blocks))) or head != set(range(depth, len(blocks))):
        raise RaeditError(f"not a RAEv2 denoiser: its blocks {sorted(blocks)} are not backbone blocks followed by "
                          f"head blocks (with adaLN) {sorted(head)}")
    tokens = _shape(state_dict, "dec_rope.freqs_cos")[0]
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise RaeditError(f"the RAEv2 denoiser's RoPE table has {tokens} positions: not a square token grid")
    hidden = _shape(state_dict, "blocks.0.mlp.w1.weight")[0]
    mlp_ratio = 4.0
    if swiglu_hidden_dim(width, mlp_ratio) != hidden:
        raise RaeditError(f"blocks.0: a SwiGLU of width {hidden} on {width} channels is not RAEv2's MLP ratio 4")
    return DiTDHv2Config(
        latent_shape=(channels, side, side), depth=depth, width=width,
        num_heads=width // _shape(state_dict, "blocks.0.attn.q_norm.weight")[0],
        num_classes=_shape(state_dict, "ctx_embedder.embedding_table.weight")[0] - 1, mlp_ratio=mlp_ratio,
        qk_norm=True, prediction=RAEV2_PREDICTION,
        base_depth=RAEV2_BASE_DEPTH if "base_final_layer.linear.weight" in state_dict else 0,
        head_depth=len(head), head_width=head_width,
        head_num_heads=head_width // _shape(state_dict, f"blocks.{depth}.attn.q_norm.weight")[0],
        num_time_tokens=_shape(state_dict, "t_embedder.learnable_tokens")[0],
        num_class_tokens=_shape(state_dict, "ctx_embedder.learnable_tokens")[0],
    )


def raev2_to_raedit(state_dict: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """A RAEv2 state dict with raedit's key names; blocks.{i >= depth} become head_blocks.{i - depth}, q/k/v and
    w1/w2 are concatenated into qkv and w12."""
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = _BLOCK_KEY.match(key)
        if match and int(match.group(1)) >= depth:
            key = f"head_blocks.{int(match.group(1)) - depth}.{match.group(2)}"
        key = _FINAL_NORM.sub(r"\1.norm_final.", rename_key(key, RENAMES))
        renamed[key.replace(".adaln_modulation.", ".adaLN_modulation.")] = value
    for fused, parts in _FUSED.items():
        for key in [key for key in renamed if re.search(rf"\.{re.escape(parts[0])}\.(weight|bias)$", key)]:
            prefix, _, kind = key.rpartition(f".{parts[0]}.")
            pieces = [renamed.pop(f"{prefix}.{part}.{kind}", None) for part in parts]
            if any(piece is None for piece in pieces):
                raise RaeditError(f"the RAEv2 denoiser has {prefix}.{parts[0]}.{kind} without all of "
                                  f"{', '.join(parts)}")
            renamed[f"{prefix}.{fused}.{kind}"] = torch.cat(pieces)
    return renamed
