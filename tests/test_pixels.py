import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stage2_helpers import TINY_MODEL

from raedit.autoencoder import RAE, AutoencoderConfig
from raedit.core.config import load_config
from raedit.core.errors import RaeditError
from raedit.data.fashion_mnist import load_fashion_mnist, to_rgb
from raedit.data.latent_cache import LatentCache
from raedit.decoder import PatchUnpatchify
from raedit.diffusion.denoiser_io import load_denoiser
from raedit.encoders import ENCODERS, build_encoder
from raedit.jobs.cache_latents import CacheConfig, cache_latents
from raedit.jobs.sample import SampleConfig, generate
from raedit.jobs.stats import StatsConfig, compute_latent_stats
from raedit.latent_stats import load_latent_stats
from raedit.train.stage2 import Stage2Config, train_diffusion

PIXEL_RAE = dict(encoder="pixels-p6", encoder_input_size=24, decoder_size="unpatchify", decoder_patch_size=6)


def images(count: int, size: int) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(size))


@pytest.mark.parametrize("name, input_size, grid, channels", [
    ("pixels-p16", 256, (16, 16), 768), ("pixels-p8", 32, (4, 4), 192), ("pixels-p6", 24, (4, 4), 108)])
def test_specs_shapes_and_grids(name, input_size, grid, channels):
    spec = ENCODERS[name]
    assert (spec.input_size, spec.grid, spec.channels, spec.weights_available()) == (input_size, grid, channels, True)
    encoder = build_encoder(name)
    assert (encoder.input_size, encoder.grid, encoder.channels) == (input_size, grid, channels)
    assert encoder.encode(images(2, input_size)).shape == (2, grid[0] * grid[1], channels)


def test_input_size_option_changes_the_grid():
    encoder = build_encoder("pixels-p8", input_size=64)
    assert encoder.grid == (8, 8) and encoder.encode(images(1, 64)).shape == (1, 64, 192)


def test_token_layout_is_unfold_order_of_the_normalized_patch():
    x = images(2, 24)
    tokens = build_encoder("pixels-p6").encode(x)
    normalized = x * 2 - 1
    # token 6 = grid row 1, column 2; values (channel, row in patch, column in patch)
    assert torch.equal(tokens[1, 6], normalized[1, :, 6:12, 12:18].reshape(108))
    assert tokens[1, 6, 37].item() == normalized[1, 1, 6 + 0, 12 + 1].item()  # 37 = 1 * 36 + 0 * 6 + 1
    assert torch.equal(tokens, F.unfold(normalized, 6, stride=6).transpose(1, 2))
    assert tokens.min() >= -1 and tokens.max() <= 1


def test_larger_images_are_resized_with_antialiased_bicubic_and_clamped():
    x = images(1, 32)
    resized = F.interpolate(x, size=(24, 24), mode="bicubic", align_corners=False, antialias=True)
    assert resized.min() < 0  # bicubic overshoot (-0.0034 here)
    tokens = build_encoder("pixels-p6").encode(x)
    assert torch.equal(tokens, F.unfold(resized.clamp(0, 1) * 2 - 1, 6, stride=6).transpose(1, 2))


def test_rae_decodes_its_own_encoding_exactly():
    rae = RAE(AutoencoderConfig(**PIXEL_RAE)).eval()
    x = images(3, 24)
    latents = rae.encode(x)
    assert latents.shape == (3, 108, 4, 4) and rae.image_size == (24, 24)
    assert (rae.decode(latents) - x).abs().max() < 1e-5
    assert isinstance(rae.decoder, PatchUnpatchify) and not list(rae.decoder.parameters())
    big = images(2, 32)
    resized = F.interpolate(big, size=(24, 24), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    assert (rae.decode(rae.encode(big), clamp=False) - resized).abs().max() < 1e-5


def test_round_trip_with_statistics_and_p16():
    rae = RAE(AutoencoderConfig(encoder="pixels-p16", decoder_size="unpatchify", decoder_patch_size=16)).eval()
    rae.set_stats(torch.full((768, 16, 16), 0.1), torch.full((768, 16, 16), 0.3))
    x = images(1, 256)
    assert (rae.decode(rae.encode(x)) - x).abs().max() < 1e-5 and rae.image_size == (256, 256)


def test_one_line_errors(patch_encoder):
    for size in (25, 0):
        with pytest.raises(RaeditError, match="multiple of the patch size 6") as error:
            build_encoder("pixels-p6", input_size=size)
        assert "\n" not in str(error.value)
    with pytest.raises(RaeditError, match="has no weights"):
        build_encoder("pixels-p6", weights="some/model")
    with pytest.raises(RaeditError, match="unpatchify needs a pixels-\\* encoder") as error:
        RAE(AutoencoderConfig(encoder="patch-test", decoder_size="unpatchify", decoder_patch_size=8), patch_encoder)
    assert "\n" not in str(error.value)
    with pytest.raises(RaeditError, match="patch size decoder_patch_size=16"):
        RAE(AutoencoderConfig(encoder="pixels-p6", decoder_size="unpatchify"))
    with pytest.raises(RaeditError, match="unpatchify expects tokens B x 16 x 108"):
        PatchUnpatchify((4, 4), 6)(torch.zeros(1, 16, 100))


@pytest.mark.parametrize("with_stats", [False, True])
def test_save_and_load_pretrained(tmp_path, with_stats):
    rae = RAE(AutoencoderConfig(**PIXEL_RAE)).eval()  # train mode would noise the latents (Sec. 4.3)
    mean, var = torch.randn(108, 4, 4), torch.rand(108, 4, 4) + 0.5
    if with_stats:
        rae.set_stats(mean, var)
    rae.save_pretrained(tmp_path)
    loaded = RAE.from_pretrained(tmp_path)
    assert json.loads((tmp_path / "rae_config.json").read_text())["decoder_size"] == "unpatchify"
    assert loaded.normalized == with_stats and loaded.latent_shape == (108, 4, 4)
    if with_stats:
        assert torch.equal(loaded.latent_mean, mean) and torch.equal(loaded.latent_var, var)
    x = images(2, 24)
    assert (loaded.decode(rae.encode(x)) - x).abs().max() < 1e-5


def test_latent_cache_stats_stage2_and_sampling(tmp_path):
    overrides = ["autoencoder.encoder=pixels-p6", "data.resolution=32", "data.limit=6", "batch_size=4",
                 f"out={tmp_path / 'cache'}"]
    cache_latents(load_config(CacheConfig, overrides=overrides + ["shard_size=4"]))
    cache = LatentCache(tmp_path / "cache")
    assert tuple(cache.latent_shape) == (108, 4, 4) and cache.encoder == "pixels-p6" and len(cache) == 6
    raw, _ = load_fashion_mnist("train")
    expected = build_encoder("pixels-p6").encode_latents(to_rgb(raw[:6], 32))
    latents = torch.stack([cache[i][0] for i in range(6)])
    torch.testing.assert_close(latents, expected)
    assert latents.min() == -1 and latents.max() < 1  # black background, its bicubic overshoot (-1.08) clamped

    RAE(AutoencoderConfig(**PIXEL_RAE)).save_pretrained(tmp_path / "rae")
    stats = tmp_path / "stats.safetensors"
    overrides[-1] = f"out={stats}"
    compute_latent_stats(load_config(StatsConfig, overrides=[*overrides, f"rae={tmp_path / 'rae'}"]))
    mean, var = load_latent_stats(stats, (108, 4, 4), "pixels-p6")
    torch.testing.assert_close(mean, latents.mean(0))
    torch.testing.assert_close(var, latents.var(0, unbiased=False))
    rae = RAE.from_pretrained(tmp_path / "rae")  # the statistics went into the RAE too
    assert rae.normalized and torch.equal(rae.latent_mean, mean) and torch.equal(rae.latent_var, var)

    run = tmp_path / "run"
    config = load_config(Stage2Config, None, [
        f"rae={tmp_path / 'rae'}", f"latents={tmp_path / 'cache'}", f"run_dir={run}",
        "train.epochs=1", "train.micro_batch_size=6", "train.logging.every_steps=0",
        "train.logging.progress_bar=false", "train.logging.tensorboard=false", "preview.images=2",
        "preview.steps=2", *TINY_MODEL])
    assert train_diffusion(config).reason == "finished"
    assert load_denoiser(run)[1].latent_shape == (108, 4, 4)
    out = generate(SampleConfig(ckpt=str(run), num=2, steps=2, out=str(tmp_path / "s.npz"), grid=None))
    samples = np.load(out)["arr_0"]
    assert samples.shape == (2, 24, 24, 3) and samples.dtype == np.uint8


def test_stage1_refuses_a_decoder_without_parameters(tmp_path):
    from raedit.train.stage1 import Stage1Config, train_decoder

    config = load_config(Stage1Config, "stage1/demo", [
        "autoencoder.encoder=pixels-p8", "autoencoder.encoder_input_size=32", "autoencoder.decoder_size=unpatchify",
        f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(RaeditError, match="decoder_size unpatchify has no parameters: nothing to train"):
        train_decoder(config)


def test_reconstruct_command_works_with_the_parameter_free_decoder(tmp_path):
    from PIL import Image

    from raedit.jobs.reconstruct import reconstruct_files

    rae = RAE(AutoencoderConfig(**PIXEL_RAE)).eval()
    path = tmp_path / "image.png"
    Image.fromarray((np.arange(24 * 24 * 3) % 256).astype(np.uint8).reshape(24, 24, 3)).save(path)
    [(_, score)] = reconstruct_files(rae, [path], tmp_path / "out")
    assert (tmp_path / "out" / "image_recon.png").is_file() and score > 60  # exact up to float error
