"""Resource budgets checked before work starts (pure Python: no JAX, no numpy, so the command
line can check them before importing the numerics; sweeps use them too).

* memory: ``QNR_MEMORY_LIMIT`` (e.g. ``8G``, ``500M``; default: half of this machine's RAM);
* iterations: ``QNR_MAX_STEPS`` (default ``1e8`` steps of an iterative algorithm in one run).

A run whose estimate exceeds a budget is refused with a ``ValueError`` naming the estimate,
the limit, where the limit comes from, and what to change.
"""

from __future__ import annotations

import math
import os

__all__ = [
    "INT32_MAX",
    "memory_limit",
    "step_limit",
    "check_memory",
    "check_steps",
    "format_bytes",
    "sim_bytes",
]

INT32_MAX = 2**31 - 1  # the largest integer size accepted (array shapes, widths, counts)


def _parse_bytes(text: str) -> int:
    text = text.strip().upper().removesuffix("B")
    scale = 1
    for suffix, factor in (("K", 2**10), ("M", 2**20), ("G", 2**30), ("T", 2**40)):
        if text.endswith(suffix):
            text, scale = text[:-1], factor
            break
    value = float(text) * scale
    if not (math.isfinite(value) and value > 0):
        raise ValueError
    return int(value)


def format_bytes(n: float) -> str:
    for unit, factor in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= factor:
            return f"{n / factor:.3g} {unit}"
    return f"{int(n)} B"


def memory_limit() -> tuple[int, str]:
    """(bytes, where the limit comes from): ``QNR_MEMORY_LIMIT`` or half the physical RAM."""
    env = os.environ.get("QNR_MEMORY_LIMIT")
    if env:
        try:
            return _parse_bytes(env), f"QNR_MEMORY_LIMIT={env}"
        except ValueError:
            raise ValueError(
                f"QNR_MEMORY_LIMIT must be a size such as 8G or 500M, got {env!r}"
            ) from None
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        ram = 16 * 2**30
    return ram // 2, "half of this machine's RAM; set QNR_MEMORY_LIMIT to change"


def step_limit() -> tuple[int, str]:
    """(steps, where the limit comes from): ``QNR_MAX_STEPS`` or ``10**8``."""
    env = os.environ.get("QNR_MAX_STEPS")
    if env:
        try:
            value = float(env)
            if not (math.isfinite(value) and value >= 1):
                raise ValueError
            return int(value), f"QNR_MAX_STEPS={env}"
        except ValueError:
            raise ValueError(f"QNR_MAX_STEPS must be a number >= 1, got {env!r}") from None
    return 10**8, "the default step budget; set QNR_MAX_STEPS to change"


def check_memory(nbytes: float, what: str, advice: str) -> None:
    """Refuse a run whose estimated memory ``nbytes`` exceeds :func:`memory_limit`."""
    limit, source = memory_limit()
    if nbytes > limit:
        raise ValueError(
            f"{what} needs about {format_bytes(nbytes)} of memory, over the limit of "
            f"{format_bytes(limit)} ({source}); {advice}"
        )


def check_steps(steps: float, what: str, advice: str) -> None:
    """Refuse a run of more than :func:`step_limit` iterations."""
    limit, source = step_limit()
    if steps > limit:
        raise ValueError(
            f"{what} needs {steps:.3g} steps, over the budget of {limit:.3g} ({source}); {advice}"
        )


def sim_bytes(d: int, n: int, seeds: int, *, points: int = 1, width: int = 0) -> float:
    """Estimated peak memory (float64 bytes) of ERM simulations run together: ``points`` grid
    points x ``seeds`` seeds, each with ``n`` samples ``x in R^d`` (the data and one ``n x d``
    product), an optional network of ``width`` neurons (``n x width`` activations) and a few
    ``d x d`` matrices."""
    per_run = 2 * n * d + n * width + 8 * d * d + 4 * n
    return 8.0 * points * seeds * per_run
