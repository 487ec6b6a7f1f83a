"""The generation experiments end to end at toy size: a weight-free pixel latent space (pixels-p8, 4 x 4 x 192)
of 48 Fashion-MNIST images, one-epoch models, 10 samples against 10 reference images."""

import json
import math

import pytest
import torch
from stage2_helpers import make_setup

from raedit.autoencoder import RAE, AutoencoderConfig
from raedit.cli import main
from raedit.core.errors import RaeditError
from raedit.data import DataConfig
from raedit.experiments.generation import GenerationSetup, check_inputs
from raedit.experiments.raev2 import Settings as RAEv2Settings
from raedit.experiments.shift import DenserGrid, make_denser_space
from raedit.jobs.cache_latents import CacheConfig, cache_latents
from raedit.jobs.stats import latent_stats_from_cache

PIXEL_SPACE = AutoencoderConfig(encoder="pixels-p8", encoder_input_size=32, decoder_size="unpatchify",
                                decoder_patch_size=8, noise_tau=0.0)
TOY_STAGE2 = ["train.epochs=1", "train.micro_batch_size=16", "train.schedule.decay_start_epoch=0",
              "train.schedule.decay_end_epoch=1", "model.depth=1", "model.width=64", "model.num_heads=2",
              "model.head_width=192", "model.head_num_heads=2", "latent_shape=null", "preview.images=0"]


@pytest.fixture(scope="module")
def latent_space(tmp_path_factory):
    root = tmp_path_factory.mktemp("space")
    cache_latents(CacheConfig(autoencoder=PIXEL_SPACE, data=DataConfig(limit=24), out=str(root / "latents"),
                              shard_size=16, batch_size=8, hflip=True))
    moments = latent_stats_from_cache(root / "latents")
    rae = RAE(PIXEL_SPACE)
    rae.set_stats(moments.mean, moments.variance)
    rae.save_pretrained(root / "rae")
    return root


def setup_overrides(root, work) -> list[str]:
    return [f"setup.rae={root / 'rae'}", f"setup.latents={root / 'latents'}",
            f"setup.overrides=[{','.join(TOY_STAGE2)}]", "setup.samples=10", "setup.reference_images=10",
            "setup.batch_size=10", "setup.sampling_steps=4", f"setup.work_dir={work}"]


def results(out, name):
    record = json.loads((out / f"{name}.json").read_text())
    assert 0 <= record["wall_minutes"] < 10
    assert (out / f"{name}.png").stat().st_size > 1000
    markdown = (out / f"{name}.md").read_text().split("\n## ")[0]  # the main table, before any further ones
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + len(record["rows"]) and table[0] == "| " + " | ".join(record["columns"]) + " |"
    return record["rows"]


def test_shift_reports_the_alpha_of_each_arm(latent_space, tmp_path):
    out = tmp_path / "results"
    assert main(["experiment", "shift", *setup_overrides(latent_space, tmp_path / "work"), "shifts=[none,auto,4]",
                 "denser_grid.encoder_input_size=null", "--out", str(out)]) == 0
    rows = results(out, "shift")
    assert [row[0] for row in rows] == ["none", "auto", "4"]
    assert [row[1] for row in rows] == [1.0, round(math.sqrt(192 * 16 / 4096), 3), 4.0]  # Sec. 4.2
    assert all(math.isfinite(row[3]) and row[3] > 0 for row in rows)


def test_shift_on_a_denser_grid_makes_its_latent_space(latent_space, tmp_path):
    """The same images encoded at twice the input size: 8 x 8 tokens of 192 channels, a cache of them, their RAE
    with the cache's statistics and a trained decoder, and the arms trained on that cache."""
    out, work = tmp_path / "results", tmp_path / "work"
    grid = ("denser_grid={encoder_input_size: 64, image_size: 32, images: null, stage1_overrides: [autoencoder.decoder_size=tiny, "
            "train.epochs=1, train.micro_batch_size=8, loss.disc_start_epoch=100, loss.gan_start_epoch=100, "
            "eval_images=8, preview_images=0, train.logging.image_every_steps=0]}")
    assert main(["experiment", "shift", *setup_overrides(latent_space, work), "shifts=[none,auto]", grid,
                 "--out", str(out)]) == 0
    rows = results(out, "shift")
    assert [row[1] for row in rows] == [1.0, round(math.sqrt(192 * 64 / 4096), 3)]
    assert json.loads((out / "shift.json").read_text())["latent_dims"] == 192 * 8 * 8
    space = RAE.from_pretrained(work / "shift" / "rae")
    assert space.latent_shape == (192, 8, 8) and space.normalized
    trained = RAE.from_pretrained(work / "shift" / "decoder" / "rae")
    assert all(torch.equal(a, b) for a, b in zip(space.decoder.state_dict().values(),
                                                 trained.decoder.state_dict().values()))
    assert torch.allclose(space.latent_mean, latent_stats_from_cache(work / "shift" / "latents").mean.float())
    assert "trained in" in json.loads((out / "shift.json").read_text())["summary"]


def test_a_denser_grid_that_does_not_fit_is_one_clear_error(latent_space, tmp_path):
    setup = GenerationSetup(rae=str(latent_space / "rae"), latents=str(latent_space / "latents"))
    overrides = ["autoencoder.decoder_size=tiny"]
    with pytest.raises(RaeditError, match="denser_grid.images=25 is more than the 24 images of setup.latents"):
        make_denser_space(setup, DenserGrid(encoder_input_size=64, image_size=32, images=25,
                                            stage1_overrides=overrides), tmp_path)
    with pytest.raises(RaeditError, match="image_size 36 is not a multiple of the 8 tokens per side"):
        make_denser_space(setup, DenserGrid(encoder_input_size=64, image_size=36, images=None,
                                            stage1_overrides=overrides), tmp_path)
    with pytest.raises(RaeditError, match="denser_grid takes its images from setup.latents, which is null"):
        make_denser_space(GenerationSetup(latents=None), DenserGrid(), tmp_path)


def test_head_reports_widths_and_flops_of_each_arm(latent_space, tmp_path):
    out = tmp_path / "results"
    arms = ("arms=[{name: dh, overrides: [model.name=ditdh-s, model.depth=1, model.width=64, model.num_heads=2, "
            "model.head_depth=1, model.head_width=192, model.head_num_heads=2]}, {name: dit, overrides: "
            "[model.name=dit-s, model.depth=2, model.width=96, model.num_heads=2, model.head_depth=null, "
            "model.head_width=null, model.head_num_heads=null]}]")
    assert main(["experiment", "head", *setup_overrides(latent_space, tmp_path / "work"), arms, "--out", str(out)]) == 0
    rows = results(out, "head")
    assert [row[0] for row in rows] == ["dh", "dit"]
    dh, dit = rows
    assert (dh[1], dit[1]) == ("64 / 192 (n = 192)", "96 / 96 (n = 192)")
    assert dh[2] != dit[2] and dh[3] > 0 and dit[3] > 0  # different models, each with counted FLOPs
    # training FLOPs = 3 x forward x epochs x images (1 epoch: 24 images, each flipped or not; 48 latents stored)
    assert dh[4] == pytest.approx(3 * dh[3] * 1e6 * 24, rel=1e-3)
    assert all(math.isfinite(row[6]) for row in rows)


def test_pixel_arm_uses_pixels_of_about_the_latent_dimension(latent_space, tmp_path):
    out = tmp_path / "results"
    assert main(["experiment", "pixel", *setup_overrides(latent_space, tmp_path / "work"), "pixel_encoder=pixels-p6",
                 "pixel_size=24", "fid_resolution=32", "--out", str(out)]) == 0
    latents, pixels = results(out, "pixel")
    assert (latents[1], latents[2]) == ("192 x 4 x 4", 3072)
    assert (pixels[1], pixels[2]) == ("108 x 4 x 4", 1728)
    assert math.isfinite(latents[4]) and math.isfinite(pixels[4])
    # the pixel arm's samples were scored at the reference resolution
    assert (tmp_path / "work" / "pixel" / "pixels" / "samples-32px.npz").is_file()


def test_noise_aug_trains_one_decoder_per_tau(latent_space, tmp_path):
    out = tmp_path / "results"
    stage1 = ("stage1_overrides=[autoencoder.encoder=pixels-p8, autoencoder.encoder_input_size=32, "
              "autoencoder.decoder_size=tiny, train.epochs=1, train.micro_batch_size=8, "
              "loss.disc_start_epoch=100, loss.gan_start_epoch=100, eval_images=8, "
              "preview_images=0, train.logging.image_every_steps=0]")
    assert main(["experiment", "noise-aug", *setup_overrides(latent_space, tmp_path / "work"), stage1,
                 "noise_taus=[0.0,0.5]", "--out", str(out)]) == 0
    rows = results(out, "noise-aug")
    assert [row[0] for row in rows] == [0.0, 0.5]
    for tau in (0.0, 0.5):
        saved = json.loads((tmp_path / "work" / "noise-aug" / f"decoder-tau{tau:g}" / "rae" / "rae_config.json")
                           .read_text())
        assert saved["noise_tau"] == tau
    assert all(math.isfinite(value) for row in rows for value in row[3:])
    # the same noise added to both decoders' latents changes what each reconstructs
    assert all(row[4] != row[3] for row in rows)


def test_missing_latent_space_is_one_clear_error(tmp_path):
    with pytest.raises(RaeditError, match="setup.rae=.*does not exist"):
        check_inputs(GenerationSetup(rae=str(tmp_path / "nothing")))


def test_an_experiment_without_arms_is_one_clear_error(latent_space, tmp_path, capsys):
    assert main(["experiment", "shift", *setup_overrides(latent_space, tmp_path / "work"), "shifts=[]"]) == 2
    assert "shifts is empty" in capsys.readouterr().err
    assert main(["experiment", "nonsense"]) == 2
    assert ("unknown experiment 'nonsense'; known: width, shift, noise-aug, head, pixel, raev2"
            in capsys.readouterr().err)


def test_raev2_defaults_are_v1_each_option_alone_and_all_together():
    arms = {arm.name: arm for arm in RAEv2Settings().arms}
    assert list(arms) == ["v1", "x-prediction", "internal guidance", "Muon", "token-conditioned DiT^DH",
                          "all denoiser options", "multi-layer latents", "all v2 options"]
    options = [arms[name].overrides for name in ("x-prediction", "internal guidance", "Muon",
                                                 "token-conditioned DiT^DH")]
    assert arms["v1"].overrides == [] and all(len(option) == 1 for option in options)
    everything = [override for option in options for override in option]
    assert arms["all denoiser options"].overrides == arms["all v2 options"].overrides == everything
    assert [name for name, arm in arms.items() if arm.latents == "multi-layer"] == ["multi-layer latents",
                                                                                    "all v2 options"]
    assert [name for name, arm in arms.items() if arm.internal_guidance] == ["internal guidance",
                                                                            "all denoiser options", "all v2 options"]


def test_raev2_scores_its_arms_along_training_and_both_decoders(tmp_path):
    """EfficientNet-Lite0 latents (the multi-layer latent needs an encoder with blocks): 2 x 2 x 112 of 32 images;
    v1 and everything together (x-prediction, base head and internal guidance, Muon, the token-conditioned
    backbone, multi-layer latents)."""
    setup = make_setup(tmp_path / "space", count=32)
    out, work = tmp_path / "results", tmp_path / "work"
    tiny = ["train.epochs=2", "train.micro_batch_size=16", "train.schedule.decay_start_epoch=0",
            "train.schedule.decay_end_epoch=2", "model.depth=2", "model.width=32", "model.num_heads=2",
            "model.head_width=112", "model.head_num_heads=2", "latent_shape=null", "preview.images=0",
            "train.speed.compile=none"]
    stage1 = ("stage1_overrides=[autoencoder.decoder_size=tiny, autoencoder.noise_tau=0.0, train.epochs=1, "
              "train.micro_batch_size=16, loss.perceptual_start_epoch=1, loss.disc_start_epoch=1, "
              "loss.gan_start_epoch=1, eval_images=8, preview_images=0, train.logging.image_every_steps=0]")
    everything = ",".join(override for arm in RAEv2Settings().arms if arm.name == "all v2 options"
                          for override in arm.overrides)
    arms = (f"arms=[{{name: v1, overrides: [], equal_compute_decoder: true}}, {{name: all, overrides: "
            f"[{everything}], latents: multi-layer, internal_guidance: true}}]")
    assert main(["experiment", "raev2", f"setup.rae={setup['rae']}", f"setup.latents={setup['cache']}",
                 f"setup.overrides=[{','.join(tiny)}]", "setup.samples=10", "setup.reference_images=10",
                 "setup.batch_size=10", "setup.sampling_steps=3", f"setup.work_dir={work}", "evaluations=2",
                 "probe_train_limit=20", "reconstruction_images=10", stage1, arms, "--out", str(out)]) == 0
    rows = results(out, "raev2")
    # each arm at epochs 1 and 2 (2 steps each); v1 also decoded by the last-layer decoder of equal compute
    assert [(row[0], row[1].split(" ")[0], row[2]) for row in rows] == [
        ("v1", "the", 2), ("v1", "last-layer", 2), ("v1", "the", 4), ("v1", "last-layer", 4),
        ("all", "multi-layer", 2), ("all", "multi-layer", 4)]
    assert all(math.isfinite(row[5]) and 0 <= row[6] <= 1 for row in rows)
    record = json.loads((out / "raev2.json").read_text())
    reconstruction = record["tables"]["Reconstruction: decoders on last-layer and multi-layer latents"]["rows"]
    assert [row[1] for row in reconstruction] == ["effnet-lite0", "effnet-lite0[layers=8,9,10]"]
    saved = json.loads((work / "raev2" / "all" / "model" / "model_config.json").read_text())
    assert saved["family"] == "ditdhv2" and saved["encoder"] == "effnet-lite0[layers=8,9,10]"
    assert (saved["model"]["prediction"], saved["model"]["base_depth"]) == ("x", 1)
    assert "## Reconstruction" in (out / "raev2.md").read_text()
