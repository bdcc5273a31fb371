"""Test configuration: float64 and strict dtype promotion everywhere (as optimistix's and
equinox's test suites): mixing dtypes (float32/float64, int/float, real/complex arrays) must be
explicit in qnr, never a silent promotion."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
# jax's CPU eigh goes through LAPACK/OpenBLAS, whose thread pool stalls when cores are
# oversubscribed (measured: 80x80 eigh 196 ms by default vs 0.4 ms single-threaded on a loaded
# 2-core machine); the tests call many small eigh, so one BLAS thread is both faster and stable.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def key():
    return jax.random.key(20261124)
