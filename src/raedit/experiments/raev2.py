"""Experiment `raev2`: RAEv2's options (arXiv 2605.18324) against v1 on the offline default, one at a time and all
together: its convergence claim (generation FID and class accuracy against training steps) and its
reconstruction claim (a decoder on multi-layer latents reconstructs better than one on the last layer's).

Generation arms train the stage-2 recipe for the same epochs (the same optimizer steps and images) on the latent
space of `raedit benchmark` (see `raedit.experiments.generation`), each with one option: x-prediction, the base
head with internal guidance when sampling, Muon, RAEv2's token-conditioned backbone; then these four together.
Their EMA checkpoints along the way are sampled class-balanced (no CFG) and scored. The FLOPs of a forward pass
are reported beside them: the token-conditioned backbone's time and class tokens (4 + 8) cost more on a 4 x 4
grid than on ImageNet's 16 x 16.

Multi-layer latents change the latent space, so they come with their own decoder: two decoders of the same
recipe and steps, one on the last layer's latents (the benchmark cache), one on RAEv2's combination of several
blocks of EfficientNet-Lite0's token stage (`multi_layers`, its own cache and statistics), trained side by side.
Their rFID and PSNR are the reconstruction claim; the v1 arm decoded by the first and arms on the multi-layer
latents decoded by the second (the multi-layer option alone, and every option together) are its generation side.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from raedit.autoencoder import RAE, saved_latent_stats, store_latent_stats
from raedit.core.config import load_config
from raedit.core.errors import RaeditError
from raedit.core.side_by_side import run_side_by_side
from raedit.data import DataConfig
from raedit.data.latent_cache import LatentCache
from raedit.experiments.generation import (
    GenerationSetup,
    check_inputs,
    fid_of_samples,
    generate_samples,
    metrics_of_samples,
    stage2_config,
)
from raedit.experiments.head import forward_flops
from raedit.experiments.noise_aug import reconstructions_npz
from raedit.experiments.results import line_plots, write_results
from raedit.jobs.cache_latents import CacheConfig, cache_latents
from raedit.jobs.stats import latent_stats_from_cache
from raedit.train.checkpoint import complete_checkpoints
from raedit.train.stage1 import Stage1Config, train_decoder
from raedit.train.stage2 import Stage2Config, train_diffusion

logger = logging.getLogger(__name__)

SINGLE, MULTI = "last layer", "multi-layer"
X_PREDICTION = ["model.prediction=x"]
BASE_HEAD = ["model.base_depth=1"]
MUON = ["train.optim.name=muon"]
TOKEN_CONDITIONED = ["model.name=ditdhv2-s"]


@dataclass
class Arm:
    name: str
    overrides: list[str]  # stage-2 config overrides
    latents: str = SINGLE  # which latent space: SINGLE (the setup's) or MULTI (`multi_layers`)
    internal_guidance: bool = False  # sample with `ig_scale` on `ig_interval` (needs a base head)
    equal_compute_decoder: bool = False  # also decode with the last-layer decoder trained beside the multi-layer one


@dataclass
class Settings:
    setup: GenerationSetup = field(default_factory=GenerationSetup)
    arms: list[Arm] = field(default_factory=lambda: [
        Arm("v1", [], equal_compute_decoder=True),
        Arm("x-prediction", X_PREDICTION),
        Arm("internal guidance", BASE_HEAD, internal_guidance=True),
        Arm("Muon", MUON),
        Arm("token-conditioned DiT^DH", TOKEN_CONDITIONED),
        Arm("all denoiser options", [*X_PREDICTION, *BASE_HEAD, *MUON, *TOKEN_CONDITIONED], internal_guidance=True),
        Arm("multi-layer latents", [], latents=MULTI),
        Arm("all v2 options", [*X_PREDICTION, *BASE_HEAD, *MUON, *TOKEN_CONDITIONED], latents=MULTI,
            internal_guidance=True),
    ])
    evaluations: int = 2  # EMA checkpoints scored along each arm's training (evenly spaced epochs)
    ig_scale: float = 1.78  # RAEv2's ImageNet setting
    ig_interval: tuple[float, float] = (0.1, 1.0)
    probe_train_limit: int = 3000  # class accuracy: the probe's training images (as the demo)
    multi_layers: list[int] = field(default_factory=lambda: [8, 9, 10])  # EfficientNet-Lite0's token stage
    layer_combine: str = "mean"
    stage1_recipe: str = "stage1/demo"
    stage1_overrides: list[str] = field(default_factory=list)  # for both decoders
    reconstruction_data: str = "fashion-mnist-test"
    reconstruction_images: int = 500  # the first N of reconstruction_data, reconstructed for rFID


@dataclass
class LatentSpace:
    """A latent space of the experiment: its latent cache, and the RAE that holds its statistics and decodes it."""

    latents: str
    rae: str


def multi_layer_cache(settings: Settings, work: Path) -> Path:
    """The setup's cached images encoded again as multi-layer latents (same data, mirrors, dtype)."""
    setup_cache = LatentCache(settings.setup.latents)
    manifest = setup_cache.manifest
    autoencoder = dataclasses.replace(RAE.from_pretrained(settings.setup.rae, decode_only=True).config,
                                      encoder_layers=list(settings.multi_layers),
                                      encoder_layer_combine=settings.layer_combine, stats=None)
    out = work / "latents-multi"
    cache_latents(CacheConfig(autoencoder=autoencoder, data=DataConfig(**manifest["data"]), out=str(out),
                              hflip=manifest["hflip"], dtype=manifest["dtype"], batch_size=500, shard_size=4000))
    return out


def _option_value(value: object) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def decoder_config(settings: Settings, cache: Path, run_dir: Path, layers: list[int] | None) -> Stage1Config:
    """The stage-1 recipe on `cache`: the setup RAE's encoder (with the multi-layer latent when `layers`) and
    output size, and the cache's images."""
    encoder = RAE.from_pretrained(settings.setup.rae, decode_only=True).config
    data = [f"data.{key}={_option_value(value)}" for key, value in LatentCache(cache).manifest["data"].items()]
    layer_options = ([f"autoencoder.encoder_layers=[{','.join(map(str, layers))}]",
                      f"autoencoder.encoder_layer_combine={settings.layer_combine}"] if layers else [])
    return load_config(Stage1Config, settings.stage1_recipe, [
        f"latents={cache}", *data, f"autoencoder.encoder={encoder.encoder}",
        f"autoencoder.encoder_input_size={_option_value(encoder.encoder_input_size)}",
        f"autoencoder.decoder_patch_size={encoder.decoder_patch_size}", *settings.stage1_overrides,
        *layer_options, f"run_dir={run_dir}", "train.logging.tensorboard=false"])


def train_decoders(settings: Settings, work: Path) -> tuple[dict[str, LatentSpace], list[list]]:
    """Both decoders side by side (a process each), each given the statistics of its latent space; their
    reconstruction rows (latent, seconds, PSNR, rFID)."""
    setup = settings.setup
    multi_cache = multi_layer_cache(settings, work)
    caches = {SINGLE: Path(setup.latents), MULTI: multi_cache}
    runs = {SINGLE: work / "decoder-last-layer", MULTI: work / "decoder-multi-layer"}
    for run_dir in runs.values():
        if run_dir.exists():
            shutil.rmtree(run_dir)
    seconds = run_side_by_side([
        (train_decoder, decoder_config(settings, caches[SINGLE], runs[SINGLE], None)),
        (train_decoder, decoder_config(settings, caches[MULTI], runs[MULTI], settings.multi_layers))])
    moments = latent_stats_from_cache(multi_cache)
    stats = {SINGLE: saved_latent_stats(setup.rae), MULTI: (moments.mean, moments.variance)}
    spaces, rows = {}, []
    for (name, run_dir), took in zip(runs.items(), seconds):
        rae_dir = run_dir / "rae"
        store_latent_stats(rae_dir, *stats[name])
        spaces[name] = LatentSpace(str(caches[name]), str(rae_dir))
        rfid = fid_of_samples(setup, reconstructions_npz(rae_dir, settings.reconstruction_data,
                                                         settings.reconstruction_images,
                                                         run_dir / "reconstructions.npz"))
        psnr = json.loads((run_dir / "recon_metrics.json").read_text())["psnr"]
        rows.append([name, RAE.from_pretrained(rae_dir, decode_only=True).config.latent_space, round(took),
                     round(psnr, 2), round(rfid, 2)])
        logger.info("decoder on %s latents: PSNR %.2f dB, rFID %.2f", name, psnr, rfid)
    return spaces, rows


def scores(settings: Settings, checkpoint: Path, rae: str, ig: float, tag: str) -> tuple[float, float]:
    """FID and class accuracy of class-balanced samples of `checkpoint` (no CFG; internal guidance `ig`), decoded
    by `rae`."""
    samples = generate_samples(settings.setup, checkpoint, rae, tag, ig, tuple(settings.ig_interval))
    metrics = metrics_of_samples(settings.setup, samples, ("fid", "class_acc"), settings.probe_train_limit)
    return metrics["fid"], metrics["class_acc"]


def train_arm_with_checkpoints(settings: Settings, arm: Arm, space: LatentSpace, run_dir: Path) -> tuple[
        list[Path], float, Stage2Config]:
    """Train `arm` in `space` from scratch, keeping an EMA checkpoint every epochs / `evaluations` epochs; returns
    those checkpoints (oldest first), the wall seconds and the config."""
    overrides = [f"rae={space.rae}", f"latents={space.latents}", *arm.overrides, "train.checkpoint.every_steps=0",
                 f"train.checkpoint.keep_last={settings.evaluations}"]
    epochs = stage2_config(settings.setup, run_dir, overrides).train.epochs
    if epochs % settings.evaluations:
        raise RaeditError(f"the arms train {epochs} epochs, which evaluations={settings.evaluations} does not "
                          f"divide: evaluate at whole epochs")
    config = stage2_config(settings.setup, run_dir, [
        *overrides, f"train.checkpoint.every_epochs={epochs // settings.evaluations}"])
    if run_dir.exists():
        shutil.rmtree(run_dir)
    started = time.perf_counter()
    train_diffusion(config)
    return complete_checkpoints(run_dir / "checkpoints"), time.perf_counter() - started, config


def run(out: Path, settings: Settings) -> dict:
    started = time.time()
    setup = settings.setup
    check_inputs(setup)
    if not settings.arms or settings.evaluations < 1:
        raise RaeditError("give at least one arm and one evaluation")
    work = Path(setup.work_dir) / "raev2"
    decoders, reconstruction = train_decoders(settings, work)
    spaces = {SINGLE: LatentSpace(str(setup.latents), str(setup.rae)), MULTI: decoders[MULTI]}
    decoder_names = {str(setup.rae): "the setup's RAE", decoders[SINGLE].rae: "last-layer decoder (equal compute)",
                     decoders[MULTI].rae: "multi-layer decoder (equal compute)"}
    rows = []
    for arm in settings.arms:
        slug = "".join(c if c.isalnum() else "-" for c in arm.name).strip("-")
        space = spaces[arm.latents]
        checkpoints, seconds, config = train_arm_with_checkpoints(settings, arm, space, work / slug)
        flops, _ = forward_flops(config.model.architecture(tuple(LatentCache(space.latents).latent_shape)))
        raes = [space.rae, *([decoders[SINGLE].rae] if arm.equal_compute_decoder else [])]
        for checkpoint in checkpoints:
            step = int(checkpoint.name.split("-")[-1])
            for rae in raes:
                fid, accuracy = scores(settings, checkpoint, rae, settings.ig_scale if arm.internal_guidance else 1.0,
                                       f"samples-{Path(rae).parent.name}")
                rows.append([arm.name, decoder_names[rae], step, round(seconds), round(flops / 1e6, 2),
                             round(fid, 2), round(accuracy, 3)])
                logger.info("%s decoded by %s, step %d: FID %.2f, class accuracy %.3f", arm.name, decoder_names[rae],
                            step, fid, accuracy)
    curves: dict[str, list[tuple[float, float, float]]] = {}
    for name, decoder, step, *_, fid, accuracy in rows:
        label = name if decoder == decoder_names[str(setup.rae)] else f"{name} ({decoder.split(' (')[0]})"
        curves.setdefault(label, []).append((step, fid, accuracy))
    line_plots(out / "raev2.png", curves, "optimizer steps", ["FID (lower is better)", "class accuracy"],
               "RAEv2's options against v1")
    summary = (f"Generation: every arm trains `{setup.recipe}` (overrides {setup.overrides}) for the same epochs on "
               f"the same images; its EMA checkpoints at {settings.evaluations} evenly spaced epochs sample "
               f"{setup.samples} class-balanced images ({setup.sampler}, {setup.sampling_steps} steps, no CFG; "
               f"internal guidance {settings.ig_scale:g} on t in {list(settings.ig_interval)} for "
               f"{', '.join(arm.name for arm in settings.arms if arm.internal_guidance) or 'none'}), scored "
               f"by FID against {setup.reference_images} {setup.reference} images and by class accuracy (a linear "
               f"probe on {settings.probe_train_limit} real training images). Arms on the last layer's latents "
               f"decode with the setup's RAE; arms on multi-layer latents (EfficientNet-Lite0 blocks "
               f"{settings.multi_layers}, {settings.layer_combine} + the last block's spatial mean, RAEv2's rule) "
               f"with the multi-layer decoder, and v1 also with the last-layer decoder of equal compute. "
               f"Reconstruction (the second table): both decoders from `{settings.stage1_recipe}` "
               f"(overrides {settings.stage1_overrides}), side by side; rFID of the first "
               f"{settings.reconstruction_images} {settings.reconstruction_data} images reconstructed, against "
               f"{setup.reference_images} of them; PSNR on the stage-1 held-out images.")
    write_results(out, "raev2", "RAEv2's options against v1 (convergence and reconstruction)", summary,
                  ["arm", "decoder", "step", "train seconds", "forward MFLOPs / sample", "FID", "class accuracy"],
                  rows, started, extra={"tables": {"Reconstruction: decoders on last-layer and multi-layer latents": {
                      "columns": ["latents", "encoder", "decoder train seconds", "PSNR dB", "rFID"],
                      "rows": reconstruction}}})
    return {"rows": rows, "reconstruction": reconstruction}
