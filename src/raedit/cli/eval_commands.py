"""`raedit eval`, `raedit eval-recon`, `raedit probe`: evaluation from the command line."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from raedit.core.files import write_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="FID, sFID, precision/recall, IS, FD of samples against a reference")
    parser.add_argument("--samples", required=True, help="npz (arr_0: N x H x W x 3 uint8) or image folder")
    parser.add_argument("--ref", required=True,
                        help="reference: npz of images, image folder, statistics npz (raedit or ADM), "
                             "or fashion-mnist-test / fashion-mnist-train")
    parser.add_argument("--metrics", default="fid,sfid,pr,is", help="comma list of fid,sfid,pr,is,fd,class_acc")
    parser.add_argument("--probe-train", help="class_acc: labelled training images its classifier is fitted on "
                        "(built-in data set, npz with labels, or class-per-folder images; default: a built-in "
                        "reference's training split)")
    parser.add_argument("--probe-train-limit", type=int, default=10000,
                        help="class_acc: fit the classifier on the first N training images (default 10000)")
    parser.add_argument("--fd-encoder", default="dinov2-l",
                        help="encoder for the fd metric (offline: effnet-lite0)")
    parser.add_argument("--fd-encoder-weights", help="hub id or local directory of the fd encoder's weights")
    parser.add_argument("--inception-logits", help="file with the TF Inception's 1008 x 2048 softmax weights "
                                                   "(needed for IS)")
    parser.add_argument("--ref-limit", type=int,
                        help="use only the first N reference images (Inception runs at about 9 images/s on CPU; "
                             "statistics are cached, so each reference is computed once)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--cache-dir", help="folder for cached reference statistics "
                                            "(default $RAEDIT_CACHE/eval or ~/.cache/raedit/eval)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.set_defaults(func=run_eval)

    parser = subparsers.add_parser("eval-recon", help="rFID, PSNR, SSIM, LPIPS of an autoencoder's reconstructions")
    parser.add_argument("config", nargs="?", help="YAML file or recipe (keys: autoencoder, data, num_images, ...)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    parser.set_defaults(func=run_eval_recon)

    parser = subparsers.add_parser("probe", help="linear probe top-1 on frozen, mean-pooled encoder tokens")
    parser.add_argument("--encoder", required=True, help="encoder name (see `raedit encoders`)")
    parser.add_argument("--encoder-weights", help="hub id or local directory of the encoder weights")
    parser.add_argument("--input-size", type=int, help="encoder input size (EfficientNet-Lite only)")
    parser.add_argument("--data", default="fashion-mnist", choices=["fashion-mnist"])
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", help="write the result as JSON to this file")
    parser.set_defaults(func=run_probe)


def _format(value: float | int | str) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


def _print_table(rows: dict) -> None:
    width = max(len(name) for name in rows)
    for name, value in rows.items():
        print(f"{name:<{width}}  {_format(value)}")


def _write_json(path: str | None, payload: dict) -> None:
    if path:
        write_json(path, payload)


def run_eval(args: argparse.Namespace) -> None:
    from raedit.eval.evaluate import evaluate_file, parse_metrics

    result = evaluate_file(
        args.samples, args.ref, parse_metrics(args.metrics), ref_limit=args.ref_limit, batch_size=args.batch_size,
        cache_dir=args.cache_dir, device=args.device, fd_encoder=args.fd_encoder,
        fd_encoder_weights=args.fd_encoder_weights, inception_logits=args.inception_logits,
        probe_train=args.probe_train, probe_train_limit=args.probe_train_limit,
    )
    _print_table({**result.values, "samples": result.num_samples, "reference": result.num_reference})
    for note in result.notes:
        print(f"note: {note}")
    _write_json(args.json, {"samples": str(args.samples), "ref": args.ref, **result.to_json()})


def run_eval_recon(args: argparse.Namespace) -> None:
    from raedit.core.config import load_config
    from raedit.jobs.eval_recon import EvalReconConfig
    from raedit.jobs.eval_recon import run_eval_recon as evaluate

    path, overrides = args.config, list(args.overrides)
    if path is not None and "=" in path and not Path(path).is_file():  # `raedit eval-recon key=value ...`
        path, overrides = None, [path, *overrides]
    config = load_config(EvalReconConfig, path, overrides)
    result = evaluate(config)
    notes = result.pop("notes")
    _print_table({key: value for key, value in result.items() if key not in ("autoencoder", "data")})
    for note in notes:
        print(f"note: {note}")
    _write_json(config.json, {**result, "notes": notes})


def run_probe(args: argparse.Namespace) -> None:
    from raedit.encoders import build_encoder
    from raedit.eval.probe import probe_fashion_mnist

    kwargs = {"input_size": args.input_size} if args.input_size else {}
    encoder = build_encoder(args.encoder, args.encoder_weights, **kwargs)
    result = probe_fashion_mnist(encoder, args.num_train, args.num_test, batch_size=args.batch_size,
                                 weight_decay=args.weight_decay)
    _print_table({"encoder": args.encoder, "train top-1": result.train_top1, "test top-1": result.test_top1,
                  "train images": result.num_train, "test images": result.num_test})
    _write_json(args.json, {"encoder": args.encoder, "data": args.data, **result.__dict__})

