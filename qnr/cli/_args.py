"""Argument types and guards of the ``qnr`` command line (no JAX, no numpy: ``--help`` and
argument errors must answer in a fraction of a second).

Every numeric flag is parsed by one of the factories below, which check finiteness, sign,
integer-ness and range at parse time and fail with one line naming the flag, the accepted
range and the value given::

    qnr simulate: error: argument --kappa: kappa must be a finite number > 0, got 'inf'

Checks that involve several flags (``--alpha-max > --alpha-min``, memory and step budgets)
are done by each subcommand's ``check(args)`` function, called by :func:`qnr.cli.main` after
parsing and before any heavy import or computation.

Budgets (:mod:`qnr._budget`; exceeded: exit status 2, the limit named in the message):
``QNR_MEMORY_LIMIT`` (default half of the RAM) and ``QNR_MAX_STEPS`` (default ``1e8``).
"""

from __future__ import annotations

import argparse
import math

# the budgets, re-exported for the subcommands (``X as X``: an explicit re-export)
from qnr._budget import INT32_MAX as INT32_MAX
from qnr._budget import check_memory as check_memory
from qnr._budget import check_steps as check_steps
from qnr._budget import format_bytes as format_bytes
from qnr._budget import memory_limit as memory_limit
from qnr._budget import sim_bytes as sim_bytes
from qnr._budget import step_limit as step_limit

__all__ = [
    "real",
    "integer",
    "add_teacher_flags",
    "check_teacher_flags",
    "add_delta_flag",
    "add_student_kappa_flag",
]


def _num(v) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _describe(gt, ge, lt, le) -> str:
    parts = []
    if gt is not None:
        parts.append(f"> {_num(gt)}")
    if ge is not None:
        parts.append(f">= {_num(ge)}")
    if lt is not None:
        parts.append(f"< {_num(lt)}")
    if le is not None:
        parts.append(f"<= {_num(le)}")
    return " and ".join(parts)


def real(name: str, *, gt=None, ge=None, lt=None, le=None, hint: str = ""):
    """An argparse ``type``: a finite real number in the given range (``inf``/``nan`` are
    refused). ``name`` is the quantity (used in the message), ``hint`` is appended to it."""
    rng = _describe(gt, ge, lt, le)
    what = f"{name} must be a finite number" + (f" {rng}" if rng else "")
    suffix = f" ({hint})" if hint else ""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}{suffix}") from None
        bad = (
            not math.isfinite(value)
            or (gt is not None and not value > gt)
            or (ge is not None and not value >= ge)
            or (lt is not None and not value < lt)
            or (le is not None and not value <= le)
        )
        if bad:
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}{suffix}")
        return value

    parse.__name__ = "number"
    return parse


def integer(name: str, *, ge: int | None = None, le: int | None = None, hint: str = ""):
    """An argparse ``type``: an integer in ``[ge, le]`` (``le`` defaults to the int32 range).
    ``1e3`` is accepted as 1000; ``2.5``, ``inf`` and ``abc`` are refused."""
    le = INT32_MAX if le is None else le
    rng = _describe(None, ge, None, le)
    what = f"{name} must be an integer {rng}"
    suffix = f" ({hint})" if hint else ""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{what}, got {text!r}{suffix}") from None
            if not (math.isfinite(f) and f.is_integer()):
                raise argparse.ArgumentTypeError(f"{what}, got {text!r}{suffix}") from None
            value = int(f)
        if (ge is not None and value < ge) or value > le:
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}{suffix}")
        return value

    parse.__name__ = "integer"
    return parse


def add_teacher_flags(p: argparse.ArgumentParser) -> None:
    """``--teacher mp|power-law``, ``--gamma`` and ``--d`` (the power law's number of atoms),
    shared by the theory commands; check them with :func:`check_teacher_flags`."""
    p.add_argument("--teacher", default="mp", choices=["mp", "power-law"])
    p.add_argument("--gamma", type=real("gamma", ge=0), default=1.0, help="power-law exponent")
    p.add_argument(
        "--d",
        type=integer("d", ge=1, le=100_000),
        default=None,
        help="dimension (power-law teacher's atoms; <= 100000)",
    )


def check_teacher_flags(args) -> None:
    """``--d`` is required for the power-law teacher and refused for mp (its d -> inf law)."""
    if args.teacher == "mp" and args.d is not None:
        raise ValueError("--d applies to the power-law teacher only (mp uses the d -> inf law)")
    if args.teacher == "power-law" and args.d is None:
        raise ValueError("--d is required for the power-law teacher")


def add_delta_flag(p: argparse.ArgumentParser, *, help: str = "label-noise variance Delta >= 0"):
    """``--delta``: the label-noise variance ``Delta >= 0`` (default 0), shared by the commands."""
    p.add_argument("--delta", type=real("delta", ge=0), default=0.0, help=help)


def add_student_kappa_flag(p: argparse.ArgumentParser, *, help: str, le=None) -> None:
    """``--kappa``: the student width ratio ``m/d > 0`` (at most ``le``); omitted (``None``),
    the student is unconstrained."""
    kappa = real("kappa", gt=0, le=le, hint="omit --kappa for an unconstrained student")
    p.add_argument("--kappa", type=kappa, default=None, help=help)
