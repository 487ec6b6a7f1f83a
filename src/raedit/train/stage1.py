"""Stage 1 (Sec. 3, App. C): train the RAE decoder on frozen encoder tokens.

Two phases per optimizer step, on the shared `TrainLoop`:
  decoder:        L1 + w_p * perceptual (+ w_g * lambda_adaptive * GAN from `loss.gan_start_epoch`), on
                  noise-augmented latents (Sec. 4.3); EMA of the decoder weights.
  discriminator:  hinge loss on real vs. (8-bit quantized) reconstructions of the same images re-decoded after the
                  decoder's step, without latent noise (as the official train_stage1.py), from
                  `loss.disc_start_epoch`, at a learning rate of its own schedule (`disc_schedule`) that advances
                  only on its updates; its heads' gradients are all-reduced like the decoder's.
At the end, the EMA decoder is written as a complete RAE (`<run>/rae/`) and scored on held-out images. The EMA
decoder lives in a second RAE that shares the frozen encoder (`ema_rae`): previews and the export use it directly.

With `latents` (a finished latent cache of `data`, `raedit cache-latents`), both phases read each image's cached
raw latents instead of running the frozen encoder on every batch: the same latents up to float rounding (the
encoder is frozen and deterministic), noise-augmented per step as before, and the image flipped like the mirror
version drawn for the pass. The run then costs one encoding of the data instead of two per step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch.utils.data import DataLoader

from raedit.autoencoder import RAE, AutoencoderConfig
from raedit.core.config import Rule, at_least, to_yaml
from raedit.core.distributed import DistContext, init_distributed
from raedit.core.errors import RaeditError
from raedit.core.files import write_json
from raedit.data import DataConfig, build_dataset
from raedit.data.image_folder import collate_skipping
from raedit.data.latent_cache import ImagesWithLatents, LatentCache
from raedit.eval.similarity import psnr, ssim
from raedit.losses import (
    DecoderLossConfig,
    adaptive_gan_loss,
    build_discriminator,
    build_perceptual_loss,
    discriminator_loss,
    generator_adversarial_loss,
    l1_loss,
)
from raedit.train.config import EMAConfig, ScheduleConfig, TrainLoopConfig
from raedit.train.ema import EMA
from raedit.train.loop import LoopResult, Phase, StepContext, TrainLoop, steps_per_epoch
from raedit.train.optim import build_adamw, build_optimizer
from raedit.train.parallel import full_state_dict, shard_like, unwrap_model, wrap_model
from raedit.train.run_dir import RunDir
from raedit.train.schedules import build_schedule

logger = logging.getLogger(__name__)


@dataclass
class Stage1Config:
    """`raedit train-decoder`: the autoencoder, its training data, the losses and the loop."""

    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval_data: DataConfig = field(default_factory=lambda: DataConfig(split="test"))
    loss: DecoderLossConfig = field(default_factory=DecoderLossConfig)
    train: TrainLoopConfig = field(default_factory=lambda: TrainLoopConfig(ema=EMAConfig(decay=0.9978)))
    # The discriminator's learning rate over its own updates, in epochs counted from loss.disc_start_epoch: the
    # official cosine with 1 warm-up epoch from 0 and 2e-4 -> 2e-5 at its 16th epoch (so after the recipe's 10
    # epochs of updates it is about 8e-5).
    disc_schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(
        kind="cosine", warmup_epochs=1, min_lr=2e-5, decay_end_epoch=16))
    VALID: ClassVar[dict[str, Rule]] = {"preview_images": at_least(0), "eval_images": at_least(1)}

    run_dir: str = "runs/stage1"
    latents: str | None = None  # a finished latent cache of `data`; None: encode every batch on the fly
    preview_images: int = 16  # held-out images reconstructed into a grid every logging.image_every_steps
    eval_images: int = 256  # held-out images scored (PSNR, SSIM) at the end


def _first_images(config: DataConfig, count: int) -> torch.Tensor:
    """The first `count` readable images of a data set, B x 3 x H x W in [0, 1]."""
    dataset = build_dataset(config)
    loader = DataLoader(dataset, batch_size=min(count, 256) or 1, collate_fn=collate_skipping)
    kept: list[torch.Tensor] = []
    for images, _, _ in loader:
        kept.append(images)
        if sum(len(batch) for batch in kept) >= count:
            break
    return torch.cat(kept)[:count]


class DecoderTraining:
    """The models, losses and phases of one stage-1 run (built the same way on every rank)."""

    def __init__(self, config: Stage1Config, ctx: DistContext) -> None:
        self.config = config
        self.ctx = ctx
        self.rae = RAE(config.autoencoder).to(ctx.device).train()
        if not any(True for _ in self.rae.decoder.parameters()):
            raise RaeditError(f"decoder_size {config.autoencoder.decoder_size} has no parameters: nothing to train "
                              "(it is the exact inverse of its encoder; give stage 2 `RAE(config).save_pretrained`)")
        height, width = self.rae.image_size
        for name, data in (("data", config.data), ("eval_data", config.eval_data)):
            if (data.resolution, data.resolution) != (height, width):
                raise RaeditError(f"{name}.resolution is {data.resolution}, but the decoder outputs {height}x{width} "
                                  "(token grid x decoder_patch_size): the target images must match")
        self.ema_rae = RAE(config.autoencoder, encoder=self.rae.encoder).to(ctx.device).eval()
        loss = config.loss
        self.perceptual = build_perceptual_loss(loss.perceptual, loss.vgg_weights).to(ctx.device)
        discriminator = build_discriminator(loss.discriminator_backbone, loss.discriminator_input_size,
                                            loss.discriminator_kernel_size, loss.discriminator_group_size,
                                            loss.discriminator_weights)
        strategy = config.train.distributed.strategy
        self.decoder = wrap_model(self.rae.decoder, ctx, strategy)
        shard_like(self.ema_rae.decoder, self.decoder, ctx)
        self.discriminator = wrap_model(discriminator, ctx, "ddp")

    def dataset(self) -> torch.utils.data.Dataset:
        """The training images, or the images with their cached latents (`latents`): (images, [raw latents,]
        labels) per item."""
        config = self.config
        if config.latents is None:
            return build_dataset(config.data)
        cache = LatentCache(config.latents)
        if cache.encoder != config.autoencoder.latent_space or tuple(cache.latent_shape) != self.rae.latent_shape:
            raise RaeditError(f"the latent cache {config.latents} holds latents {tuple(cache.latent_shape)} of "
                              f"encoder '{cache.encoder}', the autoencoder gives {self.rae.latent_shape} of "
                              f"'{config.autoencoder.latent_space}'")
        return ImagesWithLatents(cache, config.data)

    def raw_latents(self, batch: tuple) -> torch.Tensor:
        """The batch's raw (noise-free, unnormalized) latents: cached, or encoded now."""
        if self.config.latents is not None:
            return batch[1]
        with torch.no_grad():
            return self.rae.encode_raw(batch[0])

    def phases(self, num_items: int) -> list[Phase]:
        train, loss = self.config.train, self.config.loss
        per_epoch = steps_per_epoch(num_items, train, self.ctx.world_size)
        decoder_optimizer = build_optimizer(self.decoder.parameters(), train.optim)
        trainable_heads = [p for p in self.discriminator.parameters() if p.requires_grad]
        disc_optimizer = build_adamw(trainable_heads, train.optim)
        return [
            Phase("decoder", self.decoder, decoder_optimizer, self.decoder_loss,
                  build_schedule(decoder_optimizer, train.schedule, per_epoch, train.epochs),
                  EMA(self.decoder, train.ema.decay, self.ema_rae.decoder) if train.ema.enabled else None,
                  train.optim.grad_clip),
            Phase("discriminator", self.discriminator, disc_optimizer, self.discriminator_loss,
                  build_schedule(disc_optimizer, self.config.disc_schedule, per_epoch,
                                 max(train.epochs - loss.disc_start_epoch, 1)),
                  None, train.optim.grad_clip, start_epoch=loss.disc_start_epoch),
        ]

    def decoder_loss(self, batch: tuple, ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L1 (+ w_p * perceptual from `loss.perceptual_start_epoch`) (+ w_g * lambda * GAN from
        `loss.gan_start_epoch`) on a reconstruction of noise-augmented latents."""
        images = batch[0]
        loss = self.config.loss
        latents = self.rae.prepare_latents(self.raw_latents(batch))
        reconstruction = self.rae.decode(latents, clamp=False, decoder=self.decoder)
        l1 = l1_loss(reconstruction, images)
        reconstruction_loss, parts = l1, {"l1": l1}
        if ctx.epoch >= loss.perceptual_start_epoch:
            parts["perceptual"] = self.perceptual(reconstruction, images)
            reconstruction_loss = l1 + loss.perceptual_weight * parts["perceptual"]
        if ctx.epoch < loss.gan_start_epoch:
            return reconstruction_loss, parts
        discriminator = unwrap_model(self.discriminator).eval()  # spectral norms advance on D steps only
        gan = generator_adversarial_loss(discriminator, reconstruction, loss.diffaug_translation, loss.diffaug_color)
        discriminator.train()
        last_layer = unwrap_model(self.decoder).last_layer
        total, weight = adaptive_gan_loss(reconstruction_loss, gan, reconstruction, last_layer, loss.gan_weight,
                                          loss.max_adaptive_weight)
        parts.update(gan=gan, adaptive_weight=weight)
        return total, parts

    def discriminator_loss(self, batch: tuple, ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Hinge loss on this step's real images and their reconstructions by the decoder as it is after its step:
        clean latents (no noise augmentation), no gradients (official train_stage1.py)."""
        reconstruction = self.clean_reconstructions(self.raw_latents(batch))
        loss = self.config.loss
        value = discriminator_loss(self.discriminator, batch[0], reconstruction, loss.diffaug_translation,
                                   loss.diffaug_color)
        return value, {}

    @torch.no_grad()
    def clean_reconstructions(self, raw_latents: torch.Tensor) -> torch.Tensor:
        """Reconstructions in [0, 1] by the live decoder from noise-free latents (the official code switches to
        eval mode for this, which only turns the noise off: the decoder has no train-mode layers)."""
        return self.rae.decode(self.rae.normalize(raw_latents), decoder=self.decoder)

    @torch.no_grad()
    def eval_rae(self, ema: EMA | None) -> RAE:
        """`ema_rae`, which holds the EMA decoder (given a copy of the live weights when the run keeps no EMA)."""
        if ema is None:
            self.ema_rae.decoder.load_state_dict(unwrap_model(self.decoder).state_dict())
        return self.ema_rae

    @torch.no_grad()
    def ema_reconstructions(self, images: torch.Tensor, ema: EMA | None) -> torch.Tensor:
        """Reconstructions of `images` (B x 3 x H x W in [0, 1]) by the EMA decoder, on the CPU (call on every
        rank: a sharded decoder needs them all)."""
        rae = self.eval_rae(ema)
        return torch.cat([rae.decode(rae.encode(chunk.to(self.ctx.device))).cpu() for chunk in images.split(64)])


def train_decoder(config: Stage1Config, resume: bool = False,
                  fresh: bool = False) -> tuple[LoopResult, DecoderTraining]:
    """Run stage 1 to the end (or a stop); rank 0 writes `<run_dir>/rae/` and `<run_dir>/recon_metrics.json`. The
    run directory must be new or empty, unless `resume` continues its run or `fresh` moves that aside.

    Returns why the loop ended and the trained models."""
    ctx = init_distributed(config.train.distributed.backend)
    run_dir = RunDir(config.run_dir)
    run_dir.check_start(resume, fresh)  # before minutes of loading
    torch.manual_seed(config.train.seed)
    config_yaml = to_yaml(config)
    training = DecoderTraining(config, ctx)
    dataset = training.dataset()
    phases = training.phases(len(dataset))
    ema = phases[0].ema
    preview = _first_images(config.eval_data, config.preview_images) if config.preview_images else None

    def preview_grid() -> dict[str, torch.Tensor]:
        reconstructions = training.ema_reconstructions(preview, ema)
        return {"reconstruction": torch.cat([preview, reconstructions])}

    with run_dir.opened(ctx, config_yaml, resume, fresh):
        collate = collate_skipping if config.latents is None else None  # a cache holds only readable images
        loop = TrainLoop(config.train, ctx, phases, dataset, run_dir, config_yaml, collate_fn=collate,
                         images_fn=preview_grid if preview is not None else None)
        result = loop.run(resume=resume)
        decoder_weights = ema.state_dict() if ema is not None else full_state_dict(training.decoder)
        metrics = score_reconstructions(training, ema, config)
        if ctx.is_main:
            export = Path(config.run_dir) / "rae"
            training.eval_rae(ema).save_pretrained(export, decoder_state=decoder_weights)
            write_json(Path(config.run_dir) / "recon_metrics.json", metrics)
            logger.info("EMA decoder written to %s; held-out PSNR %.2f dB, SSIM %.4f over %d images",
                        export, metrics["psnr"], metrics["ssim"], metrics["images"])
    return result, training


def score_reconstructions(training: DecoderTraining, ema: EMA | None, config: Stage1Config) -> dict:
    """Mean PSNR and SSIM of the EMA decoder's reconstructions of the first `eval_images` held-out images."""
    images = _first_images(config.eval_data, config.eval_images)
    reconstructions = training.ema_reconstructions(images, ema)
    return {"images": len(images), "psnr": float(psnr(reconstructions, images).mean()),
            "ssim": float(ssim(reconstructions, images).mean()), "split": config.eval_data.split}
