"""`raedit convert-run RUN_DIR`: bring a stage-2 run directory written by raedit 0.1 to the current layout.

raedit 0.1 described an exported denoiser by model name and constructor arguments, kept a copy of the latent
statistics beside it (`model/latent_stats.safetensors`) that sampling put over its RAE's, and wrote no model
description into training checkpoints (loading one parsed the run's config.yaml). Now the RAE alone holds the
statistics and the export and every checkpoint carry a `model_config.json` (`raedit.diffusion.denoiser_io`).

The conversion reads the run's config.yaml once, here, and writes:
- when the statistics the model was trained with are not its RAE's own: `RUN_DIR/rae/`, a copy of the RAE that
  holds them, which the description, and the run's config.yaml, then name;
- the model description into every complete checkpoint (whose manifest then lists it) and into `model/`;
and at last removes `model/latent_stats.safetensors`, so a conversion that was cut short can simply be run again.
A converted run samples exactly the images it sampled before.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from omegaconf import OmegaConf

from raedit.autoencoder import CONFIG_FILE as RAE_CONFIG_FILE
from raedit.autoencoder import saved_rae_files, store_latent_stats
from raedit.core.errors import RaeditError
from raedit.core.files import read_json, read_state_dict, write_json, write_text
from raedit.diffusion.denoiser_io import CONFIG_FILE, EXPORT_DIR, DenoiserInfo
from raedit.latent_stats import load_latent_stats
from raedit.train.checkpoint import checkpoint_problem
from raedit.train.stage2 import FlowConfig, ModelConfig, resolve_shift

logger = logging.getLogger(__name__)

OLD_STATS_FILE = "latent_stats.safetensors"  # raedit 0.1's copy of the statistics beside an export


def convert_run(run_dir: str | Path) -> DenoiserInfo:
    """Convert the stage-2 run in `run_dir` in place; returns the description its model now carries."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise RaeditError(f"{run_dir} is not a stage-2 run directory (no config.yaml)")
    config = OmegaConf.to_container(OmegaConf.load(config_path))
    if not isinstance(config, dict) or not config.get("latent_shape") or not config.get("rae"):
        raise RaeditError(f"{config_path} names no latent_shape and rae: not a stage-2 run of raedit 0.1")
    latent_shape = tuple(config["latent_shape"])
    mean, var = _trained_statistics(run_dir, config, latent_shape)
    rae = _rae_holding(Path(config["rae"]), mean, var, run_dir)
    info = DenoiserInfo(ModelConfig(**config["model"]).architecture(latent_shape),
                        resolve_shift(FlowConfig(**config["flow"]), latent_shape), str(rae),
                        read_json(rae / RAE_CONFIG_FILE, "RAE config")["encoder"])
    for checkpoint in sorted((run_dir / "checkpoints").glob("step-*")):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            _describe_checkpoint(checkpoint, info)
        else:
            logger.warning("left checkpoint %s as it is: %s", checkpoint, problem)
    export = run_dir / EXPORT_DIR
    if export.is_dir():
        write_text(export / CONFIG_FILE, info.to_json())
    write_text(config_path, OmegaConf.to_yaml({key: value for key, value in {**config, "rae": str(rae)}.items()
                                               if key != "stats"}))
    (export / OLD_STATS_FILE).unlink(missing_ok=True)
    logger.info("converted %s: the model's RAE is %s", run_dir, rae)
    return info


def _trained_statistics(run_dir: Path, config: dict,
                        latent_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent statistics the run normalized with: the export's copy, else the config's file, else the RAE's."""
    copy = run_dir / EXPORT_DIR / OLD_STATS_FILE
    if copy.is_file():
        return load_latent_stats(copy, latent_shape)
    if config.get("stats"):
        return load_latent_stats(config["stats"], latent_shape)
    _, weights_path = saved_rae_files(config["rae"])
    weights = read_state_dict(weights_path, "RAE weights")
    if "latent_mean" not in weights:
        raise RaeditError(f"neither {run_dir} nor its RAE {config['rae']} holds the latent statistics of the run")
    return weights["latent_mean"], weights["latent_var"]


def _rae_holding(rae: Path, mean: torch.Tensor, var: torch.Tensor, run_dir: Path) -> Path:
    """`rae` when it holds these statistics already, else a copy of it under `run_dir/rae` that does."""
    config_path, weights_path = saved_rae_files(rae)
    weights = read_state_dict(weights_path, "RAE weights")
    if "latent_mean" in weights and torch.equal(weights["latent_mean"], mean.float()) \
            and torch.equal(weights["latent_var"], var.float()):
        return rae
    copy = run_dir / "rae"
    copy.mkdir(exist_ok=True)
    shutil.copyfile(weights_path, copy / weights_path.name)
    shutil.copyfile(config_path, copy / config_path.name)
    store_latent_stats(copy, mean, var)
    return copy


def _describe_checkpoint(checkpoint: Path, info: DenoiserInfo) -> None:
    """Add the model description to a training checkpoint and to the byte sizes its manifest lists."""
    write_text(checkpoint / CONFIG_FILE, info.to_json())
    manifest_path = checkpoint / "manifest.json"
    manifest = read_json(manifest_path, "checkpoint manifest")
    manifest["files"][CONFIG_FILE] = (checkpoint / CONFIG_FILE).stat().st_size
    write_json(manifest_path, manifest)
