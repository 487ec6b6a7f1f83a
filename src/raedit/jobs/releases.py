"""The paper's released models: the files of the Hugging Face repository nyu-visionx/RAE-collections that go
together, and the official sampling settings for them (configs/stage2/sampling/ of the official code). Data only,
so listing them imports nothing heavy; `raedit.jobs.import_official` fetches and imports them."""

from __future__ import annotations

from dataclasses import dataclass

RELEASE_REPO = "nyu-visionx/RAE-collections"


@dataclass(frozen=True)
class Preset:
    """A released combination: files in `RELEASE_REPO` (a decoder with its statistics, and a denoiser with its
    AutoGuidance guide when there are) and the paper's sampling settings for them."""

    description: str
    decoder: str
    stats: str
    denoiser: str | None = None
    guide: str | None = None
    sample_options: str = ""  # the `raedit sample` options of the official sampling config


_DITS = "DiTs/Dinov2/wReg_base"
_DECODER_256 = "decoders/dinov2/wReg_base/ViTXL_n08/model.pt"
_STATS_256 = "stats/dinov2/wReg_base/imagenet1k/stat.pt"
_DECODER_512 = "decoders/dinov2/wReg_base/ViTXL_n08_i512/model.pt"
_STATS_512 = "stats/dinov2/wReg_base/imagenet1k_512/stat.pt"
PRESETS: dict[str, Preset] = {
    "ditdh-xl-256": Preset("DiT^DH-XL on DINOv2-B at 256 px, unguided (paper: FID 1.51)", _DECODER_256, _STATS_256,
                           f"{_DITS}/ImageNet256/DiTDH-XL/stage2_model.pt"),
    "ditdh-xl-256-ag": Preset("DiT^DH-XL at 256 px with AutoGuidance 1.42 by DiT^DH-S epoch 14 (paper: FID 1.13)",
                              _DECODER_256, _STATS_256, f"{_DITS}/ImageNet256/DiTDH-XL/stage2_model.pt",
                              f"{_DITS}/ImageNet256/DiTDH-S_ep14/stage2_model.pt", "--ag 1.42"),
    "ditdh-xl-512-ag": Preset("DiT^DH-XL epoch 400 at 512 px with AutoGuidance 1.5 by DiT^DH-S epoch 20 "
                              "(paper: FID 1.13)", _DECODER_512, _STATS_512,
                              f"{_DITS}/ImageNet512/DiTDH-XL_ep400/stage2_model.pt",
                              f"{_DITS}/ImageNet512/DiTDH-S_ep20/stage2_model.pt", "--ag 1.5"),
    "rae-dinov2-b-256": Preset("the ViT-XL decoder (noise tau 0.8) of DINOv2-B at 256 px, with its statistics",
                               _DECODER_256, _STATS_256),
    "rae-dinov2-b-512": Preset("the ViT-XL decoder (noise tau 0.8) of DINOv2-B at 448 px to 512 px, with its "
                               "statistics", _DECODER_512, _STATS_512),
    "rae-siglip2-b-256": Preset("the ViT-XL decoder (noise tau 0.8) of SigLIP2-B at 256 px, with its statistics",
                                "decoders/siglip2/base_p16_i256/ViTXL_n08/model.pt",
                                "stats/siglip2/base_p16_i256/ImageNet1k/stat.pt"),
    "rae-mae-b-256": Preset("the ViT-XL decoder (noise tau 0.8) of MAE-B at 256 px, with its statistics",
                            "decoders/mae/base_p16/ViTXL_n08/model.pt", "stats/mae/base_p16/ImageNet1k/stat.pt"),
}
