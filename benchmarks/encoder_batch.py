"""Encoder throughput against batch size on this machine (`raedit.encoders.build_encoder`).

    python benchmarks/encoder_batch.py --encoder effnet-lite0 --input-size 64 --batch 250 [--images 1000]

Encodes random 32 px images (the Fashion-MNIST size; the encoder resizes them to its input size) in batches of
`--batch` after one warm-up batch and prints images per second. Results: docs/benchmarks/README.md.
"""

import argparse
import time

import torch

from raedit.encoders import build_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="effnet-lite0")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    images = torch.rand(args.images, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    encoder = build_encoder(args.encoder, input_size=args.input_size)
    with torch.no_grad():
        encoder.encode(images[: args.batch])
        start = time.perf_counter()
        for first in range(0, args.images, args.batch):
            encoder.encode(images[first : first + args.batch])
        seconds = time.perf_counter() - start
    print(f"{args.images / seconds:.1f} images/s ({args.encoder} at {args.input_size} px, {args.images} images, "
          f"batch {args.batch}, {torch.get_num_threads()} torch threads)")


if __name__ == "__main__":
    main()
