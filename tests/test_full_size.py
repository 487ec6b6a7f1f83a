"""The paper's full-size models really run: the ImageNet recipes' DiT^DH-XL and the ViT-XL decoder, one
forward pass each at batch 1 in fp32 on the CPU (about 3.4 GB and 1.7 GB of weights)."""

import torch

from raedit.core.config import load_config
from raedit.decoder import DecoderConfig, ViTDecoder
from raedit.models import build_model
from raedit.train.stage2 import Stage2Config


def test_ditdh_xl_recipe_runs_a_forward_pass():
    config = load_config(Stage2Config, "stage2/imagenet256_ditdh-xl")
    torch.manual_seed(0)
    model = build_model(config.model.architecture(tuple(config.latent_shape))).eval()
    assert sum(p.numel() for p in model.parameters()) == 838_675_796
    latents = torch.randn(1, *config.latent_shape)
    with torch.no_grad():
        velocity = model(latents, torch.tensor([0.7]), torch.tensor([207]))
    assert velocity.shape == (1, 768, 16, 16) and torch.isfinite(velocity).all()
    # adaLN-Zero: the freshly initialized output layer is zero, so is the velocity
    assert velocity.abs().max() == 0


def test_vit_xl_decoder_decodes_16x16_tokens_to_256_and_512_px():
    torch.manual_seed(0)
    tokens = torch.randn(1, 256, 768)
    for patch, side in ((16, 256), (32, 512)):
        decoder = ViTDecoder(DecoderConfig("XL", in_channels=768, grid=(16, 16), patch_size=patch)).eval()
        with torch.no_grad():
            pixels = decoder(tokens)
        assert pixels.shape == (1, 3, side, side) and torch.isfinite(pixels).all()
        assert pixels.std() > 0
