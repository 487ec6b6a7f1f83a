import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from stage2_helpers import TINY, TINY_MODEL, make_rae_dir, make_setup
from torchrun import run_torchrun_code

from raedit.autoencoder import RAE
from raedit.cli import main
from raedit.core.config import RECIPES, load_config
from raedit.core.distributed import init_distributed
from raedit.core.errors import RaeditError
from raedit.data import DataConfig, build_dataset
from raedit.data.image_folder import collate_skipping
from raedit.data.latent_cache import LatentCache
from raedit.diffusion.denoiser_io import load_denoiser, read_denoiser_info
from raedit.diffusion.flow import TimeDistribution, flow_matching_loss
from raedit.models import build_model, model_config
from raedit.train.config import OptimConfig
from raedit.train.ema import EMA
from raedit.train.optim import MuonWithAdamW, build_adamw, build_optimizer, clip_gradients
from raedit.train.stage2 import DiffusionTraining, FlowConfig, Stage2Config, resolve_shift, train_diffusion

CONFIGS = RECIPES / "stage2"


def load_stage2_config(path, overrides=None) -> Stage2Config:
    return load_config(Stage2Config, path, overrides)


def build_denoiser(config: Stage2Config, latent_shape) -> torch.nn.Module:
    return build_model(config.model.architecture(tuple(latent_shape)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    return make_setup(tmp_path_factory.mktemp("stage2"), count=32)


def overrides(setup: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    return [f"rae={setup['rae']}", f"latents={setup['cache']}", f"run_dir={run_dir}",
            "train.micro_batch_size=16", "train.logging.every_steps=0", "train.logging.progress_bar=false",
            "train.logging.tensorboard=false", "preview.images=0", *TINY_MODEL, *extra]


def fixed_loss(model: torch.nn.Module, latents: torch.Tensor, labels: torch.Tensor, alpha: float) -> float:
    """The flow-matching loss of `model` on the same times and noise each call (8 draws of the set)."""
    model.eval()
    generator = torch.Generator().manual_seed(123)
    times = TimeDistribution("uniform")
    with torch.no_grad():
        losses = [flow_matching_loss(model, latents, labels, times, alpha, generator) for _ in range(8)]
    return float(torch.stack(losses).mean())


def test_training_on_cached_latents_lowers_the_loss_and_exports_the_model(setup, tmp_path):
    config = load_stage2_config(None, overrides(setup, tmp_path / "run", "train.epochs=60", "train.optim.lr=2e-3",
                                                "train.ema.decay=0", "train.schedule.kind=constant"))
    torch.manual_seed(config.train.seed)
    initial = build_denoiser(config, (112, 2, 2))
    with torch.no_grad():  # a live output layer, so the untrained model predicts something
        for parameter in initial.final_layer.parameters():
            parameter.normal_(0, 0.02)
    result = train_diffusion(config)
    assert result.reason == "finished" and result.progress.step == 120
    model, info = load_denoiser(tmp_path / "run")
    assert info.latent_shape == (112, 2, 2) and info.num_classes == 10 and info.model == config.model.architecture(
        (112, 2, 2))
    assert info.shift_alpha == pytest.approx(math.sqrt(112 * 4 / 4096)) and info.encoder == "effnet-lite0"
    assert info.rae == str(setup["rae"])
    assert sorted(p.name for p in (tmp_path / "run" / "model").iterdir()) == ["model.safetensors", "model_config.json"]
    cache = LatentCache(setup["cache"])
    rae = RAE.from_pretrained(info.rae)  # the model's latent statistics are its RAE's
    mean, var = rae.latent_mean, rae.latent_var
    raw = torch.stack([cache[i][0] for i in range(len(cache))])
    latents = (raw - mean) / torch.sqrt(var + 1e-5)
    labels = torch.tensor([cache[i][1] for i in range(len(cache))])
    before = fixed_loss(initial, latents, labels, info.shift_alpha)
    after = fixed_loss(model, latents, labels, info.shift_alpha)
    assert before == pytest.approx(2.0, abs=0.3)  # E|eps - x|^2 of normalized latents, a near-zero prediction
    assert after < 0.7 * before  # measured: 2.00 -> 1.24


def test_resumed_run_ends_where_an_uninterrupted_run_ends(setup, tmp_path):
    straight = load_stage2_config(None, overrides(setup, tmp_path / "a", "train.epochs=3"))
    train_diffusion(straight)
    first = load_stage2_config(None, overrides(setup, tmp_path / "b", "train.epochs=3", "train.stop_after_steps=2"))
    assert train_diffusion(first).reason == "stopped"
    checkpoint = next((tmp_path / "b" / "checkpoints").iterdir())
    assert read_denoiser_info(checkpoint) == read_denoiser_info(tmp_path / "a")  # every checkpoint describes its model
    resumed = train_diffusion(load_stage2_config(None, overrides(setup, tmp_path / "b", "train.epochs=3")),
                              resume=True)
    assert resumed.progress.step == 6
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    # a training checkpoint loads as a denoiser too (an earlier model, e.g. the AutoGuidance guide)
    model, info = load_denoiser(checkpoint)
    assert info.latent_shape == (112, 2, 2)
    ema = load_file(str(checkpoint / "ema-denoiser.safetensors"))
    torch.testing.assert_close(model.state_dict()["final_layer.linear.weight"], ema["final_layer.linear.weight"])


def test_muon_takes_the_matrices_adamw_the_rest_and_steps_as_the_two_would():
    """RAEv2's optimizer: torch's Muon on every 2-D parameter, AdamW on the others, one step = both steps."""
    torch.manual_seed(0)
    model = build_model(model_config("ditdh-s", (112, 2, 2), **TINY))
    params = [p for p in model.parameters() if p.requires_grad]
    config = OptimConfig(name="muon", lr=1e-2, weight_decay=0.1)
    optimizer = build_optimizer(params, config)
    assert isinstance(optimizer, MuonWithAdamW)
    matrices = [p for p in params if p.ndim == 2]
    assert {id(p) for p in optimizer.muon.param_groups[0]["params"]} == {id(p) for p in matrices}
    assert {id(p) for p in optimizer.adamw.param_groups[0]["params"]} == {id(p) for p in params if p.ndim != 2}
    assert any(p is model.y_embedder.embedding_table.weight for p in matrices)  # the label table too
    copies = [p.detach().clone().requires_grad_() for p in params]
    alone = [torch.optim.Muon([c for c in copies if c.ndim == 2], lr=1e-2, weight_decay=0.1, momentum=0.95,
                              nesterov=True, adjust_lr_fn="match_rms_adamw"),
             torch.optim.AdamW([c for c in copies if c.ndim != 2], lr=1e-2, betas=(0.9, 0.95), eps=1e-8,
                               weight_decay=0.1)]
    for _ in range(2):
        for p, c in zip(params, copies):
            p.grad = torch.randn_like(p)
            c.grad = p.grad.clone()
        optimizer.step()
        for inner in alone:
            inner.step()
    for p, c in zip(params, copies):
        torch.testing.assert_close(p, c, rtol=0, atol=0)
    optimizer.param_groups[0]["lr"] = 5e-3  # one schedule: the loop sets the groups, the inner steps read them
    assert optimizer.muon.param_groups[0]["lr"] == 5e-3


def test_a_muon_run_resumes_bit_identical_and_differs_from_adamw(setup, tmp_path):
    muon = ("train.epochs=3", "train.optim.name=muon")
    train_diffusion(load_stage2_config(None, overrides(setup, tmp_path / "a", *muon)))
    first = load_stage2_config(None, overrides(setup, tmp_path / "b", *muon, "train.stop_after_steps=2"))
    assert train_diffusion(first).reason == "stopped"
    resumed = train_diffusion(load_stage2_config(None, overrides(setup, tmp_path / "b", *muon)), resume=True)
    assert resumed.progress.step == 6
    train_diffusion(load_stage2_config(None, overrides(setup, tmp_path / "adamw", "train.epochs=3")))
    a, b, adamw = (load_file(str(tmp_path / name / "model" / "model.safetensors")) for name in ("a", "b", "adamw"))
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(a["final_layer.linear.weight"], adamw["final_layer.linear.weight"])


def test_images_encoded_on_the_fly_equal_the_normalized_cached_latents(setup):
    config = load_stage2_config(None, overrides(setup, Path("unused"), "latents=null", "data.limit=8"))
    on_the_fly = DiffusionTraining(config, init_distributed())
    images, labels, _ = collate_skipping([build_dataset(DataConfig(limit=8))[i] for i in range(8)])
    encoded = on_the_fly.latents_of((images, labels))
    cached = DiffusionTraining(load_stage2_config(None, overrides(setup, Path("unused"))), init_distributed())
    cache = LatentCache(setup["cache"])
    raw = torch.stack([cache[i][0] for i in range(8)])
    torch.testing.assert_close(encoded, cached.latents_of((raw, labels)), rtol=1e-3, atol=1e-3)
    assert encoded.shape == (8, 112, 2, 2)


def test_images_are_encoded_in_fp32_inside_a_bf16_training_step(setup):
    from raedit.train.precision import autocast_context

    config = load_stage2_config(None, overrides(setup, Path("unused"), "latents=null", "data.limit=8",
                                                "train.precision.autocast=bf16"))
    training = DiffusionTraining(config, init_distributed())
    images, labels, _ = collate_skipping([build_dataset(DataConfig(limit=8))[i] for i in range(8)])
    with autocast_context(torch.device("cpu"), "bf16"):  # as the loop runs the loss
        in_step = training.latents_of((images, labels))
    with torch.no_grad():
        fp32 = training.rae.encode(images)
    assert in_step.dtype == torch.float32
    torch.testing.assert_close(in_step, fp32, rtol=0, atol=0)  # not the encoder's bf16 rounding


def test_training_on_images_runs_and_records_its_preview_grids(setup, tmp_path):
    config = load_stage2_config(None, overrides(setup, tmp_path / "run", "latents=null", "data.limit=32",
                                                "train.epochs=1", "preview.images=4", "preview.steps=3",
                                                "train.logging.image_every_steps=1"))
    assert train_diffusion(config).progress.step == 2
    grids = sorted(p.name for p in (tmp_path / "run" / "images").iterdir())
    assert grids == ["samples-step00000001.png", "samples-step00000002.png"]


@pytest.mark.parametrize("ema", ["true", "false"])
def test_previews_leave_training_unchanged_and_the_export_holds_the_ema_or_live_weights(setup, tmp_path, ema):
    settings = ("train.epochs=1", f"train.ema.enabled={ema}", "train.ema.decay=0.5", "preview.steps=2")
    plain = load_stage2_config(None, overrides(setup, tmp_path / "plain", *settings))
    previewed = load_stage2_config(None, overrides(setup, tmp_path / "previewed", *settings, "preview.images=2",
                                                   "train.logging.image_every_steps=1"))
    train_diffusion(plain)
    train_diffusion(previewed)
    assert len(list((tmp_path / "previewed" / "images").iterdir())) == 2
    exports = [load_file(str(tmp_path / run / "model" / "model.safetensors")) for run in ("plain", "previewed")]
    assert all(torch.equal(exports[0][key], exports[1][key]) for key in exports[0])  # sampling drew no randomness
    checkpoint = tmp_path / "plain" / "checkpoints" / "step-00000002"
    kept = load_file(str(checkpoint / ("ema-denoiser.safetensors" if ema == "true" else "model-denoiser.safetensors")))
    assert all(torch.equal(kept[key], exports[0][key]) for key in kept)
    assert (checkpoint / "ema-denoiser.safetensors").is_file() == (ema == "true")
    model, _ = load_denoiser(checkpoint)  # a checkpoint loads either way
    assert all(torch.equal(value, kept[key]) for key, value in model.state_dict().items())


def test_fsdp_run_previews_and_exports_its_sharded_ema(setup, tmp_path):
    """Two processes with FSDP2: the EMA twin is sharded like the model, every rank samples the previews, the
    export gathers the EMA weights."""
    settings = overrides(setup, tmp_path / "run", "train.epochs=1", "train.micro_batch_size=8",
                         "train.distributed.strategy=fsdp", "preview.images=2", "preview.steps=2",
                         "train.logging.image_every_steps=1")
    result = run_torchrun_code(tmp_path, f"""
        from raedit.core.config import load_config
        from raedit.train.stage2 import Stage2Config, train_diffusion
        train_diffusion(load_config(Stage2Config, overrides={settings!r}))
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "images").iterdir()) == ["samples-step00000001.png",
                                                                  "samples-step00000002.png"]
    ema = load_file(str(run / "checkpoints" / "step-00000002" / "ema-denoiser.safetensors"))
    model, info = load_denoiser(run)
    assert info.latent_shape == (112, 2, 2)
    assert all(torch.equal(value, ema[key]) for key, value in model.state_dict().items())


def test_shift_is_derived_from_the_latent_shape_unless_overridden():
    assert resolve_shift(FlowConfig(), (768, 16, 16)) == pytest.approx(math.sqrt(48))
    assert resolve_shift(FlowConfig(), (768, 32, 32)) == pytest.approx(math.sqrt(192))
    assert resolve_shift(FlowConfig(shift="none"), (768, 16, 16)) == 1.0
    assert resolve_shift(FlowConfig(shift="3.5"), (768, 16, 16)) == 3.5
    with pytest.raises(RaeditError, match="auto, none or a positive number"):
        resolve_shift(FlowConfig(shift="large"), (768, 16, 16))


def test_bad_inputs_are_one_line_errors(setup, tmp_path):
    ctx = init_distributed()
    wrong_shape = load_stage2_config(None, overrides(setup, tmp_path, "latent_shape=[768,16,16]"))
    with pytest.raises(RaeditError, match=r"latent_shape is \(768, 16, 16\), but the RAE .* gives latents "
                                          r"\(112, 2, 2\)"):
        DiffusionTraining(wrong_shape, ctx)
    no_stats = load_stage2_config(None, overrides(setup, tmp_path, f"rae={make_rae_dir(tmp_path / 'plain')}"))
    with pytest.raises(RaeditError, match=r"has no latent statistics: store them in it with `raedit stats CONFIG rae="):
        DiffusionTraining(no_stats, ctx)
    too_few = load_stage2_config(None, overrides(setup, tmp_path, "model.num_classes=5"))
    with pytest.raises(RaeditError, match="10 classes"):
        DiffusionTraining(too_few, ctx)
    other_rae = make_rae_dir(tmp_path / "rae64", stats=(torch.zeros(112, 4, 4), torch.ones(112, 4, 4)), input_size=64)
    mismatched = load_stage2_config(None, overrides(setup, tmp_path, f"rae={other_rae}"))
    with pytest.raises(RaeditError, match=r"the latent cache .* holds latents \(112, 2, 2\) of encoder "
                                          r"'effnet-lite0', the RAE gives \(112, 4, 4\)"):
        DiffusionTraining(mismatched, ctx)
    with pytest.raises(RaeditError, match=r"config key 'stats' .* is gone: the RAE holds its latent statistics"):
        load_stage2_config(None, overrides(setup, tmp_path, "stats=x.safetensors"))


def test_train_command_reports_a_bad_key_in_one_line(tmp_path, capsys):
    assert main(["train", str(CONFIGS / "demo.yaml"), "model.widht=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown config key 'model.widht'" in err


PARAMETERS_M = {"imagenet256_ditdh-xl": 838.7, "imagenet256_ditdh-s": 196.5, "imagenet512_ditdh-xl": 838.7}


@pytest.mark.parametrize("name", sorted(PARAMETERS_M))
def test_imagenet_recipes_instantiate(name):
    config = load_stage2_config(CONFIGS / f"{name}.yaml")
    with torch.device("meta"):
        model = build_denoiser(config, config.latent_shape)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    # the 512 px model differs only by its fixed position table (1024 instead of 256 positions of 1152)
    extra = (1024 - 256) * 1152 / 1e6 if "512" in name else 0.0
    assert count == pytest.approx(PARAMETERS_M[name] + extra, rel=0.01)
    train = config.train
    assert train.epochs == {"imagenet256_ditdh-xl": 800, "imagenet256_ditdh-s": 14, "imagenet512_ditdh-xl": 400}[name]
    assert (train.optim.lr, train.optim.beta1, train.optim.beta2, train.optim.weight_decay) == (2e-4, 0.9, 0.95, 0)
    assert train.optim.grad_clip == 1.0 and train.ema.decay == 0.9995
    assert (train.schedule.kind, train.schedule.decay_start_epoch, train.schedule.decay_end_epoch,
            train.schedule.min_lr) == ("linear_decay", 40, 800, 2e-5)
    assert train.global_batch_size == 1024  # the paper's batch, whatever the number of processes
    on_8 = train.for_processes(8)
    assert on_8.micro_batch_size * on_8.grad_accum_steps * 8 == 1024
    assert config.flow.time_distribution == "logit-normal" and config.flow.shift == "auto"
    side = 32 if "512" in name else 16
    assert config.latent_shape == [768, side, side] and config.rae is not None
    assert resolve_shift(config.flow, config.latent_shape) == pytest.approx(math.sqrt(768 * side * side / 4096))


def test_demo_recipe_fits_the_width_rule_and_its_latents():
    config = load_stage2_config(CONFIGS / "demo.yaml")
    assert config.latent_shape == [112, 4, 4] and config.model.head_width >= 112
    model = build_denoiser(config, config.latent_shape)
    assert sum(p.numel() for p in model.parameters()) < 20e6


@pytest.mark.slow
@pytest.mark.parametrize("name", ["imagenet256_ditdh-s", "imagenet256_ditdh-xl", "imagenet512_ditdh-xl"])
def test_imagenet_recipes_take_a_training_step_at_batch_1(name):
    """The recipe's model, optimizer, EMA and loss for one step on random latents (XL: about 17 GB of memory)."""
    config = load_stage2_config(CONFIGS / f"{name}.yaml")
    torch.manual_seed(0)
    model = build_denoiser(config, config.latent_shape).train()
    optimizer = build_adamw(model.parameters(), config.train.optim)
    ema = EMA(model, config.train.ema.decay)
    latents, labels = torch.randn(1, *config.latent_shape), torch.tensor([3])
    times = TimeDistribution(config.flow.time_distribution, config.flow.mu, config.flow.sigma, config.flow.t_max)
    alpha = resolve_shift(config.flow, config.latent_shape)
    loss = flow_matching_loss(model, latents, labels, times, alpha)
    loss.backward()
    clip_gradients(model.parameters(), config.train.optim.grad_clip)
    before = model.final_layer.linear.weight.detach().clone()
    optimizer.step()
    ema.update(model)
    assert loss.item() == pytest.approx(2.0, rel=0.2)  # zero-initialized output: E|eps - x|^2 of N(0, 1) data
    assert not torch.equal(model.final_layer.linear.weight, before)
    assert not model.pos_embed.requires_grad and model.pos_embed.grad is None  # the frozen table stays out
