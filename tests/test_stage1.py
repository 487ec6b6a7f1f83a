import json

import pytest
import torch
from safetensors.torch import load_file
from torchrun import run_torchrun_code

from raedit.autoencoder import RAE
from raedit.core.config import load_config
from raedit.core.errors import RaeditError
from raedit.train.stage1 import Stage1Config, train_decoder

TINY = [
    "autoencoder.encoder=effnet-lite0", "autoencoder.encoder_input_size=64", "autoencoder.decoder_size=tiny",
    "autoencoder.decoder_patch_size=8", "autoencoder.noise_tau=2.0",
    "data.resolution=32", "eval_data.resolution=32", "loss.discriminator_input_size=64",
    "train.micro_batch_size=8", "train.logging.every_steps=1", "train.logging.tensorboard=false",
    "train.logging.progress_bar=false", "preview_images=4", "eval_images=8",
]


def tiny_config(tmp_path, *extra: str) -> Stage1Config:
    return load_config(Stage1Config, overrides=[*TINY, f"run_dir={tmp_path / 'run'}", *extra])


def logged(run_dir, key):
    rows = [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
    return [row[key] for row in rows if key in row]


def test_decoder_training_lowers_l1_and_writes_grids_and_a_loadable_rae(tmp_path):
    torch.manual_seed(0)
    config = tiny_config(tmp_path, "data.limit=64", "train.epochs=6", "train.logging.image_every_steps=24",
                         "train.optim.lr=1e-3", "train.schedule.kind=constant", "train.ema.decay=0.9",
                         "loss.disc_start_epoch=4", "loss.gan_start_epoch=5")
    result, _ = train_decoder(config)
    run_dir = tmp_path / "run"
    assert result.reason == "finished" and result.progress.step == 48
    l1 = logged(run_dir, "decoder/l1")
    assert len(l1) == 48
    first, last = sum(l1[:8]) / 8, sum(l1[-8:]) / 8
    assert last < 0.6 * first  # reconstruction L1 falls
    assert logged(run_dir, "decoder/gan")  # the G-side GAN term switched on at its epoch
    assert len(logged(run_dir, "discriminator/loss")) == 16  # D steps only from epoch 4 (2 epochs x 8 steps)
    assert sorted(p.name for p in (run_dir / "images").iterdir()) == [
        "reconstruction-step00000024.png", "reconstruction-step00000048.png"]
    metrics = json.loads((run_dir / "recon_metrics.json").read_text())
    rae = RAE.from_pretrained(run_dir / "rae").eval()
    assert metrics["images"] == 8 and metrics["psnr"] > 10
    assert rae.image_size == (32, 32)


def test_targets_that_do_not_match_the_decoder_output_are_an_error(tmp_path):
    with pytest.raises(RaeditError, match="data.resolution is 64, but the decoder outputs 32x32"):
        train_decoder(tiny_config(tmp_path, "data.resolution=64"))


def test_empty_image_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RaeditError, match="no images"):
        train_decoder(tiny_config(tmp_path, "data.name=folder", f"data.path={tmp_path / 'empty'}"))


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from raedit.train import stage1

    calls = {"n": 0}
    original = stage1.l1_loss

    def poisoned(images, targets):
        calls["n"] += 1
        value = original(images, targets)
        return value * float("nan") if calls["n"] == 5 else value

    monkeypatch.setattr(stage1, "l1_loss", poisoned)
    config = tiny_config(tmp_path, "data.limit=64", "train.epochs=1", "train.checkpoint.every_steps=2")
    with pytest.raises(RaeditError, match=r"non-finite loss .* at step 5 .*step-00000004"):
        train_decoder(config)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000002",
                                                                                      "step-00000004"]


def test_two_ranks_hold_identical_decoder_and_discriminator_weights(tmp_path):
    result = run_torchrun_code(tmp_path, f"""
        import os
        import torch
        from safetensors.torch import save_file
        from raedit.core.config import load_config
        from raedit.train.parallel import unwrap_model
        from raedit.train.stage1 import Stage1Config, train_decoder
        overrides = {TINY!r} + ["data.limit=32", "train.epochs=1", "loss.disc_start_epoch=0",
                                "loss.gan_start_epoch=0", "run_dir={tmp_path / 'run'}"]
        torch.manual_seed(int(os.environ["RANK"]))  # different initial weights: DDP must broadcast rank 0's
        result, training = train_decoder(load_config(Stage1Config, overrides=overrides))
        state = {{"decoder." + k: v for k, v in unwrap_model(training.decoder).state_dict().items()}}
        heads = unwrap_model(training.discriminator).heads.state_dict()
        state.update({{"heads." + k: v for k, v in heads.items()}})
        save_file({{k: v.contiguous() for k, v in state.items()}}, "{tmp_path}/rank" + os.environ["RANK"] + ".safetensors")
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # 2 steps of 8 per rank (32 images / 2 ranks / 8); one checkpoint folder, written by rank 0
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-00000002"]


def test_fsdp_run_previews_scores_and_exports_its_sharded_ema_decoder(tmp_path):
    """Two processes with FSDP2 on the decoder: the EMA decoder is sharded like it, every rank reconstructs the
    previews and the held-out images, and the exported RAE holds the gathered EMA weights."""
    overrides = [*TINY, "data.limit=32", "train.epochs=1", "train.distributed.strategy=fsdp",
                 "train.logging.image_every_steps=1", "train.ema.decay=0.5", f"run_dir={tmp_path / 'run'}"]
    result = run_torchrun_code(tmp_path, f"""
        from raedit.core.config import load_config
        from raedit.train.stage1 import Stage1Config, train_decoder
        train_decoder(load_config(Stage1Config, overrides={overrides!r}))
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "images").iterdir()) == ["reconstruction-step00000001.png",
                                                                  "reconstruction-step00000002.png"]
    ema = load_file(str(run / "checkpoints" / "step-00000002" / "ema-decoder.safetensors"))
    exported = RAE.from_pretrained(run / "rae").decoder.state_dict()
    assert all(torch.equal(value, ema[key]) for key, value in exported.items())
    assert json.loads((run / "recon_metrics.json").read_text())["images"] == 8


def test_the_discriminator_sees_clean_reconstructions_by_the_decoder_after_its_step(tmp_path, monkeypatch):
    from raedit.core.distributed import init_distributed
    from raedit.train import stage1
    from raedit.train.loop import StepContext

    torch.manual_seed(0)
    training = stage1.DecoderTraining(tiny_config(tmp_path), init_distributed())
    images = torch.rand(4, 3, 32, 32)
    training.decoder_loss((images, None), StepContext(0, 0, 0, 1, "decoder"))
    with torch.no_grad():  # the decoder's optimizer step
        for parameter in training.rae.decoder.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    seen = {}

    def capture(discriminator, real, fake, *args):
        seen["fake"] = fake
        return fake.mean()

    monkeypatch.setattr(stage1, "discriminator_loss", capture)
    training.discriminator_loss((images, None), StepContext(0, 0, 0, 1, "discriminator"))
    rae = training.rae
    clean = rae.decode(rae.normalize(rae.encode_raw(images)))  # noise_tau is 2.0: noisy latents would differ
    torch.testing.assert_close(seen["fake"], clean, rtol=0, atol=0)


def test_the_discriminator_schedule_starts_with_its_first_update(tmp_path):
    config = tiny_config(tmp_path, "data.limit=32", "train.epochs=3", "train.schedule.kind=constant",
                         "loss.disc_start_epoch=1", "loss.gan_start_epoch=2", "disc_schedule.warmup_epochs=1",
                         "disc_schedule.decay_end_epoch=2", "disc_schedule.min_lr=1e-5")
    result, _ = train_decoder(config)
    assert result.reason == "finished"
    rates = logged(tmp_path / "run", "discriminator/lr")
    base = config.train.optim.lr
    # 4 steps an epoch; D updates in epochs 1 and 2: warm-up over its first 4 updates from base / 4, then cosine
    # from base to 1e-5 over its second epoch. (Counted from step 0, its warm-up would be over before it started.)
    assert rates[:4] == pytest.approx([base / 4, base / 2, 3 * base / 4, base])
    assert rates[4] == pytest.approx(base) and rates[5] < rates[4] and len(rates) == 8
    assert logged(tmp_path / "run", "decoder/lr") == pytest.approx([base] * 12)


def test_training_on_a_latent_cache_equals_encoding_every_batch(tmp_path):
    """The frozen encoder gives the cached latents again, so the two runs take the same steps (up to the float
    rounding of batched vs. cached encoding); the discriminator phase reads the cache too."""
    from stage2_helpers import cache_config

    from raedit.jobs.cache_latents import cache_latents

    cache_latents(cache_config(tmp_path / "cache", 16, **{"autoencoder.encoder_input_size": "64"}))
    runs = {}
    for name, extra in (("encoded", []), ("cached", [f"latents={tmp_path / 'cache'}"])):
        torch.manual_seed(0)
        config = tiny_config(tmp_path / name, "data.limit=16", "train.epochs=2", "loss.disc_start_epoch=1",
                             "loss.gan_start_epoch=1", "train.ema.decay=0.5", *extra)
        result, _ = train_decoder(config)
        assert result.reason == "finished" and result.progress.step == 4
        runs[name] = {key: logged(tmp_path / name / "run", key)
                      for key in ("decoder/l1", "decoder/perceptual", "discriminator/loss")}
    assert len(runs["cached"]["discriminator/loss"]) == 2
    for key, values in runs["encoded"].items():
        assert runs["cached"][key] == pytest.approx(values, rel=1e-4), key


def test_a_latent_cache_of_another_encoder_or_other_images_is_refused(tmp_path):
    from stage2_helpers import cache_config

    from raedit.jobs.cache_latents import cache_latents

    cache_latents(cache_config(tmp_path / "cache", 8))  # 32 px input: latents 112 x 2 x 2
    with pytest.raises(RaeditError, match=r"holds latents \(112, 2, 2\) .* gives \(112, 4, 4\)"):
        train_decoder(tiny_config(tmp_path, "data.limit=8", f"latents={tmp_path / 'cache'}"))
    with pytest.raises(RaeditError, match="made of other data"):
        train_decoder(tiny_config(tmp_path, "data.limit=4", f"latents={tmp_path / 'cache'}",
                                  "autoencoder.encoder_input_size=32", "autoencoder.decoder_patch_size=16"))


def test_the_perceptual_term_starts_at_its_epoch(tmp_path):
    config = tiny_config(tmp_path, "data.limit=16", "train.epochs=2", "loss.perceptual_start_epoch=1",
                         "loss.disc_start_epoch=5", "loss.gan_start_epoch=5")
    result, _ = train_decoder(config)
    assert result.reason == "finished" and result.progress.step == 4
    rows = [json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "decoder/l1" in row]
    assert ["decoder/perceptual" in row for row in steps] == [False, False, True, True]
    for row in steps:  # the loss is L1 alone, then L1 + the perceptual term
        assert row["decoder/loss"] == pytest.approx(row["decoder/l1"] + row.get("decoder/perceptual", 0.0), rel=1e-5)
