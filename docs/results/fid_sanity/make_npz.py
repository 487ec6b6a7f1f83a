"""Fashion-MNIST train images 1000..1999 as ADM npz files in OUT_DIR: clean, and with Gaussian noise
(std 0.1 * 255, seed 0). Usage: python docs/results/fid_sanity/make_npz.py OUT_DIR"""

import sys
from pathlib import Path

import numpy as np

from raedit.data.fashion_mnist import load_fashion_mnist

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
images, _ = load_fashion_mnist("train")
half_b = np.repeat(images[1000:2000, :, :, None], 3, axis=3)
noise = np.random.default_rng(0).normal(0, 0.1 * 255, half_b.shape)
np.savez(out / "train_1000_2000.npz", arr_0=half_b)
np.savez(out / "train_1000_2000_noised.npz", arr_0=np.clip(half_b + noise, 0, 255).round().astype(np.uint8))
