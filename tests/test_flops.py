"""The analytic FLOP counts of `raedit.perf.flops` against torch's FlopCounterMode on real forwards.

Tiny models compute on CPU. Full-size ones hold no weights and compute nothing, so even DiT^DH-XL and DINOv2-L
take about a second on the meta device. On CPU, SDPA's fused kernel has no FlopCounterMode formula, so every count
runs with SDPA's math backend, whose attention is two `bmm`s.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    SiglipVisionConfig,
    SiglipVisionModel,
    ViTMAEConfig,
    ViTMAEModel,
)

from raedit.core.errors import RaeditError
from raedit.decoder import DecoderConfig, ViTDecoder
from raedit.encoders import get_spec
from raedit.encoders.base import Encoder
from raedit.encoders.dinov2 import Dinov2Encoder
from raedit.encoders.dinov3 import Dinov3Encoder
from raedit.encoders.mae import MaeEncoder
from raedit.encoders.siglip2 import Siglip2Encoder
from raedit.models import DiTConfig, build_model, model_config
from raedit.perf.flops import (
    PAPER_GMACS,
    decoder_flops,
    denoiser_flops,
    encoder_flops,
    train_step_flops,
    vit_encoder_flops,
)

BATCH = 3


def counted_flops(forward: Callable[..., torch.Tensor], *args: torch.Tensor) -> int:
    """FlopCounterMode's total for one call of `forward` (no grad, SDPA on its math backend)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        forward(*args)
    return counter.get_total_flops()


def denoiser_forward_flops(config: DiTConfig, batch: int) -> int:
    model = build_model(config).eval()
    x = torch.randn(batch, *config.latent_shape)
    return counted_flops(model, x, torch.rand(batch), torch.zeros(batch, dtype=torch.long))


def encoder_forward_flops(encoder: Encoder, batch: int) -> int:
    normalized = torch.randn(batch, 3, encoder.input_size, encoder.input_size, device=encoder.pixel_mean.device)
    return counted_flops(encoder.eval().forward_tokens, normalized)


# ---- denoisers -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, latent_shape, overrides", [
    ("ditdh-s", (8, 4, 4), {"head_width": 48, "head_num_heads": 2}),
    ("ditdh-s", (8, 3, 5), {"head_width": 32, "head_num_heads": 2, "qk_norm": True}),  # no head projector
    ("dit-s", (8, 4, 4), {}),
    ("dit-s", (8, 3, 5), {"mlp_ratio": 2.0}),
    ("ditdhv2-s", (8, 4, 4), {"head_width": 48, "head_num_heads": 2, "base_depth": 1}),  # base head not run
])
def test_tiny_denoiser_matches_flop_counter(name: str, latent_shape: tuple[int, int, int], overrides: dict) -> None:
    torch.manual_seed(0)
    config = model_config(name, latent_shape, depth=2, width=32, num_heads=2, num_classes=10, **overrides)
    assert denoiser_forward_flops(config, BATCH) == BATCH * denoiser_flops(config)


@pytest.mark.parametrize("name, latent_shape, overrides", [
    ("ditdh-xl", (768, 16, 16), {}), ("dit-xl", (768, 16, 16), {}),
    ("ditdhv2-xl", (1024, 16, 16), {"width": 1440, "num_heads": 20, "base_depth": 8}),  # RAEv2's ImageNet model
])
def test_full_size_denoiser_matches_flop_counter(name: str, latent_shape: tuple[int, int, int],
                                                 overrides: dict) -> None:
    config = model_config(name, latent_shape, **overrides)
    with torch.device("meta"):
        assert denoiser_forward_flops(config, 1) == denoiser_flops(config)


# ---- decoder -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [(4, 4), (3, 5)])
def test_tiny_decoder_matches_flop_counter(grid: tuple[int, int]) -> None:
    torch.manual_seed(0)
    config = DecoderConfig(size="tiny", in_channels=8, grid=grid, patch_size=4)
    tokens = torch.randn(BATCH, grid[0] * grid[1], config.in_channels)
    assert counted_flops(ViTDecoder(config), tokens) == BATCH * decoder_flops(config)


@pytest.mark.parametrize("grid, patch_size", [((16, 16), 16), ((16, 16), 32), ((32, 32), 16)])
def test_xl_decoder_matches_flop_counter(grid: tuple[int, int], patch_size: int) -> None:
    config = DecoderConfig(size="XL", in_channels=768, grid=grid, patch_size=patch_size)
    with torch.device("meta"):
        tokens = torch.randn(1, grid[0] * grid[1], config.in_channels)
        assert counted_flops(ViTDecoder(config), tokens) == decoder_flops(config)


# ---- encoders ------------------------------------------------------------------------------------------------------


def dinov2(name: str, hidden_size: int, layers: int, heads: int, input_size: int | None = None) -> Dinov2Encoder:
    """DINOv2 with 4 registers, patch 14, position embeddings for 518 px as the hub checkpoints."""
    config = Dinov2WithRegistersConfig(hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
                                       mlp_ratio=4, patch_size=14, image_size=518, num_register_tokens=4)
    return Dinov2Encoder(get_spec(name), Dinov2WithRegistersModel(config), input_size)


def siglip2(hidden_size: int, layers: int, heads: int, intermediate_size: int) -> Siglip2Encoder:
    """The SigLIP2 vision tower as raedit loads it: without the MAP pooling head."""
    config = SiglipVisionConfig(hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
                                intermediate_size=intermediate_size, patch_size=16, image_size=256,
                                vision_use_head=False)
    return Siglip2Encoder(get_spec("siglip2-b"), SiglipVisionModel(config))


def mae(hidden_size: int, layers: int, heads: int, intermediate_size: int) -> MaeEncoder:
    """The ViT-MAE encoder as raedit loads it: mask ratio 0, position embeddings for 224 px (run at 256)."""
    config = ViTMAEConfig(hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
                          intermediate_size=intermediate_size, patch_size=16, image_size=224, mask_ratio=0.0)
    return MaeEncoder(get_spec("mae-b"), ViTMAEModel(config))


TINY_WIDTH, TINY_DEPTH, TINY_MLP = 32, 2, 128  # DINOv2's MLP is 4 x width
TINY_ENCODERS = {  # name: (tiny encoder, tokens before the patches)
    "dinov2-b": (lambda: dinov2("dinov2-b", TINY_WIDTH, TINY_DEPTH, 2), 5),
    "siglip2-b": (lambda: siglip2(TINY_WIDTH, TINY_DEPTH, 2, TINY_MLP), 0),
    "mae-b": (lambda: mae(TINY_WIDTH, TINY_DEPTH, 2, TINY_MLP), 1),
}


@pytest.mark.parametrize("name", TINY_ENCODERS)
def test_tiny_encoder_matches_flop_counter(name: str) -> None:
    torch.manual_seed(0)
    make_encoder, prefix_tokens = TINY_ENCODERS[name]
    encoder = make_encoder()
    expected = vit_encoder_flops(encoder.input_size, encoder.patch_size, TINY_WIDTH, TINY_DEPTH, TINY_MLP,
                                 prefix_tokens)
    assert encoder_forward_flops(encoder, BATCH) == BATCH * expected


FULL_SIZE_ENCODERS = {  # name, input size: the hub checkpoint's architecture
    ("dinov2-s", None): lambda: dinov2("dinov2-s", 384, 12, 6),
    ("dinov2-b", None): lambda: dinov2("dinov2-b", 768, 12, 12),
    ("dinov2-b", 448): lambda: dinov2("dinov2-b", 768, 12, 12, input_size=448),  # 32 x 32 tokens: the 512 px model
    ("dinov2-l", None): lambda: dinov2("dinov2-l", 1024, 24, 16),
    ("siglip2-b", None): lambda: siglip2(768, 12, 12, 3072),
    ("mae-b", None): lambda: mae(768, 12, 12, 3072),
    ("dinov3-l", None): lambda: Dinov3Encoder.with_random_weights(get_spec("dinov3-l")),
}


@pytest.mark.parametrize("name, input_size", FULL_SIZE_ENCODERS)
def test_full_size_encoder_matches_flop_counter(name: str, input_size: int | None) -> None:
    with torch.device("meta"):
        assert encoder_forward_flops(FULL_SIZE_ENCODERS[name, input_size](), 1) == encoder_flops(name, input_size)


def test_pixel_patches_cost_nothing_and_effnet_is_not_covered() -> None:
    assert encoder_flops("pixels-p16") == 0
    with pytest.raises(RaeditError, match="effnet-lite0"):
        encoder_flops("effnet-lite0")
    with pytest.raises(RaeditError, match="unknown encoder"):
        encoder_flops("dinov9-b")


# ---- the paper's figures and the training step ---------------------------------------------------------------------


def test_paper_figures_are_multiply_accumulates() -> None:
    """Fig. 2's "GFLOPs" are GMACs: our FLOPs / 2 lands within 10% of them (DINOv2-B at 224 px: 261 tokens)."""
    encoder_gmacs = encoder_flops("dinov2-b") / 2e9
    decoder_gmacs = decoder_flops(DecoderConfig(size="XL", in_channels=768, grid=(16, 16), patch_size=16)) / 2e9
    assert encoder_gmacs == pytest.approx(PAPER_GMACS["dinov2-b encoder 256px"], rel=0.1)
    assert decoder_gmacs == pytest.approx(PAPER_GMACS["vit-xl decoder 256px"], rel=0.1)


def test_train_step_is_about_three_forwards() -> None:
    """A real forward and backward counts just under 3 x forward: the backward needs no gradient for the inputs
    (latents, time features), so the first layers' input-gradient matmuls are not run."""
    torch.manual_seed(0)
    config = model_config("ditdh-s", (8, 4, 4), depth=2, width=32, num_heads=2, head_width=48, head_num_heads=2,
                          num_classes=10)
    model = build_model(config)
    counter = FlopCounterMode(display=False)
    x, t, labels = torch.randn(BATCH, *config.latent_shape), torch.rand(BATCH), torch.zeros(BATCH, dtype=torch.long)
    with sdpa_kernel(SDPBackend.MATH), counter:
        model(x, t, labels).square().mean().backward()
    expected = BATCH * train_step_flops(denoiser_flops(config))
    assert expected == 3 * BATCH * denoiser_flops(config)
    assert 0.99 * expected <= counter.get_total_flops() <= expected
