"""`raedit encoders`, `raedit stats`, `raedit reconstruct`: the autoencoder from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("encoders", help="list the encoders, their latent shapes and weights")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run_encoders)

    parser = subparsers.add_parser("stats", help="compute latent statistics over a data set")
    parser.add_argument("config", help="YAML file or recipe (keys: autoencoder, data, batch_size, out, rae, ...)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    parser.set_defaults(func=run_stats)

    parser = subparsers.add_parser("reconstruct", help="encode and decode images; writes side-by-side PNGs")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--encoder", default="effnet-lite0", help="encoder name (see `raedit encoders`)")
    parser.add_argument("--encoder-weights", help="hub id or local directory of the encoder weights")
    parser.add_argument("--input-size", type=int, help="encoder input size (EfficientNet-Lite only)")
    parser.add_argument("--decoder", help="a saved RAE directory or decoder weights (.safetensors/.pt); "
                                          "omitted: an untrained decoder")
    parser.add_argument("--decoder-size", default="S", help="decoder size when --decoder is a weights file")
    parser.add_argument("--decoder-patch-size", type=int, default=16)
    parser.add_argument("--stats", help="latent statistics file")
    parser.add_argument("--out", required=True, help="output folder")
    parser.set_defaults(func=run_reconstruct)


def run_encoders(args: argparse.Namespace) -> None:
    from raedit.encoders import ENCODERS

    rows = [
        {"name": spec.name, "source": spec.source, "input_size": spec.input_size, "patch_size": spec.patch_size,
         "grid": list(spec.grid), "channels": spec.channels, "available": spec.weights_available()}
        for spec in ENCODERS.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'name':<14}{'input':>6}{'grid':>8}{'channels':>10}  {'weights':<10}source")
    for row in rows:
        grid = "x".join(map(str, row["grid"]))
        weights = "available" if row["available"] else "missing"
        print(f"{row['name']:<14}{row['input_size']:>6}{grid:>8}{row['channels']:>10}  {weights:<10}{row['source']}")


def run_stats(args: argparse.Namespace) -> None:
    from raedit.core.config import load_config
    from raedit.jobs.stats import StatsConfig, compute_latent_stats

    config = load_config(StatsConfig, args.config, args.overrides)
    moments = compute_latent_stats(config)
    places = [f"to {config.out}"] * (config.out is not None) + [f"into the RAE {config.rae}"] * (config.rae is not None)
    print(f"wrote latent statistics of {moments.count} images, shape {tuple(moments.mean.shape)}, "
          f"{' and '.join(places)}")


def run_reconstruct(args: argparse.Namespace) -> None:
    from raedit.jobs.reconstruct import load_autoencoder_for_reconstruction, reconstruct_files

    rae = load_autoencoder_for_reconstruction(
        encoder=args.encoder, encoder_weights=args.encoder_weights, input_size=args.input_size,
        decoder=args.decoder, decoder_size=args.decoder_size, decoder_patch_size=args.decoder_patch_size,
        stats=args.stats,
    )
    with torch.inference_mode():
        results = reconstruct_files(rae, [Path(p) for p in args.images], Path(args.out))
    for path, psnr in results:
        print(f"{path}  PSNR {psnr:.2f} dB")
