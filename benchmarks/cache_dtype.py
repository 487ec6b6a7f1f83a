"""What storing a latent cache in bfloat16 or float16 costs in accuracy: the error of the normalized latents the
model trains on (Sec. 3 normalization, the statistics of the float32 latents), in units of their standard
deviation, against float32. Offline encoder: EfficientNet-Lite0 on Fashion-MNIST at 64 px (the demo's latents).

    python benchmarks/cache_dtype.py [--images 2000]
"""

from __future__ import annotations

import argparse

import torch

from raedit.data.fashion_mnist import load_fashion_mnist, to_rgb
from raedit.encoders import build_encoder
from raedit.latent_stats import RunningMoments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    encoder = build_encoder("effnet-lite0", input_size=64)
    images, _ = load_fashion_mnist("train")
    with torch.no_grad():
        latents = torch.cat([encoder.encode_latents(to_rgb(images[start:start + 250], 32))
                             for start in range(0, args.images, 250)])
    moments = RunningMoments(tuple(latents.shape[1:]))
    moments.update(latents)
    mean, scale = moments.mean.float(), torch.sqrt(moments.variance.float() + 1e-5)

    def normalized(values: torch.Tensor) -> torch.Tensor:
        return (values.float() - mean) / scale

    reference = normalized(latents)
    print(f"{len(latents)} latents {tuple(latents.shape[1:])}; error of the normalized latents (std 1) against "
          f"float32:")
    print("| cache dtype | bytes per value | RMS error | max abs error |")
    print("| --- | --- | --- | --- |")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        error = normalized(latents.to(dtype)) - reference
        print(f"| {str(dtype).removeprefix('torch.')} | {torch.finfo(dtype).bits // 8} | "
              f"{error.pow(2).mean().sqrt():.2e} | {error.abs().max():.2e} |")


if __name__ == "__main__":
    main()
