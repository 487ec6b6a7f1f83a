"""Diffusers' AutoencoderRAE to and from raedit's RAE (`raedit.jobs.diffusers_rae`), on tiny random models that
diffusers builds itself: the imported RAE encodes and decodes as the diffusers model, and its export loads back
into diffusers with every tensor in place and decodes the same.

Every weight is moved off its initialization (zero CLS and register tokens, unit LayerNorms) and the latent
statistics differ per channel and position, with a scaling factor other than 1, so a misplaced tensor or a wrong
statistic changes the numbers compared."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderRAE
from torch.testing import assert_close
from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from raedit.autoencoder import RAE, AutoencoderConfig
from raedit.core.errors import RaeditError
from raedit.jobs.diffusers_rae import export_diffusers_rae, import_diffusers_rae

CHANNELS = 64  # the smallest encoder diffusers builds (heads of 64 channels)
TINY = {"encoder_hidden_size": CHANNELS, "encoder_num_hidden_layers": 2, "decoder_hidden_size": 32,
        "decoder_num_hidden_layers": 2, "decoder_num_attention_heads": 2, "decoder_intermediate_size": 64,
        "patch_size": 4}
ENCODER_SHAPES = {  # encoder_type: (patch size of raedit's family, input size)
    "dinov2": (14, 56),  # 4 x 4 tokens (raedit's default is 224 px), so diffusers' decoder positions are scaled
    "mae": (16, 256),  # 16 x 16 tokens, the one input size of raedit's mae-b
}
SCALING_FACTOR = 0.7
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def tiny_diffusers_rae(encoder_type: str, input_size: int | None = None, **overrides) -> AutoencoderRAE:
    torch.manual_seed(0)
    patch_size, default_input_size = ENCODER_SHAPES[encoder_type]
    input_size = input_size or default_input_size
    side = input_size // patch_size
    vae = AutoencoderRAE(
        encoder_type=encoder_type, **TINY, encoder_patch_size=patch_size, encoder_input_size=input_size,
        latents_mean=torch.randn(CHANNELS, side, side), latents_std=0.5 + torch.rand(CHANNELS, side, side),
        scaling_factor=SCALING_FACTOR, **overrides,
    )
    with torch.no_grad():
        for parameter in vae.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return vae.eval()


def saved_diffusers_rae(directory: Path, encoder_type: str, input_size: int | None = None,
                        **overrides) -> AutoencoderRAE:
    vae = tiny_diffusers_rae(encoder_type, input_size, **overrides)
    vae.save_pretrained(directory)
    return vae


def assert_same_autoencoder(rae: RAE | AutoencoderRAE, vae: AutoencoderRAE, latent_shape: tuple[int, ...]) -> None:
    """Same latents from the same images (resized on the way), same images from the same latents."""
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 72, 72, generator=generator)
    latents = torch.randn(2, *latent_shape, generator=generator)
    with torch.no_grad():
        expected_latents, expected_images = vae.encode(images).latent, vae.decode(latents).sample
        if isinstance(rae, RAE):
            encoded, decoded = rae.encode(images), rae.decode(latents, clamp=False)
        else:
            encoded, decoded = rae.encode(images).latent, rae.decode(latents).sample
    assert expected_latents.std() > 0.1 and expected_images.std() > 0.1  # not a degenerate comparison
    assert_close(encoded, expected_latents, **TOLERANCE)
    assert_close(decoded, expected_images, **TOLERANCE)


@pytest.mark.parametrize("encoder_type", ["dinov2", "mae"])
def test_import_and_export_keep_encode_and_decode(tmp_path, encoder_type):
    vae = saved_diffusers_rae(tmp_path / "diffusers", encoder_type)
    import_diffusers_rae(tmp_path / "diffusers", tmp_path / "raedit")

    rae = RAE.from_pretrained(tmp_path / "raedit").eval()
    assert rae.config.encoder == f"{encoder_type}-b"
    assert rae.config.encoder_weights == str((tmp_path / "raedit/encoder").resolve())
    assert rae.config.decoder_size == "2x32x2x64" and rae.image_size == (4 * rae.latent_shape[1],) * 2
    # Sec. 3 normalization: sqrt(var + eps) is diffusers' (latents_std + 1e-5) / scaling_factor
    assert_close(rae.latent_mean, vae._latents_mean, rtol=0, atol=0)
    assert_close(torch.sqrt(rae.latent_var + rae.config.stats_eps), (vae._latents_std + 1e-5) / SCALING_FACTOR,
                 rtol=1e-6, atol=0)
    assert_same_autoencoder(rae, vae, rae.latent_shape)
    decode_only = RAE.from_pretrained(tmp_path / "raedit", decode_only=True)  # the width the RAE was saved with
    latents = torch.randn(2, *rae.latent_shape)
    assert_close(decode_only.decode(latents, clamp=False), rae.decode(latents, clamp=False), rtol=0, atol=0)

    export_diffusers_rae(tmp_path / "raedit", tmp_path / "back")
    back, loading = AutoencoderRAE.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert not any(loading[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert back.config.scaling_factor == 1.0
    assert_same_autoencoder(back.eval(), vae, rae.latent_shape)


def test_import_refuses_pixel_normalization_other_than_the_encoders(tmp_path):
    saved_diffusers_rae(tmp_path / "diffusers", "dinov2", encoder_norm_mean=[0.5] * 3, encoder_norm_std=[0.5] * 3)
    with pytest.raises(RaeditError, match="encoder_mean .* dinov2-b encoder uses"):
        import_diffusers_rae(tmp_path / "diffusers", tmp_path / "raedit")


def test_import_refuses_an_input_size_raedits_encoder_does_not_take(tmp_path):
    saved_diffusers_rae(tmp_path / "diffusers", "mae", input_size=224)
    with pytest.raises(RaeditError, match="encoder_input_size 224, but raedit's mae-b encoder takes only 256 px"):
        import_diffusers_rae(tmp_path / "diffusers", tmp_path / "raedit")


def test_import_of_a_missing_directory_that_is_no_hub_id_is_one_error_line(tmp_path):
    with pytest.raises(RaeditError, match="no such directory, and the hub download failed") as error:
        import_diffusers_rae(str(tmp_path / "missing"), tmp_path / "raedit")
    assert "\n" not in str(error.value)


def saved_raedit_rae(directory: Path, hidden_size: int, heads: int) -> Path:
    """A raedit RAE on a 4 x 4 grid of a one-block DINOv2 of `hidden_size` channels in `heads` heads."""
    Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
        hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=heads, patch_size=14, image_size=518,
    )).save_pretrained(directory / "encoder")
    config = AutoencoderConfig(encoder="dinov2-b", encoder_weights=str(directory / "encoder"), encoder_input_size=56,
                               decoder_size="1x32x2x64", decoder_patch_size=4)
    RAE(config).save_pretrained(directory / "raedit")
    return directory / "raedit"


def test_export_refuses_an_encoder_diffusers_does_not_build(tmp_path):
    """2 heads of 16 channels: diffusers would build 0 heads of 64."""
    rae_dir = saved_raedit_rae(tmp_path, hidden_size=32, heads=2)
    with pytest.raises(RaeditError, match=r"differs from that one in num_attention_heads 2 \(diffusers: 0\)"):
        export_diffusers_rae(rae_dir, tmp_path / "diffusers")


def test_export_refuses_a_grid_whose_positions_diffusers_changes(tmp_path):
    """raedit's decoder has the official sin-cos positions of its 4 x 4 grid; diffusers would use others."""
    rae_dir = saved_raedit_rae(tmp_path, hidden_size=64, heads=1)
    with pytest.raises(RaeditError, match="diffusers decodes a 4 x 4 token grid with the sin-cos positions of a 16"):
        export_diffusers_rae(rae_dir, tmp_path / "diffusers")


def test_the_command_line_imports_and_exports(tmp_path, capsys):
    from raedit.cli import main

    vae = saved_diffusers_rae(tmp_path / "diffusers", "dinov2")
    assert main(["import-diffusers", str(tmp_path / "diffusers"), "--out", str(tmp_path / "raedit")]) == 0
    assert main(["export-diffusers", str(tmp_path / "raedit"), "--out", str(tmp_path / "back")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"diffusers AutoencoderRAE: {tmp_path / 'back'}"
    assert_same_autoencoder(AutoencoderRAE.from_pretrained(tmp_path / "back").eval(), vae, (CHANNELS, 4, 4))
    assert main(["import-diffusers", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
