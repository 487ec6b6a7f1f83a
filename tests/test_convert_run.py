"""Run directories of raedit 0.1: a one-line error that says how to convert them, and `raedit convert-run`."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from stage2_helpers import make_rae_dir

from raedit.autoencoder import RAE
from raedit.cli import main
from raedit.core.config import load_config
from raedit.core.errors import RaeditError
from raedit.diffusion.denoiser_io import DenoiserInfo, load_denoiser, save_denoiser
from raedit.jobs.sample import SampleConfig, generate
from raedit.latent_stats import save_latent_stats
from raedit.models import build_model, model_config
from raedit.train.checkpoint import checkpoint_problem
from raedit.train.stage2 import Stage2Config

ARGS = dict(depth=1, width=64, num_heads=2, head_depth=1, head_width=128, head_num_heads=2, num_classes=10,
            class_dropout_prob=0.1)


def old_run(root: Path, rae: Path, stats: tuple[torch.Tensor, torch.Tensor]) -> Path:
    """A stage-2 run directory as raedit 0.1 wrote it: config.yaml with a statistics file, an export with the
    model by name and arguments and a copy of the statistics, and a checkpoint without a model description."""
    run = root / "run"
    save_latent_stats(root / "stats.safetensors", *stats, "effnet-lite0", count=10)
    config = {"rae": str(rae), "stats": str(root / "stats.safetensors"), "latents": None, "latent_shape": [112, 2, 2],
              "model": {"name": "ditdh-s", **ARGS, "qk_norm": None},
              "flow": {"time_distribution": "logit-normal", "mu": 0.0, "sigma": 1.0, "t_max": 0.999, "shift": "auto",
                       "shift_base_dim": 4096}, "run_dir": str(run)}
    (run / "model").mkdir(parents=True)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(config))
    torch.manual_seed(0)
    weights = build_model(model_config("ditdh-s", (112, 2, 2), **ARGS)).state_dict()
    save_file(weights, str(run / "model" / "model.safetensors"))
    (run / "model" / "model_config.json").write_text(json.dumps({
        "model_name": "ditdh-s", "model_args": ARGS, "latent_shape": [112, 2, 2], "num_classes": 10,
        "shift_alpha": 0.33, "rae": str(rae), "encoder": "effnet-lite0"}))
    save_latent_stats(run / "model" / "latent_stats.safetensors", *stats, "effnet-lite0", count=0)
    checkpoint = run / "checkpoints" / "step-00000002"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.yaml").write_text(OmegaConf.to_yaml(config))
    save_file(weights, str(checkpoint / "ema-denoiser.safetensors"))
    sizes = {path.name: path.stat().st_size for path in sorted(checkpoint.iterdir())}
    (checkpoint / "manifest.json").write_text(json.dumps({"format": 1, "step": 2, "files": sizes}))
    return run


@pytest.fixture
def stats() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return torch.randn(112, 2, 2, generator=generator), torch.rand(112, 2, 2, generator=generator) + 0.5


def test_an_old_run_is_a_one_line_error_until_converted(tmp_path, stats, capsys):
    rae = make_rae_dir(tmp_path / "rae")  # as stage 1 writes it: no statistics
    run = old_run(tmp_path, rae, stats)
    for path in (run, run / "checkpoints" / "step-00000002"):
        with pytest.raises(RaeditError, match=r"earlier raedit.*`raedit convert-run RUN_DIR`"):
            load_denoiser(path)

    assert main(["convert-run", str(run)]) == 0
    assert f"its RAE, which holds the latent statistics, is {run / 'rae'}" in capsys.readouterr().out
    model, info = load_denoiser(run)
    assert info.rae == str(run / "rae") and info.latent_shape == (112, 2, 2) and info.encoder == "effnet-lite0"
    assert info.model == model_config("ditdh-s", (112, 2, 2), **ARGS)
    assert info.shift_alpha == pytest.approx((112 * 4 / 4096) ** 0.5)  # Sec. 4.2, from the run's flow settings
    saved = load_file(str(run / "model" / "model.safetensors"))
    assert all(torch.equal(value, saved[key]) for key, value in model.state_dict().items())
    # The statistics the model was trained with now live in its own copy of the RAE, and only there.
    converted = RAE.from_pretrained(info.rae)
    assert torch.equal(converted.latent_mean, stats[0]) and torch.equal(converted.latent_var, stats[1])
    assert not RAE.from_pretrained(rae).normalized  # the original RAE is left as it was
    assert sorted(p.name for p in (run / "model").iterdir()) == ["model.safetensors", "model_config.json"]
    # The checkpoint describes its model, and its manifest still vouches for every file.
    checkpoint = run / "checkpoints" / "step-00000002"
    assert checkpoint_problem(checkpoint) is None and load_denoiser(checkpoint)[1] == info
    # The run's config loads and names the RAE with the statistics.
    assert load_config(Stage2Config, run / "config.yaml").rae == str(run / "rae")
    # It samples what a run saved in the current layout, with the same weights and statistics, samples.
    current = save_denoiser(tmp_path / "current", saved, DenoiserInfo(info.model, info.shift_alpha,
                                                                      str(make_rae_dir(tmp_path / "rae2", stats)),
                                                                      "effnet-lite0"))
    outputs = []
    for checkpoint_dir in (run, current):
        out = tmp_path / f"{checkpoint_dir.name}.npz"
        generate(SampleConfig(ckpt=str(checkpoint_dir), num=4, steps=3, out=str(out), grid=None))
        outputs.append(np.load(out)["arr_0"])
    assert np.array_equal(*outputs) and outputs[0].std() > 0


def test_a_run_whose_rae_holds_its_statistics_keeps_that_rae(tmp_path, stats):
    rae = make_rae_dir(tmp_path / "rae", stats=stats)
    run = old_run(tmp_path, rae, stats)
    assert main(["convert-run", str(run)]) == 0
    assert load_denoiser(run)[1].rae == str(rae) and not (run / "rae").exists()
    assert main(["convert-run", str(tmp_path / "nothing")]) == 2
