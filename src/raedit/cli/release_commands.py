"""`raedit import-official`, `raedit pull`: the paper's released models in raedit's layout;
`raedit import-diffusers`, `raedit export-diffusers`: autoencoders to and from diffusers' AutoencoderRAE."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from raedit.jobs.releases import PRESETS, RELEASE_REPO

    imported = subparsers.add_parser(
        "import-official", help="convert released RAE files (decoder, statistics, stage-2 models) to raedit's layout")
    imported.add_argument("--out", required=True, help="directory to write rae/, denoiser/ and guide/ into")
    imported.add_argument("--decoder", required=True, help="a released decoder, e.g. decoders/.../ViTXL_n08/model.pt")
    imported.add_argument("--stats", required=True, help="its latent statistics, e.g. stats/.../imagenet1k/stat.pt")
    imported.add_argument("--denoiser", help="a released stage-2 model, e.g. DiTs/.../DiTDH-XL/stage2_model.pt")
    imported.add_argument("--guide", help="its AutoGuidance guide, e.g. DiTs/.../DiTDH-S_ep14/stage2_model.pt")
    imported.add_argument("--encoder", help="the decoder's encoder (default: read off the release path)")
    imported.add_argument("--encoder-layers", type=int, nargs="+", metavar="BLOCK",
                          help="the blocks of a multi-layer latent (RAEv2; default: read off a RAEv2 release path "
                               "such as .../dinov3l-k7/decoder.pt)")
    imported.add_argument("--decoder-heads", type=int,
                          help="attention heads of a decoder of no named size (they leave no trace in the weights)")
    imported.set_defaults(func=run_import_official)

    pull = subparsers.add_parser("pull", help=f"download a released combination from {RELEASE_REPO} and import it",
                                 description="presets: " + "; ".join(f"{name}: {preset.description}"
                                                                     for name, preset in PRESETS.items()))
    pull.add_argument("preset", choices=sorted(PRESETS), help="the released combination")
    pull.add_argument("--out", help="directory to import into (default: models/<preset>)")
    pull.add_argument("--from", dest="local_dir",
                      help=f"a local copy of {RELEASE_REPO} (`hf download {RELEASE_REPO} --local-dir DIR`) "
                           f"instead of downloading")
    pull.set_defaults(func=run_pull)

    from_diffusers = subparsers.add_parser("import-diffusers",
                                           help="a diffusers AutoencoderRAE (directory or hub id) as a raedit RAE")
    from_diffusers.add_argument("source", help="e.g. nyu-visionx/RAE-dinov2-wReg-base-ViTXL-n08, or a local directory")
    from_diffusers.add_argument("--out", required=True, help="the RAE directory to write (with its encoder/)")
    from_diffusers.set_defaults(func=run_import_diffusers)

    to_diffusers = subparsers.add_parser("export-diffusers", help="a raedit RAE as a diffusers AutoencoderRAE")
    to_diffusers.add_argument("rae", help="a saved RAE directory (its encoder's weights are loaded)")
    to_diffusers.add_argument("--out", required=True, help="the directory to write, for AutoencoderRAE.from_pretrained")
    to_diffusers.set_defaults(func=run_export_diffusers)


def run_import_official(args: argparse.Namespace) -> int:
    from raedit.jobs.import_official import import_official

    written = import_official(args.out, args.decoder, args.stats, args.denoiser, args.guide, args.encoder,
                              args.decoder_heads, args.encoder_layers)
    for name, directory in written.items():
        print(f"{name}: {directory}")
    return 0


def run_pull(args: argparse.Namespace) -> int:
    from raedit.jobs.import_official import pull, sample_command

    out = args.out or f"models/{args.preset}"
    for name, directory in pull(args.preset, out, args.local_dir).items():
        print(f"{name}: {directory}")
    command = sample_command(args.preset, out)
    if command is not None:
        print(f"sample with the official settings: {command}")
    return 0


def run_import_diffusers(args: argparse.Namespace) -> int:
    from raedit.jobs.diffusers_rae import import_diffusers_rae

    print(f"rae: {import_diffusers_rae(args.source, args.out)}")
    return 0


def run_export_diffusers(args: argparse.Namespace) -> int:
    from raedit.jobs.diffusers_rae import export_diffusers_rae

    print(f"diffusers AutoencoderRAE: {export_diffusers_rae(args.rae, args.out)}")
    return 0
