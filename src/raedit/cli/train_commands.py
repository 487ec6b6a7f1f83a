"""`raedit train-decoder`: stage 1 from a YAML recipe."""

from __future__ import annotations

import argparse
import signal


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-decoder", help="stage 1: train the RAE decoder (L1 + LPIPS + GAN)")
    parser.add_argument("config", help="YAML file or shipped recipe, e.g. stage1/demo (`raedit recipes`)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=2")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    parser.add_argument("--fresh", action="store_true",
                        help="start anew in a run directory that holds a run, moving that to RUN_DIR.replaced-<time>")
    parser.set_defaults(func=run_train_decoder)


def run_train_decoder(args: argparse.Namespace) -> int:
    from raedit.core.config import load_config
    from raedit.train.stage1 import Stage1Config, train_decoder

    config = load_config(Stage1Config, args.config, args.overrides)
    result, _ = train_decoder(config, resume=args.resume, fresh=args.fresh)
    if result.signal_name is not None:
        return 128 + int(signal.Signals[result.signal_name])
    return 0
