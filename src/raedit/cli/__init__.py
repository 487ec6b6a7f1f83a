"""The `raedit` command: one entry point, one module per group of subcommands.

Each module in `COMMAND_MODULES` has `register(subparsers)`, which adds its subcommands and sets
`func(args) -> int | None` on each. The command line only parses, calls the library and prints. Each command
imports the job it runs inside its `func`, so `raedit X` loads only what X needs (importing every job takes about
1.5 s more on a 2-core machine); the one exception is `raedit sample`, whose options are made from `SampleConfig`
when the parser is built.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from raedit.core.errors import RaeditError

COMMAND_MODULES = [
    "raedit.cli.autoencoder_commands",
    "raedit.cli.train_commands",
    "raedit.cli.eval_commands",
    "raedit.cli.experiment_commands",
    "raedit.cli.demo_commands",
    "raedit.cli.diffusion_commands",
    "raedit.cli.recipe_commands",
    "raedit.cli.release_commands",
    "raedit.cli.bench_commands",
    "raedit.cli.app_commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raedit", description="Diffusion Transformers with Representation Autoencoders (RAE)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except RaeditError as error:
        print(f"raedit: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("raedit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
