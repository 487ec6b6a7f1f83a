from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torchrun import run_torchrun_code

from raedit.core.config import load_config
from raedit.core.errors import RaeditError
from raedit.data.fashion_mnist import load_fashion_mnist, to_rgb
from raedit.encoders import build_encoder
from raedit.jobs.stats import StatsConfig, compute_latent_stats
from raedit.latent_stats import RunningMoments, load_latent_stats, save_latent_stats


def test_streaming_moments_equal_the_direct_computation_for_any_batching():
    torch.manual_seed(0)
    data = torch.randn(301, 5, 3, 2) * torch.linspace(0.1, 10, 30).view(5, 3, 2) + 1000.0
    direct_mean, direct_var = data.double().mean(0), data.double().var(0, unbiased=False)
    for batch in (1, 7, 64, 301):
        moments = RunningMoments((5, 3, 2))
        for chunk in data.split(batch):
            moments.update(chunk)
        assert moments.count == 301
        torch.testing.assert_close(moments.mean, direct_mean, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(moments.variance, direct_var, rtol=1e-9, atol=1e-9)


def test_merging_shards_equals_one_pass():
    data = torch.randn(100, 4) * 3 + 2
    whole = RunningMoments((4,))
    whole.update(data)
    left, right = RunningMoments((4,)), RunningMoments((4,))
    left.update(data[:37])
    right.update(data[37:])
    left.merge(right.count, right.mean, right.m2)
    torch.testing.assert_close(left.mean, whole.mean)
    torch.testing.assert_close(left.m2, whole.m2)
    with pytest.raises(RaeditError, match="does not match"):
        whole.update(torch.zeros(3, 5))


def test_stats_file_round_trip_and_shape_check(tmp_path):
    path = tmp_path / "s.safetensors"
    save_latent_stats(path, torch.ones(3, 2, 2), torch.full((3, 2, 2), 2.0), "effnet-lite0", 5)
    mean, var = load_latent_stats(path, (3, 2, 2), "effnet-lite0")
    assert torch.equal(var, torch.full((3, 2, 2), 2.0))
    with pytest.raises(RaeditError, match="have shape"):
        load_latent_stats(path, (4, 2, 2))
    with pytest.raises(RaeditError, match="made for encoder 'effnet-lite0'"):
        load_latent_stats(path, (3, 2, 2), "dinov2-b")
    torch.save({"mean": torch.zeros(1, 3, 2, 2), "var": torch.ones(1, 3, 2, 2)}, tmp_path / "stat.pt")
    mean, _ = load_latent_stats(tmp_path / "stat.pt", (3, 2, 2))  # the official format, batch axis squeezed
    assert mean.shape == (3, 2, 2)


def direct_fashion_stats(count: int, input_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    encoder = build_encoder("effnet-lite0", input_size=input_size)
    images, _ = load_fashion_mnist("train")
    tokens = encoder.encode(to_rgb(images[:count], 32)).double()
    h, w = encoder.grid
    latents = tokens.transpose(1, 2).reshape(count, encoder.channels, h, w)
    return latents.mean(0), latents.var(0, unbiased=False)


def stats_config(tmp_path: Path, count: int) -> StatsConfig:
    return load_config(StatsConfig, overrides=[
        "autoencoder.encoder=effnet-lite0", "autoencoder.encoder_input_size=32", "data.name=fashion-mnist",
        "data.resolution=32", f"data.limit={count}", "batch_size=7", f"out={tmp_path / 'stats.safetensors'}",
    ])


def test_stats_job_matches_direct_computation(tmp_path):
    config = stats_config(tmp_path, 40)
    compute_latent_stats(config)
    mean, var = load_latent_stats(config.out, (112, 2, 2), "effnet-lite0")
    direct_mean, direct_var = direct_fashion_stats(40, 32)
    torch.testing.assert_close(mean.double(), direct_mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(var.double(), direct_var, rtol=1e-4, atol=1e-5)
    with safe_open(config.out, "pt") as handle:
        assert handle.metadata()["count"] == "40"


def test_stats_job_under_torchrun_merges_ranks_exactly(tmp_path):
    result = run_torchrun_code(tmp_path, f"""
        import os
        from raedit.core.config import load_config
        from raedit.jobs.stats import StatsConfig, compute_latent_stats
        config = load_config(StatsConfig, overrides=[
            "autoencoder.encoder=effnet-lite0", "autoencoder.encoder_input_size=32", "data.resolution=32",
            "data.limit=41", "batch_size=5", "out={tmp_path / 'dist.safetensors'}"])
        moments = compute_latent_stats(config)
        with open("{tmp_path}/count" + os.environ["RANK"], "w") as handle:
            handle.write(str(moments.count))
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    # every rank holds the merged moments of all 41 images
    assert [(tmp_path / f"count{rank}").read_text() for rank in (0, 1)] == ["41", "41"]
    mean, var = load_latent_stats(tmp_path / "dist.safetensors", (112, 2, 2))
    direct_mean, direct_var = direct_fashion_stats(41, 32)
    torch.testing.assert_close(mean.double(), direct_mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(var.double(), direct_var, rtol=1e-4, atol=1e-5)
