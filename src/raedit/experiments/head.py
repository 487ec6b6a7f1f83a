"""Experiment `head` (Sec. 5, Table 6, Fig. 6a): DiT^DH, a DiT with a shallow, wide denoising head, against a
plain DiT at matched training FLOPs.

The arms train for the same epochs on the same cached latents with models of (nearly) equal FLOPs per sample, so
their training compute matches; the FLOPs are counted (torch.utils.flop_counter, one forward pass; training = 3x
forward x epochs x latents) and reported with the FID. The defaults: DiT^DH with a 3-block width-128 backbone and a 1-block width-256 head,
against a 4-block width-200 DiT of the same FLOPs.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from raedit.core.errors import RaeditError
from raedit.data.latent_cache import LatentCache
from raedit.experiments.generation import GenerationSetup, check_inputs, sample_and_score, stage2_config, train_arm
from raedit.experiments.results import bar_plot, write_results
from raedit.models import DiTConfig, build_model

logger = logging.getLogger(__name__)

MATCH_TOLERANCE = 0.05  # relative difference of training FLOPs above which the comparison is flagged


@dataclass
class Arm:
    name: str
    overrides: list[str]  # stage-2 config overrides (model.*)


@dataclass
class Settings:
    setup: GenerationSetup = field(default_factory=GenerationSetup)
    arms: list[Arm] = field(default_factory=lambda: [
        Arm("DiT^DH 3x128 + head 1x256", ["model.name=ditdh-s", "model.depth=3", "model.width=128",
                                          "model.num_heads=4", "model.head_depth=1", "model.head_width=256",
                                          "model.head_num_heads=4"]),
        Arm("DiT 4x200", ["model.name=dit-s", "model.depth=4", "model.width=200", "model.num_heads=5",
                          "model.head_depth=null", "model.head_width=null", "model.head_num_heads=null"]),
    ])


def forward_flops(architecture: DiTConfig) -> tuple[int, int]:
    """FLOPs of one sample's forward pass of a denoiser of `architecture`, and its parameter count."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a narrow model's width-rule warning is not this experiment's point
        model = build_model(architecture)
    latents = torch.zeros(1, *architecture.latent_shape)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(latents, torch.full((1,), 0.5), torch.zeros(1, dtype=torch.long))
    return counter.get_total_flops(), sum(p.numel() for p in model.parameters())


def run(out: Path, settings: Settings) -> dict:
    started = time.time()
    setup = settings.setup
    check_inputs(setup)
    if not settings.arms:
        raise RaeditError("arms is empty: give at least one model to train")
    rows = []
    for arm in settings.arms:
        slug = "".join(c if c.isalnum() else "-" for c in arm.name).strip("-")
        config = stage2_config(setup, Path(setup.work_dir) / "head" / slug, arm.overrides)
        info, seconds = train_arm(config)
        flops, params = forward_flops(info.model)
        train_flops = 3 * flops * config.train.epochs * len(LatentCache(config.latents))
        fid = sample_and_score(setup, Path(config.run_dir))
        rows.append([arm.name, round(params / 1e6, 3), round(flops / 1e6, 2), float(train_flops),
                     round(seconds), round(fid, 2)])
        logger.info("%s: %.1f MFLOPs per sample, FID %.2f", arm.name, flops / 1e6, fid)
    spread = max(row[3] for row in rows) / min(row[3] for row in rows) - 1
    if spread > MATCH_TOLERANCE:
        logger.warning("training FLOPs of the arms differ by %.0f%%: not a matched comparison", 100 * spread)
    bar_plot(out / "head.png", {"FID": [row[5] for row in rows]},
             [f"{row[0]}\n{row[3] / 1e12:.3g} TFLOPs" for row in rows], "FID (lower is better)",
             "DiT^DH vs DiT at matched training FLOPs")
    summary = (f"Same data, steps and recipe (`{setup.recipe}`, overrides {setup.overrides}) per arm; the models "
               f"differ and have matched FLOPs (training FLOPs differ by {100 * spread:.1f}%). FID of "
               f"{setup.samples} class-balanced samples ({setup.sampler}, {setup.sampling_steps} steps) against "
               f"{setup.reference_images} {setup.reference} images.")
    write_results(out, "head", "DiT^DH against DiT at matched training FLOPs (Table 6, Fig. 6a)", summary,
                  ["model", "parameters (M)", "forward MFLOPs / sample", "training FLOPs", "train seconds", "FID"],
                  rows, started)
    return {"rows": rows}
