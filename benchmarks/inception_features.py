"""Throughput of the FID Inception features (`raedit.eval.inception.InceptionFeatures`) on this machine.

    python benchmarks/inception_features.py [--images 200] [--batch 50]

Feeds random 32 px uint8 images (the size of the Fashion-MNIST samples; every image is resized to 299 px) in
batches after one warm-up batch and prints images per second. Results: docs/benchmarks/README.md.
"""

import argparse
import time

import numpy as np
import torch

from raedit.eval.inception import InceptionFeatures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    images = np.random.default_rng(0).integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    model = InceptionFeatures()
    model(images[: args.batch])
    start = time.perf_counter()
    for first in range(0, args.images, args.batch):
        model(images[first : first + args.batch])
    seconds = time.perf_counter() - start
    print(f"{args.images / seconds:.2f} images/s ({args.images} images, batch {args.batch}, "
          f"{torch.get_num_threads()} torch threads)")


if __name__ == "__main__":
    main()
