"""What `raedit bench` measures: the models of a preset or of a stage-2 recipe, at their real sizes.

A target is a denoiser (and the AutoGuidance guide the paper pairs with it), the ViT decoder of its latent space,
and the encoders and decoders the paper compares at 256 and 512 px (Fig. 2). The models get random weights: speed
and operation counts don't depend on the values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raedit.core.config import find_config, load_config
from raedit.core.errors import RaeditError
from raedit.decoder import DecoderConfig
from raedit.models import DiTConfig, model_config
from raedit.train.stage1 import Stage1Config
from raedit.train.stage2 import Stage2Config


@dataclass(frozen=True)
class AutoencoderShape:
    """An encoder at an input size and the decoder of its tokens, measured alone (Fig. 2's comparison)."""

    label: str  # e.g. "256px"
    encoder: str | None  # a registry name; None: no encoder to measure
    encoder_input_size: int | None
    decoder: DecoderConfig


@dataclass
class BenchTarget:
    """The models one `raedit bench` run measures, and the batch sizes it measures them at."""

    name: str
    denoiser: DiTConfig
    guide: DiTConfig | None  # the AutoGuidance guide; None: guidance means CFG with the null class
    autoencoders: list[AutoencoderShape] = field(default_factory=list)
    train_batch: int = 256
    sample_batch: int = 250
    decoder_train_batch: int = 64

    @property
    def decoder(self) -> DecoderConfig | None:
        """The decoder of the denoiser's latents (the first autoencoder shape), which sampling decodes with."""
        return self.autoencoders[0].decoder if self.autoencoders else None


def _dinov2_b_autoencoders(latent_shape: tuple[int, int, int]) -> list[AutoencoderShape]:
    """DINOv2-B with the ViT-XL decoder: 224 px -> 16 x 16 tokens -> 256 px, and the official 512 px model's
    448 px -> 32 x 32 tokens -> 512 px (decoder patch 16); first the one of `latent_shape`'s token grid."""
    shapes = [AutoencoderShape("256px", "dinov2-b", 224, DecoderConfig("XL", 768, (16, 16), 16)),
              AutoencoderShape("512px", "dinov2-b", 448, DecoderConfig("XL", 768, (32, 32), 16))]
    return sorted(shapes, key=lambda shape: shape.decoder.grid != tuple(latent_shape[1:]))


def _imagenet(name: str, model: str, latent_shape: tuple[int, int, int], guided: bool) -> BenchTarget:
    guide = model_config("ditdh-s", latent_shape) if guided else None
    return BenchTarget(name, model_config(model, latent_shape), guide, _dinov2_b_autoencoders(latent_shape))


def _demo() -> BenchTarget:
    """The models of `make demo`, from its shipped recipes (stage1/demo, stage2/demo)."""
    stage2 = load_config(Stage2Config, "stage2/demo")
    stage1 = load_config(Stage1Config, "stage1/demo")
    latent_shape = tuple(stage2.latent_shape)
    autoencoder = stage1.autoencoder
    decoder = DecoderConfig(autoencoder.decoder_size, latent_shape[0], latent_shape[1:], autoencoder.decoder_patch_size)
    return BenchTarget("demo", stage2.model.architecture(latent_shape), None,
                       [AutoencoderShape(f"{decoder.image_size[0]}px", autoencoder.encoder,
                                         autoencoder.encoder_input_size, decoder)],
                       train_batch=stage2.train.micro_batch_size or 64, sample_batch=100,
                       decoder_train_batch=stage1.train.micro_batch_size or 32)


def _tiny() -> BenchTarget:
    """Seconds on a CPU: the test suite's size."""
    latent_shape = (8, 2, 2)
    denoiser = model_config("ditdh-s", latent_shape, depth=1, width=16, num_heads=2, head_width=16,
                            head_num_heads=2, num_classes=4)
    guide = model_config("ditdh-s", latent_shape, depth=1, width=8, num_heads=2, head_width=8, head_num_heads=2,
                         num_classes=4)
    return BenchTarget("tiny", denoiser, guide, [AutoencoderShape("8px", None, None,
                                                                  DecoderConfig("tiny", 8, (2, 2), 4))],
                       train_batch=4, sample_batch=4, decoder_train_batch=4)


PRESETS = {
    "ditdh-xl-256": lambda: _imagenet("ditdh-xl-256", "ditdh-xl", (768, 16, 16), True),
    "ditdh-xl-512": lambda: _imagenet("ditdh-xl-512", "ditdh-xl", (768, 32, 32), True),
    "dit-xl-256": lambda: _imagenet("dit-xl-256", "dit-xl", (768, 16, 16), False),
    "demo": _demo,
    "tiny": _tiny,
}


def _from_recipe(name: str) -> BenchTarget:
    """A stage-2 recipe's denoiser at its `latent_shape` and micro-batch (the autoencoder's parts are the presets')."""
    config = load_config(Stage2Config, name)
    if config.latent_shape is None:
        raise RaeditError(f"{name} sets no latent_shape: `raedit bench` needs it to build the denoiser")
    latent_shape = tuple(config.latent_shape)
    train = config.train
    batch = train.micro_batch_size or train.global_batch_size or 256
    return BenchTarget(name, config.model.architecture(latent_shape), None, train_batch=batch)


def resolve_target(name: str) -> BenchTarget:
    """A preset (`PRESETS`) or a stage-2 recipe (a shipped name like stage2/demo, or a YAML path)."""
    if name in PRESETS:
        return PRESETS[name]()
    try:
        find_config(name)
    except RaeditError:
        raise RaeditError(f"unknown bench target '{name}': a preset ({', '.join(PRESETS)}) or a stage-2 "
                          f"recipe (a shipped name like stage2/demo, or a YAML file)") from None
    return _from_recipe(name)
