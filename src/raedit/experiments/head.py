"""Experiment `head` (Sec. 5, Table 6, Fig. 6a): a backbone narrower than the latent's channels, as a plain DiT
and as DiT^DH with a shallow, wide head, against a plain DiT at least as wide as the channels.

The paper's regime: DiT-S (width 384) on DINOv2-B tokens (n = 768 channels) is held back by the width rule
(Sec. 4.1); DiT^DH-S adds a 2-block, width-2048 head to the same backbone and beats it (Table 6). Here the
latents have n = 112 channels; the defaults are a DiT of width 64 (below n), the same 3 x 64 backbone with a
1 x 128 head (DiT^DH, the head at least n wide), and a DiT of width 128 (at least n). Every arm trains for the same
epochs on the same cached latents; the FLOPs of one sample's forward pass are counted (torch.utils.flop_counter)
and reported beside the FID, with the training FLOPs (3 x forward x epochs x images).
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

PLAIN_DIT = ["model.name=dit-s", "model.head_depth=null", "model.head_width=null", "model.head_num_heads=null"]


@dataclass
class Arm:
    name: str
    overrides: list[str]  # stage-2 config overrides (model.*)


@dataclass
class Settings:
    setup: GenerationSetup = field(default_factory=GenerationSetup)
    arms: list[Arm] = field(default_factory=lambda: [
        Arm("DiT 3x64", [*PLAIN_DIT, "model.depth=3", "model.width=64", "model.num_heads=2"]),
        Arm("DiT^DH 3x64 + head 1x128", ["model.name=ditdh-s", "model.depth=3", "model.width=64",
                                         "model.num_heads=2", "model.head_depth=1", "model.head_width=128",
                                         "model.head_num_heads=4"]),
        Arm("DiT 3x128", [*PLAIN_DIT, "model.depth=3", "model.width=128", "model.num_heads=4"]),
    ])


def forward_flops(architecture: DiTConfig) -> tuple[int, int]:
    """FLOPs of one sample's forward pass of a denoiser of `architecture`, and its parameter count."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a narrow model's width-rule warning is this experiment's point
        model = build_model(architecture)
    latents = torch.zeros(1, *architecture.latent_shape)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(latents, torch.full((1,), 0.5), torch.zeros(1, dtype=torch.long))
    return counter.get_total_flops(), sum(p.numel() for p in model.parameters())


def denoising_width(architecture: DiTConfig) -> int:
    """The width that meets the latent's channels last: the head's for DiT^DH, the backbone's for a DiT."""
    return getattr(architecture, "head_width", None) or architecture.width


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
        channels = info.model.latent_shape[0]
        rows.append([arm.name, f"{info.model.width} / {denoising_width(info.model)} (n = {channels})",
                     round(params / 1e6, 3), round(flops / 1e6, 2), float(train_flops), round(seconds),
                     round(fid, 2)])
        logger.info("%s: %.1f MFLOPs per sample, FID %.2f", arm.name, flops / 1e6, fid)
    bar_plot(out / "head.png", {"FID": [row[6] for row in rows]},
             [f"{row[0]}\n{row[3]:.3g} MFLOPs/sample" for row in rows], "FID (lower is better)",
             "narrow DiT, DiT^DH on the same backbone, wide DiT")
    summary = (f"Same data, epochs and recipe (`{setup.recipe}`, overrides {setup.overrides}) per arm; only the "
               f"model differs. Widths: the backbone's, then the width that meets the latent's n channels last "
               f"(the head's for DiT^DH). FID of {setup.samples} class-balanced samples ({setup.sampler}, "
               f"{setup.sampling_steps} steps, no guidance) against {setup.reference_images} {setup.reference} "
               f"images.")
    write_results(out, "head", "DiT^DH: a narrow backbone with a wide head (Table 6, Fig. 6a)", summary,
                  ["model", "widths: backbone / denoising", "parameters (M)", "forward MFLOPs / sample",
                   "training FLOPs", "train seconds", "FID"], rows, started)
    return {"rows": rows}
