"""The released RAE stage-2 models (official `DiTwDDTHead` = DiT^DH, `LightningDiT`) as
`raedit.models.DiTDH` and `raedit.models.LightningDiT`: the architecture read off the tensors' shapes, and key
renames. Renaming alone suffices: shapes, buffers (RoPE tables, the frozen time frequencies W, the sin-cos
position embedding) and the function computed are the same."""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from raedit.core.errors import RaeditError
from raedit.core.files import read_state_dict
from raedit.core.state_dicts import check_fits, rename_key, weights_of
from raedit.interop.raev2_dit import is_raev2_denoiser, raev2_model_config, raev2_to_raedit
from raedit.models import DiTConfig, DiTDHConfig, build_model
from raedit.models.blocks import swiglu_hidden_dim

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
        renamed[rename_key(key, DITDH_RENAMES)] = value
    return renamed


def official_dit_to_raedit(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official LightningDiT state dict with raedit's key names (tensors shared, not copied)."""
    return {rename_key(key, DIT_RENAMES): value for key, value in state_dict.items()}


def is_official_ditdh(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether `state_dict` has the official DiT^DH layout (a backbone embedder `s_embedder`)."""
    return "s_embedder.proj.weight" in state_dict


def _shape(state_dict: dict[str, torch.Tensor], key: str, ndim: int | None = None) -> tuple[int, ...]:
    if key not in state_dict:
        raise RaeditError(f"not an official RAE denoiser: the state dict has no {key!r}")
    shape = tuple(state_dict[key].shape)
    if ndim is not None and len(shape) != ndim:
        raise RaeditError(f"not an official RAE denoiser: {key!r} has shape {shape}")
    return shape


def _mlp_ratio(state_dict: dict[str, torch.Tensor], block: int, width: int) -> float:
    """The MLP ratio r of block `block` from its SwiGLU width, hidden = int(2/3 * int(width * r))."""
    hidden = _shape(state_dict, f"blocks.{block}.mlp.w3.weight")[1]
    for ratio in (4.0, (3 * hidden + 1) // 2 / width, (3 * hidden + 2) // 2 / width):
        if swiglu_hidden_dim(width, ratio) == hidden:
            return ratio
    raise RaeditError(f"blocks.{block}: a SwiGLU of width {hidden} on {width} channels fits no MLP ratio")


def official_model_config(state_dict: dict[str, torch.Tensor]) -> DiTConfig:
    """The architecture (a `DiTDHConfig`, or a `DiTConfig` for a plain LightningDiT) of an official state dict,
    read off its tensors' shapes: widths from the embedders, depths from the blocks, heads from the RoPE tables
    (N x head_dim), classes from the label table (one extra row: the null class), qk-norm from its weights."""
    _, tokens, width = _shape(state_dict, "pos_embed", ndim=3)
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise RaeditError(f"pos_embed has {tokens} positions: not a square token grid")
    ditdh = is_official_ditdh(state_dict)
    if ditdh and _shape(state_dict, "x_embedder.proj.weight")[0] == width:
        raise RaeditError(f"backbone and head are both {width} wide, so which blocks are the head's can't be read "
                          f"off the shapes")
    channels = _shape(state_dict, "s_embedder.proj.weight" if ditdh else "x_embedder.proj.weight")[1]
    rope = "enc_feat_rope" if ditdh else "feat_rope"
    head_dim = _shape(state_dict, f"{rope}.freqs_cos")[-1]
    depth = backbone_depth(state_dict) if ditdh else _count_blocks(state_dict)
    if depth == 0:
        raise RaeditError("not an official RAE denoiser: it has no transformer blocks")
    mlp_ratio = _mlp_ratio(state_dict, 0, width)
    common = {"latent_shape": (channels, side, side), "depth": depth, "width": width,
              "num_heads": width // head_dim,
              "num_classes": _shape(state_dict, "y_embedder.embedding_table.weight")[0] - 1,
              "mlp_ratio": mlp_ratio, "qk_norm": "blocks.0.attn.q_norm.weight" in state_dict}
    if not ditdh:
        return DiTConfig(**common)
    head_width = _shape(state_dict, "x_embedder.proj.weight")[0]
    head_depth = _count_blocks(state_dict) - depth
    if head_depth and _mlp_ratio(state_dict, depth, head_width) != mlp_ratio:
        raise RaeditError("the head's MLP ratio differs from the backbone's; raedit's DiT^DH shares one ratio")
    return DiTDHConfig(**common, head_depth=head_depth, head_width=head_width,
                       head_num_heads=head_width // _shape(state_dict, "dec_feat_rope.freqs_cos")[-1])


def _count_blocks(state_dict: dict[str, torch.Tensor]) -> int:
    return len({match.group(1) for match in map(_BLOCK_KEY.match, state_dict) if match})


def official_denoiser_to_raedit(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official DiT^DH or LightningDiT state dict with raedit's key names."""
    return official_to_raedit(state_dict) if is_official_ditdh(state_dict) else official_dit_to_raedit(state_dict)


def read_official_denoiser(path: str | Path) -> tuple[DiTConfig, dict[str, torch.Tensor]]:
    """The architecture and raedit-named weights of a released stage-2 checkpoint (`stage2_model.pt`, or any
    official training checkpoint; or RAEv2's `checkpoint.pt`, `raedit.interop.raev2_dit`): the `ema` entry or the
    bare state dict, read with `weights_only=True`, wrapper prefixes stripped, every key and shape checked against
    the architecture the shapes describe."""
    state = weights_of(read_state_dict(path, "official denoiser weights"), str(path))
    if is_raev2_denoiser(state):
        config = raev2_model_config(state)
        weights = raev2_to_raedit(state, config.depth)
    else:
        config = official_model_config(state)
        weights = official_denoiser_to_raedit(state)
    with torch.device("meta"):
        expected = build_model(config).state_dict()
    check_fits(expected, weights, f"the official denoiser {path}")
    return config, weights
