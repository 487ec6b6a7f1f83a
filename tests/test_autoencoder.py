import math

import pytest
import torch
from conftest import PatchEncoder
from safetensors.torch import save_file

from raedit.autoencoder import RAE, AutoencoderConfig
from raedit.core.errors import RaeditError
from raedit.core.tokens import latents_to_tokens, tokens_to_latents
from raedit.interop.official_decoder import DECODER_RENAMES
from raedit.latent_stats import save_latent_stats


def make_rae(encoder=None, **config) -> RAE:
    config = {"encoder": "patch-test", "decoder_size": "tiny", "decoder_patch_size": 8, **config}
    return RAE(AutoencoderConfig(**config), encoder or PatchEncoder())


def test_encode_shape_and_per_position_channel_normalization():
    rae = make_rae().eval()
    images = torch.rand(4, 3, 32, 32)
    raw = rae.encode_raw(images)
    assert raw.shape == (4, 12, 4, 4)
    mean, var = torch.randn(12, 4, 4), torch.rand(12, 4, 4) + 0.5
    rae.set_stats(mean, var)
    torch.testing.assert_close(rae.encode(images), (raw - mean) / torch.sqrt(var + 1e-5))
    torch.testing.assert_close(rae.denormalize(rae.encode(images)), raw, atol=1e-5, rtol=1e-5)


def test_tokens_map_to_the_grid_row_major():
    tokens = torch.arange(2 * 16 * 12, dtype=torch.float32).reshape(2, 16, 12)
    latents = tokens_to_latents(tokens, (4, 4))
    assert latents.shape == (2, 12, 4, 4) and latents[1, 5, 2, 3].item() == tokens[1, 2 * 4 + 3, 5].item()
    torch.testing.assert_close(latents_to_tokens(latents), tokens)
    rae = make_rae()
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(rae.encode_raw(images), tokens_to_latents(rae.encoder.encode(images), (4, 4)))


def test_decode_returns_images_in_unit_range_of_the_decoder_size():
    rae = make_rae().eval()
    with torch.no_grad():
        rae.decoder.head.bias[::2] = 5.0  # pixels far above 1 in the encoder's normalized space
        rae.decoder.head.bias[1::2] = -5.0
    latents = torch.randn(2, 12, 4, 4)
    images = rae.decode(latents)
    assert images.shape == (2, 3, 32, 32)
    assert images.min() >= 0 and images.max() <= 1
    assert images.max() == 1 and images.min() == 0
    unclamped = rae.decode(latents, clamp=False)  # for losses
    assert unclamped.max() > 1.5 and unclamped.min() < -0.5
    with pytest.raises(RaeditError, match="12 x 4 x 4"):
        rae.decode(torch.randn(2, 8, 4, 4))


def test_noise_augmentation_only_in_training_and_uniform_sigma_up_to_tau():
    torch.manual_seed(0)
    rae = make_rae(noise_tau=0.8)
    images = torch.rand(1, 3, 32, 32).expand(4000, -1, -1, -1)
    clean = rae.encode_raw(images)
    rae.eval()
    assert torch.equal(rae.encode(images), clean)
    rae.train()
    sigma = (rae.encode(images) - clean).flatten(1).std(dim=1)  # per sample: tau * u, u ~ U(0, 1)
    assert sigma.max() <= 0.8 * 1.15
    assert abs(sigma.mean().item() - 0.4) < 0.02  # E[tau u] = tau / 2
    assert abs(sigma.std().item() - 0.8 / math.sqrt(12)) < 0.02  # sd of tau U(0,1)


def test_halfnormal_noise_distribution():
    torch.manual_seed(0)
    rae = make_rae(noise_tau=0.8, noise_distribution="halfnormal").train()
    images = torch.rand(1, 3, 32, 32).expand(4000, -1, -1, -1)
    sigma = (rae.encode(images) - rae.encode_raw(images)).flatten(1).std(dim=1)
    assert abs(sigma.mean().item() - 0.8 * math.sqrt(2 / math.pi)) < 0.03  # E|N(0, tau^2)|
    assert sigma.max() > 1.6  # unbounded, unlike tau * U(0, 1)
    with pytest.raises(RaeditError, match="noise_distribution"):
        AutoencoderConfig(noise_distribution="gamma")


def test_grayscale_decodes_the_channel_mean_in_every_channel(tmp_path):
    colour = make_rae().eval()
    gray = make_rae(grayscale=True).eval()
    gray.decoder.load_state_dict(colour.decoder.state_dict())
    with torch.no_grad():
        colour.decoder.head.bias.copy_(torch.linspace(-0.5, 0.5, colour.decoder.head.bias.numel()))
        gray.decoder.head.bias.copy_(colour.decoder.head.bias)
    latents = torch.randn(2, 12, 4, 4)
    rgb, levels = colour.decode(latents, clamp=False), gray.decode(latents, clamp=False)
    assert (rgb[:, 0] - rgb[:, 1]).abs().max() > 0.01  # the decoder's channels differ...
    torch.testing.assert_close(levels, rgb.mean(dim=1, keepdim=True).expand_as(rgb))  # ...and are averaged
    gray.save_pretrained(tmp_path)
    loaded = RAE.from_pretrained(tmp_path, encoder=PatchEncoder()).eval()
    assert loaded.config.grayscale
    torch.testing.assert_close(loaded.decode(latents), gray.decode(latents))


def test_save_and_load_pretrained_round_trip(tmp_path):
    rae = make_rae().eval()
    rae.set_stats(torch.randn(12, 4, 4), torch.rand(12, 4, 4) + 0.1)
    with torch.no_grad():
        rae.decoder.cls_token.normal_()
    rae.save_pretrained(tmp_path)
    loaded = RAE.from_pretrained(tmp_path, encoder=PatchEncoder()).eval()
    latents = torch.randn(2, 12, 4, 4)
    torch.testing.assert_close(loaded.decode(latents), rae.decode(latents))
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded.encode(images), rae.encode(images))
    assert loaded.config == rae.config


def test_stats_file_for_another_encoder_is_rejected(tmp_path):
    path = tmp_path / "stats.safetensors"
    save_latent_stats(path, torch.zeros(768, 16, 16), torch.ones(768, 16, 16), "dinov2-b", 10)
    with pytest.raises(RaeditError, match=r"\(768, 16, 16\).*\(12, 4, 4\)"):
        make_rae(stats=str(path))


def test_decoder_weights_that_do_not_fit_name_missing_and_unexpected_keys(tmp_path):
    rae = make_rae()
    state = {f"decoder.{k}": v for k, v in rae.decoder.state_dict().items()}
    state.pop("decoder.head.weight")
    state["decoder.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(RaeditError, match=r"lacks 'head\.weight'"):
        rae.load_decoder(path)
    wide = make_rae(encoder=PatchEncoder(channels=16))
    save_file({f"decoder.{k}": v for k, v in wide.decoder.state_dict().items()}, str(path))
    with pytest.raises(RaeditError, match=r"has shape .* the model's is"):
        rae.load_decoder(path)


def test_released_decoder_file_with_official_keys_loads(tmp_path):
    rae = make_rae()
    inverse = {}
    for key, value in rae.decoder.state_dict().items():
        official = key
        for old, new in [("token_embed.", "decoder_embed."), ("cls_token", "trainable_cls_token"),
                         ("pos_embed", "decoder_pos_embed"), ("norm.", "decoder_norm."),
                         ("head.", "decoder_pred.")]:
            if key.startswith(old):
                official = new + key[len(old):]
        if key.startswith("blocks."):
            index, rest = key.split(".", 2)[1:]
            rest = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.query": "attention.attention.query",
                    "attn.key": "attention.attention.key", "attn.value": "attention.attention.value",
                    "attn.out": "attention.output.dense", "mlp.fc1": "intermediate.dense",
                    "mlp.fc2": "output.dense"}[rest.rsplit(".", 1)[0]] + "." + rest.rsplit(".", 1)[1]
            official = f"decoder_layers.{index}.{rest}"
        inverse[official] = torch.randn_like(value)
    torch.save({"ema": inverse}, tmp_path / "model.pt")
    rae.load_decoder(tmp_path / "model.pt")
    assert torch.equal(rae.decoder.head.weight, inverse["decoder_pred.weight"])
    assert len(DECODER_RENAMES) == 11


def test_effnet_autoencoder_end_to_end():
    rae = RAE(AutoencoderConfig("effnet-lite0", encoder_input_size=64, decoder_size="tiny",
                                decoder_patch_size=8)).eval()
    assert rae.latent_shape == (112, 4, 4) and rae.image_size == (32, 32)
    images = torch.rand(2, 3, 48, 48)
    out = rae.decode(rae.encode(images))
    assert out.shape == (2, 3, 32, 32)
    assert not any(p.requires_grad for p in rae.encoder.parameters())
    assert all(p.requires_grad for p in rae.decoder.parameters())
