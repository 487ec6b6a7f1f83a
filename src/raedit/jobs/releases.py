"""The paper's released models: the files of the Hugging Face repository nyu-visionx/RAE-collections that go
together, and the official sampling settings for them (configs/stage2/sampling/ of the official code). Data only,
so listing them imports nothing heavy; `raedit.jobs.import_official` fetches and imports them."""

from __future__ import annotations

from dataclasses import dataclass

RELEASE_REPO = "nyu-visionx/RAE-collections"


@dataclass(frozen=True)
class Preset:
    """A released combination: files in `RELEASE_REPO` and the paper's sampling settings for them."""

    description: str
    denoiser: str
    decoder: str
    stats: str
    guide: str | None = None
    sample_options: str = ""  # the `raedit sample` options of the official sampling config


_DINOV2_B = "Dinov2/wReg_base"
_DECODER_256 = "decoders/dinov2/wReg_base/ViTXL_n08/model.pt"
_STATS_256 = "stats/dinov2/wReg_base/imagenet1k/stat.pt"
_DECODER_512 = "decoders/dinov2/wReg_base/ViTXL_n08_i512/model.pt"
_STATS_512 = "stats/dinov2/wReg_base/imagenet1k_512/stat.pt"
PRESETS: dict[str, Preset] = {
    "ditdh-xl-256": Preset("DiT^DH-XL on DINOv2-B at 256 px, unguided (paper: FID 1.51)",
                           f"DiTs/{_DINOV2_B}/ImageNet256/DiTDH-XL/stage2_model.pt", _DECODER_256, _STATS_256),
    "ditdh-xl-256-ag": Preset("DiT^DH-XL at 256 px with AutoGuidance 1.42 by DiT^DH-S epoch 14 (paper: FID 1.13)",
                              f"DiTs/{_DINOV2_B}/ImageNet256/DiTDH-XL/stage2_model.pt", _DECODER_256, _STATS_256,
                              guide=f"DiTs/{_DINOV2_B}/ImageNet256/DiTDH-S_ep14/stage2_model.pt",
                              sample_options="--ag 1.42"),
    "ditdh-xl-512-ag": Preset("DiT^DH-XL epoch 400 at 512 px with AutoGuidance 1.5 by DiT^DH-S epoch 20 "
                              "(paper: FID 1.13)",
                              f"DiTs/{_DINOV2_B}/ImageNet512/DiTDH-XL_ep400/stage2_model.pt", _DECODER_512, _STATS_512,
                              guide=f"DiTs/{_DINOV2_B}/ImageNet512/DiTDH-S_ep20/stage2_model.pt",
                              sample_options="--ag 1.5"),
}
