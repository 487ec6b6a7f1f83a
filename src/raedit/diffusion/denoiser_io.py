"""A trained stage-2 denoiser as it is saved: a directory that describes itself.

    model_config.json   the architecture (the model's config dataclass), the time shift alpha it was trained
                        with (Sec. 4.2), and the RAE whose latent space it models (directory and encoder name)
    model.safetensors   the (EMA) weights

The latent statistics belong to that RAE alone (`raedit.autoencoder`): a denoiser has no copy of them. A run
directory exports its final model to `<run_dir>/model/`, and every training checkpoint (`checkpoints/step-*/`)
carries the same `model_config.json` beside its EMA weights, so an earlier checkpoint loads as a denoiser too
(e.g. the AutoGuidance guide). Nothing here reads a training config.

A released checkpoint of the official code (`stage2_model.pt`) loads too (`raedit.interop.official_dit`): its
architecture read off its shapes, its shift alpha the paper's rule for its latent shape (Sec. 4.2, what the
official sampling configs set), and no RAE named (it names none).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from raedit.core.errors import RaeditError
from raedit.core.files import read_json, read_state_dict, save_tensors, write_text
from raedit.core.state_dicts import check_fits
from raedit.diffusion.flow import shift_alpha
from raedit.interop.official_dit import read_official_denoiser
from raedit.models import MODEL_FAMILIES, Denoiser, DiTConfig, build_model, family_of

CONFIG_FILE = "model_config.json"
WEIGHTS_FILE = "model.safetensors"
EXPORT_DIR = "model"  # a run directory's export, `<run_dir>/model/`
PHASE_NAME = "denoiser"  # the stage-2 phase; its weights in training checkpoints are `{ema,model}-denoiser.safetensors`
FORMAT = 2  # 1: the model_config.json of raedit 0.1 (model_name, model_args), with statistics beside the model
CONVERT_HINT = "convert it with `raedit convert-run RUN_DIR` (RUN_DIR: the training run it belongs to)"


@dataclass
class DenoiserInfo:
    """What sampling needs to know about a denoiser beyond its weights."""

    model: DiTConfig  # the architecture (a DiTConfig or DiTDHConfig)
    shift_alpha: float  # Sec. 4.2: the time shift the model was trained with (1.0: none)
    rae: str | None = None  # the saved RAE directory whose latent space this is (it holds the statistics)
    encoder: str | None = None  # that RAE's encoder

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.model.latent_shape

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def to_json(self) -> str:
        """The text of `model_config.json`."""
        stored = {"format": FORMAT, "family": family_of(self.model), "model": dataclasses.asdict(self.model),
                  "shift_alpha": self.shift_alpha, "rae": self.rae, "encoder": self.encoder}
        return json.dumps(stored, indent=2) + "\n"

    @classmethod
    def from_json(cls, stored: dict, source: Path) -> "DenoiserInfo":
        if stored.get("format") != FORMAT:
            raise RaeditError(f"{source} was written by an earlier raedit (its latent statistics were kept beside "
                              f"the model): {CONVERT_HINT}")
        if stored.get("family") not in MODEL_FAMILIES:
            raise RaeditError(f"{source}: unknown model family {stored.get('family')!r}")
        try:
            model = MODEL_FAMILIES[stored["family"]][0](**stored["model"])
            return cls(model, float(stored["shift_alpha"]), stored.get("rae"), stored.get("encoder"))
        except (KeyError, TypeError, ValueError) as error:
            raise RaeditError(f"{source} is not a raedit model config: {error}") from None


def save_denoiser(directory: str | Path, weights: dict[str, torch.Tensor], info: DenoiserInfo) -> Path:
    """Write the full `weights` of a denoiser and its description `info` into `directory`."""
    directory = Path(directory)
    save_tensors(directory / WEIGHTS_FILE, weights)
    write_text(directory / CONFIG_FILE, info.to_json())
    return directory


def _locate(path: str | Path) -> tuple[Path, Path]:
    """(model_config.json, weights file) of an export directory, a run directory (its `model/`) or a training
    checkpoint directory (EMA weights, or the live ones when the run kept no EMA)."""
    path = Path(path)
    if (path / EXPORT_DIR / CONFIG_FILE).is_file():
        path = path / EXPORT_DIR
    candidates = [WEIGHTS_FILE, f"ema-{PHASE_NAME}.safetensors", f"model-{PHASE_NAME}.safetensors"]
    weights = next((path / name for name in candidates if (path / name).is_file()), None)
    if (path / CONFIG_FILE).is_file() and weights is not None:
        return path / CONFIG_FILE, weights
    if (path / "config.yaml").is_file() and weights is not None:
        raise RaeditError(f"the training checkpoint {path} has no {CONFIG_FILE}: it was written by an earlier "
                          f"raedit; {CONVERT_HINT}")
    raise RaeditError(f"{path} is neither a saved denoiser ({CONFIG_FILE} + {WEIGHTS_FILE}) nor a stage-2 "
                      f"training checkpoint ({CONFIG_FILE} + EMA weights)")


def _directory_of_saved_file(path: str | Path) -> Path:
    """`path`, or the saved denoiser's directory when `path` is one of its files (e.g. its model.safetensors)."""
    path = Path(path)
    return path.parent if path.is_file() and (path.parent / CONFIG_FILE).is_file() else path


def official_denoiser_info(config: DiTConfig) -> DenoiserInfo:
    """The description of a released official denoiser of architecture `config`: the shift of its latent shape."""
    return DenoiserInfo(config, shift_alpha(config.latent_shape))


def read_denoiser_info(path: str | Path) -> DenoiserInfo:
    """The description of the denoiser at `path` (as `load_denoiser` finds it), without its weights."""
    path = _directory_of_saved_file(path)
    if path.is_file():
        return official_denoiser_info(read_official_denoiser(path)[0])
    config_file, _ = _locate(path)
    return DenoiserInfo.from_json(read_json(config_file, "model config"), config_file)


def load_denoiser(path: str | Path, device: torch.device | str = "cpu") -> tuple[Denoiser, DenoiserInfo]:
    """The model (in eval mode) and its description from an export directory, a run directory (its `model/`), a
    training checkpoint directory, or a released official checkpoint file."""
    path = _directory_of_saved_file(path)
    if path.is_file():
        config, weights = read_official_denoiser(path)
        info, weights_file, config_file = official_denoiser_info(config), path, path
    else:
        config_file, weights_file = _locate(path)
        info = DenoiserInfo.from_json(read_json(config_file, "model config"), config_file)
        weights = read_state_dict(weights_file, "denoiser weights")
    model = build_model(info.model)
    check_fits(model.state_dict(), weights, f"the weights in {weights_file} (for the model of {config_file.name})")
    model.load_state_dict(weights, strict=True)
    return model.to(device).eval(), info
