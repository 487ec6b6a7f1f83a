"""`raedit recipes [NAME]`: the YAML recipes shipped with raedit, which every config argument also takes by name."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("recipes", help="list the shipped recipes, or print one (to copy and edit)")
    parser.add_argument("name", nargs="?", help="a recipe to print, e.g. stage2/demo")
    parser.set_defaults(func=run_recipes)


def run_recipes(args: argparse.Namespace) -> None:
    from raedit.core.config import RECIPES, find_config, recipe_names

    if args.name:
        print(find_config(args.name).read_text(), end="")
        return
    for name in recipe_names():
        print(name)
    print(f"\n(in {RECIPES}; a config argument takes a name or a path)")
