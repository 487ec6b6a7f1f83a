"""RAEv2's multi-layer latent (arXiv 2605.18324; its code's `DINOv3MultiLayerSimpleAddEncoder`): the chosen blocks'
tokens, each through the non-affine final LayerNorm, averaged (or summed), plus the deepest chosen block's per-image
spatial mean. On the tiny transformers checkpoints of test_encoders_hf (2 blocks) and the packaged EfficientNet-Lite0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_encoders_hf import FAMILIES, IMAGENET_MEAN, IMAGENET_STD, images, plain_layer_norm, save_checkpoint
from transformers import AutoModel, ViTMAEModel

from raedit.autoencoder import RAE, AutoencoderConfig
from raedit.core.config import load_config
from raedit.core.errors import RaeditError
from raedit.encoders import build_encoder
from raedit.encoders.effnet_lite import EfficientNetLite, EfficientNetLiteEncoder

INPUT = {"dinov2-b": 224, "dinov3-b": 256, "siglip2-b": 256, "mae-b": 256}  # each family's input size


@pytest.fixture(scope="module")
def checkpoint_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {name: save_checkpoint(name, tmp_path_factory.mktemp(name), affine_scale=1.0) for name in FAMILIES}


def reference_patch_states(name: str, directory: Path, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], float]:
    """The checkpoint's `hidden_states` (index i + 1: block i's output) without the prefix tokens, straight from
    transformers, and its LayerNorm eps."""
    if name == "mae-b":
        model = ViTMAEModel.from_pretrained(directory, mask_ratio=0.0).eval()
        kwargs = {"noise": torch.arange(256.0).expand(x.shape[0], -1), "interpolate_pos_encoding": True}
    else:
        model = AutoModel.from_pretrained(directory).eval()
        model = model.vision_model if name == "siglip2-b" else model
        kwargs = {"interpolate_pos_encoding": True} if name == "siglip2-b" else {}
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if name != "siglip2-b" else (0.5, 0.5)
    with torch.no_grad():
        hidden_states = model(pixel_values=(x - mean) / std, output_hidden_states=True, **kwargs).hidden_states
    prefix = {"dinov2-b": 5, "dinov3-b": 5, "siglip2-b": 0, "mae-b": 1}[name]
    return tuple(hidden[:, prefix:] for hidden in hidden_states), model.config.layer_norm_eps


@pytest.mark.parametrize("name", FAMILIES)
def test_the_last_block_alone_is_the_plain_latent_plus_its_spatial_mean(
    name: str, checkpoint_dirs: dict[str, Path]
) -> None:
    """RAEv2's code adds the spatial mean for one block too; its K=1 latent is the plain encoder (layers None)."""
    x = images(INPUT[name])
    plain = build_encoder(name, weights=str(checkpoint_dirs[name])).encode(x)
    one_layer = build_encoder(name, weights=str(checkpoint_dirs[name]), layers=[1]).encode(x)
    torch.testing.assert_close(one_layer, plain + plain.mean(dim=1, keepdim=True), atol=0, rtol=0)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("combine", ["mean", "sum"])
def test_two_blocks_combine_their_normalized_tokens_plus_the_deeper_ones_spatial_mean(
    name: str, combine: str, checkpoint_dirs: dict[str, Path]
) -> None:
    x = images(INPUT[name], seed=1)
    encoder = build_encoder(name, weights=str(checkpoint_dirs[name]), layers=[0, 1], layer_combine=combine)
    tokens = encoder.encode(x)
    hidden_states, eps = reference_patch_states(name, checkpoint_dirs[name], x)
    assert len(hidden_states) == 3  # the embeddings, then the 2 blocks
    first, second = (plain_layer_norm(hidden_states[index], eps) for index in (1, 2))
    combined = (first + second) / 2 if combine == "mean" else first + second
    torch.testing.assert_close(tokens, combined + second.mean(dim=1, keepdim=True), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layers", [[2], [-1], [], [1, 0], [0, 0], [True]])
def test_bad_layers_are_one_line_errors(layers: list, checkpoint_dirs: dict[str, Path]) -> None:
    with pytest.raises(RaeditError, match=r"^dinov3-b: layers must be strictly increasing block indices in 0\.\.1, "):
        build_encoder("dinov3-b", weights=str(checkpoint_dirs["dinov3-b"]), layers=layers)


def test_unknown_layer_combine_is_an_error(checkpoint_dirs: dict[str, Path]) -> None:
    with pytest.raises(RaeditError, match="unknown layer_combine 'max'; use one of mean, sum"):
        build_encoder("mae-b", weights=str(checkpoint_dirs["mae-b"]), layers=[0], layer_combine="max")
    with pytest.raises(RaeditError, match="encoder_layer_combine = 'max': must be one of mean, sum"):
        load_config(AutoencoderConfig, overrides=["encoder_layer_combine=max"])


# ---- EfficientNet-Lite ---------------------------------------------------------------------------------------------


def test_effnet_combines_the_raw_outputs_of_token_stage_blocks() -> None:
    """Lite0's token stage is blocks 8-10 (112 channels); no LayerNorm, as its single-layer latent has none."""
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    plain = build_encoder("effnet-lite0", input_size=64)
    network = plain.network
    normalized = plain.normalize(x)
    with torch.no_grad():
        out = F.relu6(network._bn0(network._conv_stem(normalized)))
        outputs = []
        for block in network._blocks[:11]:
            out = block(out)
            outputs.append(out.flatten(2).transpose(1, 2))
    eighth, tenth = outputs[8], outputs[10]
    torch.testing.assert_close(plain.encode(x), tenth, atol=0, rtol=0)
    spatial_mean = tenth.mean(dim=1, keepdim=True)
    for combine, combined in [("mean", (eighth + tenth) / 2), ("sum", eighth + tenth)]:
        encoder = build_encoder("effnet-lite0", input_size=64, layers=[8, 10], layer_combine=combine)
        torch.testing.assert_close(encoder.encode(x), combined + spatial_mean, atol=1e-5, rtol=1e-5)


def test_effnet_layers_outside_the_token_stage_are_errors() -> None:
    with pytest.raises(RaeditError, match=r"^effnet-lite0: layers must be strictly increasing block indices in "
                                          r"8\.\.10"):
        build_encoder("effnet-lite0", input_size=64, layers=[7, 10])
    with pytest.raises(RaeditError, match=r"block indices in 11\.\.14, got \[15\]"):
        EfficientNetLiteEncoder(EfficientNetLite.from_variant("lite2"), "effnet-lite2", 64, layers=[15])


# ---- an RAE with a multi-layer latent --------------------------------------------------------------------------------


def test_rae_saves_and_loads_its_encoder_layers_and_older_saves_still_load(tmp_path: Path) -> None:
    config = AutoencoderConfig("effnet-lite0", encoder_input_size=64, encoder_layers=[9, 10],
                               encoder_layer_combine="sum", decoder_size="tiny", decoder_patch_size=8)
    rae = RAE(config).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    rae.save_pretrained(tmp_path)
    loaded = RAE.from_pretrained(tmp_path).eval()
    assert loaded.config == config and (loaded.encoder.layers, loaded.encoder.layer_combine) == ([9, 10], "sum")
    torch.testing.assert_close(loaded.encode_raw(x), rae.encode_raw(x), atol=0, rtol=0)
    assert RAE.from_pretrained(tmp_path, decode_only=True).latent_shape == (112, 4, 4)  # decoding needs no layers

    stored = json.loads((tmp_path / "rae_config.json").read_text())
    for key in ("encoder_layers", "encoder_layer_combine"):  # as an RAE saved before these fields existed
        del stored[key]
    (tmp_path / "rae_config.json").write_text(json.dumps(stored))
    older = RAE.from_pretrained(tmp_path).eval()
    assert (older.config.encoder_layers, older.encoder.layers) == (None, None)
    single_layer = build_encoder("effnet-lite0", input_size=64).encode_latents(x)
    torch.testing.assert_close(older.encode_raw(x), single_layer, atol=0, rtol=0)
    assert not torch.allclose(older.encode_raw(x), loaded.encode_raw(x))
