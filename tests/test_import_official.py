"""The released models end to end: an official-format release tree (tests/official_release.py, the released key
layout at a small size, saved with torch.save) imports and samples through the command line exactly as the same
weights saved by raedit itself; architectures come from the shapes; every mismatch is a one-line error."""

from pathlib import Path

import numpy as np
import pytest
import torch
from official_release import (
    LATENT_SHAPE,
    key_patterns,
    official_decoder_state,
    official_ditdh_state,
    randomized,
    released_patterns,
    small_ditdh,
    small_rae,
    write_release,
)

from raedit.autoencoder import RAE, AutoencoderConfig
from raedit.cli import main
from raedit.core.errors import RaeditError
from raedit.diffusion.denoiser_io import DenoiserInfo, load_denoiser, read_denoiser_info, save_denoiser
from raedit.diffusion.flow import shift_alpha
from raedit.encoders import decode_only_encoder
from raedit.jobs.import_official import import_official, import_rae, infer_encoder, pull
from raedit.jobs.releases import PRESETS

PRESET = PRESETS["ditdh-xl-256-ag"]


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> dict:
    """The release tree, its modules, and the same modules saved by raedit (the native path)."""
    root = tmp_path_factory.mktemp("release")
    modules = write_release(root / "models")
    native = root / "native"
    modules["rae"].save_pretrained(native / "rae")
    for name in ("denoiser", "guide"):
        model = modules[name]
        info = DenoiserInfo(model.config, shift_alpha(LATENT_SHAPE), str(native / "rae"), "dinov2-b")
        save_denoiser(native / name, model.state_dict(), info)
    return {"models": root / "models", "native": native, **modules}


def samples(capsys, out: Path, *argv) -> np.ndarray:
    code, _, err = cli(capsys, "sample", *argv, "--num", 3, "--batch-size", 2, "--steps", 4, "--out", out,
                       "--grid", "")
    assert code == 0, err
    return np.load(out)["arr_0"]


def test_the_release_fixture_has_the_released_key_layout(release):
    assert key_patterns(official_ditdh_state(release["denoiser"])) == released_patterns("DiTDH-S")
    assert key_patterns(official_decoder_state(release["rae"])) == released_patterns("Decoder-ViTB-DINOv2B-256")


def test_pull_from_a_local_copy_samples_exactly_as_the_native_models(release, tmp_path, capsys):
    code, out, err = cli(capsys, "pull", "ditdh-xl-256-ag", "--from", release["models"], "--out", tmp_path / "m")
    assert code == 0, err
    assert f"--guide-ckpt {tmp_path / 'm' / 'guide'} --ag 1.42" in out
    imported = samples(capsys, tmp_path / "imported.npz", "--ckpt", tmp_path / "m" / "denoiser",
                       "--guide-ckpt", tmp_path / "m" / "guide", "--ag", 1.42)
    native = samples(capsys, tmp_path / "native.npz", "--ckpt", release["native"] / "denoiser",
                     "--guide-ckpt", release["native"] / "guide", "--ag", 1.42)
    # The released files themselves, straight into `raedit sample`, with the imported RAE.
    direct = samples(capsys, tmp_path / "direct.npz", "--ckpt", release["models"] / PRESET.denoiser,
                     "--guide-ckpt", release["models"] / PRESET.guide, "--ag", 1.42, "--rae", tmp_path / "m" / "rae")
    assert imported.shape == (3, 256, 256, 3) and imported.std() > 5  # images, not a constant
    np.testing.assert_array_equal(imported, native)
    np.testing.assert_array_equal(direct, native)


def test_import_reads_the_architecture_and_the_ema_weights_off_the_files(release, tmp_path):
    written = import_official(tmp_path, release["models"] / PRESET.decoder, release["models"] / PRESET.stats,
                              release["models"] / PRESET.denoiser, release["models"] / PRESET.guide)
    for name in ("denoiser", "guide"):
        model, info = load_denoiser(written[name])
        assert info.model == release[name].config
        assert info.shift_alpha == pytest.approx(48 ** 0.5)  # Sec. 4.2 for 768 x 16 x 16, as the official config
        assert info.encoder == "dinov2-b" and Path(info.rae) == written["rae"].resolve()
        for key, value in release[name].state_dict().items():  # the EMA entry, not the live weights
            torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    rae = RAE.from_pretrained(written["rae"], decode_only=True)
    assert rae.config.decoder_size == "tiny" and rae.config.encoder_input_size is None
    torch.testing.assert_close(rae.latent_var, release["rae"].latent_var, rtol=0, atol=0)
    latents = torch.randn(2, *LATENT_SHAPE)
    torch.testing.assert_close(rae.decode(latents), release["rae"].decode(latents), rtol=0, atol=0)
    with pytest.raises(RaeditError, match="not loaded"):
        rae.encode(torch.rand(1, 3, 256, 256))


def test_a_missing_unexpected_or_misshapen_key_is_a_one_line_error_naming_it(release, tmp_path, capsys):
    state = official_ditdh_state(release["denoiser"])
    broken = {
        "missing": ({k: v for k, v in state.items() if k != "final_layer.linear.bias"},
                    "lacks 'final_layer.linear.bias'"),
        "unexpected": ({**state, "extra.weight": torch.zeros(1)}, "unexpected 'extra.weight'"),
        "shape": ({**state, "t_embedder.mlp.2.bias": torch.zeros(3)}, "'t_embedder.mlp.2.bias' has shape (3,)"),
    }
    for name, (weights, message) in broken.items():
        torch.save({"ema": weights}, tmp_path / f"{name}.pt")
        code, _, err = cli(capsys, "import-official", "--out", tmp_path / name, "--decoder",
                           release["models"] / PRESET.decoder, "--stats", release["models"] / PRESET.stats,
                           "--denoiser", tmp_path / f"{name}.pt")
        assert code == 2 and message in err and err.count("\n") == 1, (name, err)


def test_a_pickled_object_is_refused_weights_only(release, tmp_path, capsys):
    torch.save({"ema": official_ditdh_state(release["guide"]), "args": argparse_namespace()}, tmp_path / "p.pt")
    code, _, err = cli(capsys, "sample", "--ckpt", tmp_path / "p.pt", "--rae", release["native"] / "rae")
    assert code == 2 and "cannot read official denoiser weights" in err and err.count("\n") == 1


def argparse_namespace():
    import argparse

    return argparse.Namespace(lr=1e-4)


def test_any_size_converts_and_a_decoder_of_no_named_size_needs_its_heads(tmp_path):
    model = small_ditdh(seed=5, depth=1, width=48, num_heads=3)  # no released size: 3 heads of 16
    torch.save(official_ditdh_state(model), tmp_path / "odd.pt")
    assert read_denoiser_info(tmp_path / "odd.pt").model == model.config
    rae = RAE(AutoencoderConfig(encoder="dinov2-b", decoder_size="2x128x4x1024"), decode_only_encoder("dinov2-b"))
    randomized(rae.decoder, seed=6)
    rae.set_stats(torch.randn(LATENT_SHAPE), torch.rand(LATENT_SHAPE) + 0.5)
    torch.save(official_decoder_state(rae), tmp_path / "decoder.pt")
    stats = tmp_path / "stat.pt"
    torch.save({"mean": rae.latent_mean, "var": rae.latent_var}, stats)
    with pytest.raises(RaeditError, match="number of heads"):
        import_rae(tmp_path / "decoder.pt", stats, tmp_path / "r", encoder="dinov2-b")
    import_rae(tmp_path / "decoder.pt", stats, tmp_path / "r", encoder="dinov2-b", decoder_heads=4)
    imported = RAE.from_pretrained(tmp_path / "r", decode_only=True)
    assert imported.config.decoder_size == "2x128x4x1024"
    latents = torch.randn(1, *LATENT_SHAPE)
    torch.testing.assert_close(imported.decode(latents), rae.decode(latents), rtol=0, atol=0)


def test_the_encoder_and_its_input_size_come_from_the_release_path_and_the_token_grid(release, tmp_path):
    rae = small_rae(seed=7)
    state = official_decoder_state(rae)
    state["decoder_pos_embed"] = torch.zeros(1, 32 * 32 + 1, 128)  # 32 x 32 tokens: the 512 px decoder
    path = tmp_path / "decoders" / "dinov2" / "wReg_base" / "ViTXL_n08_i512" / "model.pt"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    torch.save({"mean": torch.zeros(768, 32, 32), "var": torch.ones(768, 32, 32)}, tmp_path / "stat.pt")
    import_rae(path, tmp_path / "stat.pt", tmp_path / "r512")
    imported = RAE.from_pretrained(tmp_path / "r512", decode_only=True)
    assert imported.config.encoder == "dinov2-b" and imported.config.encoder_input_size == 448
    assert imported.latent_shape == (768, 32, 32) and imported.image_size == (512, 512)
    elsewhere = tmp_path / "model.pt"
    torch.save(state, elsewhere)
    with pytest.raises(RaeditError, match="give --encoder"):
        import_rae(elsewhere, tmp_path / "stat.pt", tmp_path / "r")


def test_pull_without_a_network_says_how_to_use_a_local_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(RaeditError, match="cannot download .* --from DIR"):
        pull("ditdh-xl-256", tmp_path)


def test_the_encoder_of_each_released_decoder_comes_from_its_path():
    paths = {"dinov2-b": PRESETS["rae-dinov2-b-256"].decoder, "siglip2-b": PRESETS["rae-siglip2-b-256"].decoder,
             "mae-b": PRESETS["rae-mae-b-256"].decoder}
    for encoder, path in paths.items():
        assert infer_encoder(768, path) == encoder
    assert infer_encoder(384, "decoders/dinov2/wReg_small/ViTXL_n08/model.pt") == "dinov2-s"
    assert infer_encoder(1024, "decoders/dinov2/wReg_large/ViTXL_n08/model.pt") == "dinov2-l"


def test_a_decoder_preset_pulls_the_rae_alone(release, tmp_path, capsys):
    chosen = PRESETS["rae-dinov2-b-256"]
    assert (chosen.decoder, chosen.stats) == (PRESET.decoder, PRESET.stats)  # the files the release fixture wrote
    code, out, err = cli(capsys, "pull", "rae-dinov2-b-256", "--from", release["models"], "--out", tmp_path / "r")
    assert code == 0, err
    assert out.splitlines() == [f"rae: {tmp_path / 'r' / 'rae'}"]  # no denoiser, so no sampling command
    latents = torch.randn(1, *LATENT_SHAPE)
    torch.testing.assert_close(RAE.from_pretrained(tmp_path / "r" / "rae", decode_only=True).decode(latents),
                               release["rae"].decode(latents), rtol=0, atol=0)


def test_a_saved_denoisers_weights_file_loads_as_its_directory_and_a_malformed_file_is_one_error(release, tmp_path):
    _, info = load_denoiser(release["native"] / "denoiser" / "model.safetensors")
    assert info.rae == str(release["native"] / "rae")  # the saved denoiser, not an official file
    torch.save({"pos_embed": torch.zeros(4), "s_embedder.proj.weight": torch.zeros(2)}, tmp_path / "odd.pt")
    with pytest.raises(RaeditError, match="'pos_embed' has shape"):
        load_denoiser(tmp_path / "odd.pt")
    torch.save({"decoder_embed.weight": torch.zeros(3)}, tmp_path / "decoder.pt")
    with pytest.raises(RaeditError, match="no 2-d 'decoder_embed.weight'"):
        import_rae(tmp_path / "decoder.pt", tmp_path / "decoder.pt", tmp_path / "r", encoder="dinov2-b")


def test_weights_come_from_the_ema_entry_or_a_bare_state_dict_without_wrapper_prefixes():
    from raedit.core.state_dicts import weights_of

    weight = torch.ones(2)
    assert weights_of({"ema": {"module._orig_mod.a": weight}, "model": {"a": torch.zeros(2)}}, "f") == {"a": weight}
    assert weights_of({"module.a": weight, "_orig_mod.b": weight}, "f") == {"a": weight, "b": weight}
    with pytest.raises(RaeditError, match=r"neither a state dict nor .* \(its entries: model, step\)"):
        weights_of({"model": {"a": weight}, "step": 3}, "f")
