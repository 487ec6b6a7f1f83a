"""`raedit import-official` and `raedit pull`: the paper's released models (the Hugging Face repository
nyu-visionx/RAE-collections) in raedit's own layout.

    OUT/rae/        the decoder and the latent statistics: a saved RAE (`RAE.from_pretrained`)
    OUT/denoiser/   the denoiser, naming OUT/rae (`load_denoiser`, `raedit sample --ckpt OUT/denoiser`)
    OUT/guide/      the AutoGuidance guide, when there is one

Every architecture is read off the tensors' shapes (`raedit.interop`), so any size converts; every file is read
with `weights_only=True`, and every key and shape is checked. The encoder's weights are not needed: the RAE
names its encoder, and sampling decodes without it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import torch

from raedit.autoencoder import RAE, AutoencoderConfig
from raedit.core.errors import RaeditError, first_line
from raedit.core.files import read_state_dict
from raedit.core.state_dicts import weights_of
from raedit.diffusion.denoiser_io import official_denoiser_info, save_denoiser
from raedit.encoders import ENCODERS, get_spec
from raedit.encoders.spec import RAEV2_LAYER_SETS
from raedit.interop.official_decoder import official_decoder_config
from raedit.interop.official_dit import read_official_denoiser
from raedit.jobs.releases import PRESETS, RELEASE_REPO

logger = logging.getLogger(__name__)

RAE_DIR, DENOISER_DIR, GUIDE_DIR = "rae", "denoiser", "guide"
# The encoder families a release path names (decoders/<family>/..., stats/<family>/...).
PATH_FAMILIES = ("dinov2", "siglip2", "mae")
RAEV2_PATH = re.compile(r"^dinov3l-k(\d+)$")  # RAEv2's release folders: stage1/{imagenet,general}/dinov3l-k7/


def raev2_layers(path: str | Path) -> tuple[str, list[int] | None] | None:
    """The encoder and layer set a RAEv2 release path names (`.../dinov3l-k7/decoder.pt`), or None."""
    for part in Path(path).parts:
        match = RAEV2_PATH.match(part.lower())
        if match:
            if int(match.group(1)) not in RAEV2_LAYER_SETS:
                raise RaeditError(f"{path}: RAEv2 released K = {', '.join(map(str, RAEV2_LAYER_SETS))}, not "
                                  f"K = {match.group(1)}: give --encoder and --encoder-layers")
            return "dinov3-l", RAEV2_LAYER_SETS[int(match.group(1))]
    return None


def infer_encoder(channels: int, path: str | Path) -> str:
    """The encoder of a released decoder or statistics file: the family its release path names, the size its
    token width gives (DINOv2-S/B/L: 384/768/1024)."""
    parts = {part.lower() for part in Path(path).parts}
    families = [family for family in PATH_FAMILIES if family in parts]
    candidates = [name for name, spec in ENCODERS.items()
                  if families and name.startswith(families[0] + "-") and spec.channels == channels]
    if len(candidates) != 1:
        raise RaeditError(f"can't tell the encoder of {path} (tokens of width {channels}) from its path: give "
                          f"--encoder (one of {', '.join(ENCODERS)})")
    return candidates[0]


def read_official_stats(path: str | Path, latent_shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, var) of a released `stat.pt` (a dict with `mean` and `var`), each of shape `latent_shape`."""
    stats = read_state_dict(path, "latent statistics")
    if not all(isinstance(stats.get(name), torch.Tensor) for name in ("mean", "var")):
        raise RaeditError(f"{path} is not a released statistics file: it needs the tensors 'mean' and 'var'")
    mean, var = stats["mean"].float(), stats["var"].float()
    if mean.numel() != torch.Size(latent_shape).numel() or var.numel() != mean.numel():
        raise RaeditError(f"the statistics in {path} have shape {tuple(mean.shape)}, the decoder's latents "
                          f"{latent_shape}")
    return mean.reshape(latent_shape), var.reshape(latent_shape)


def import_rae(decoder: str | Path, stats: str | Path, out: str | Path, encoder: str | None = None,
               decoder_heads: int | None = None, encoder_layers: list[int] | None = None) -> Path:
    """A saved RAE in `out` from a released decoder `model.pt` and its `stat.pt` (or RAEv2's `decoder.pt` and
    `stats.pt`: the same layouts, on the multi-layer latent its path names, `raev2_layers`); returns `out`."""
    state = weights_of(read_state_dict(decoder, "official decoder weights"), str(decoder))
    decoder_config = official_decoder_config(state, decoder_heads)
    raev2 = raev2_layers(decoder)
    if raev2 is not None:  # what was not given comes from the release path
        encoder, encoder_layers = encoder or raev2[0], raev2[1] if encoder_layers is None else encoder_layers
    encoder = encoder or infer_encoder(decoder_config.in_channels, decoder)
    spec = get_spec(encoder)
    if spec.channels != decoder_config.in_channels:
        raise RaeditError(f"the decoder {decoder} decodes tokens of width {decoder_config.in_channels}, "
                          f"encoder {encoder} gives {spec.channels}")
    input_size = decoder_config.grid[0] * spec.patch_size  # e.g. 32 x 32 DINOv2 tokens: 448 px (the 512 px model)
    config = AutoencoderConfig(encoder=encoder,
                               encoder_input_size=None if input_size == spec.input_size else input_size,
                               encoder_layers=encoder_layers,
                               decoder_size=decoder_config.size, decoder_patch_size=decoder_config.patch_size)
    rae = RAE(config, config.build_encoder(decode_only=True))
    rae.load_decoder_state_dict(state, str(decoder))
    rae.set_stats(*read_official_stats(stats, rae.latent_shape))
    rae.save_pretrained(out)
    logger.info("RAE: decoder %s (%s) + statistics %s -> %s", decoder, decoder_config.size, stats, out)
    return Path(out)


def import_denoiser(path: str | Path, rae_dir: str | Path, out: str | Path) -> Path:
    """A saved denoiser in `out` from a released `stage2_model.pt`, naming the RAE in `rae_dir`; returns `out`."""
    config, weights = read_official_denoiser(path)
    rae = RAE.from_pretrained(rae_dir, decode_only=True)
    if rae.latent_shape != config.latent_shape:
        raise RaeditError(f"the denoiser {path} models latents {config.latent_shape}, the RAE in {rae_dir} "
                          f"gives {rae.latent_shape}")
    info = dataclasses.replace(official_denoiser_info(config), rae=str(Path(rae_dir).resolve()),
                               encoder=rae.config.latent_space)
    save_denoiser(out, weights, info)
    logger.info("denoiser: %s (%s, depth %d, width %d) -> %s", path, type(config).__name__, config.depth,
                config.width, out)
    return Path(out)


def import_official(out: str | Path, decoder: str | Path, stats: str | Path, denoiser: str | Path | None = None,
                    guide: str | Path | None = None, encoder: str | None = None,
                    decoder_heads: int | None = None, encoder_layers: list[int] | None = None) -> dict[str, Path]:
    """Import a released decoder + statistics, and optionally a denoiser and its guide, into `out`
    (`out/rae`, `out/denoiser`, `out/guide`); returns the directories written by name."""
    if guide is not None and denoiser is None:
        raise RaeditError("a guide needs the denoiser it guides: give --denoiser too")
    out = Path(out)
    written = {RAE_DIR: import_rae(decoder, stats, out / RAE_DIR, encoder, decoder_heads, encoder_layers)}
    for name, path in ((DENOISER_DIR, denoiser), (GUIDE_DIR, guide)):
        if path is not None:
            written[name] = import_denoiser(path, written[RAE_DIR], out / name)
    return written


def fetch_release_file(name: str, local_dir: str | Path | None) -> Path:
    """A file of `RELEASE_REPO`: from `local_dir` (a copy made with `hf download ... --local-dir`) when given,
    else downloaded into the Hugging Face cache."""
    if local_dir is not None:
        path = Path(local_dir) / name
        if not path.is_file():
            raise RaeditError(f"{path} not found: is {local_dir} a copy of {RELEASE_REPO}?")
        return path
    from huggingface_hub import hf_hub_download  # seconds to import; only a download needs it

    try:
        return Path(hf_hub_download(RELEASE_REPO, name))
    except Exception as error:  # network, authentication and missing-file errors alike
        raise RaeditError(f"cannot download {name} from {RELEASE_REPO}: {first_line(error)} (or give "
                          f"--from DIR, a copy made with `hf download {RELEASE_REPO} --local-dir DIR`)") from None


def pull(preset: str, out: str | Path, local_dir: str | Path | None = None) -> dict[str, Path]:
    """The released combination `preset` imported into `out`; returns the directories written by name."""
    if preset not in PRESETS:
        raise RaeditError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    chosen = PRESETS[preset]
    files = {role: fetch_release_file(name, local_dir) if name else None
             for role, name in (("decoder", chosen.decoder), ("stats", chosen.stats),
                                ("denoiser", chosen.denoiser), ("guide", chosen.guide))}
    return import_official(out, **files)


def sample_command(preset: str, out: str | Path) -> str | None:
    """The `raedit sample` command of the official sampling config of `preset`, for its import in `out` (None for
    a preset without a denoiser)."""
    out, chosen = Path(out), PRESETS[preset]
    if chosen.denoiser is None:
        return None
    parts = ["raedit sample --ckpt", str(out / DENOISER_DIR)]
    if chosen.guide:
        parts += ["--guide-ckpt", str(out / GUIDE_DIR)]
    return " ".join([*parts, *filter(None, [chosen.sample_options]), "--num 50000"])
