"""OpenBLAS thread control (see :mod:`qnr.sim`): one BLAS thread by default.

jax's CPU ``eigh``/``eigvalsh`` call LAPACK from the OpenBLAS that scipy bundles. With a
multi-threaded OpenBLAS pool on a loaded machine the small, frequent eigen-decompositions of
the convex solver stall (measured on a shared 2-core machine: ``100 x 100`` eigh 190 ms with
the default pool vs 1.5 ms single-threaded). The environment variable is read when OpenBLAS
loads (jax loads it lazily, at the first decomposition), and pools loaded before are capped
through ``openblas_set_num_threads``.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["limit_blas_threads"]

_SETTERS = (
    "openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "scipy_openblas_set_num_threads64_",
)


def limit_blas_threads(threads: int | None = None) -> int:
    """Use ``threads`` OpenBLAS threads (default: ``$QNR_BLAS_THREADS``, else
    ``$OPENBLAS_NUM_THREADS``, else 1): sets ``OPENBLAS_NUM_THREADS`` for libraries loaded
    later (if unset) and caps every OpenBLAS already mapped into the process. Returns the
    number of loaded libraries that were capped."""
    if threads is None:
        threads = int(os.environ.get("QNR_BLAS_THREADS", os.environ.get("OPENBLAS_NUM_THREADS", 1)))
    threads = max(1, int(threads))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(threads))
    capped = 0
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:  # not Linux: the environment variable is all we can do
        return 0
    for path in sorted(p for p in paths if p.endswith(".so") or ".so." in p):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(ctypes.c_int(threads))
                capped += 1
                break
    return capped


if os.environ.get("QNR_BLAS_THREADS") or "OPENBLAS_NUM_THREADS" not in os.environ:
    limit_blas_threads()
