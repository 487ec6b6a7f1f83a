"""`raedit reconstruct`: image files through an RAE, written as side-by-side PNGs (input | reconstruction), with
the PSNR of each."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from raedit.autoencoder import RAE, AutoencoderConfig
from raedit.core.errors import RaeditError
from raedit.core.images import to_uint8_hwc
from raedit.data.transforms import center_crop, to_tensor
from raedit.eval.similarity import psnr
from raedit.latent_stats import load_latent_stats

logger = logging.getLogger(__name__)


def load_autoencoder_for_reconstruction(
    encoder: str, decoder: str | None = None, encoder_weights: str | None = None, input_size: int | None = None,
    decoder_size: str = "S", decoder_patch_size: int = 16, stats: str | None = None,
) -> RAE:
    """A saved RAE directory, or `encoder` + decoder weights file (+ stats), or an untrained decoder."""
    if decoder is not None and Path(decoder).is_dir():
        rae = RAE.from_pretrained(decoder)
        if stats:
            rae.set_stats(*load_latent_stats(stats, rae.latent_shape, rae.config.latent_space))
        return rae.eval()
    config = AutoencoderConfig(encoder=encoder, encoder_weights=encoder_weights, encoder_input_size=input_size,
                               decoder_size=decoder_size, decoder_patch_size=decoder_patch_size, stats=stats)
    rae = RAE(config)
    if decoder is None:
        logger.warning("no --decoder given: reconstructing with an untrained decoder")
    else:
        rae.load_decoder(decoder)
    return rae.eval()


def load_image(path: Path, size: int) -> torch.Tensor:
    """An image file, ADM center-cropped to `size`, as 3 x size x size in [0, 1]."""
    try:
        with Image.open(path) as image:
            return to_tensor(center_crop(image.convert("RGB"), size))
    except FileNotFoundError:
        raise RaeditError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as error:
        raise RaeditError(f"cannot read image {path}: {error}") from None


def reconstruct_files(rae: RAE, paths: list[Path], out: Path) -> list[tuple[Path, float]]:
    """Reconstruct each image at the decoder's output size; write `<stem>_recon.png` side by side."""
    height, width = rae.image_size
    if height != width:
        raise RaeditError(f"reconstruct needs a square decoder output, got {height}x{width}")
    out.mkdir(parents=True, exist_ok=True)
    device = rae.latent_mean.device
    results = []
    for path in paths:
        image = load_image(path, height).unsqueeze(0).to(device)
        reconstruction = rae.decode(rae.encode(image))
        score = float(psnr(reconstruction, image)[0])
        pair = torch.cat([image, reconstruction], dim=3)  # 1 x 3 x H x 2W
        Image.fromarray(to_uint8_hwc(pair)[0]).save(out / f"{path.stem}_recon.png")
        results.append((path, score))
    return results
