"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform's best guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def median_time(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after one warm-up (compile) call;
    every call is waited for with ``jax.block_until_ready``."""
    import statistics
    import time

    import jax

    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak(n: int, dtype, repeats: int = 5) -> float:
    """Measured matmul FLOP/s of a jitted ``n x n`` product in ``dtype`` (the peak that
    achieved FLOP/s are reported against)."""
    import jax

    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    f = jax.jit(lambda a, b: a @ b)
    return 2 * n**3 / median_time(lambda: f(a, b), repeats)


def write_result(name: str, text: str) -> Path:
    """Write a benchmark's markdown table to ``benchmarks/results/<name>.md``."""
    out = Path(__file__).resolve().parent / "results" / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out
