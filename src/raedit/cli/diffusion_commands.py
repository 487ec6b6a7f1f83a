"""`raedit train`, `raedit cache-latents`, `raedit sample`: stage 2 from YAML recipes, and sampling."""

from __future__ import annotations

import argparse
import signal


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="stage 2: train a diffusion transformer on RAE latents")
    train.add_argument("config", help="YAML recipe, e.g. configs/stage2/demo.yaml")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=2")
    train.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    train.set_defaults(func=run_train)

    cache = subparsers.add_parser("cache-latents", help="encode a data set into sharded latents (resumable)")
    cache.add_argument("config", help="YAML file, e.g. configs/stage2/cache_demo.yaml")
    cache.add_argument("overrides", nargs="*", help="key=value overrides, e.g. out=runs/latents/x")
    cache.set_defaults(func=run_cache_latents)

    sample = subparsers.add_parser("sample", help="class-conditional samples from a trained denoiser")
    sample.add_argument("--ckpt", required=True, help="a run directory, its model/ export, or a checkpoint")
    sample.add_argument("--guide-ckpt", help="AutoGuidance guide: a smaller or earlier model of the same latents")
    sample.add_argument("--num", type=int, default=100, help="number of samples")
    sample.add_argument("--label-sampling", choices=("equal", "random"), default="equal")
    sample.add_argument("--classes", type=int, nargs="+", help="class ids to sample (default: all)")
    sample.add_argument("--steps", type=int, default=49, help="integration steps (49: 50 time points)")
    sample.add_argument("--sampler", choices=("euler", "heun", "sde"), default="euler")
    sample.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale (1: none)")
    sample.add_argument("--cfg-interval", type=float, nargs=2, default=(0.0, 1.0), metavar=("T_MIN", "T_MAX"),
                        help="apply guidance only for t in [T_MIN, T_MAX]")
    sample.add_argument("--ag", type=float, default=1.0, help="AutoGuidance scale (needs --guide-ckpt)")
    sample.add_argument("--out", default="samples.npz", help="ADM-style npz (arr_0, labels)")
    sample.add_argument("--grid", default="grid.png", help="PNG grid of the first samples ('' for none)")
    sample.add_argument("--batch-size", type=int, default=64)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 for final numbers)")
    sample.add_argument("--rae", help="the RAE directory, instead of the one recorded with the model")
    sample.set_defaults(func=run_sample)


def run_train(args: argparse.Namespace) -> int:
    from raedit.train.stage2 import load_stage2_config, train_diffusion

    result = train_diffusion(load_stage2_config(args.config, args.overrides), resume=args.resume)
    if result.signal_name is not None:
        return 128 + int(signal.Signals[result.signal_name])
    return 0


def run_cache_latents(args: argparse.Namespace) -> int:
    from raedit.config import load_config
    from raedit.data.latent_cache import CacheConfig, cache_latents

    manifest = cache_latents(load_config(CacheConfig, args.config, args.overrides))
    print(f"latent cache: {manifest.parent}")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    from raedit.sample import SampleConfig, generate

    config = SampleConfig(
        ckpt=args.ckpt, num=args.num, guide_ckpt=args.guide_ckpt, label_sampling=args.label_sampling,
        classes=args.classes, steps=args.steps, sampler=args.sampler, cfg=args.cfg,
        cfg_interval=tuple(args.cfg_interval), ag=args.ag, out=args.out, grid=args.grid or None,
        batch_size=args.batch_size, seed=args.seed, bf16=args.bf16, rae=args.rae,
    )
    written = generate(config)
    if written is not None:
        print(f"samples: {written}" + (f", grid: {config.grid}" if config.grid else ""))
    return 0
