"""LPIPS-VGG (on a random VGG16 file in torchvision's layout) and the offline EfficientNet-Lite distance."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
import torch.nn.functional as F

from raedit.core.errors import RaeditError
from raedit.losses import l1_loss
from raedit.losses.perceptual import (
    LPIPS_SCALE,
    LPIPS_SHIFT,
    EffNetPerceptual,
    LpipsVgg,
    VGG16Features,
    build_perceptual_loss,
    lpips_heads_path,
    normalize_channels,
)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A VGG16 state dict with random weights, saved as torchvision's vgg16-397923af.pth would be."""
    torch.manual_seed(0)
    features = VGG16Features()
    state = {key: value.clone() for key, value in features.state_dict().items()}
    state["classifier.0.weight"] = torch.randn(8, 4)  # torchvision's file also holds the classifier
    path = tmp_path_factory.mktemp("hub") / "vgg16-397923af.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def lpips_vgg(vgg_file):
    return LpipsVgg.from_files(vgg_file[0])


def smooth_images(batch: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, size // 8, size // 8, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def test_l1_loss_value():
    a = torch.zeros(1, 3, 2, 2)
    b = torch.full((1, 3, 2, 2), 0.25)
    b[0, 0, 0, 0] = -0.75
    assert l1_loss(a, b).item() == pytest.approx((11 * 0.25 + 0.75) / 12)


def test_lpips_loads_vgg_strictly_and_heads_without_importing_lpips(vgg_file, lpips_vgg):
    _, state = vgg_file
    for key, value in lpips_vgg.vgg.state_dict().items():
        assert torch.equal(value, state[key])
    heads = torch.load(lpips_heads_path(), map_location="cpu", weights_only=True)
    for index, head in enumerate(lpips_vgg.heads):
        assert torch.equal(head.weight, heads[f"lin{index}.model.1.weight"])
    assert "lpips" not in sys.modules
    assert not any(p.requires_grad for p in lpips_vgg.parameters())

    missing = {k: v for k, v in state.items() if k != "features.28.bias"}
    with pytest.raises(RaeditError, match="features.28.bias"):
        LpipsVgg(missing, heads)
    extra = dict(state, **{"features.30.weight": torch.zeros(1)})
    with pytest.raises(RaeditError, match="unexpected"):
        LpipsVgg(extra, heads)


def test_lpips_identity_symmetry_positivity(lpips_vgg):
    x, y = smooth_images(2, 32, 1), smooth_images(2, 32, 2)
    assert torch.all(lpips_vgg.distance(x, x) == 0)
    d_xy, d_yx = lpips_vgg.distance(x, y), lpips_vgg.distance(y, x)
    assert torch.allclose(d_xy, d_yx, rtol=1e-5, atol=1e-8)
    assert torch.all(d_xy > 1e-4)
    assert lpips_vgg(x, y).item() == pytest.approx(d_xy.mean().item(), rel=1e-6)
    assert torch.allclose(lpips_vgg.layer_distances(x, y).sum(1), d_xy)


def test_lpips_first_layer_matches_a_direct_implementation(vgg_file, lpips_vgg):
    _, state = vgg_file
    heads = torch.load(lpips_heads_path(), map_location="cpu", weights_only=True)
    x, y = smooth_images(2, 32, 3), smooth_images(2, 32, 4)

    def relu1_2(images):
        shift, scale = torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1)
        scaled = (images * 2 - 1 - shift) / scale
        h = F.relu(F.conv2d(scaled, state["features.0.weight"], state["features.0.bias"], padding=1))
        return F.relu(F.conv2d(h, state["features.2.weight"], state["features.2.bias"], padding=1))

    fx, fy = relu1_2(x), relu1_2(y)
    ux = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    uy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    w = heads["lin0.model.1.weight"].view(1, -1, 1, 1)
    expected = ((ux - uy) ** 2 * w).sum(1).mean(dim=(1, 2))
    assert torch.allclose(lpips_vgg.layer_distances(x, y)[:, 0], expected, rtol=1e-5, atol=1e-8)


def test_lpips_missing_vgg_file_says_where_and_how(tmp_path):
    missing = tmp_path / "nowhere" / "vgg16.pth"
    with pytest.raises(RaeditError, match="no file at .*nowhere.*vgg_weights=PATH"):
        build_perceptual_loss("lpips-vgg", vgg_weights=str(missing))


@pytest.fixture(scope="module")
def effnet_perceptual():
    return build_perceptual_loss("effnet-lite0")


def test_factory_logs_choice_and_rejects_unknown(vgg_file, caplog):
    with caplog.at_level(logging.INFO, logger="raedit.losses.perceptual"):
        loss = build_perceptual_loss("lpips-vgg", vgg_weights=str(vgg_file[0]))
    assert isinstance(loss, LpipsVgg)
    assert "perceptual loss: lpips-vgg" in caplog.text
    with pytest.raises(RaeditError, match="unknown perceptual loss 'vgg'.*lpips-vgg"):
        build_perceptual_loss("vgg")


def test_effnet_perceptual_zero_for_identical_and_grows_with_noise(effnet_perceptual):
    assert isinstance(effnet_perceptual, EffNetPerceptual)
    images = smooth_images(4, 64, 5)
    assert torch.all(effnet_perceptual.distance(images, images) == 0)
    generator = torch.Generator().manual_seed(6)
    noise = torch.randn(images.shape, generator=generator)
    distances = [effnet_perceptual(images + sigma * noise, images).item() for sigma in (0.03, 0.1, 0.3)]
    assert 0 < distances[0] < distances[1] < distances[2] <= 4


def test_effnet_perceptual_gradients_reach_input_not_backbone(effnet_perceptual):
    images = smooth_images(2, 64, 7)
    recon = (images + 0.1 * torch.randn_like(images)).requires_grad_(True)
    effnet_perceptual(recon, images).backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0 and torch.isfinite(recon.grad).all()
    assert all(not p.requires_grad and p.grad is None for p in effnet_perceptual.parameters())
    effnet_perceptual.train()
    assert not effnet_perceptual.network.training


def test_normalize_channels_gives_unit_vectors():
    features = torch.randn(2, 5, 3, 3)
    assert torch.allclose(normalize_channels(features).norm(dim=1), torch.ones(2, 3, 3), atol=1e-6)
