"""`raedit experiment NAME`: a small-scale reproduction of one of the paper's claims."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from raedit.errors import RaeditError


def register(subparsers: argparse._SubParsersAction) -> None:
    from raedit.experiments import EXPERIMENTS

    parser = subparsers.add_parser("experiment", help="reproduce a claim of the paper at small scale")
    parser.add_argument("name", help=f"one of: {', '.join(EXPERIMENTS)}")
    parser.add_argument("--out", default="docs/results", help="folder for the plot and tables")
    parser.set_defaults(func=run_experiment)


def run_experiment(args: argparse.Namespace) -> None:
    from raedit.experiments import EXPERIMENTS

    if args.name not in EXPERIMENTS:
        raise RaeditError(f"unknown experiment '{args.name}'; known: {', '.join(EXPERIMENTS)}")
    importlib.import_module(EXPERIMENTS[args.name]).run(Path(args.out))
    print(f"wrote {args.out}/{args.name}.md, .json and .png")
