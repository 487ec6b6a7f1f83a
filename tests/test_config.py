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
