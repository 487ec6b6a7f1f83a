"""`raedit demo` (the main job end to end on the offline default) and `raedit benchmark` (its 60-minute
version, whose FID is recorded in docs/results/benchmark.md as the number later changes must beat)."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="decoder, latents, DiT^DH, samples and FID on the CPU (minutes)")
    parser.add_argument("--quick", action="store_true", help="a 2-minute version (tiny models, few samples)")
    parser.add_argument("--out", default="runs/demo", help="output folder (replaced)")
    parser.set_defaults(func=run)
    parser = subparsers.add_parser("benchmark", help="the demo at 60 minutes; records its FID in docs/results")
    parser.add_argument("--out", default="runs/benchmark", help="output folder (replaced)")
    parser.add_argument("--results", default="docs/results", help="where benchmark.{md,json,png} go")
    parser.set_defaults(func=run_benchmark)


def run(args: argparse.Namespace) -> None:
    from raedit.jobs.demo import run_demo

    print_summary(run_demo(args.out, "quick" if args.quick else "full"), args.out)


def run_benchmark(args: argparse.Namespace) -> None:
    from raedit.experiments.results import write_results
    from raedit.jobs.demo import run_demo

    started = time.time()
    metrics = run_demo(args.out, "benchmark")
    rows = summary_rows(metrics)
    print_summary(metrics, args.out)
    results = Path(args.results)
    summary = ("The CPU benchmark recipe (`raedit benchmark`, plan BENCHMARK in src/raedit/jobs/demo.py): the demo "
               "pipeline on the whole 12,000-image training subset, EfficientNet-Lite0 latents, the demo's "
               f"decoder and a small DiT^DH, samples with CFG {metrics['cfg']}. **Generation FID "
               f"{metrics['fid']:.2f}** ({metrics['fid_samples']} class-balanced samples against the first "
               f"{metrics['fid_reference']} Fashion-MNIST test images), class accuracy "
               f"{metrics['class_accuracy']:.3f}, decoder PSNR {metrics['reconstruction_psnr_db']:.2f} dB, total wall "
               f"time {metrics['seconds']['total'] / 60:.1f} min: the number later changes must beat.")
    write_results(results, "benchmark", "CPU benchmark: generation FID on Fashion-MNIST", summary,
                  ["step", "seconds", "result"], rows, started, extra={"metrics": metrics})
    shutil.copyfile(Path(args.out) / "samples.png", results / "benchmark.png")


def summary_rows(metrics: dict) -> list[list]:
    seconds = metrics["seconds"]
    return [["latent cache + statistics", seconds["latent_cache_and_stats"],
             f"{metrics['latent_statistics_count']} latents"],
            ["stage 1: decoder", seconds["stage1_decoder"],
             f"held-out PSNR {metrics['reconstruction_psnr_db']:.2f} dB, SSIM {metrics['reconstruction_ssim']:.3f}"],
            ["stage 2: DiT^DH", seconds["stage2_diffusion"], "at the same time as stage 1"],
            ["both stages", seconds["both_stages"], ""],
            ["sampling", seconds["sampling"], f"{metrics['fid_samples']} class-balanced samples"],
            ["FID + class accuracy", seconds["evaluation"],
             f"FID {metrics['fid']:.2f} vs {metrics['fid_reference']} test images; class accuracy "
             f"{metrics['class_accuracy']:.3f} (real test images {metrics['class_accuracy_real_test']:.3f})"],
            ["total", seconds["total"], ""]]


def print_summary(metrics: dict, out: str | Path) -> None:
    """The closing table of `raedit demo` and `raedit benchmark`."""
    print(f"\n{'step':<28}{'seconds':>9}  result")
    for step, seconds, what in summary_rows(metrics):
        print(f"{step:<28}{seconds:>9.0f}  {what}")
    print(f"\noutputs in {out}: samples.png, reconstructions.png, metrics.json")
