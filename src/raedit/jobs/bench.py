"""`raedit bench`: how fast raedit trains and samples a target's models, and how close that is to the device's peak.

For each part (the stage-2 train step, the stage-1 decoder train step, sampling per sampler and guidance, and the
encoder and decoder alone) and each speed path (eager fp32, bf16, compiled, ...), it reports samples per second,
the analytic FLOPs per sample (`raedit.perf.flops`), the achieved TFLOP/s and the model FLOP utilization (MFU)
against the device's peak for the path's precision (`raedit.perf.devices`, or `--peak-tflops`), peak memory (CUDA),
and the time of the first call (compiling included). Several paths of one part are timed in turn, round after
round (`raedit.perf.timing`), and compared with the first by the median of the per-round ratios.

The steps are the library's own: `flow_matching_loss` with its shift, `build_adamw` (fused), gradient clipping, the
non-finite guard and the EMA update; sampling is `guided_velocity` integrated by `sample` on the official grid, then
decoded. Models have random weights (the speed doesn't depend on them); latents and images are random.
"""

from __future__ import annotations

import logging
import platform
import resource
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raedit.core.acceleration import ATTENTION_BACKENDS, attention_backend, compile_module, is_compiled
from raedit.core.errors import RaeditError
from raedit.core.tokens import latents_to_tokens
from raedit.decoder import DecoderConfig, ViTDecoder
from raedit.diffusion.flow import TimeDistribution, flow_matching_loss, shift_alpha
from raedit.diffusion.guidance import guided_velocity, in_precision
from raedit.diffusion.samplers import OFFICIAL_T_END, SAMPLERS, sample
from raedit.encoders import get_spec
from raedit.jobs.bench_targets import AutoencoderShape, BenchTarget, resolve_target
from raedit.models import DiTConfig, build_model
from raedit.perf.devices import device_name, peak_tflops
from raedit.perf.flops import PAPER_GMACS, decoder_flops, denoiser_flops, encoder_flops, train_step_flops
from raedit.perf.timing import alternate, speedup_over
from raedit.train.config import OptimConfig
from raedit.train.ema import EMA
from raedit.train.optim import build_adamw, clip_gradients, step_unless_non_finite
from raedit.train.precision import autocast_context, configure_matmul_precision

logger = logging.getLogger(__name__)

PARTS = ("train", "decoder-train", "sample", "autoencoder")
GUIDANCE = ("none", "cfg", "ag")
# Guidance settings of the measured sampling (the time depends only on which branches run: the whole interval).
CFG_SCALE, AG_SCALE = 1.5, 1.42
SWITCHES = ("bf16", "compile", "ckpt")


@dataclass(frozen=True)
class SpeedPath:
    """A set of speed switches, written like "bf16+compile" ("fp32": none of them; "attn=flash": the SDPA kernel)."""

    bf16: bool = False
    compile: bool = False
    checkpointing: bool = False  # activation checkpointing (train steps of the DiT models)
    attention: str = "auto"

    @classmethod
    def parse(cls, text: str) -> "SpeedPath":
        switches: dict[str, object] = {}
        for token in text.split("+"):
            if token in ("fp32", "eager"):
                continue
            if token.startswith("attn="):
                switches["attention"] = token.removeprefix("attn=")
                if switches["attention"] not in ATTENTION_BACKENDS:
                    raise RaeditError(f"unknown attention kernel in '{text}'; known: {', '.join(ATTENTION_BACKENDS)}")
            elif token in SWITCHES:
                switches["checkpointing" if token == "ckpt" else token] = True
            else:
                raise RaeditError(f"unknown speed switch '{token}' in '{text}': write switches from "
                                  f"{', '.join(SWITCHES)}, attn=KERNEL or fp32, joined by '+'")
        return cls(**switches)

    @property
    def name(self) -> str:
        parts = [name for name, on in (("bf16", self.bf16), ("compile", self.compile),
                                       ("ckpt", self.checkpointing)) if on]
        if self.attention != "auto":
            parts.append(f"attn={self.attention}")
        return "+".join(parts) or "fp32"

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp32"


@dataclass
class BenchConfig:
    """One `raedit bench` run."""

    target: str
    device: str = "cpu"
    parts: tuple[str, ...] = PARTS
    paths: tuple[str, ...] = ("fp32",)
    samplers: tuple[str, ...] = ("euler",)
    guidance: tuple[str, ...] = GUIDANCE
    train_batch: int | None = None  # None: the target's
    sample_batch: int | None = None
    sample_steps: int = 49  # the paper's Euler on 50 time points
    rounds: int = 3
    calls: int = 3  # timed calls per round
    warmup: int = 1  # untimed calls after the first
    peak_tflops: float | None = None
    tf32: bool = True
    seed: int = 0


@dataclass
class Row:
    """One measured part under one path."""

    part: str
    path: str
    batch: int
    items_per_s: float  # samples (train), images (sampling, the encoder and decoder)
    seconds_per_call: float
    first_call_s: float  # compiling included
    gflops_per_item: float
    achieved_tflops: float
    mfu: float | None  # None without a known peak
    peak_memory_gib: float | None  # CUDA only
    speedup_vs_first_path: float | None = None
    compiled: bool = False  # False for a path that asked to compile but fell back to eager
    rounds_s: list[float] = field(default_factory=list)


# --- workloads: each is built for one path and returns (call, FLOPs per call) --------------------------------


def _compiled(module: nn.Module, path: SpeedPath, what: str) -> nn.Module:
    return compile_module(module, what) if path.compile else module


def _denoiser(config: DiTConfig, device: torch.device, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(config).to(device)


def denoiser_train_step(config: DiTConfig, batch: int, path: SpeedPath, device: torch.device,
                        seed: int) -> tuple[Callable[[], Tensor], nn.Module, int]:
    """One stage-2 optimizer step (Sec. 4): flow-matching loss on shifted t, backward, clip 1.0, fused AdamW, EMA."""
    model = _denoiser(config, device, seed).train()
    model.checkpoint_activations = path.checkpointing
    average = _denoiser(config, device, seed).eval()
    ema = EMA(model, 0.9995, average)
    _compiled(model, path, "the denoiser")
    optimizer = build_adamw(model.parameters(), OptimConfig(grad_clip=1.0))
    params = [p for p in model.parameters() if p.requires_grad]
    generator = torch.Generator(device).manual_seed(seed)
    latents = torch.randn((batch, *config.latent_shape), generator=generator, device=device)
    labels = torch.randint(config.num_classes, (batch,), generator=generator, device=device)
    alpha, times = shift_alpha(config.latent_shape), TimeDistribution()

    def step() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        with attention_backend(path.attention), autocast_context(device, path.precision):
            loss = flow_matching_loss(model, latents, labels, times, alpha)
        loss.backward()
        norm = clip_gradients(params, 1.0)
        step_unless_non_finite(optimizer, torch.isfinite(loss) & torch.isfinite(norm))
        ema.update(model)
        return loss

    return step, model, batch * train_step_flops(denoiser_flops(config))


def decoder_train_step(config: DecoderConfig, batch: int, path: SpeedPath, device: torch.device,
                       seed: int) -> tuple[Callable[[], Tensor], nn.Module, int]:
    """The stage-1 decoder's own step: decode noisy tokens, an L1 loss, backward, fused AdamW (the frozen encoder,
    the perceptual loss and the discriminator are not in it: the encoder is measured alone)."""
    torch.manual_seed(seed)
    decoder = ViTDecoder(config).to(device).train()
    _compiled(decoder, path, "the decoder")
    optimizer = build_adamw(decoder.parameters(), OptimConfig())
    generator = torch.Generator(device).manual_seed(seed)
    tokens = torch.randn((batch, decoder.num_tokens, config.in_channels), generator=generator, device=device)
    images = torch.randn((batch, config.out_channels, *config.image_size), generator=generator, device=device)

    def step() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        with attention_backend(path.attention), autocast_context(device, path.precision):
            loss = F.l1_loss(decoder(tokens).float(), images)
        loss.backward()
        optimizer.step()
        return loss

    return step, decoder, batch * train_step_flops(decoder_flops(config))


def sampling_run(target: BenchTarget, sampler: str, guidance: str, batch: int, steps: int, path: SpeedPath,
                 device: torch.device, seed: int) -> tuple[Callable[[], Tensor], nn.Module, int]:
    """`batch` samples: `steps` steps of `sampler` on the official grid (t_end 1e-3, the shift of the latent
    shape) with `guidance` over the whole interval (CFG 1.5: one batch of 2B; AutoGuidance 1.42 by the target's
    guide), then decoded by the target's decoder."""
    config = target.denoiser
    model = _compiled(_denoiser(config, device, seed).eval(), path, "the denoiser")
    main = in_precision(model, device.type, path.bf16)
    evaluations = batch * steps * (2 if sampler == "heun" else 1)  # samples each network sees in one call
    flops = evaluations * denoiser_flops(config) * (2 if guidance == "cfg" else 1)
    guide = None
    if guidance == "ag":
        if target.guide is None:
            raise RaeditError(f"target '{target.name}' has no AutoGuidance guide: measure guidance none or cfg")
        guide_model = _compiled(_denoiser(target.guide, device, seed + 1).eval(), path, "the guide")
        guide = in_precision(guide_model, device.type, path.bf16)
        flops += evaluations * denoiser_flops(target.guide)
    decoder = ViTDecoder(target.decoder).to(device).eval() if target.decoder is not None else None
    generator = torch.Generator(device).manual_seed(seed)
    noise = torch.randn((batch, *config.latent_shape), generator=generator, device=device)
    labels = torch.randint(config.num_classes, (batch,), generator=generator, device=device)
    velocity = guided_velocity(main, labels, model.null_label, CFG_SCALE if guidance == "cfg" else 1.0,
                               (0.0, 1.0), guide, AG_SCALE if guidance == "ag" else 1.0)
    alpha = shift_alpha(config.latent_shape)

    def run() -> Tensor:
        with attention_backend(path.attention):
            latents = sample(velocity, noise, sampler, steps, alpha, OFFICIAL_T_END)
            if decoder is None:
                return latents
            with torch.no_grad(), autocast_context(device, path.precision):
                return decoder(latents_to_tokens(latents))

    if decoder is not None:
        flops += batch * decoder_flops(target.decoder)
    return run, model, flops


def encoder_forward(shape: AutoencoderShape, batch: int, path: SpeedPath, device: torch.device,
                    seed: int) -> tuple[Callable[[], Tensor], nn.Module, int]:
    """The frozen encoder alone on `batch` images: DINOv2 with random weights at its released size; an encoder with
    offline weights (EfficientNet-Lite) with those."""
    spec = get_spec(shape.encoder)
    torch.manual_seed(seed)
    if spec.family_class.endswith(":Dinov2Encoder"):
        from raedit.encoders.dinov2 import Dinov2Encoder

        encoder = Dinov2Encoder.with_random_weights(spec, shape.encoder_input_size)
    else:
        from raedit.encoders import build_encoder

        options = {"input_size": shape.encoder_input_size} if shape.encoder_input_size else {}
        encoder = build_encoder(shape.encoder, **options)
    encoder = _compiled(encoder.to(device).eval(), path, "the encoder")
    images = torch.rand((batch, 3, encoder.input_size, encoder.input_size), device=device)

    def run() -> Tensor:
        with torch.no_grad(), attention_backend(path.attention), autocast_context(device, path.precision):
            return encoder.encode(images)

    return run, encoder, batch * encoder_flops(shape.encoder, encoder.input_size)


def decoder_forward(shape: AutoencoderShape, batch: int, path: SpeedPath, device: torch.device,
                    seed: int) -> tuple[Callable[[], Tensor], nn.Module, int]:
    """The decoder alone on `batch` latents."""
    torch.manual_seed(seed)
    decoder = _compiled(ViTDecoder(shape.decoder).to(device).eval(), path, "the decoder")
    tokens = torch.randn((batch, decoder.num_tokens, shape.decoder.in_channels), device=device)

    def run() -> Tensor:
        with torch.no_grad(), attention_backend(path.attention), autocast_context(device, path.precision):
            return decoder(tokens)

    return run, decoder, batch * decoder_flops(shape.decoder)


# --- measuring ----------------------------------------------------------------------------------------------


def _peak_memory_gib(device: torch.device, before: int) -> float | None:
    if device.type != "cuda":
        return None
    return (torch.cuda.max_memory_allocated(device) - before) / 2**30


def measure_part(part: str, build: Callable[[SpeedPath], tuple[Callable[[], Tensor], nn.Module, int]],
                 batch: int, paths: list[SpeedPath], config: BenchConfig, device: torch.device) -> list[Row]:
    """Build the workload of each path, time them in turn (`raedit.perf.timing.alternate`), one row per path."""
    built = []
    for path in paths:
        before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        call, module, flops = build(path)
        built.append((path, call, module, flops, before))
    logger.info("bench %s: %s", part, ", ".join(path.name for path in paths))
    times = alternate([(path.name, call) for path, call, *_ in built], config.rounds, config.calls, config.warmup,
                      device)
    rows = []
    for (path, _, module, flops, before), path_times in zip(built, times):
        seconds = path_times.median_s
        achieved = flops / seconds / 1e12
        peak = config.peak_tflops or peak_tflops(device_name(device), path.precision, config.tf32)
        rows.append(Row(part, path.name, batch, batch / seconds, seconds, path_times.first_call_s, flops / batch / 1e9,
                        achieved, achieved / peak if peak else None, _peak_memory_gib(device, before),
                        speedup_over(times[0], path_times) if len(times) > 1 else None,
                        path.compile and is_compiled(module), path_times.rounds))
    return rows


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              timeout=10, cwd=Path(__file__).parent).stdout.strip() or None
    except OSError:
        return None


def run_bench(config: BenchConfig) -> dict:
    """Measure every requested part of the target under every path; returns the report (see `write_report`)."""
    unknown = sorted(set(config.parts) - set(PARTS)) + sorted(set(config.guidance) - set(GUIDANCE)) + sorted(
        set(config.samplers) - set(SAMPLERS))
    if unknown:
        raise RaeditError(f"unknown bench part, guidance or sampler: {', '.join(unknown)} (parts: {', '.join(PARTS)}; "
                          f"guidance: {', '.join(GUIDANCE)}; samplers: {', '.join(SAMPLERS)})")
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RaeditError("--device cuda, but PyTorch sees no CUDA device here")
    configure_matmul_precision(config.tf32)
    target = resolve_target(config.target)
    paths = [SpeedPath.parse(text) for text in config.paths]
    train_batch = config.train_batch or target.train_batch
    sample_batch = config.sample_batch or target.sample_batch
    rows: list[Row] = []
    seed = config.seed
    if "train" in config.parts:
        rows += measure_part("train", lambda p: denoiser_train_step(target.denoiser, train_batch, p, device, seed),
                             train_batch, paths, config, device)
    if "decoder-train" in config.parts and target.decoder is not None:
        batch = config.train_batch or target.decoder_train_batch
        rows += measure_part("decoder-train", lambda p: decoder_train_step(target.decoder, batch, p, device, seed),
                             batch, paths, config, device)
    if "sample" in config.parts:
        for sampler in config.samplers:
            for guidance in config.guidance:
                if guidance == "ag" and target.guide is None:
                    continue
                rows += measure_part(
                    f"sample/{sampler}/{guidance}",
                    lambda p, s=sampler, g=guidance: sampling_run(target, s, g, sample_batch, config.sample_steps, p,
                                                                  device, seed),
                    sample_batch, paths, config, device)
    if "autoencoder" in config.parts:
        for shape in target.autoencoders:
            batch = config.sample_batch or 16
            if shape.encoder is not None:
                rows += measure_part(f"encoder/{shape.encoder}/{shape.label}",
                                     lambda p, s=shape: encoder_forward(s, batch, p, device, seed),
                                     batch, paths, config, device)
            rows += measure_part(f"decoder/{shape.decoder.size}/{shape.label}",
                                 lambda p, s=shape: decoder_forward(s, batch, p, device, seed),
                                 batch, paths, config, device)
    return {
        "target": target.name,
        "device": device_name(device),
        "peak_tflops": {precision: config.peak_tflops or peak_tflops(device_name(device), precision, config.tf32)
                        for precision in ("bf16", "fp32")},
        "commit": _commit(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "config": asdict(config),
        "paper_gmacs": PAPER_GMACS,
        "rows": [asdict(row) for row in rows],
    }


def format_report(report: dict) -> str:
    """The report as a table: one line per part and path."""
    lines = [f"raedit bench {report['target']} on {report['device']} (torch {report['torch']}, commit "
             f"{report['commit']}, {report['machine']})",
             f"{'part':<30} {'path':<16} {'batch':>6} {'items/s':>10} {'first s':>8} {'GFLOP/item':>11} "
             f"{'TFLOP/s':>8} {'MFU':>6} {'mem GiB':>8} {'speedup':>8}"]
    for row in report["rows"]:
        mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "-"
        memory = f"{row['peak_memory_gib']:.1f}" if row["peak_memory_gib"] is not None else "-"
        speedup = f"{row['speedup_vs_first_path']:.3f}" if row["speedup_vs_first_path"] is not None else "-"
        path = row["path"] + ("" if row["compiled"] or "compile" not in row["path"] else " (eager)")
        lines.append(f"{row['part']:<30} {path:<16} {row['batch']:>6} {row['items_per_s']:>10.2f} "
                     f"{row['first_call_s']:>8.2f} {row['gflops_per_item']:>11.4g} {row['achieved_tflops']:>8.4g} "
                     f"{mfu:>6} {memory:>8} {speedup:>8}")
    return "\n".join(lines)
