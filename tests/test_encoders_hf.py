"""The transformers encoders (DINOv2, DINOv3, SigLIP2, MAE) on tiny random checkpoints, loaded like real weights.

Each checkpoint gets a non-trivial weight and bias in its final LayerNorm, so every comparison below also checks
that the encoders ignore them. `save_pretrained` writes the tensor names of the checkpoints on the hub (e.g.
`vit.encoder.layer.0.attention.attention.query.weight`), so loading them exercises the same renaming as real weights.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import huggingface_hub
import pytest
import torch
import torch.nn.functional as F
from transformers import (
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    DINOv3ViTConfig,
    DINOv3ViTModel,
    PreTrainedModel,
    SiglipConfig,
    SiglipModel,
    SiglipVisionModel,
    ViTMAEConfig,
    ViTMAEForPreTraining,
    ViTMAEModel,
)

from raedit.core.errors import RaeditError
from raedit.encoders import build_encoder, get_spec, hub
from raedit.encoders.dinov3 import Dinov3Encoder

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def set_affine(layer_norm: torch.nn.LayerNorm, scale: float) -> None:
    """Give a LayerNorm a weight and bias far from the identity."""
    with torch.no_grad():
        layer_norm.weight.copy_(scale * torch.linspace(0.5, 3.0, layer_norm.weight.numel()))
        layer_norm.bias.copy_(scale * torch.linspace(-2.0, 1.0, layer_norm.bias.numel()))


def tiny_dinov2() -> Dinov2WithRegistersModel:
    """DINOv2 with 4 registers; position embeddings for 98 px (7 x 7), so 224 px input interpolates them."""
    model = Dinov2WithRegistersModel(
        Dinov2WithRegistersConfig(**TINY, patch_size=14, image_size=98, num_register_tokens=4)
    )
    with torch.no_grad():  # registers start at zero: make them distinct so dropping them is visible
        model.embeddings.register_tokens.normal_()
    return model


def tiny_dinov3() -> DINOv3ViTModel:
    """DINOv3 with 4 registers (as the released checkpoints), patch 16; RoPE positions fit any input size."""
    return DINOv3ViTModel(DINOv3ViTConfig(**TINY, patch_size=16, num_register_tokens=4))


def tiny_siglip() -> SiglipModel:
    """A full SigLIP model (vision and text towers), stored as the real siglip2-base-patch16-256 is."""
    return SiglipModel(SiglipConfig(
        vision_config=dict(**TINY, patch_size=16, image_size=256),
        text_config=dict(**TINY, vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2),
    ))


def tiny_mae() -> ViTMAEForPreTraining:
    """A ViTMAE pre-training model (encoder and decoder) at 224 px with the released mask ratio 0.75."""
    return ViTMAEForPreTraining(ViTMAEConfig(
        **TINY, patch_size=16, image_size=224, mask_ratio=0.75, decoder_hidden_size=16,
        decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=32,
    ))


FAMILIES: dict[str, tuple[Callable[[], PreTrainedModel], Callable[[PreTrainedModel], torch.nn.LayerNorm]]] = {
    # encoder name: (tiny checkpoint, its final LayerNorm)
    "dinov2-b": (tiny_dinov2, lambda model: model.layernorm),
    "dinov3-b": (tiny_dinov3, lambda model: model.norm),
    "siglip2-b": (tiny_siglip, lambda model: model.vision_model.post_layernorm),
    "mae-b": (tiny_mae, lambda model: model.vit.layernorm),
}


def save_checkpoint(name: str, path: Path, affine_scale: float, seed: int = 0) -> Path:
    make_model, final_norm = FAMILIES[name]
    torch.manual_seed(seed)
    model = make_model()
    set_affine(final_norm(model), affine_scale)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def checkpoint_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {name: save_checkpoint(name, tmp_path_factory.mktemp(name), affine_scale=1.0) for name in FAMILIES}


def images(size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def plain_layer_norm(tokens: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over channels without weight or bias, written out."""
    mean = tokens.mean(dim=-1, keepdim=True)
    var = tokens.var(dim=-1, unbiased=False, keepdim=True)
    return (tokens - mean) / torch.sqrt(var + eps)


def model_input_sizes(model: torch.nn.Module) -> list[tuple[int, ...]]:
    """Records the pixel_values shape each forward call of `model` receives."""
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(tuple(kwargs["pixel_values"].shape)), with_kwargs=True
    )
    return seen


# ---- all three families --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_final_norm_has_no_affine(name: str, checkpoint_dirs: dict[str, Path], tmp_path: Path) -> None:
    """Same checkpoint but another final-LayerNorm weight/bias: identical tokens, each of mean 0 and variance 1."""
    x = images(256, seed=3)
    tokens = build_encoder(name, weights=str(checkpoint_dirs[name])).encode(x)
    other = save_checkpoint(name, tmp_path, affine_scale=-2.5)
    torch.testing.assert_close(build_encoder(name, weights=str(other)).encode(x), tokens, atol=0, rtol=0)
    assert tokens.mean(dim=-1).abs().max() < 1e-5
    assert (tokens.var(dim=-1, unbiased=False) - 1).abs().max() < 1e-3


@pytest.mark.parametrize(("name", "input_size", "other_size"), [
    ("dinov2-s", 224, 256), ("dinov2-l", 224, 160), ("siglip2-b", 256, 224), ("mae-b", 256, 192),
])
def test_any_resolution_is_resized_to_the_spec_input(
    name: str, input_size: int, other_size: int, checkpoint_dirs: dict[str, Path]
) -> None:
    encoder = build_encoder(name, weights=str(checkpoint_dirs[name.split("-")[0] + "-b"]))
    assert (encoder.name, encoder.input_size, encoder.channels, encoder.grid) == (name, input_size, 32, (16, 16))
    assert not any(parameter.requires_grad for parameter in encoder.parameters())
    seen = model_input_sizes(encoder.model)
    x = images(other_size, seed=4)
    tokens = encoder.encode(x)
    assert tokens.shape == (2, 256, 32)
    assert seen == [(2, 3, input_size, input_size)]
    resized = F.interpolate(x, size=(input_size, input_size), mode="bicubic", align_corners=False, antialias=False)
    torch.testing.assert_close(tokens, encoder.encode(resized))


# ---- DINOv2 with registers -------------------------------------------------------------------------------------


def test_dinov2_tokens_match_manual_computation_without_cls_and_registers(checkpoint_dirs: dict[str, Path]) -> None:
    encoder = build_encoder("dinov2-b", weights=str(checkpoint_dirs["dinov2-b"]))
    assert (encoder.input_size, encoder.patch_size) == (224, 14)
    x = images(224)
    tokens = encoder.encode(x)
    assert tokens.shape == (2, 256, 32)

    reference = Dinov2WithRegistersModel.from_pretrained(checkpoint_dirs["dinov2-b"]).eval()
    with torch.no_grad():
        normalized = (x - IMAGENET_MEAN) / IMAGENET_STD
        hidden = reference.encoder(reference.embeddings(normalized)).last_hidden_state
        with_affine = reference(pixel_values=normalized).last_hidden_state
    assert hidden.shape == (2, 1 + 4 + 256, 32)  # CLS, 4 registers, 16 x 16 patches
    expected = plain_layer_norm(hidden, reference.config.layer_norm_eps)
    torch.testing.assert_close(tokens, expected[:, 5:], atol=1e-5, rtol=1e-4)
    assert (tokens - expected[:, :256]).abs().max() > 0.1  # the prefix really was dropped
    assert (tokens - with_affine[:, 5:]).abs().max() > 0.5  # and the checkpoint's affine really was ignored


# ---- DINOv3 ------------------------------------------------------------------------------------------------------


def test_dinov3_tokens_match_hidden_states_without_cls_and_registers(checkpoint_dirs: dict[str, Path]) -> None:
    """RAEv2's encoder: 256 px -> 16 x 16 tokens, CLS and 4 registers dropped, the final norm without affine."""
    encoder = build_encoder("dinov3-b", weights=str(checkpoint_dirs["dinov3-b"]))
    assert (encoder.input_size, encoder.patch_size, encoder.grid, encoder.num_prefix_tokens) == (256, 16, (16, 16), 5)
    x = images(256)
    tokens = encoder.encode(x)
    assert tokens.shape == (2, 256, 32)

    reference = DINOv3ViTModel.from_pretrained(checkpoint_dirs["dinov3-b"]).eval()
    with torch.no_grad():
        output = reference(pixel_values=(x - IMAGENET_MEAN) / IMAGENET_STD, output_hidden_states=True)
    hidden = output.hidden_states[-1]  # the last block's output, before the final norm
    assert hidden.shape == (2, 1 + 4 + 256, 32)
    expected = plain_layer_norm(hidden, reference.config.layer_norm_eps)
    torch.testing.assert_close(tokens, expected[:, 5:], atol=1e-5, rtol=1e-4)
    assert (tokens - expected[:, :256]).abs().max() > 0.1  # the prefix really was dropped
    assert (tokens - output.last_hidden_state[:, 5:]).abs().max() > 0.5  # and the checkpoint's affine ignored


def test_dinov3_resizes_as_raev2_bilinear_with_antialiasing(checkpoint_dirs: dict[str, Path]) -> None:
    encoder = build_encoder("dinov3-b", weights=str(checkpoint_dirs["dinov3-b"]))
    x = images(384, seed=5)
    resized = F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(encoder.encode(x), encoder.encode(resized), atol=0, rtol=0)


@pytest.mark.parametrize(("name", "hub_id", "width"), [
    ("dinov3-s", "facebook/dinov3-vits16-pretrain-lvd1689m", 384),
    ("dinov3-b", "facebook/dinov3-vitb16-pretrain-lvd1689m", 768),
    ("dinov3-l", "facebook/dinov3-vitl16-pretrain-lvd1689m", 1024),
])
def test_dinov3_registry(name: str, hub_id: str, width: int) -> None:
    spec = get_spec(name)
    assert (spec.source, spec.input_size, spec.patch_size, spec.channels) == (hub_id, 256, 16, width)
    assert spec.grid == (16, 16)
    assert (spec.pixel_mean, spec.pixel_std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_dinov3_small_with_random_weights_has_the_released_shape() -> None:
    encoder = Dinov3Encoder.with_random_weights(get_spec("dinov3-s"))
    config = encoder.model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (12, 6, 1536)
    assert encoder.num_prefix_tokens == 5
    assert encoder.encode(torch.rand(1, 3, 256, 256)).shape == (1, 256, 384)


# ---- SigLIP2 -----------------------------------------------------------------------------------------------------


def test_siglip2_uses_vision_tower_tokens_without_cls(checkpoint_dirs: dict[str, Path]) -> None:
    encoder = build_encoder("siglip2-b", weights=str(checkpoint_dirs["siglip2-b"]))
    assert isinstance(encoder.model, SiglipVisionModel)
    assert (encoder.input_size, encoder.patch_size) == (256, 16)
    names = [name for name, _ in encoder.named_parameters()]
    assert not any("text" in name or "head" in name for name in names)  # no text tower, no pooling head

    x = images(256)
    tokens = encoder.encode(x)
    assert tokens.shape == (2, 256, 32)
    reference = SiglipModel.from_pretrained(checkpoint_dirs["siglip2-b"]).vision_model.eval()
    with torch.no_grad():
        hidden = reference.encoder(inputs_embeds=reference.embeddings((x - 0.5) / 0.5)).last_hidden_state
    assert hidden.shape == (2, 256, 32)  # SigLIP has no CLS token
    torch.testing.assert_close(tokens, plain_layer_norm(hidden, reference.config.layer_norm_eps),
                               atol=1e-5, rtol=1e-4)


# ---- MAE ---------------------------------------------------------------------------------------------------------


def mae_manual_tokens(model: ViTMAEModel, normalized: torch.Tensor) -> torch.Tensor:
    """MAE encoder without any masking or shuffling, written out: B x 3 x 256 x 256 -> B x 256 x C."""
    embeddings = model.embeddings
    projection = embeddings.patch_embeddings.projection
    with torch.no_grad():
        patches = F.conv2d(normalized, projection.weight, projection.bias, stride=16).flatten(2).transpose(1, 2)
        # the 14 x 14 position table (224 px) resized bicubically to the 16 x 16 grid (256 px)
        table = embeddings.position_embeddings[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
        positions = F.interpolate(table, size=(16, 16), mode="bicubic", align_corners=False)
        positions = positions.permute(0, 2, 3, 1).reshape(1, 256, -1)
        cls = embeddings.cls_token + embeddings.position_embeddings[:, :1]
        hidden = torch.cat([cls.expand(normalized.shape[0], -1, -1), patches + positions], dim=1)
        for layer in model.layers:
            hidden = layer(hidden)
    return plain_layer_norm(hidden[:, 1:], model.config.layer_norm_eps)


def test_mae_tokens_in_raster_order_without_masking(checkpoint_dirs: dict[str, Path]) -> None:
    encoder = build_encoder("mae-b", weights=str(checkpoint_dirs["mae-b"]))
    assert (encoder.input_size, encoder.patch_size) == (256, 16)
    assert encoder.model.config.mask_ratio == 0.0
    assert not any("decoder" in name for name, _ in encoder.named_parameters())

    x = images(256)
    tokens = encoder.encode(x)
    assert tokens.shape == (2, 256, 32)  # all 16 x 16 patches kept, CLS dropped
    torch.testing.assert_close(encoder.encode(x), tokens, atol=0, rtol=0)  # no random shuffle between calls
    reference = ViTMAEModel.from_pretrained(checkpoint_dirs["mae-b"]).eval()
    torch.testing.assert_close(tokens, mae_manual_tokens(reference, encoder.normalize(x)), atol=1e-5, rtol=1e-4)


# ---- where the weights come from ------------------------------------------------------------------------------------


def assert_fast_error(name: str, weights: str, *expected: str, limit_s: float = 5.0) -> None:
    start = time.perf_counter()
    with pytest.raises(RaeditError) as caught:
        build_encoder(name, weights=weights)
    elapsed = time.perf_counter() - start
    message = str(caught.value)
    assert elapsed < limit_s, f"took {elapsed:.1f} s"
    assert "\n" not in message
    for text in (name, weights, "HF_HUB_OFFLINE", *expected):
        assert text in message, (text, message)


def test_cached_hub_id_loads_without_asking_the_hub(
    checkpoint_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub id already in the HF cache (as `hf download` leaves it) loads with no network request at all."""
    snapshot = tmp_path / "models--raedit-tests--tiny-mae" / "snapshots" / ("0" * 40)
    shutil.copytree(checkpoint_dirs["mae-b"], snapshot)
    (tmp_path / "models--raedit-tests--tiny-mae" / "refs").mkdir()
    (tmp_path / "models--raedit-tests--tiny-mae" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the hub was asked although the weights are cached")

    monkeypatch.setattr(hub, "_require_reachable_hub", no_network)
    x = images(256)
    from_cache = build_encoder("mae-b", weights="raedit-tests/tiny-mae").encode(x)
    from_directory = build_encoder("mae-b", weights=str(checkpoint_dirs["mae-b"])).encode(x)
    torch.testing.assert_close(from_cache, from_directory, atol=0, rtol=0)


def test_missing_directory_fails_fast_with_instructions() -> None:
    assert_fast_error("dinov2-b", "/nonexistent/raedit/dinov2-weights", "no such directory",
                      "hf download facebook/dinov2-with-registers-base")


def test_directory_without_weights_fails_with_one_line(tmp_path: Path) -> None:
    assert_fast_error("mae-b", str(tmp_path), "model.safetensors")


def test_uncached_hub_id_offline_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_require_reachable_hub", lambda *args: pytest.fail("asked the hub while offline"))
    assert_fast_error("siglip2-b", "raedit-tests/no-such-encoder", "not in the Hugging Face cache and HF_HUB_OFFLINE",
                      "hf download raedit-tests/no-such-encoder")


def test_uncached_hub_id_fails_fast_without_offline_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without HF_HUB_OFFLINE the hub is asked once (no retries): no network or no such model, an error at once.

    A bare `from_pretrained` takes about 23 s here (5 retries with back-off).
    """
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert_fast_error("dinov2-s", "raedit-tests/no-such-encoder", limit_s=12.0)


def test_weights_of_another_architecture_are_rejected(checkpoint_dirs: dict[str, Path]) -> None:
    with pytest.raises(RaeditError, match="do not fit encoder 'dinov2-b'"):
        build_encoder("dinov2-b", weights=str(checkpoint_dirs["mae-b"]))


def test_wrong_patch_size_and_unknown_options_are_rejected(
    tmp_path: Path, checkpoint_dirs: dict[str, Path]
) -> None:
    Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**TINY, patch_size=16, image_size=96)).save_pretrained(tmp_path)
    with pytest.raises(RaeditError, match="needs patch size 14"):
        build_encoder("dinov2-b", weights=str(tmp_path))
    with pytest.raises(RaeditError, match="unknown options for encoder .mae-b.: input_size"):
        build_encoder("mae-b", weights=str(checkpoint_dirs["mae-b"]), input_size=448)


def test_dinov2_at_448_gives_the_32_by_32_tokens_of_the_512_px_model(checkpoint_dirs: dict[str, Path]) -> None:
    encoder = build_encoder("dinov2-b", weights=str(checkpoint_dirs["dinov2-b"]), input_size=448)
    assert encoder.grid == (32, 32)
    tokens = encoder.encode(torch.rand(1, 3, 512, 512))
    assert tokens.shape == (1, 32 * 32, encoder.channels)
    with pytest.raises(RaeditError, match="multiple of the patch size 14"):
        build_encoder("dinov2-b", weights=str(checkpoint_dirs["dinov2-b"]), input_size=450)


@pytest.mark.parametrize("name", [*FAMILIES, "effnet-lite0", "pixels-p16"])
def test_the_decode_only_stand_in_denormalizes_as_the_encoder(name: str, checkpoint_dirs: dict[str, Path]) -> None:
    """Sampling decodes with `decode_only_encoder` (the registry's pixel normalization, no weights): the same
    de-normalization as the encoder built from its weights, so the two can't drift apart."""
    from raedit.encoders import decode_only_encoder

    built = build_encoder(name, weights=str(checkpoint_dirs[name]) if name in checkpoint_dirs else None)
    stand_in = decode_only_encoder(name, channels=built.channels)  # the tiny test models are narrower
    pixels = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(stand_in.denormalize(pixels), built.denormalize(pixels), rtol=0, atol=0)
    assert (stand_in.input_size, stand_in.grid) == (built.input_size, built.grid)
    with pytest.raises(RaeditError, match="not loaded"):
        stand_in.encode(torch.rand(1, 3, 32, 32))
