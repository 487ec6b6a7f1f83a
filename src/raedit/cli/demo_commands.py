"""`raedit demo`: the main job end to end on the offline default."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="decoder, latents, DiT^DH, samples and FID on the CPU (minutes)")
    parser.add_argument("--quick", action="store_true", help="a 2-minute version (tiny models, few samples)")
    parser.add_argument("--out", default="runs/demo", help="output folder (replaced)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from raedit.demo import print_summary, run_demo

    print_summary(run_demo(args.out, quick=args.quick), args.out)
