"""The ``qnr`` command line.

Each subcommand lives in its own module ``qnr/cli/_<name>.py`` exposing
``register(subparsers)``; its handler returns a JSON-serialisable dict that ``main`` prints
either as text or, with ``--json``, as exactly one JSON object on stdout (progress and
warnings go to stderr).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from qnr._version import __version__

# Modules providing subcommands, in the order shown by --help.
SUBCOMMAND_MODULES = [
    "qnr.cli._info",
    "qnr.cli._thresholds",
    "qnr.cli._erm_theory",
    "qnr.cli._bayes",
    "qnr.cli._curve",
    "qnr.cli._phase_diagram",
    "qnr.cli._sweep",
    "qnr.cli._simulate",
    "qnr.cli._dynamics",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qnr",
        description="Theory and simulation of quadratic neural networks / matrix sensing.",
    )
    parser.add_argument("--version", action="version", version=f"qnr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from qnr.cli._common import emit

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        result = args.func(args)
    except ValueError as err:  # bad input: one clear line, exit code 2
        print(f"qnr {args.command}: error: {err}", file=sys.stderr)
        return 2
    return emit(result, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
