import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from raedit.autoencoder import RAE, AutoencoderConfig
from raedit.cli import main
from raedit.encoders import ENCODERS
from raedit.latent_stats import save_latent_stats


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_encoders_json_lists_every_encoder_with_offline_ones_available(capsys):
    code, out, _ = run(capsys, "encoders", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0 and set(rows) == set(ENCODERS)
    assert rows["effnet-lite0"]["available"] and rows["effnet-lite2"]["available"]
    assert rows["dinov2-b"]["grid"] == [16, 16] and rows["dinov2-b"]["channels"] == 768
    assert rows["effnet-lite0"]["channels"] == 112


@pytest.fixture
def cat_png(tmp_path):
    path = tmp_path / "cat.png"
    Image.fromarray(skimage_data.chelsea()).save(path)
    return path


def test_reconstruct_with_an_untrained_decoder_writes_side_by_side_png(capsys, tmp_path, cat_png):
    code, out, _ = run(capsys, "reconstruct", str(cat_png), "--encoder", "effnet-lite0", "--input-size", "64",
                       "--decoder-size", "tiny", "--decoder-patch-size", "8", "--out", str(tmp_path / "out"))
    assert code == 0
    psnr = float(out.split("PSNR")[1].split()[0])
    assert 3 < psnr < 30
    side_by_side = np.asarray(Image.open(tmp_path / "out" / "cat_recon.png"))
    assert side_by_side.shape == (32, 64, 3)


def test_reconstruct_from_a_saved_autoencoder_reports_its_psnr(capsys, tmp_path, cat_png):
    rae = RAE(AutoencoderConfig("effnet-lite0", encoder_input_size=64, decoder_size="tiny",
                                decoder_patch_size=8))
    rae.save_pretrained(tmp_path / "rae")
    code, out, _ = run(capsys, "reconstruct", str(cat_png), "--decoder", str(tmp_path / "rae"),
                       "--out", str(tmp_path / "out"))
    assert code == 0
    image = torch.from_numpy(np.array(Image.open(tmp_path / "out" / "cat_recon.png"))).float() / 255
    original, reconstruction = image[:, :32], image[:, 32:]
    expected = -10 * torch.log10((original - reconstruction).square().mean())
    assert abs(float(out.split("PSNR")[1].split()[0]) - expected.item()) < 0.5  # 8-bit rounding only


@pytest.mark.parametrize("argv, message", [
    (["reconstruct", "x.png", "--encoder", "nope", "--out", "o"], "unknown encoder 'nope'; known encoders: dinov2-s"),
    (["reconstruct", "x.png", "--input-size", "100", "--out", "o"], "multiple of 16, got 100"),
    (["stats", "missing.yaml"], "config file not found"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_checkpoint_and_stats_that_do_not_fit_are_one_line_errors(capsys, tmp_path, cat_png):
    from safetensors.torch import save_file

    save_file({"decoder.head.weight": torch.zeros(2, 2)}, str(tmp_path / "bad.safetensors"))
    code, _, err = run(capsys, "reconstruct", str(cat_png), "--input-size", "64", "--decoder-size", "tiny",
                       "--decoder", str(tmp_path / "bad.safetensors"), "--out", str(tmp_path / "o"))
    assert code == 2 and "lacks 'cls_token'" in err and "more" in err and err.count("\n") == 1
    save_latent_stats(tmp_path / "s.safetensors", torch.zeros(768, 16, 16), torch.ones(768, 16, 16),
                      "dinov2-b", 1)
    code, _, err = run(capsys, "reconstruct", str(cat_png), "--input-size", "64", "--decoder-size", "tiny",
                       "--stats", str(tmp_path / "s.safetensors"), "--out", str(tmp_path / "o"))
    assert code == 2 and "(768, 16, 16)" in err and "(112, 4, 4)" in err


def test_stats_command_with_config_and_overrides(capsys, tmp_path):
    config = tmp_path / "stats.yaml"
    config.write_text("autoencoder:\n  encoder: effnet-lite0\n  encoder_input_size: 32\n"
                      "data:\n  name: fashion-mnist\n  resolution: 32\n  limit: 16\nbatch_size: 8\n")
    out_file = tmp_path / "s.safetensors"
    code, out, _ = run(capsys, "stats", str(config), f"out={out_file}")
    assert code == 0 and out_file.is_file() and "16 images" in out
    code, _, err = run(capsys, "stats", str(config), "batch_sise=3")
    assert code == 2 and "did you mean 'batch_size'" in err
