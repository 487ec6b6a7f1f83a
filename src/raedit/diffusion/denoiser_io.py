"""The saved form of a trained stage-2 denoiser, as `raedit sample` loads it.

An export directory holds
    model.safetensors         the (EMA) weights
    model_config.json         model name and constructor arguments, latent shape, number of classes, the RAE
                              directory and encoder it was trained for, and the time shift alpha (Sec. 4.2)
    latent_stats.safetensors  the latent mean/var the training data were normalized with (C x h x w), if any

`load_denoiser` also reads a training checkpoint directory (`checkpoints/step-*/`: its `config.yaml` and EMA
weights), so an earlier checkpoint of a run can serve as the AutoGuidance guide.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from raedit.errors import RaeditError
from raedit.models import DiTDH, LightningDiT, build_model
from raedit.stats import load_latent_stats, save_latent_stats

CONFIG_FILE = "model_config.json"
WEIGHTS_FILE = "model.safetensors"
STATS_FILE = "latent_stats.safetensors"
EXPORT_DIR = "model"  # a run directory's export, `<run_dir>/model/`
PHASE_NAME = "denoiser"  # the stage-2 phase; its EMA is `ema-denoiser.safetensors` in training checkpoints


@dataclass
class DenoiserInfo:
    """What a sampler needs to know about a denoiser beyond its weights."""

    model_name: str  # e.g. "ditdh-xl"
    model_args: dict[str, Any]  # constructor arguments (`model.config` without the latent shape)
    latent_shape: list[int]  # (C, h, w)
    num_classes: int
    shift_alpha: float  # Sec. 4.2: the time shift the model was trained with (1.0: none)
    rae: str | None = None  # the saved RAE directory whose latent space this is
    encoder: str | None = None


def save_denoiser(model: LightningDiT | DiTDH, directory: str | Path, info: DenoiserInfo,
                  stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> Path:
    """Write `model`'s weights, `info` and the normalization `stats` (mean, var) into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    temporary = directory / (WEIGHTS_FILE + ".tmp")
    save_file(weights, str(temporary))
    temporary.replace(directory / WEIGHTS_FILE)
    if stats is not None:
        save_latent_stats(directory / STATS_FILE, stats[0], stats[1], info.encoder or "", count=0)
    (directory / CONFIG_FILE).write_text(json.dumps(asdict(info), indent=2) + "\n")
    return directory


def _build(info: DenoiserInfo, device: torch.device | str) -> LightningDiT | DiTDH:
    return build_model(info.model_name, tuple(info.latent_shape), **info.model_args).to(device)


def load_denoiser(path: str | Path, device: torch.device | str = "cpu") -> tuple[LightningDiT | DiTDH, DenoiserInfo]:
    """The model (in eval mode) and its info from an export directory, a run directory (its `model/`) or a
    training checkpoint directory (EMA weights)."""
    path = Path(path)
    if (path / EXPORT_DIR / CONFIG_FILE).is_file():
        path = path / EXPORT_DIR
    if (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file():
        stored = json.loads((path / CONFIG_FILE).read_text())
        try:
            info = DenoiserInfo(**stored)
        except TypeError as error:
            raise RaeditError(f"{path / CONFIG_FILE} is not a raedit model config: {error}") from None
        weights = load_file(str(path / WEIGHTS_FILE))
    elif (path / "config.yaml").is_file() and (path / f"ema-{PHASE_NAME}.safetensors").is_file():
        from raedit.train.stage2 import denoiser_info, load_stage2_config

        info = denoiser_info(load_stage2_config(path / "config.yaml"))
        weights = load_file(str(path / f"ema-{PHASE_NAME}.safetensors"))
    else:
        raise RaeditError(f"{path} is neither a saved denoiser ({CONFIG_FILE} + {WEIGHTS_FILE}) nor a stage-2 "
                          "training checkpoint (config.yaml + EMA weights)")
    model = _build(info, device)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise RaeditError(f"weights in {path} don't fit model {info.model_name}: "
                          f"{str(error).splitlines()[-1].strip()}") from None
    return model.eval(), info


def load_denoiser_stats(path: str | Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The normalization (mean, var) saved next to a denoiser export, or None when it has none."""
    path = Path(path)
    if (path / EXPORT_DIR / CONFIG_FILE).is_file():
        path = path / EXPORT_DIR
    return load_latent_stats(path / STATS_FILE) if (path / STATS_FILE).is_file() else None
