"""RAEv2's denoiser options (arXiv 2605.18324): x-prediction, internal guidance by a base head, the
token-conditioned DiT^DH, and the import of RAEv2's checkpoints, compared with RAEv2's own code.

tests/data/raev2/ditdh_ig_tiny.pt is RAEv2's `DiTwDDTHeadIG` run at a tiny size with random weights, saved as its
training checkpoint (made by tests/data/raev2/make_ditdh_ig_fixture.py, which says how)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from official_release import official_decoder_state
from stage2_helpers import make_rae_dir, make_setup

from raedit.autoencoder import RAE, AutoencoderConfig
from raedit.core.config import RECIPES, load_config
from raedit.core.errors import RaeditError
from raedit.diffusion.denoiser_io import load_denoiser
from raedit.diffusion.flow import TimeDistribution, flow_matching_loss, interpolate
from raedit.diffusion.guidance import guided_velocity, internal_guidance
from raedit.encoders import decode_only_encoder
from raedit.jobs.cache_latents import CacheConfig
from raedit.jobs.import_official import import_denoiser, import_rae
from raedit.jobs.sample import SampleConfig, generate
from raedit.jobs.stats import StatsConfig
from raedit.models import DiTDHv2Config, build_model, model_config
from raedit.models.predictions import X_PREDICTION_T_MIN, velocity_from_x
from raedit.train.stage1 import Stage1Config
from raedit.train.stage2 import Stage2Config, resolve_shift, train_diffusion

FIXTURE = Path(__file__).resolve().parent / "data" / "raev2" / "ditdh_ig_tiny.pt"
TINY = dict(depth=2, width=32, num_heads=2, num_classes=10)
TINY_HEAD = dict(head_depth=1, head_width=48, head_num_heads=2)


@pytest.fixture(scope="module")
def raev2() -> dict:
    return torch.load(FIXTURE, weights_only=True)


# ---- the import: RAEv2's function, RAEv2's checkpoint format ------------------------------------------------------


def test_a_raev2_checkpoint_loads_and_computes_raev2s_function(raev2):
    model, info = load_denoiser(FIXTURE)
    config = info.model
    assert isinstance(config, DiTDHv2Config)
    assert (config.depth, config.width, config.num_heads, config.head_depth, config.head_width) == (9, 16, 2, 1, 32)
    assert (config.num_time_tokens, config.num_class_tokens, config.num_classes) == (2, 3, 10)
    assert (config.prediction, config.base_depth, config.latent_shape) == ("x", 8, (112, 2, 2))
    inputs, outputs = raev2["inputs"], raev2["outputs"]
    x, t = inputs["x"], inputs["t"]
    with torch.no_grad():
        full, base = model(x, t, inputs["labels"], with_base=True)
    # RAEv2 predicts x; raedit's models return the velocity it means, (x_t - x_hat) / max(t, 0.05).
    torch.testing.assert_close(full, velocity_from_x(outputs["full"], x, t), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(base, velocity_from_x(outputs["base"], x, t), rtol=1e-4, atol=1e-3)
    # raedit's own position tables (RoPE with the condition tokens unrotated) are RAEv2's buffers.
    fresh = build_model(config).state_dict()
    for ours, theirs in (("backbone_rope", "enc_rope"), ("head_rope", "dec_rope")):
        for table in ("freqs_cos", "freqs_sin"):
            torch.testing.assert_close(fresh[f"{ours}.{table}"], raev2["ema"][f"{theirs}.{table}"])
    # Guiding velocities is guiding x predictions, RAEv2's formula (its guidance_utils) on its own outputs.
    scale = 1.78
    guided_x = outputs["base"] + scale * (outputs["full"] - outputs["base"])
    ig = internal_guidance(lambda *args, **kwargs: model(*args, **kwargs), inputs["labels"], scale)
    with torch.no_grad():
        torch.testing.assert_close(ig(x, t), velocity_from_x(guided_x, x, t), rtol=1e-4, atol=1e-3)


def test_a_raev2_checkpoint_imports_and_samples_with_internal_guidance(tmp_path):
    rae = make_rae_dir(tmp_path / "rae", stats=(torch.zeros(112, 2, 2), torch.ones(112, 2, 2)))
    imported = import_denoiser(FIXTURE, rae, tmp_path / "imported")
    samples = {}
    for name, ig in (("plain", 1.0), ("guided", 1.78)):
        generate(SampleConfig(ckpt=str(imported), num=4, steps=3, ig=ig, ig_interval=(0.1, 1.0), grid=None,
                              out=str(tmp_path / f"{name}.npz")))
        samples[name] = np.load(tmp_path / f"{name}.npz")["arr_0"]
    assert samples["plain"].shape == (4, 32, 32, 3)
    assert np.abs(samples["plain"].astype(int) - samples["guided"]).mean() > 1  # the base head guides


def test_a_damaged_raev2_checkpoint_is_a_one_line_error(raev2, tmp_path):
    state = dict(raev2["ema"])
    del state["blocks.3.attn.k.bias"]
    torch.save({"ema": state}, tmp_path / "missing.pt")
    with pytest.raises(RaeditError, match=r"blocks.3.attn.q.bias without all of attn.q, attn.k, attn.v"):
        load_denoiser(tmp_path / "missing.pt")
    state = {**raev2["ema"], "repa_projector.weight": torch.zeros(4, 16)}
    torch.save({"ema": state}, tmp_path / "extra.pt")
    with pytest.raises(RaeditError, match="unexpected 'repa_projector.weight'"):
        load_denoiser(tmp_path / "extra.pt")
    state = {key: value for key, value in raev2["ema"].items() if not key.startswith("blocks.9.adaln")}
    torch.save({"ema": state}, tmp_path / "no_head.pt")
    with pytest.raises(RaeditError, match="not backbone blocks followed by head blocks"):
        load_denoiser(tmp_path / "no_head.pt")


# ---- x-prediction -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["dit-s", "ditdh-s", "ditdhv2-s"])
def test_an_x_predicting_model_returns_the_velocity_of_its_x(family):
    """The output layers start at zero, so x_hat = 0 and the velocity is x_t / max(t, 0.05)."""
    head = TINY_HEAD if "dh" in family else {}
    model = build_model(model_config(family, (8, 2, 2), prediction="x", **TINY, **head)).eval()
    x_t, t = torch.randn(3, 8, 2, 2), torch.tensor([0.01, 0.3, 1.0])
    with torch.no_grad():
        torch.testing.assert_close(model(x_t, t, torch.tensor([0, 1, 10])), x_t / t.clamp(min=0.05).view(-1, 1, 1, 1))
    assert X_PREDICTION_T_MIN == 0.05  # RAEv2's t_eps


def test_the_x_prediction_target_is_raev2s_clamped_velocity():
    """RAEv2's target (x_t - x) / max(t, 0.05) (its transport.py), written out here: a model that returns it has
    zero loss with prediction "x", also for t below 0.05, where v1's target eps - x differs."""
    x = torch.randn(64, 8, 2, 2)
    times = TimeDistribution("uniform", t_max=0.1)

    def oracle(x_t, t, labels):
        return (x_t - x) / t.clamp(min=0.05).view(-1, 1, 1, 1)

    labels = torch.zeros(64, dtype=torch.long)
    loss_x = flow_matching_loss(oracle, x, labels, times, 1.0, torch.Generator().manual_seed(0), prediction="x")
    loss_v = flow_matching_loss(oracle, x, labels, times, 1.0, torch.Generator().manual_seed(0))
    assert loss_x < 1e-10 < 0.01 < loss_v


# ---- internal guidance --------------------------------------------------------------------------------------------


def test_the_base_head_starts_at_zero_and_learns_with_its_loss_weight():
    torch.manual_seed(0)
    model = build_model(model_config("ditdh-s", (8, 2, 2), base_depth=1, **TINY, **TINY_HEAD)).eval()  # no dropout
    x, labels = torch.randn(4, 8, 2, 2), torch.tensor([0, 1, 2, 3])
    _, base = model(x, torch.rand(4), labels, with_base=True)
    assert torch.count_nonzero(base) == 0
    times = TimeDistribution()
    flow_matching_loss(model, x, labels, times, 1.0, torch.Generator().manual_seed(0)).backward()
    assert model.base_head.linear.weight.grad is None  # no base loss: the head is not trained
    weighted = flow_matching_loss(model, x, labels, times, 1.0, torch.Generator().manual_seed(0),
                                  base_loss_weight=0.5)
    full_only = flow_matching_loss(model, x, labels, times, 1.0, torch.Generator().manual_seed(0))
    weighted.backward()
    assert model.base_head.linear.weight.grad.abs().sum() > 0
    # The zero base head's error is the target's mean square, added with its weight (the loss's draws: t, noise).
    generator = torch.Generator().manual_seed(0)
    times.sample(4, generator=generator)
    target = torch.randn(x.shape, generator=generator) - x
    torch.testing.assert_close(weighted - full_only, 0.5 * target.pow(2).mean())


@pytest.mark.parametrize("family", ["dit-s", "ditdh-s", "ditdhv2-s"])
def test_a_base_head_leaves_the_other_weights_as_without_it(family):
    """Built from the same seed, a model with a base head starts where the model without one starts, so an
    internal-guidance arm differs from v1 by the option alone."""
    head = TINY_HEAD if "dh" in family else {}
    models = []
    for base_depth in (0, 1):
        torch.manual_seed(0)
        models.append(build_model(model_config(family, (8, 2, 2), base_depth=base_depth, **TINY, **head)))
    plain, with_base = (model.state_dict() for model in models)
    assert set(with_base) - set(plain) and all(key.startswith("base_head.") for key in set(with_base) - set(plain))
    assert all(torch.equal(value, with_base[key]) for key, value in plain.items())


def test_internal_guidance_moves_away_from_the_base_inside_its_interval():
    full, base = torch.full((2, 1), 3.0), torch.full((2, 1), 1.0)

    def model(x, t, labels, with_base=False):
        assert with_base
        return full, base

    velocity = internal_guidance(model, torch.tensor([0, 1]), 2.0, interval=(0.1, 1.0))
    guided = velocity(torch.zeros(2, 1), torch.tensor([0.05, 0.5]))
    assert guided.flatten().tolist() == [3.0, 5.0]  # outside: full; inside: 1 + 2 * (3 - 1)


def test_internal_and_classifier_free_guidance_combine_as_raev2():
    """IG on the conditional and the unconditional branch, then CFG between them (RAEv2's forward_with_ig_and_cfg)."""
    def model(x, t, labels, with_base=False):
        cond = (labels < 10).float().view(-1, 1)
        return 2.0 + cond, 1.0 + 0 * cond  # full: 3 (cond) / 2 (null); base: 1

    velocity = guided_velocity(model, torch.tensor([4]), 10, cfg_scale=1.5, ig_scale=2.0)
    ig_cond, ig_uncond = 1 + 2 * (3 - 1), 1 + 2 * (2 - 1)
    assert velocity(torch.zeros(1, 1), torch.tensor([0.5])).item() == ig_uncond + 1.5 * (ig_cond - ig_uncond)


def test_internal_guidance_needs_a_base_head(tmp_path):
    model = build_model(model_config("ditdh-s", (8, 2, 2), **TINY, **TINY_HEAD))
    with pytest.raises(RaeditError, match="no internal-guidance base head"):
        model(torch.randn(1, 8, 2, 2), torch.rand(1), torch.tensor([0]), with_base=True)
    with pytest.raises(RaeditError, match="AutoGuidance goes alone"):
        guided_velocity(model, torch.tensor([0]), 10, guide=model, ag_scale=1.5, ig_scale=2.0)


# ---- the token-conditioned backbone -------------------------------------------------------------------------------


def test_the_v2_backbone_is_conditioned_by_its_time_and_class_tokens():
    """No adaLN in the backbone: time and class reach the output only through the tokens appended to the sequence."""
    torch.manual_seed(0)
    model = build_model(model_config("ditdhv2-s", (8, 2, 2), **TINY, **TINY_HEAD)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
        x, t = torch.randn(1, 8, 2, 2), torch.tensor([0.5])
        reference = model(x, t, torch.tensor([3]))
        assert not torch.allclose(reference, model(x, t, torch.tensor([4])))
        model.class_tokens.zero_()
        model.y_embedder.embedding_table.weight.zero_()
        assert torch.equal(model(x, t, torch.tensor([3])), model(x, t, torch.tensor([4])))
        seen = []
        model.blocks[0].register_forward_hook(lambda block, inputs, output: seen.append((inputs[0].shape, inputs[1])))
        model(x, t, torch.tensor([3]))
    assert seen == [((1, 4 + 4 + 8, 32), None)]  # 2 x 2 image tokens, 4 time and 8 class tokens; no condition
    assert not any("adaLN" in key for key in model.state_dict() if key.startswith("blocks."))
    assert model.t_embedder.W.requires_grad  # RAEv2 trains its Fourier frequencies
    assert model.backbone_rope.freqs_cos.shape == (4 + 4 + 8, 16)  # 4 image tokens, then 12 unrotated


def test_interpolate_is_the_convention_the_x_target_assumes():
    x, noise, t = torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0.2, 0.7])
    torch.testing.assert_close(velocity_from_x(x, interpolate(x, noise, t), t), noise - x)


# ---- all of it in a training run ----------------------------------------------------------------------------------


def test_a_run_with_every_raev2_option_learns_its_base_head_and_samples_guided(tmp_path):
    setup = make_setup(tmp_path / "setup", count=32)
    config = load_config(Stage2Config, overrides=[
        f"rae={setup['rae']}", f"latents={setup['cache']}", f"run_dir={tmp_path / 'run'}", "train.epochs=20",
        "train.micro_batch_size=16", "train.logging.every_steps=0", "train.logging.progress_bar=false",
        "train.logging.tensorboard=false", "preview.images=0", "train.ema.decay=0", "train.schedule.kind=constant",
        "train.optim.name=muon", "train.optim.lr=2e-3", "model.name=ditdhv2-s", "model.num_classes=10",
        "model.depth=2", "model.width=64", "model.num_heads=2", "model.head_depth=1", "model.head_width=128",
        "model.head_num_heads=2", "model.prediction=x", "model.base_depth=1", "flow.base_loss_weight=1.0"])
    assert train_diffusion(config).reason == "finished"
    model, info = load_denoiser(tmp_path / "run")
    assert isinstance(info.model, DiTDHv2Config) and (info.model.prediction, info.model.base_depth) == ("x", 1)
    assert model.base_head.linear.weight.abs().sum() > 0  # trained from its zero start by its loss term
    samples = {}
    for ig in (1.0, 3.0):
        out = tmp_path / f"ig{ig}.npz"
        generate(SampleConfig(ckpt=str(tmp_path / "run"), num=4, steps=4, ig=ig, grid=None, out=str(out)))
        samples[ig] = np.load(out)["arr_0"].astype(int)
    assert np.abs(samples[1.0] - samples[3.0]).mean() > 0.5


# ---- the RAEv2 ImageNet recipes -------------------------------------------------------------------------------------


def test_the_raev2_imagenet_recipe_is_raev2s_model_and_schedule():
    config = load_config(Stage2Config, RECIPES / "stage2" / "raev2_imagenet256_k7.yaml")
    architecture = config.model.architecture(tuple(config.latent_shape))
    with torch.device("meta"):
        model = build_model(architecture)
    # RAEv2's own DiTwDDTHeadIG at this size (its configs' arguments) counts 875,216,500 parameters on the meta
    # device (counted with tests/data/raev2/make_ditdh_ig_fixture.py's setup).
    assert sum(p.numel() for p in model.parameters()) == 875_216_500
    assert isinstance(architecture, DiTDHv2Config)
    assert (architecture.depth, architecture.width, architecture.num_heads) == (28, 1440, 20)
    assert (architecture.head_depth, architecture.head_width, architecture.head_num_heads) == (2, 2048, 16)
    assert (architecture.prediction, architecture.base_depth) == ("x", 8)
    assert (architecture.num_time_tokens, architecture.num_class_tokens) == (4, 8)
    assert resolve_shift(config.flow, config.latent_shape) == 8.0  # RAEv2's sqrt(262144 / 4096)
    train = config.train
    assert (train.epochs, train.global_batch_size, train.optim.name, train.optim.lr) == (80, 1024, "muon", 2e-4)
    assert (train.schedule.decay_start_epoch, train.schedule.decay_end_epoch, train.schedule.min_lr) == (25, 50, 2e-5)
    assert train.ema.decay == 0.9995 and train.optim.grad_clip == 1.0


@pytest.mark.parametrize("recipe, config_class", [
    ("stage1/raev2_dinov3-l-k7_decoder-xl", Stage1Config), ("stats/raev2_dinov3-l-k7_imagenet256", StatsConfig),
    ("stage2/raev2_cache_imagenet256_k7", CacheConfig)])
def test_the_raev2_latent_recipes_name_the_k7_latent(recipe, config_class):
    autoencoder = load_config(config_class, recipe).autoencoder
    assert autoencoder.latent_space == "dinov3-l[layers=11,13,15,17,19,21,23]"


def test_a_raev2_decoder_imports_on_the_latent_its_release_path_names(tmp_path):
    """RAEv2's stage1/imagenet/dinov3l-k7/{decoder.pt,stats.pt}: v1's layouts, on DINOv3-L's K = 7 latent."""
    rae = RAE(AutoencoderConfig(encoder="dinov3-l", decoder_size="tiny"), decode_only_encoder("dinov3-l"))
    folder = tmp_path / "stage1" / "imagenet" / "dinov3l-k7"
    folder.mkdir(parents=True)
    torch.save({"ema": official_decoder_state(rae)}, folder / "decoder.pt")
    mean, var = torch.randn(1024, 16, 16), torch.rand(1024, 16, 16) + 0.5
    torch.save({"mean": mean, "var": var}, folder / "stats.pt")
    imported = RAE.from_pretrained(import_rae(folder / "decoder.pt", folder / "stats.pt", tmp_path / "rae"),
                                   decode_only=True)
    assert imported.config.latent_space == "dinov3-l[layers=11,13,15,17,19,21,23]"
    rae.set_stats(mean, var)
    latents = torch.randn(1, 1024, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(imported.decode(latents), rae.decode(latents), rtol=0, atol=0)
