from dataclasses import dataclass, field

import pytest

from raedit.core.config import load_config, to_yaml
from raedit.core.errors import RaeditError


@dataclass
class Inner:
    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)


@dataclass
class Outer:
    name: str = "run"
    steps: int = 10
    optim: Inner = field(default_factory=Inner)


def test_defaults_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\noptim:\n  learning_rate: 0.001\n")
    config = load_config(Outer, path, ["optim.betas=[0.5,0.6]", "name=x"])
    assert config == Outer("x", 20, Inner(0.001, (0.5, 0.6)))
    assert "learning_rate: 0.001" in to_yaml(config)


def test_unknown_keys_name_the_closest_valid_key(tmp_path):
    with pytest.raises(RaeditError, match=r"unknown config key 'optim.learning_rat' .*did you mean 'optim.learning_rate'"):
        load_config(Outer, overrides=["optim.learning_rat=3"])
    path = tmp_path / "c.yaml"
    path.write_text("stepz: 3\n")
    with pytest.raises(RaeditError, match=r"'stepz' in .*c.yaml; did you mean 'steps'"):
        load_config(Outer, path)


def test_an_unknown_key_suggests_the_nearest_full_dotted_key(capsys):
    from raedit.cli import main
    from raedit.train.stage2 import Stage2Config

    with pytest.raises(RaeditError, match=r"unknown config key 'train.lr' .*did you mean 'train.optim.lr'\?"):
        load_config(Stage2Config, "stage2/demo", ["train.lr=1"])  # before: "did you mean 'train'?"
    with pytest.raises(RaeditError, match=r"did you mean 'train.ema.decay'\?"):
        load_config(Stage2Config, "stage2/demo", ["train.decay=0.9"])
    with pytest.raises(RaeditError, match=r"did you mean 'model.width'\?"):
        load_config(Stage2Config, "stage2/demo", ["model.widht=3"])
    assert main(["train", "stage2/demo", "train.lr=1"]) == 2
    assert "did you mean 'train.optim.lr'?" in capsys.readouterr().err


def test_bad_values_and_malformed_overrides(tmp_path):
    with pytest.raises(RaeditError, match="invalid config value"):
        load_config(Outer, overrides=["steps=many"])
    with pytest.raises(RaeditError, match="key=value"):
        load_config(Outer, overrides=["steps"])
    with pytest.raises(RaeditError, match="not found"):
        load_config(Outer, tmp_path / "missing.yaml")


OUT_OF_RANGE = [  # (config class path, recipe, override, the message)
    ("stage2", "stage2/demo", "train.epochs=-1", "train.epochs = -1: must be at least 1"),
    ("stage2", "stage2/demo", "train.micro_batch_size=0", "train.micro_batch_size = 0: must be at least 1"),
    ("stage2", "stage2/demo", "train.optim.lr=0", "train.optim.lr = 0.0: must be above 0"),
    ("stage2", "stage2/demo", "train.ema.decay=1.0", "train.ema.decay = 1.0: must be in [0, 1)"),
    ("stage2", "stage2/demo", "train.optim.beta2=-0.1", "train.optim.beta2 = -0.1: must be in [0, 1)"),
    ("stage2", "stage2/demo", "train.schedule.kind=cosin",
     "train.schedule.kind = 'cosin': must be one of constant, cosine, linear_decay"),
    ("stage2", "stage2/demo", "train.schedule.decay_end_epoch=1",
     "train.schedule.decay_end_epoch: 1.0 is before decay_start_epoch 2.0"),
    ("stage2", "stage2/demo", "train.schedule.warmup_epochs=20", "is longer than the run (epochs 8)"),
    ("stage2", "stage2/demo", "train.precision.autocast=fp16", "must be one of fp32, bf16"),
    ("stage2", "stage2/demo", "model.class_dropout_prob=1.5", "model.class_dropout_prob = 1.5: must be in [0, 1)"),
    ("stage2", "stage2/demo", "preview.sampler=rk4", "preview.sampler = 'rk4': must be one of euler, heun, sde"),
    ("stage2", "stage2/demo", "data.resolution=0", "data.resolution = 0: must be at least 1"),
    ("stage1", "stage1/demo", "autoencoder.decoder_patch_size=0", "autoencoder.decoder_patch_size = 0"),
    ("stage1", "stage1/demo", "loss.gan_weight=-1", "loss.gan_weight = -1.0: must be at least 0"),
    ("stage1", "stage1/demo", "disc_schedule.min_lr=-1", "disc_schedule.min_lr = -1.0: must be at least 0"),
    ("cache", "stage2/cache_demo", "dtype=float8", "dtype = 'float8': must be one of float32, float16, bfloat16"),
]


@pytest.mark.parametrize("kind, recipe, override, message", OUT_OF_RANGE)
def test_every_value_is_checked_when_the_config_is_loaded(kind, recipe, override, message):
    from raedit.jobs.cache_latents import CacheConfig
    from raedit.train.stage1 import Stage1Config
    from raedit.train.stage2 import Stage2Config

    config_class = {"stage1": Stage1Config, "stage2": Stage2Config, "cache": CacheConfig}[kind]
    with pytest.raises(RaeditError) as error:
        load_config(config_class, recipe, [override])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_negative_epoch_count_writes_nothing(tmp_path, capsys):
    """Before: `train.epochs=-1` ran no step and wrote a fresh model over the trained export."""
    from raedit.cli import main

    assert main(["train", "stage2/demo", f"run_dir={tmp_path / 'run'}", "train.epochs=-1"]) == 2
    assert capsys.readouterr().err.strip() == "raedit: error: train.epochs = -1: must be at least 1"
    assert not (tmp_path / "run").exists()


def test_sample_options_are_checked_before_any_work(capsys):
    from raedit.cli import main

    for options, message in [(["--num", "0"], "--num = 0: must be at least 1"),
                             (["--t-end", "1.5"], "--t-end = 1.5: must be in [0, 1)"),
                             (["--cfg-interval", "0.8", "0.2"], "--cfg-interval: (0.8, 0.2) must be T_MIN <= T_MAX")]:
        assert main(["sample", "--ckpt", "does-not-matter", *options]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
