"""The frozen-backbone discriminator: frozen backbone, trainable heads, local batch norm, logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from raedit.core.errors import RaeditError
from raedit.losses.discriminator import (
    DinoBackbone,
    Discriminator,
    EffNetBackbone,
    FeatureBackbone,
    LocalBatchNorm,
    build_discriminator,
)


class TinyBackbone(FeatureBackbone):
    """Two conv stages with BatchNorm: tokens at stride 2 (8 channels) and 4 (16 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.channels = (8, 16)
        self.freeze()

    def forward(self, images_pm1):
        first = self.stage1(images_pm1)
        return [first.flatten(2), self.stage2(first).flatten(2)]


def test_backbone_frozen_heads_trained_by_an_optimizer_step():
    torch.manual_seed(0)
    disc = Discriminator(TinyBackbone(), kernel_size=9, group_size=1)
    assert all(not p.requires_grad for p in disc.backbone.parameters())
    assert all(p.requires_grad for p in disc.heads.parameters())
    backbone_before = {k: v.clone() for k, v in disc.backbone.state_dict().items()}
    heads_before = [p.detach().clone() for p in disc.heads.parameters()]

    disc.train()
    assert not disc.backbone.training and disc.heads.training
    optimizer = torch.optim.Adam(disc.parameters(), lr=1e-2)
    logits = disc(torch.rand(4, 3, 16, 16) * 2 - 1)
    assert logits.shape == (4, 8 * 8 + 4 * 4)
    logits.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.heads.parameters())
    optimizer.step()

    for key, value in disc.backbone.state_dict().items():  # weights and BatchNorm statistics
        assert torch.equal(value, backbone_before[key]), key
    assert all(not torch.equal(p, q) for p, q in zip(disc.heads.parameters(), heads_before))


def test_head_layout_spectral_norm_and_kernel():
    torch.manual_seed(0)
    disc = Discriminator(TinyBackbone(), kernel_size=9)
    head = disc.heads[1]
    assert head.residual[0].weight.shape == (16, 16, 9)
    assert head.residual[0].padding_mode == "circular"
    assert isinstance(head.project[2], nn.LeakyReLU) and head.project[2].negative_slope == 0.2
    disc.train()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    for _ in range(30):  # power iterations converge to the top singular value
        disc(images)
    for conv in (head.project[0], head.residual[0]):
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=0.05)


def test_logits_per_token_depend_on_each_sample_only():
    torch.manual_seed(0)
    disc = Discriminator(TinyBackbone(), group_size=1).eval()
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    together = disc(images)
    alone = disc(images[1:2])
    assert torch.allclose(together[1:2], alone, atol=1e-5)


@pytest.mark.parametrize("group_size", [1, 2])
def test_local_batch_norm_matches_group_statistics(group_size):
    torch.manual_seed(0)
    norm = LocalBatchNorm(3, group_size=group_size)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        norm.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    x = torch.randn(4, 3, 10) * 3 + 1
    out = norm(x)
    for start in range(0, 4, group_size):
        group = x[start:start + group_size]
        mean = group.mean(dim=(0, 2), keepdim=True)
        var = group.var(dim=(0, 2), unbiased=False, keepdim=True)
        expected = (group - mean) / torch.sqrt(var + 1e-6) * norm.weight.view(1, 3, 1) + norm.bias.view(1, 3, 1)
        assert torch.allclose(out[start:start + group_size], expected, atol=1e-5)
    with pytest.raises(RaeditError, match="multiple of the group size"):
        LocalBatchNorm(3, group_size=3)(x)


def test_effnet_discriminator_shapes_and_frozen_backbone():
    disc = build_discriminator("effnet-lite0", input_size=128)
    assert isinstance(disc.backbone, EffNetBackbone)
    assert disc.backbone.channels == (40, 80, 112, 192, 320)
    assert all(not p.requires_grad for p in disc.backbone.parameters())
    disc.train()
    assert not disc.backbone.network.training
    logits = disc(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert logits.shape == (2, 16 * 16 + 8 * 8 + 8 * 8 + 4 * 4 + 4 * 4)
    assert torch.isfinite(logits).all()


def test_dino_backbone_reads_the_named_blocks_on_imagenet_normalized_input():
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)
    vit = ViTModel(config, add_pooling_layer=False)
    backbone = DinoBackbone(vit, depths=(0, 2, 3, 3), input_size=32)
    assert all(not p.requires_grad for p in vit.parameters())
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    features = backbone(images)
    assert [f.shape for f in features] == [(2, 32, 16)] * 4

    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    hidden = vit(pixel_values=((images + 1) / 2 - mean) / std, output_hidden_states=True).hidden_states
    assert torch.allclose(features[1], hidden[3][:, 1:].transpose(1, 2), atol=1e-5)
    assert torch.equal(features[2], features[3])

    disc = Discriminator(backbone, kernel_size=9)
    assert disc(F.interpolate(images, size=48, mode="bilinear")).shape == (2, 4 * 16)
    with pytest.raises(RaeditError, match="depths"):
        DinoBackbone(vit, depths=(4,))


def test_unknown_backbone_and_too_few_tokens_are_user_errors():
    with pytest.raises(RaeditError, match="unknown discriminator backbone 'vgg'"):
        build_discriminator("vgg")
    disc = Discriminator(TinyBackbone(), kernel_size=9)
    with pytest.raises(RaeditError, match="too few"):
        disc(torch.rand(1, 3, 4, 4))


def test_dino_discriminator_from_a_local_directory(tmp_path):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=12, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)
    ViTModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "dino")
    disc = build_discriminator("dino-vits8", input_size=32, weights=str(tmp_path / "dino"))
    assert isinstance(disc.backbone, DinoBackbone) and len(disc.heads) == 5
    assert disc.backbone.vit.config.layer_norm_eps == 1e-6
    assert disc(torch.rand(2, 3, 64, 64) * 2 - 1).shape == (2, 5 * 16)


def test_dino_weights_missing_is_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RaeditError, match="dino-vits8.*raedit-test/no-such-dino.*download") as error:
        build_discriminator("dino-vits8", weights="raedit-test/no-such-dino")
    assert "\n" not in str(error.value)
