"""`raedit app`: the local web page to sample, reconstruct and compare (`raedit.app`)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("app", help="a local web page to sample, reconstruct and compare (Gradio)")
    parser.add_argument("--model", action="append", default=[], metavar="PATH",
                        help="a denoiser to offer first (run directory, saved or imported model); repeatable")
    parser.add_argument("--rae", action="append", default=[], metavar="PATH",
                        help="an RAE directory to offer first for reconstruction; repeatable")
    parser.add_argument("--search", nargs="*", metavar="FOLDER",
                        help="folders searched for runs, models and RAEs (default: runs and models, where "
                             "`raedit pull` imports the released ones)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from raedit.app.catalog import find_models
    from raedit.app.page import launch

    catalog = find_models(args.model, args.rae, args.search)
    print(f"raedit app: {len(catalog.denoisers)} models, {len(catalog.autoencoders)} RAEs; "
          f"open http://{args.host}:{args.port}")
    launch(catalog, args.host, args.port)
