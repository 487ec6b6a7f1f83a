"""`raedit train`, `raedit cache-latents`, `raedit sample`, `raedit convert-run`: stage 2 from YAML recipes,
sampling, and run directories of earlier versions."""

from __future__ import annotations

import argparse
import signal

from raedit.core.dataclass_options import add_options, from_options
from raedit.jobs.sample import SampleConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="stage 2: train a diffusion transformer on RAE latents")
    train.add_argument("config", help="YAML file or shipped recipe, e.g. stage2/demo (`raedit recipes`)")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=2")
    train.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    train.add_argument("--fresh", action="store_true",
                       help="start anew in a run directory that holds a run, moving that to RUN_DIR.replaced-<time>")
    train.set_defaults(func=run_train)

    cache = subparsers.add_parser("cache-latents", help="encode a data set into sharded latents (resumable)")
    cache.add_argument("config", help="YAML file or shipped recipe, e.g. stage2/cache_demo")
    cache.add_argument("overrides", nargs="*", help="key=value overrides, e.g. out=runs/latents/x")
    cache.set_defaults(func=run_cache_latents)

    sample = subparsers.add_parser("sample", help="class-conditional samples from a trained denoiser")
    add_options(sample, SampleConfig)
    sample.set_defaults(func=run_sample)

    convert = subparsers.add_parser("convert-run", help="bring a stage-2 run directory of raedit 0.1 up to date")
    convert.add_argument("run_dir", help="the run directory (holding config.yaml, model/, checkpoints/)")
    convert.set_defaults(func=run_convert_run)


def run_train(args: argparse.Namespace) -> int:
    from raedit.core.config import load_config
    from raedit.train.stage2 import Stage2Config, train_diffusion

    result = train_diffusion(load_config(Stage2Config, args.config, args.overrides), resume=args.resume,
                             fresh=args.fresh)
    if result.signal_name is not None:
        return 128 + int(signal.Signals[result.signal_name])
    return 0


def run_cache_latents(args: argparse.Namespace) -> int:
    from raedit.core.config import load_config
    from raedit.jobs.cache_latents import CacheConfig, cache_latents

    manifest = cache_latents(load_config(CacheConfig, args.config, args.overrides))
    print(f"latent cache: {manifest.parent}")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    from raedit.jobs.sample import generate

    config = from_options(SampleConfig, args)
    written = generate(config)
    if written is not None:
        print(f"samples: {written}" + (f", grid: {config.grid}" if config.grid else ""))
    return 0


def run_convert_run(args: argparse.Namespace) -> int:
    from raedit.jobs.convert_run import convert_run

    info = convert_run(args.run_dir)
    print(f"converted {args.run_dir}: its model describes itself; its RAE, which holds the latent statistics, "
          f"is {info.rae}")
    return 0
