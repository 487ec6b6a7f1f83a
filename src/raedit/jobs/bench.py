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

import gc
import logging
import platform
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from raedit.core.acceleration import ATTENTION_BACKENDS, attention_backend, compile_module, is_compiled
from raedit.core.config import Rule, above, at_least, check_values
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
from raedit.perf.flops import PAPER_GMACS, counted_flops, decoder_flops, denoiser_flops, encoder_flops, train_step_flops
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
SWITCHES = ("bf16", "compile", "compile-blocks", "ckpt")


@dataclass(frozen=True)
class SpeedPath:
    """A set of speed switches, written like "bf16+compile" ("fp32": none of them; "compile": the model as one graph,
    "compile-blocks": block by block; "ckpt": activation checkpointing; "attn=flash": the SDPA kernel)."""

    bf16: bool = False
    compile: str = "none"  # a mode of `raedit.core.acceleration.compile_module`
    checkpointing: bool = False  # activation checkpointing (train steps of the DiT models)
    attention: str = "auto"
    compile_backend: str = "inductor"

    @classmethod
    def parse(cls, text: str) -> "SpeedPath":
        switches: dict[str, object] = {}
        tokens = text.split("+")
        if "fp32" in tokens and "bf16" in tokens:
            raise RaeditError(f"speed path '{text}' asks for both fp32 and bf16")
        for token in tokens:
            if token == "fp32":
                continue
            if token.startswith("attn="):
                switches["attention"] = token.removeprefix("attn=")
                if switches["attention"] not in ATTENTION_BACKENDS:
                    raise RaeditError(f"unknown attention kernel in '{text}'; known: {', '.join(ATTENTION_BACKENDS)}")
            elif token in ("compile", "compile-blocks"):
                switches["compile"] = "model" if token == "compile" else "blocks"
            elif token in SWITCHES:
                switches["checkpointing" if token == "ckpt" else token] = True
            else:
                raise RaeditError(f"unknown speed switch '{token}' in '{text}': write switches from "
                                  f"{', '.join(SWITCHES)}, attn=KERNEL or fp32, joined by '+'")
        return cls(**switches)

    @property
    def name(self) -> str:
        compile_switch = {"none": "", "model": "compile", "blocks": "compile-blocks"}[self.compile]
        parts = [name for name, on in (("bf16", self.bf16), (compile_switch, bool(compile_switch)),
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

    VALID: ClassVar[dict[str, Rule]] = {
        "train_batch": at_least(1), "micro_batch": at_least(1), "decoder_batch": at_least(1),
        "sample_batch": at_least(1), "sample_steps": at_least(1), "rounds": at_least(1), "calls": at_least(1),
        "warmup": at_least(0), "peak_tflops": above(0)}

    target: str
    device: str = "cpu"
    parts: tuple[str, ...] = PARTS
    paths: tuple[str, ...] = ("fp32",)
    samplers: tuple[str, ...] = ("euler",)
    guidance: tuple[str, ...] = GUIDANCE
    train_batch: int | None = None  # None: the target's
    micro_batch: int | None = None  # the train step accumulates gradients over micro-batches of this size
    decoder_batch: int | None = None  # the decoder's train step; None: the target's
    sample_batch: int | None = None
    sample_steps: int = 49  # the paper's Euler on 50 time points
    rounds: int = 3
    calls: int = 3  # timed calls per round
    warmup: int = 1  # untimed calls after the first
    peak_tflops: float | None = None
    tf32: bool = True
    compile_backend: str = "inductor"  # torch.compile's backend ("aot_eager": tracing without code generation)
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


# --- workloads: each is built for one path ---------------------------------------------------------------------


@dataclass
class Workload:
    """One call to time, the FLOPs it does, and the module(s) whose compilation it asked for."""

    call: Callable[[], object]
    flops: int
    compiled_modules: list[nn.Module] = field(default_factory=list)

    @property
    def compiled(self) -> bool:
        """Whether it runs compiled code (False when compiling fell back to eager, or was not asked for)."""
        return bool(self.compiled_modules) and all(is_compiled(module) for module in self.compiled_modules)


def _compiled(module: nn.Module, path: SpeedPath, what: str, compiled: list[nn.Module],
              entry: str = "forward") -> nn.Module:
    if path.compile != "none":
        compiled.append(compile_module(module, what, path.compile, entry, backend=path.compile_backend))
    return module


def _denoiser(config: DiTConfig, device: torch.device, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    with torch.device(device):  # initialized where it runs: an XL model builds in seconds on a GPU
        return build_model(config)


def denoiser_train_step(config: DiTConfig, batch: int, micro_batch: int, path: SpeedPath, device: torch.device,
                        seed: int) -> Workload:
    """One stage-2 optimizer step (Sec. 4) on `batch` samples, accumulated over micro-batches of `micro_batch`:
    flow-matching loss on shifted t, backward, clip 1.0, fused AdamW, EMA."""
    if batch % micro_batch:
        raise RaeditError(f"the train batch {batch} is not a multiple of the micro-batch {micro_batch}")
    compiled: list[nn.Module] = []
    model = _denoiser(config, device, seed).train()
    model.checkpoint_activations = path.checkpointing
    ema = EMA(model, 0.9995, _denoiser(config, device, seed).eval())
    _compiled(model, path, "the denoiser", compiled)
    optimizer = build_adamw(model.parameters(), OptimConfig(grad_clip=1.0))
    params = [p for p in model.parameters() if p.requires_grad]
    generator = torch.Generator(device).manual_seed(seed)
    latents = torch.randn((batch, *config.latent_shape), generator=generator, device=device)
    labels = torch.randint(config.num_classes, (batch,), generator=generator, device=device)
    alpha, times = shift_alpha(config.latent_shape), TimeDistribution()
    parts = batch // micro_batch

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=device)
        for part_latents, part_labels in zip(latents.split(micro_batch), labels.split(micro_batch)):
            with attention_backend(path.attention), autocast_context(device, path.precision):
                loss = flow_matching_loss(model, part_latents, part_labels, times, alpha, prediction=config.prediction,
                                          base_loss_weight=1.0 if config.base_depth else None)
            (loss / parts).backward()
            loss_sum += loss.detach()
        norm = clip_gradients(params, 1.0)
        step_unless_non_finite(optimizer, torch.isfinite(loss_sum) & torch.isfinite(norm))
        ema.update(model)

    return Workload(step, batch * train_step_flops(denoiser_flops(config)), compiled)


def decoder_train_step(config: DecoderConfig, batch: int, path: SpeedPath, device: torch.device,
                       seed: int) -> Workload:
    """The stage-1 decoder's own step: decode latents, an L1 loss, backward, fused AdamW (the frozen encoder, the
    perceptual loss and the discriminator are not in it: the encoder is measured alone)."""
    compiled: list[nn.Module] = []
    torch.manual_seed(seed)
    with torch.device(device):
        decoder = _compiled(ViTDecoder(config).train(), path, "the decoder", compiled)
    optimizer = build_adamw(decoder.parameters(), OptimConfig())
    generator = torch.Generator(device).manual_seed(seed)
    tokens = torch.randn((batch, decoder.num_tokens, config.in_channels), generator=generator, device=device)
    images = torch.randn((batch, config.out_channels, *config.image_size), generator=generator, device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with attention_backend(path.attention), autocast_context(device, path.precision):
            loss = F.l1_loss(decoder(tokens).float(), images)
        loss.backward()
        optimizer.step()

    return Workload(step, batch * train_step_flops(decoder_flops(config)), compiled)


def sampling_run(target: BenchTarget, sampler: str, guidance: str, batch: int, steps: int, path: SpeedPath,
                 device: torch.device, seed: int) -> Workload:
    """`batch` samples: `steps` steps of `sampler` on the official grid (t_end 1e-3, the shift of the latent
    shape) with `guidance` over the whole interval (CFG 1.5: one batch of 2B; AutoGuidance 1.42 by the target's
    guide), then decoded by the target's decoder."""
    compiled: list[nn.Module] = []
    config = target.denoiser
    model = _compiled(_denoiser(config, device, seed).eval(), path, "the denoiser", compiled)
    evaluations = batch * steps * (2 if sampler == "heun" else 1)  # samples each network sees in one call
    flops = evaluations * denoiser_flops(config) * (2 if guidance == "cfg" else 1)
    guide = None
    if guidance == "ag":
        guide_model = _compiled(_denoiser(target.guide, device, seed + 1).eval(), path, "the guide", compiled)
        guide = in_precision(guide_model, device.type, path.bf16)
        flops += evaluations * denoiser_flops(target.guide)
    decoder = None
    if target.decoder is not None:
        with torch.device(device):
            decoder = _compiled(ViTDecoder(target.decoder).eval(), path, "the decoder", compiled)
        flops += batch * decoder_flops(target.decoder)
    generator = torch.Generator(device).manual_seed(seed)
    noise = torch.randn((batch, *config.latent_shape), generator=generator, device=device)
    labels = torch.randint(config.num_classes, (batch,), generator=generator, device=device)
    velocity = guided_velocity(in_precision(model, device.type, path.bf16), labels, model.null_label,
                               CFG_SCALE if guidance == "cfg" else 1.0, (0.0, 1.0), guide,
                               AG_SCALE if guidance == "ag" else 1.0)
    alpha = shift_alpha(config.latent_shape)

    def run() -> None:
        with attention_backend(path.attention):
            latents = sample(velocity, noise, sampler, steps, alpha, OFFICIAL_T_END)
            if decoder is not None:
                with torch.no_grad(), autocast_context(device, path.precision):
                    decoder(latents_to_tokens(latents))

    return Workload(run, flops, compiled)


def encoder_forward(shape: AutoencoderShape, batch: int, path: SpeedPath, device: torch.device,
                    seed: int) -> Workload:
    """The frozen encoder alone on `batch` images: DINOv2 with random weights at its released size; an encoder with
    offline weights (EfficientNet-Lite) with those, its FLOPs counted by FlopCounterMode."""
    compiled: list[nn.Module] = []
    spec = get_spec(shape.encoder)
    torch.manual_seed(seed)
    if spec.family_class.endswith(":Dinov2Encoder"):
        from raedit.encoders.dinov2 import Dinov2Encoder

        encoder = Dinov2Encoder.with_random_weights(spec, shape.encoder_input_size)
    else:
        from raedit.encoders import build_encoder

        options = {"input_size": shape.encoder_input_size} if shape.encoder_input_size else {}
        encoder = build_encoder(shape.encoder, **options)
    encoder = encoder.to(device).eval()
    images = torch.rand((batch, 3, encoder.input_size, encoder.input_size), device=device)
    try:
        flops = batch * encoder_flops(shape.encoder, encoder.input_size)
    except RaeditError:  # no analytic count (a convolutional encoder): count one image's forward
        with torch.no_grad():
            flops = batch * counted_flops(lambda: encoder.encode(images[:1]))
    _compiled(encoder, path, "the encoder", compiled, entry="forward_tokens")

    def run() -> None:
        with torch.no_grad(), attention_backend(path.attention), autocast_context(device, path.precision):
            encoder.encode(images)

    return Workload(run, flops, compiled)


def decoder_forward(shape: AutoencoderShape, batch: int, path: SpeedPath, device: torch.device,
                    seed: int) -> Workload:
    """The decoder alone on `batch` latents."""
    compiled: list[nn.Module] = []
    torch.manual_seed(seed)
    with torch.device(device):
        decoder = _compiled(ViTDecoder(shape.decoder).eval(), path, "the decoder", compiled)
    tokens = torch.randn((batch, decoder.num_tokens, shape.decoder.in_channels), device=device)

    def run() -> None:
        with torch.no_grad(), attention_backend(path.attention), autocast_context(device, path.precision):
            decoder(tokens)

    return Workload(run, batch * decoder_flops(shape.decoder), compiled)


# --- measuring ----------------------------------------------------------------------------------------------


def measure_part(part: str, build: Callable[[SpeedPath], Workload], batch: int, paths: list[SpeedPath],
                 config: BenchConfig, device: torch.device, peaks: dict[str, float | None]) -> list[Row]:
    """Time the workload of each path in turn (`raedit.perf.timing.alternate`): one row per path, its MFU against
    `peaks[precision]`. Activation checkpointing acts on train steps only; elsewhere a path is measured without it
    (and once)."""
    if part != "train":
        paths = list(dict.fromkeys(replace(path, checkpointing=False) for path in paths))
    logger.info("bench %s: %s", part, ", ".join(path.name for path in paths))
    workloads: list[Workload] = []

    def builder(path: SpeedPath) -> Callable[[], Callable[[], object]]:
        def build_call() -> Callable[[], object]:
            workloads.append(build(path))
            return workloads[-1].call
        return build_call

    times = alternate([(path.name, builder(path)) for path in paths], config.rounds, config.calls, config.warmup,
                      device)
    rows = []
    for path, workload, path_times in zip(paths, workloads, times):
        seconds = path_times.median_s
        achieved = workload.flops / seconds / 1e12
        peak = peaks[path.precision]
        memory = path_times.peak_memory_bytes / 2**30 if path_times.peak_memory_bytes is not None else None
        rows.append(Row(part, path.name, batch, batch / seconds, seconds, path_times.first_call_s,
                        workload.flops / batch / 1e9, achieved, achieved / peak if peak else None, memory,
                        speedup_over(times[0], path_times) if len(times) > 1 else None, workload.compiled,
                        path_times.rounds))
    workloads.clear()
    gc.collect()  # a compiled model refers to itself through its forward: free it before the next part
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              timeout=10, cwd=Path(__file__).parent).stdout.strip() or None
    except OSError:
        return None


def _check(config: BenchConfig) -> None:
    check_values(config, spell=lambda key: "--" + key.replace("_", "-"))
    for name, given, known in (("part", config.parts, PARTS), ("guidance", config.guidance, GUIDANCE),
                               ("sampler", config.samplers, SAMPLERS)):
        unknown = [value for value in given if value not in known]
        if unknown:
            raise RaeditError(f"unknown bench {name} '{unknown[0]}'; known: {', '.join(known)}")


def run_bench(config: BenchConfig) -> dict:
    """Measure every requested part of the target under every path; returns the report (`format_report`)."""
    _check(config)
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RaeditError("--device cuda, but PyTorch sees no CUDA device here")
    configure_matmul_precision(config.tf32)
    target = resolve_target(config.target)
    paths = [replace(SpeedPath.parse(text), compile_backend=config.compile_backend) for text in config.paths]
    train_batch = config.train_batch or target.train_batch
    sample_batch = config.sample_batch or target.sample_batch
    peaks = {precision: config.peak_tflops or peak_tflops(device_name(device), precision, config.tf32)
             for precision in ("bf16", "fp32")}
    measure = partial(measure_part, paths=paths, config=config, device=device, peaks=peaks)
    rows: list[Row] = []
    seed = config.seed
    if "train" in config.parts:
        micro = config.micro_batch or train_batch
        rows += measure("train", lambda p: denoiser_train_step(target.denoiser, train_batch, micro, p, device, seed),
                        train_batch)
    if "decoder-train" in config.parts:
        if target.decoder is None:
            logger.info("bench decoder-train: target '%s' has no decoder, skipped", target.name)
        else:
            batch = config.decoder_batch or target.decoder_train_batch
            rows += measure("decoder-train", lambda p: decoder_train_step(target.decoder, batch, p, device, seed),
                            batch)
    if "sample" in config.parts:
        for sampler in config.samplers:
            for guidance in config.guidance:
                if guidance == "ag" and target.guide is None:
                    logger.info("bench sample/%s/ag: target '%s' has no AutoGuidance guide, skipped", sampler,
                                target.name)
                    continue
                rows += measure(f"sample/{sampler}/{guidance}",
                                lambda p, s=sampler, g=guidance: sampling_run(target, s, g, sample_batch,
                                                                              config.sample_steps, p, device, seed),
                                sample_batch)
    if "autoencoder" in config.parts:
        batch = config.sample_batch or 16
        for shape in target.autoencoders:
            if shape.encoder is not None:
                rows += measure(f"encoder/{shape.encoder}/{shape.label}",
                                lambda p, s=shape: encoder_forward(s, batch, p, device, seed), batch)
            rows += measure(f"decoder/{shape.decoder.size}/{shape.label}",
                            lambda p, s=shape: decoder_forward(s, batch, p, device, seed), batch)
    return {
        "target": target.name,
        "device": device_name(device),
        "peak_tflops": peaks,
        "commit": _commit(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "config": asdict(config),
        "paper_gmacs": PAPER_GMACS,
        "rows": [asdict(row) for row in rows],
    }


# Rows of `raedit bench` next to the paper's per-image compute (Fig. 2, in GMACs): (RAE's part, SD-VAE's).
PAPER_ROWS = {"encoder/dinov2-b/256px": ("dinov2-b encoder 256px", "sd-vae encoder 256px"),
              "decoder/XL/256px": ("vit-xl decoder 256px", "sd-vae decoder 256px")}


def format_report(report: dict) -> str:
    """The report as a table, one line per part and path; then the encoder and decoder next to the paper."""
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
    compared = {row["part"]: row["gflops_per_item"] for row in report["rows"] if row["part"] in PAPER_ROWS}
    for part, gflops in compared.items():
        rae, sd_vae = (report["paper_gmacs"][key] for key in PAPER_ROWS[part])
        lines.append(f"{part}: {gflops / 2:.1f} GMACs per image (GFLOP / 2, the paper's unit); the paper: {rae:g} "
                     f"(Fig. 2; SD-VAE: {sd_vae:g})")
    return "\n".join(lines)
