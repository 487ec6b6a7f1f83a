"""`raedit experiment NAME [key=value ...]`: a small-scale reproduction of one of the paper's claims.

Settings come from the experiment's `Settings` defaults, then the shipped recipe `experiments/NAME` when there is
one (or `--config`), then the overrides."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from raedit.core.config import load_config, recipe_names
from raedit.core.errors import RaeditError


def register(subparsers: argparse._SubParsersAction) -> None:
    from raedit.experiments import EXPERIMENTS

    parser = subparsers.add_parser("experiment", help="reproduce a claim of the paper at small scale")
    parser.add_argument("name", help=f"one of: {', '.join(EXPERIMENTS)}")
    parser.add_argument("overrides", nargs="*", help="settings as key=value (e.g. setup.samples=500)")
    parser.add_argument("--config", help="settings file or recipe (default: the recipe experiments/NAME if shipped)")
    parser.add_argument("--out", default="docs/results", help="folder for the plot and tables")
    parser.set_defaults(func=run_experiment)


def run_experiment(args: argparse.Namespace) -> None:
    from raedit.experiments import EXPERIMENTS

    if args.name not in EXPERIMENTS:
        raise RaeditError(f"unknown experiment '{args.name}'; known: {', '.join(EXPERIMENTS)}")
    module = importlib.import_module(EXPERIMENTS[args.name])
    recipe = f"experiments/{args.name}"
    settings = load_config(module.Settings, args.config or (recipe if recipe in recipe_names() else None),
                           args.overrides)
    module.run(Path(args.out), settings)
    print(f"wrote {args.out}/{args.name}.md, .json and .png")
