"""Reconstruction metrics (PSNR, SSIM, perceptual), their batch independence, and `raedit eval-recon` end to end."""

import json

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from raedit.core.errors import RaeditError
from raedit.eval.autoencoder_metrics import evaluate_reconstructions
from raedit.eval.similarity import perceptual, psnr, ssim


def test_psnr_of_a_constant_offset():
    images = torch.full((2, 3, 8, 8), 0.5)
    np.testing.assert_allclose(psnr(images + 0.1, images).numpy(), [20.0, 20.0], rtol=1e-6)


def test_ssim_matches_scikit_image_and_is_one_on_identical_images():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 24, 20, generator=generator)
    noisy = (images + 0.1 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    ours = ssim(noisy, images)
    for index in range(2):
        expected = structural_similarity(noisy[index].numpy(), images[index].numpy(), gaussian_weights=True,
                                         sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=0)
        assert float(ours[index]) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(ssim(images, images).numpy(), [1.0, 1.0])
    with pytest.raises(RaeditError, match="at least 11 x 11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_perceptual_distance_is_a_pluggable_callable():
    images = torch.rand(3, 3, 8, 8)
    mse = lambda a, b: (a - b).square().flatten(1).mean(1)  # noqa: E731
    np.testing.assert_allclose(perceptual(images, images * 0.5, mse).numpy(), mse(images, images * 0.5).numpy())
    with pytest.raises(RaeditError, match="returned 1 values for 3 images"):
        perceptual(images, images, lambda a, b: torch.zeros(1))


def test_evaluation_does_not_depend_on_the_batch_size():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(10, 3, 16, 16, generator=generator)
    blur = lambda x: torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)  # noqa: E731
    mse = lambda a, b: (a - b).square().flatten(1).mean(1)  # noqa: E731
    results = [evaluate_reconstructions(blur, images.split(size), None, mse, "mse") for size in (1, 3, 10)]
    for result in results[1:]:
        for key in ("psnr", "ssim", "mse"):
            assert result[key] == pytest.approx(results[0][key], rel=1e-12)
    assert results[0]["num_images"] == 10 and 5 < results[0]["psnr"] < 40 and "rfid" not in results[0]
    without = evaluate_reconstructions(blur, [images], None)
    assert without["lpips"] == "unavailable"


def test_eval_recon_end_to_end(tmp_path, capsys):
    import argparse

    from raedit.autoencoder import RAE, AutoencoderConfig
    from raedit.cli.eval_commands import run_eval_recon

    rae = RAE(AutoencoderConfig("effnet-lite0", encoder_input_size=64, decoder_size="tiny", decoder_patch_size=8))
    rae.save_pretrained(tmp_path / "rae")
    (tmp_path / "eval.yaml").write_text(f"autoencoder: {tmp_path / 'rae'}\nnum_images: 6\nbatch_size: 4\n"
                                        f"perceptual: none\njson: {tmp_path / 'out.json'}\n")
    run_eval_recon(argparse.Namespace(config=str(tmp_path / "eval.yaml"), overrides=["data=fashion-mnist-test"]))
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["num_images"] == 6 and result["rfid"] > 0  # an untrained decoder reconstructs poorly
    assert 0 < result["psnr"] < 30 and -1 <= result["ssim"] < 0.9
    assert "psnr" in capsys.readouterr().out


def test_eval_recon_without_vgg_weights_reports_lpips_unavailable(tmp_path, monkeypatch):
    from raedit.autoencoder import RAE, AutoencoderConfig
    from raedit.jobs.eval_recon import EvalReconConfig, run_eval_recon

    monkeypatch.setattr("raedit.losses.perceptual.default_vgg16_path", lambda: tmp_path / "no-vgg16.pth")
    rae = RAE(AutoencoderConfig("effnet-lite0", encoder_input_size=64, decoder_size="tiny", decoder_patch_size=8))
    rae.save_pretrained(tmp_path / "rae")
    result = run_eval_recon(EvalReconConfig(autoencoder=str(tmp_path / "rae"), num_images=2, rfid=False))
    assert result["lpips"] == "unavailable" and "VGG16" in result["notes"][0] and "rfid" not in result
    with pytest.raises(RaeditError, match="no file at"):
        run_eval_recon(EvalReconConfig(autoencoder=str(tmp_path / "rae"), num_images=2, rfid=False,
                                       vgg_weights=str(tmp_path / "missing.pth")))
    with pytest.raises(RaeditError, match="needs `autoencoder`"):
        run_eval_recon(EvalReconConfig())


def test_rfid_does_not_depend_on_the_evaluation_batch_size():
    """The official rFID moves with the evaluation batch (users report 1.88 / 2.12 / 3.96 at 512 / 256 / 128); here
    every image's Inception features are its own, so the batches only group the work."""
    from raedit.eval.inception import InceptionFeatures

    generator = torch.Generator().manual_seed(2)
    images = torch.rand(12, 3, 32, 32, generator=generator)
    blur = lambda x: torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)  # noqa: E731
    inception = InceptionFeatures()
    rfids = [evaluate_reconstructions(blur, images.split(size), inception)["rfid"] for size in (1, 5, 12)]
    assert rfids[0] > 1  # blurred images are far from the originals
    assert rfids[1] == pytest.approx(rfids[0], rel=1e-4) and rfids[2] == pytest.approx(rfids[0], rel=1e-4)


def test_the_imagenet_rfid_recipe_follows_the_papers_protocol():
    from raedit.core.config import load_config
    from raedit.jobs.eval_recon import EvalReconConfig

    config = load_config(EvalReconConfig, "eval/imagenet256_rfid")
    assert config.num_images == 50_000 and config.rfid and config.perceptual == "lpips-vgg"
    assert config.data == "/data/imagenet/val"  # an image folder: center-cropped at the decoder's 256 px
