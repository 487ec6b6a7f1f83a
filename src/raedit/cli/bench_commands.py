"""`raedit bench TARGET`: training and sampling speed, FLOPs, MFU and memory of a preset's or a recipe's models."""

from __future__ import annotations

import argparse


def _names(text: str) -> tuple[str, ...]:
    return tuple(name for name in text.split(",") if name)


def register(subparsers: argparse._SubParsersAction) -> None:
    from raedit.jobs.bench_targets import PRESETS

    parser = subparsers.add_parser(
        "bench", help="measure training and sampling speed, FLOPs, MFU and memory",
        description="Time the train steps, sampling and the autoencoder of TARGET under each speed path, in turn "
                    "round after round; paths after the first are compared with it (median of per-round ratios).")
    parser.add_argument("target", help=f"a preset ({', '.join(PRESETS)}) or a stage-2 recipe (name or YAML file)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--parts", type=_names, default=None,
                        help="comma-separated: train, decoder-train, sample, autoencoder (default: all)")
    parser.add_argument("--paths", type=_names, default=("fp32",),
                        help="comma-separated speed paths, each switches joined by '+': fp32 (none), bf16, compile "
                             "(the model as one graph), compile-blocks (block by block), ckpt (activation "
                             "checkpointing), attn=flash|efficient|cudnn|math; e.g. fp32,bf16+compile (default fp32)")
    parser.add_argument("--samplers", type=_names, default=("euler",), help="comma-separated: euler, heun, sde")
    parser.add_argument("--guidance", type=_names, default=("none", "cfg", "ag"),
                        help="comma-separated: none, cfg, ag (ag needs a target with a guide)")
    parser.add_argument("--train-batch", type=int, help="the denoiser's train batch (default: the target's)")
    parser.add_argument("--micro-batch", type=int,
                        help="accumulate the denoiser's train step over micro-batches of this size")
    parser.add_argument("--decoder-batch", type=int, help="the decoder's train batch (default: the target's)")
    parser.add_argument("--sample-batch", type=int, help="sampling and autoencoder batch (default: the target's)")
    parser.add_argument("--sample-steps", type=int, default=49, help="sampler steps (default 49: 50 time points)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of timed calls (default 3)")
    parser.add_argument("--calls", type=int, default=3, help="timed calls per path and round (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls after the first (default 1)")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s (default: known GPUs by name)")
    parser.add_argument("--no-tf32", action="store_true", help="fp32 matmuls without TF32")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile's backend (default inductor; aot_eager traces without generating code)")
    parser.set_defaults(func=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> None:
    from raedit.core.files import write_json
    from raedit.jobs.bench import PARTS, BenchConfig, format_report, run_bench

    config = BenchConfig(args.target, args.device, args.parts or PARTS, args.paths, args.samplers, args.guidance,
                         args.train_batch, args.micro_batch, args.decoder_batch, args.sample_batch, args.sample_steps,
                         args.rounds, args.calls, args.warmup, args.peak_tflops, not args.no_tf32,
                         args.compile_backend)
    report = run_bench(config)
    print(format_report(report))
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")
