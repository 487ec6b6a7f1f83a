"""`raedit demo`: the main job end to end on the offline default."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="decoder, latents, DiT^DH, samples and FID on the CPU (minutes)")
    parser.add_argument("--quick", action="store_true", help="a 2-minute version (tiny models, few samples)")
    parser.add_argument("--out", default="runs/demo", help="output folder (replaced)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from raedit.demo import run_demo

    print_summary(run_demo(args.out, quick=args.quick), args.out)


def print_summary(metrics: dict, out: str | Path) -> None:
    """The closing table of `raedit demo`."""
    rows = [("stage 1: decoder", metrics["seconds"]["stage1_decoder"],
             f"held-out PSNR {metrics['reconstruction_psnr_db']:.2f} dB, SSIM {metrics['reconstruction_ssim']:.3f}"),
            ("latent cache + statistics", metrics["seconds"]["latent_cache_and_stats"],
             f"{metrics['latent_statistics_count']} latents"),
            ("stage 2: DiT^DH", metrics["seconds"]["stage2_diffusion"], ""),
            ("sampling", metrics["seconds"]["sampling"], f"{metrics['fid_samples']} class-balanced samples"),
            ("FID", metrics["seconds"]["fid"],
             f"FID {metrics['fid']:.2f} vs {metrics['fid_reference']} test images")]
    print(f"\n{'step':<28}{'seconds':>9}  result")
    for step, seconds, what in rows:
        print(f"{step:<28}{seconds:>9.0f}  {what}")
    print(f"{'total':<28}{metrics['seconds']['total']:>9.0f}")
    print(f"\noutputs in {out}: samples.png, reconstructions.png, metrics.json")
