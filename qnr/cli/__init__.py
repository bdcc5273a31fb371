"""The ``qnr`` command line.

Each subcommand lives in its own module ``qnr/cli/_<name>.py`` exposing
``register(subparsers)``; it sets ``func`` (the handler) and optionally ``check`` (validation
of flag combinations and budgets, run before any heavy import). Handlers return a
JSON-serialisable dict that ``main`` prints either as text or, with ``--json``, as exactly one
strict JSON object on stdout (progress and warnings go to stderr).

Building the parser imports no JAX and no numerics (subcommand modules import their heavy
dependencies inside the handler), so ``--help``, ``--version`` and argument errors answer
at once. Errors are one line on stderr (``--debug`` shows the traceback); the exit status is
documented in :data:`qnr.cli._common.EXIT_CODES_HELP`.
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


class UsageError(Exception):
    """A command-line error found by argparse (bad flag, value or missing argument)."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors raise :class:`UsageError` (printed as one line by
    :func:`main`) instead of printing the usage block and exiting."""

    def error(self, message):
        raise UsageError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    from qnr.cli._common import EXIT_CODES_HELP

    parser = Parser(
        prog="qnr",
        description="Theory and simulation of quadratic neural networks / matrix sensing.",
        epilog=EXIT_CODES_HELP + ". Run 'qnr COMMAND --help' for the flags of a command.",
    )
    parser.add_argument("--version", action="version", version=f"qnr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for p in sub.choices.values():
        if p.epilog is None:
            p.epilog = EXIT_CODES_HELP
    return parser


def _install_warning_printer(prog: str) -> None:
    """Python warnings as one line ``qnr CMD: warning: ...`` on stderr."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message).splitlines()[0] if str(message) else category.__name__
        print(f"{prog}: warning: {text}", file=sys.stderr)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see ``qnr --help``)."""
    from qnr.cli import _common as common

    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        print(f"{err.prog}: error: {err} (see '{err.prog} --help')", file=sys.stderr)
        return common.EXIT_USAGE
    except SystemExit as exc:  # --help / --version printed their text
        return exc.code if isinstance(exc.code, int) else common.EXIT_OK
    if getattr(args, "func", None) is None:
        parser.print_help()
        return common.EXIT_OK
    prog = f"qnr {args.command}"
    debug = bool(getattr(args, "debug", False))
    _install_warning_printer(prog)
    common.CREATED_DIRS.clear()
    try:
        check = getattr(args, "check", None)
        if check is not None:
            check(args)
        result = args.func(args)
        common.emit(result, args)
    except (ValueError, argparse.ArgumentTypeError) as err:  # bad input: nothing was done
        common.remove_created_dirs()
        if debug:
            raise
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return common.EXIT_USAGE
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return common.EXIT_INTERRUPTED
    except (OSError, MemoryError) as err:
        if debug:
            raise
        kind = "out of memory" if isinstance(err, MemoryError) else "I/O error"
        print(f"{prog}: error: {kind}: {_one_line(err)}", file=sys.stderr)
        return common.EXIT_IO
    except Exception as err:  # a bug: say so in one line, --debug for the traceback
        if debug:
            raise
        print(
            f"{prog}: internal error: {type(err).__name__}: {_one_line(err)} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return common.EXIT_INTERNAL
    failure = common.failure_summary(result) if isinstance(result, dict) else None
    if failure:
        print(f"{prog}: not converged: {failure} (exit status 3)", file=sys.stderr)
        return common.EXIT_NOT_CONVERGED
    return common.EXIT_OK


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 500 else text[:497] + "..."


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
