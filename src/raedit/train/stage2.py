"""Stage 2 (Sec. 4-5): a diffusion transformer learns flow matching in the latent space of a frozen RAE.

One phase on the shared `TrainLoop` ("denoiser": the model, EMA every step). Data are either images encoded on
the fly by the RAE's frozen encoder, or a finished latent cache (raw latents, normalized here with the RAE's
statistics: the RAE is their one owner). The loss is the flow-matching MSE with t from `uniform` or
`logit-normal` and the dimension-dependent shift derived from the latent shape (Sec. 4.2). Every
`logging.image_every_steps` the EMA model samples a class-conditional grid that the RAE decodes; at the end the EMA
model is exported to `<run_dir>/model/` (see `raedit.diffusion.denoiser_io`) for `raedit sample`, and every
checkpoint carries the same description of the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from raedit.autoencoder import RAE
from raedit.core.config import Rule, at_least, in_range, one_of, to_yaml
from raedit.core.distributed import DistContext, init_distributed
from raedit.core.errors import RaeditError
from raedit.data import DataConfig, build_dataset
from raedit.data.image_folder import collate_skipping
from raedit.data.latent_cache import LatentCache
from raedit.diffusion.denoiser_io import CONFIG_FILE, EXPORT_DIR, PHASE_NAME, DenoiserInfo, save_denoiser
from raedit.diffusion.flow import SHIFT_BASE_DIM, TimeDistribution, flow_matching_loss, shift_alpha
from raedit.diffusion.samplers import SAMPLERS, sample
from raedit.models import DiTConfig, build_model, model_config
from raedit.models.predictions import PREDICTIONS
from raedit.train.config import EMAConfig, OptimConfig, ScheduleConfig, TrainLoopConfig
from raedit.train.ema import EMA
from raedit.train.loop import LoopResult, Phase, StepContext, TrainLoop, steps_per_epoch
from raedit.train.optim import build_optimizer
from raedit.train.parallel import full_state_dict, shard_like, unwrap_model, wrap_model
from raedit.train.run_dir import RunDir
from raedit.train.schedules import build_schedule

logger = logging.getLogger(__name__)

# Model config fields a recipe may set on top of the named size (None: the size's / family's default).
MODEL_ARG_NAMES = ("depth", "width", "num_heads", "head_depth", "head_width", "head_num_heads", "qk_norm",
                   "prediction", "base_depth")


@dataclass
class ModelConfig:
    """The denoiser: a name from `raedit.models.model_config` ("ditdh-xl", "dit-s", ...) plus overrides."""

    VALID: ClassVar[dict[str, Rule]] = {
        "num_classes": at_least(1), "class_dropout_prob": in_range(0, 1, high_open=True), "depth": at_least(1),
        "width": at_least(1), "num_heads": at_least(1), "head_depth": at_least(0), "head_width": at_least(1),
        "head_num_heads": at_least(1), "prediction": one_of(PREDICTIONS), "base_depth": at_least(0)}

    name: str = "ditdh-xl"
    num_classes: int = 1000
    class_dropout_prob: float = 0.1  # label dropout, for classifier-free guidance
    depth: int | None = None
    width: int | None = None
    num_heads: int | None = None
    head_depth: int | None = None  # DiT^DH only
    head_width: int | None = None
    head_num_heads: int | None = None
    qk_norm: bool | None = None
    prediction: str | None = None  # "velocity" (v1, the default) or "x" (RAEv2's x-prediction)
    base_depth: int | None = None  # RAEv2's internal guidance: a base head after this many backbone blocks

    def architecture(self, latent_shape: tuple[int, int, int]) -> DiTConfig:
        """The model's config dataclass for latents of `latent_shape` (C, h, w)."""
        overrides: dict[str, Any] = {name: getattr(self, name) for name in MODEL_ARG_NAMES
                                     if getattr(self, name) is not None}
        return model_config(self.name, latent_shape, num_classes=self.num_classes,
                            class_dropout_prob=self.class_dropout_prob, **overrides)


@dataclass
class FlowConfig:
    """Training times (Sec. 4): t ~ `time_distribution`, then the dimension-dependent shift (Sec. 4.2).

    shift: "auto" derives alpha = sqrt(C h w / shift_base_dim) from the latent shape (the default; never
    type it by hand); "none" trains without a shift (the ablation of Table 4); a number forces alpha.
    """

    time_distribution: str = "logit-normal"  # uniform | logit-normal
    mu: float = 0.0
    sigma: float = 1.0
    t_max: float = 0.999
    shift: str = "auto"
    shift_base_dim: int = SHIFT_BASE_DIM
    base_loss_weight: float = 1.0  # RAEv2: the weight of the base head's loss (models with model.base_depth > 0)


@dataclass
class PreviewConfig:
    """The class-conditional grid sampled by the EMA model every `train.logging.image_every_steps`."""

    VALID: ClassVar[dict[str, Rule]] = {"images": at_least(0), "steps": at_least(1), "sampler": one_of(SAMPLERS)}

    images: int = 16
    steps: int = 25
    sampler: str = "euler"
    seed: int = 0


def _stage2_loop_defaults() -> TrainLoopConfig:
    """The paper's stage-2 optimization (recipe.md): AdamW 2e-4, betas 0.9/0.95, clip 1.0, EMA 0.9995,
    constant LR for 40 epochs then linear to 2e-5 at epoch 800."""
    return TrainLoopConfig(
        optim=OptimConfig(lr=2e-4, beta1=0.9, beta2=0.95, weight_decay=0.0, grad_clip=1.0),
        schedule=ScheduleConfig(kind="linear_decay", decay_start_epoch=40, decay_end_epoch=800, min_lr=2e-5),
        ema=EMAConfig(decay=0.9995),
    )


@dataclass
class Stage2Config:
    """`raedit train`: the autoencoder's latent space, the data, the denoiser, the flow and the loop."""

    RETIRED_KEYS: ClassVar[dict[str, str]] = {
        "stats": "the RAE holds its latent statistics; store them in it with `raedit stats CONFIG rae=DIR`"}

    rae: str | None = None  # a saved RAE directory with latent statistics (`raedit stats ... rae=DIR`)
    latents: str | None = None  # a finished latent cache; None: encode `data` on the fly
    data: DataConfig = field(default_factory=DataConfig)
    latent_shape: list[int] | None = None  # (C, h, w), checked against the RAE's when given
    model: ModelConfig = field(default_factory=ModelConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    train: TrainLoopConfig = field(default_factory=_stage2_loop_defaults)
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    run_dir: str = "runs/stage2"


def resolve_shift(flow: FlowConfig, latent_shape: tuple[int, int, int] | list[int]) -> float:
    """Sec. 4.2: the shift alpha of the training times and the sampling grid ("auto" | "none" | a number)."""
    if flow.shift == "auto":
        return shift_alpha(latent_shape, flow.shift_base_dim)
    if flow.shift == "none":
        return 1.0
    try:
        alpha = float(flow.shift)
    except ValueError:
        raise RaeditError(f"flow.shift must be auto, none or a positive number, got {flow.shift!r}") from None
    if not alpha > 0:
        raise RaeditError(f"flow.shift must be positive, got {alpha}")
    return alpha


def load_normalized_rae(rae_dir: str | None, device: torch.device | str = "cpu") -> RAE:
    """The saved RAE at `rae_dir`, which must hold the latent statistics of its latent space."""
    if not rae_dir:
        raise RaeditError("no autoencoder: set rae=<a saved RAE directory> (stage 1 writes <run>/rae)")
    rae = RAE.from_pretrained(rae_dir)
    if not rae.normalized:
        raise RaeditError(f"the RAE at {rae_dir} has no latent statistics: store them in it with "
                          f"`raedit stats CONFIG rae={rae_dir}`")
    return rae.to(device).eval().requires_grad_(False)


class DiffusionTraining:
    """The RAE, the data and the denoiser of one stage-2 run (built the same way on every rank)."""

    def __init__(self, config: Stage2Config, ctx: DistContext) -> None:
        self.config = config
        self.ctx = ctx
        self.rae = load_normalized_rae(config.rae, ctx.device)
        self.latent_shape = self.rae.latent_shape
        if config.latent_shape is not None and tuple(config.latent_shape) != self.latent_shape:
            raise RaeditError(f"latent_shape is {tuple(config.latent_shape)}, but the RAE at {config.rae} gives "
                              f"latents {self.latent_shape}")
        self.dataset = self._dataset()
        self.alpha = resolve_shift(config.flow, self.latent_shape)
        flow = config.flow
        self.time_distribution = TimeDistribution(flow.time_distribution, flow.mu, flow.sigma, flow.t_max)
        self.architecture = config.model.architecture(self.latent_shape)
        strategy = config.train.distributed
        # The eval twin (it holds the EMA weights that previews sample from and the export saves) is drawn first,
        # the trained model second: a seed gives the same initial weights as in earlier raedit runs.
        eval_model = build_model(self.architecture).eval()
        self.model = wrap_model(build_model(self.architecture), ctx, strategy.strategy,
                                strategy.find_unused_parameters)
        self.eval_model = shard_like(eval_model, self.model, ctx)
        logger.info("denoiser %s: %.1fM parameters, latents %s, shift alpha %.4f (%s)", config.model.name,
                    sum(p.numel() for p in unwrap_model(self.model).parameters()) / 1e6, self.latent_shape,
                    self.alpha, flow.shift)

    def _dataset(self) -> torch.utils.data.Dataset:
        if self.config.latents is None:
            dataset = build_dataset(self.config.data)
            classes = getattr(dataset, "num_classes", None) or len(getattr(dataset, "classes", []))
        else:
            dataset = LatentCache(self.config.latents)
            if tuple(dataset.latent_shape) != self.latent_shape or dataset.encoder != self.rae.config.latent_space:
                raise RaeditError(f"the latent cache {self.config.latents} holds latents {tuple(dataset.latent_shape)} "
                                  f"of encoder '{dataset.encoder}', the RAE gives {self.latent_shape} of "
                                  f"'{self.rae.config.latent_space}'")
            classes = dataset.num_classes
        if classes and classes > self.config.model.num_classes:
            raise RaeditError(f"the data have {classes} classes, the model only model.num_classes="
                              f"{self.config.model.num_classes}")
        return dataset

    @property
    def collate_fn(self):
        return collate_skipping if self.config.latents is None else None

    @property
    def description(self) -> DenoiserInfo:
        """What `raedit sample` needs to rebuild and use the model (saved with the export and every checkpoint)."""
        return DenoiserInfo(self.architecture, self.alpha, self.config.rae, self.rae.config.latent_space)

    def latents_of(self, batch: Any) -> Tensor:
        """Normalized latents (B, C, h, w) in fp32 of a batch: encoded images (in fp32, outside any bf16 autocast
        of the training step, as the official train.py), or raw cached latents normalized."""
        if self.config.latents is None:
            with torch.no_grad(), torch.autocast(self.ctx.device.type, enabled=False):
                return self.rae.encode(batch[0].float())
        return self.rae.normalize(batch[0].float())

    def phase(self, num_items: int) -> Phase:
        train = self.config.train
        per_epoch = steps_per_epoch(num_items, train, self.ctx.world_size)
        optimizer = build_optimizer([p for p in self.model.parameters() if p.requires_grad], train.optim)
        return Phase(PHASE_NAME, self.model, optimizer, self.loss,
                     build_schedule(optimizer, train.schedule, per_epoch, train.epochs),
                     EMA(self.model, train.ema.decay, self.eval_model) if train.ema.enabled else None,
                     train.optim.grad_clip)

    def loss(self, batch: Any, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        """Sec. 4: flow-matching MSE on shifted t; labels drop to the null class inside the model (p = 0.1). RAEv2's
        options: the x-prediction target, and the base head's loss for internal guidance."""
        latents, labels = self.latents_of(batch), batch[1]
        base_loss_weight = self.config.flow.base_loss_weight if self.architecture.base_depth else None
        return flow_matching_loss(self.model, latents, labels, self.time_distribution, self.alpha,
                                  prediction=self.architecture.prediction, base_loss_weight=base_loss_weight), {}

    @torch.no_grad()
    def sampling_model(self, ema: EMA | None) -> nn.Module:
        """`eval_model`, which holds the EMA weights (given a copy of the live ones when the run keeps no EMA)."""
        if ema is None:
            self.eval_model.load_state_dict(unwrap_model(self.model).state_dict())
        return self.eval_model

    def final_weights(self, ema: EMA | None) -> dict[str, Tensor]:
        """The full weights to export, gathered when sharded (call on every rank)."""
        return ema.state_dict() if ema is not None else full_state_dict(self.model)

    @torch.no_grad()
    def preview(self, ema: EMA | None) -> dict[str, Tensor]:
        """A grid of EMA samples, classes 0, 1, ... in turn, decoded by the RAE: {"samples": (B, 3, H, W)}. Every
        rank samples (a sharded model needs them all); rank 0 saves the grid."""
        settings = self.config.preview
        model = self.sampling_model(ema)
        labels = torch.arange(settings.images, device=self.ctx.device) % self.config.model.num_classes
        generator = torch.Generator().manual_seed(settings.seed)
        noise = torch.randn((settings.images, *self.latent_shape), generator=generator).to(self.ctx.device)
        latents = sample(lambda x, t: model(x, t, labels), noise, settings.sampler, settings.steps, self.alpha)
        return {"samples": self.rae.decode(latents).cpu()}


def train_diffusion(config: Stage2Config, resume: bool = False, fresh: bool = False) -> LoopResult:
    """Run stage 2 to the end (or a stop); rank 0 exports the EMA model to `<run_dir>/model/`. The run directory
    must be new or empty, unless `resume` continues its run or `fresh` moves that aside (`RunDir.opened`)."""
    ctx = init_distributed(config.train.distributed.backend)
    run_dir = RunDir(config.run_dir)
    run_dir.check_start(resume, fresh)  # before minutes of loading
    torch.manual_seed(config.train.seed)
    training = DiffusionTraining(config, ctx)
    config_yaml = to_yaml(config)
    with run_dir.opened(ctx, config_yaml, resume, fresh):
        phase = training.phase(len(training.dataset))
        loop = TrainLoop(config.train, ctx, [phase], training.dataset, run_dir, config_yaml,
                         extra_files={CONFIG_FILE: training.description.to_json()}, collate_fn=training.collate_fn,
                         images_fn=(lambda: training.preview(phase.ema)) if config.preview.images > 0 else None)
        result = loop.run(resume=resume)
        weights = training.final_weights(phase.ema)
        if ctx.is_main:
            export = Path(config.run_dir) / EXPORT_DIR
            save_denoiser(export, weights, training.description)
            logger.info("EMA model written to %s", export)
    return result
