"""Analytic forward FLOPs per sample of the RAE networks: the denoisers, the ViT decoder and the frozen ViT encoders.

A multiply-add is 2 FLOPs, and only matrix multiplications, convolutions and the two attention matmuls
(q @ k^T, attention @ v) count: exactly what `torch.utils.flop_counter.FlopCounterMode` counts, so a forward of a
batch of B counts B times these numbers. Norms, activations, RoPE, modulation, softmax, biases, position
embeddings and table lookups count 0. One caveat of the counter: on CPU, SDPA runs a fused kernel
(`_scaled_dot_product_flash_attention_for_cpu`) that it has no formula for, so it misses the attention there; count
under `torch.nn.attention.sdpa_kernel(SDPBackend.MATH)`, where SDPA is two `bmm`s (as `tests/test_flops.py` does).

The paper's compute figures (Fig. 2 and the recipe: the RAE encoder, DINOv2-B, about 22 GFLOPs and the ViT-XL
decoder about 106 GFLOPs per 256 px image; SD-VAE 135 and 310) are multiply-accumulates, though called GFLOPs:
by the count here DINOv2-B at 224 px (16 x 16 patches, CLS and 4 registers: 261 tokens) is 47.1 GFLOPs and the
XL decoder on 16 x 16 tokens with patch 16 (256 px) is 221.6 GFLOPs, that is 23.5 and 110.8 GMACs. So our FLOPs / 2
is the paper's convention; `PAPER_GMACS` holds its numbers for a side-by-side print.
"""

from __future__ import annotations

from collections.abc import Callable

from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from raedit.core.errors import RaeditError
from raedit.decoder import DecoderConfig, decoder_architecture
from raedit.encoders import NO_WEIGHTS, get_spec
from raedit.models.blocks import swiglu_hidden_dim
from raedit.models.dit import DiTConfig
from raedit.models.ditdh import DiTDHConfig
from raedit.models.ditdh_v2 import DiTDHv2Config

# The paper's per-image compute (Fig. 2, recipe), in GMACs (what it calls GFLOPs): compare with our FLOPs / 2e9.
PAPER_GMACS: dict[str, float] = {
    "dinov2-b encoder 256px": 22,
    "vit-xl decoder 256px": 106,
    "sd-vae encoder 256px": 135,
    "sd-vae decoder 256px": 310,
}

# Frozen ViT encoders: name -> (depth, MLP hidden, tokens before the patches); width and patch size are the
# registry's (`raedit.encoders.get_spec`). The architectures of the hub checkpoints in `raedit.encoders.ENCODERS`.
VIT_ENCODERS: dict[str, tuple[int, int, int]] = {
    "dinov2-s": (12, 1536, 5),  # CLS + 4 registers
    "dinov2-b": (12, 3072, 5),
    "dinov2-l": (24, 4096, 5),
    "siglip2-b": (12, 3072, 0),  # no CLS; the MAP pooling head is not built (raedit.encoders.siglip2)
    "mae-b": (12, 3072, 1),  # CLS; mask ratio 0 keeps every patch
    "dinov3-s": (12, 1536, 5),  # CLS + 4 registers; RoPE and LayerScale are elementwise
    "dinov3-b": (12, 3072, 5),
    "dinov3-l": (24, 4096, 5),
}

# The input of the denoisers' time MLP: [sin, cos] of the 256 Fourier frequencies of GaussianFourierTimeEmbedding.
TIME_FEATURES = 512


def linear_flops(tokens: int, in_features: int, out_features: int) -> int:
    """A Linear (or a 1x1 / patch convolution) applied to `tokens` vectors: 2 * tokens * in * out."""
    return 2 * tokens * in_features * out_features


def self_attention_flops(tokens: int, width: int) -> int:
    """q @ k^T and attention @ v over all heads (the count does not depend on the number of heads): 4 N^2 D."""
    return 2 * 2 * tokens * tokens * width


def vit_block_flops(tokens: int, width: int, mlp_hidden: int) -> int:
    """A pre-norm ViT block: q, k, v and output projections, attention, and a two-layer MLP of `mlp_hidden`."""
    projections = 4 * linear_flops(tokens, width, width)
    mlp = linear_flops(tokens, width, mlp_hidden) + linear_flops(tokens, mlp_hidden, width)
    return projections + self_attention_flops(tokens, width) + mlp


def dit_block_flops(tokens: int, width: int, mlp_hidden: int, condition_tokens: int) -> int:
    """A `raedit.models.blocks.DiTBlock`: fused qkv, attention, proj, SwiGLU (w12 to 2 x hidden, w3 back), and the
    adaLN Linear to 6 x width on `condition_tokens` vectors (1 per sample in a backbone, N per token in the DiT^DH
    head)."""
    attention = linear_flops(tokens, width, 3 * width) + self_attention_flops(tokens, width)
    attention += linear_flops(tokens, width, width)
    mlp = linear_flops(tokens, width, 2 * mlp_hidden) + linear_flops(tokens, mlp_hidden, width)
    return attention + mlp + linear_flops(condition_tokens, width, 6 * width)


def final_layer_flops(tokens: int, width: int, channels: int, condition_tokens: int) -> int:
    """A `raedit.models.blocks.FinalLayer`: adaLN Linear to 2 x width on `condition_tokens`, Linear to channels."""
    return linear_flops(condition_tokens, width, 2 * width) + linear_flops(tokens, width, channels)


def denoiser_flops(config: DiTConfig) -> int:
    """Forward FLOPs per sample of a LightningDiT (`DiTConfig`), DiT^DH (`DiTDHConfig`) (Sec. 4 and 5) or RAEv2's
    DiT^DH (`DiTDHv2Config`), without the internal-guidance base head (which its training and internal guidance
    run besides).

    Backbone: the latent embedding (C -> D per token), the time MLP (512 -> D -> D), `depth` blocks modulated
    per sample; the label embedding is a lookup. DiT^DH adds the head projector (D -> D_head per token, when the
    widths differ), the head's own latent embedding and `head_depth` blocks modulated per token; the final layer
    is modulated per sample in LightningDiT and per token in DiT^DH.
    """
    channels, height, width_tokens = config.latent_shape
    tokens = height * width_tokens
    width = config.width
    time_mlp = linear_flops(1, TIME_FEATURES, width) + linear_flops(1, width, width)
    flops = linear_flops(tokens, channels, width) + time_mlp
    if isinstance(config, DiTDHv2Config):  # RAEv2: time and class tokens in the sequence, no adaLN in the backbone
        sequence = tokens + config.num_time_tokens + config.num_class_tokens
        flops += config.depth * dit_block_flops(sequence, width, swiglu_hidden_dim(width, config.mlp_ratio), 0)
    else:
        flops += config.depth * dit_block_flops(tokens, width, swiglu_hidden_dim(width, config.mlp_ratio), 1)
    if not isinstance(config, DiTDHConfig):
        return flops + final_layer_flops(tokens, width, channels, condition_tokens=1)
    head_width = config.head_width
    if head_width != width:
        flops += linear_flops(tokens, width, head_width)
    flops += linear_flops(tokens, channels, head_width)
    flops += config.head_depth * dit_block_flops(tokens, head_width, swiglu_hidden_dim(head_width, config.mlp_ratio),
                                                 condition_tokens=tokens)
    return flops + final_layer_flops(tokens, head_width, channels, condition_tokens=tokens)


def decoder_flops(config: DecoderConfig) -> int:
    """Forward FLOPs per image of a `raedit.decoder.ViTDecoder` (Sec. 3, Appx. C).

    The token embedding runs on the N encoder tokens; the blocks and the pixel head on N + 1 (the CLS token is
    dropped only after the head). E.g. the XL decoder on 16 x 16 tokens: 256 px with patch 16, 512 px with patch 32.
    """
    depth, width, _, mlp_hidden = decoder_architecture(config.size)
    tokens = config.grid[0] * config.grid[1]
    sequence = tokens + 1
    embed = linear_flops(tokens, config.in_channels, width)
    head = linear_flops(sequence, width, config.patch_size**2 * config.out_channels)
    return embed + depth * vit_block_flops(sequence, width, mlp_hidden) + head


def vit_encoder_flops(input_size: int, patch_size: int, width: int, depth: int, mlp_hidden: int,
                      prefix_tokens: int, in_channels: int = 3) -> int:
    """Forward FLOPs per image of a transformers ViT encoder on a square `input_size` px image.

    The patch embedding is a stride-p convolution, a Linear of 3 p^2 -> width per patch; the blocks run on the
    patches plus `prefix_tokens` (CLS, registers). The final LayerNorm and position interpolation cost no FLOPs.
    """
    if input_size % patch_size:
        raise RaeditError(f"input size {input_size} is not a multiple of the patch size {patch_size}")
    patches = (input_size // patch_size) ** 2
    patch_embedding = linear_flops(patches, in_channels * patch_size**2, width)
    return patch_embedding + depth * vit_block_flops(patches + prefix_tokens, width, mlp_hidden)


def encoder_flops(name: str, input_size: int | None = None) -> int:
    """Forward FLOPs per image of the registry's encoder `name` at `input_size` px (default: the registry's).

    The ViT encoders (DINOv2 with registers, SigLIP2, MAE) as raedit runs them: SigLIP2 without the MAP pooling
    head of the checkpoint (about 0.6 GFLOPs more), which raedit does not build. The pixel-patch "encoders"
    (`pixels-*`) have no weights: a patch reshape, 0 FLOPs. The EfficientNet-Lite encoders are convolutional
    networks without an analytic count here: an error, count a forward of the built encoder with FlopCounterMode.
    """
    spec = get_spec(name)
    if spec.source == NO_WEIGHTS:
        return 0
    if name not in VIT_ENCODERS:
        raise RaeditError(f"no analytic FLOP count for encoder '{name}' (known: {', '.join(VIT_ENCODERS)}, and the "
                          f"weight-free pixels-*); count a forward of the built encoder with FlopCounterMode")
    depth, mlp_hidden, prefix_tokens = VIT_ENCODERS[name]
    return vit_encoder_flops(input_size or spec.input_size, spec.patch_size, spec.channels, depth, mlp_hidden,
                             prefix_tokens)


def train_step_flops(forward_flops: int) -> int:
    """FLOPs of a training step from its forward FLOPs: 3 x forward, the usual approximation (the backward costs
    2 x forward: gradients with respect to both the inputs and the weights of every matmul). Model FLOPs, as for
    MFU: the forward recomputed under activation checkpointing is not counted."""
    return 3 * forward_flops


def counted_flops(run: Callable[[], object]) -> int:
    """The FLOPs `FlopCounterMode` counts in one call of `run`, with SDPA as its math kernel (which the counter
    knows): for networks without an analytic count here, such as the EfficientNet-Lite encoders."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()
