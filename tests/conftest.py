"""Test configuration: float64 everywhere, strict dtype promotion for the theory tests."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def strict_promotion():
    """Strict dtype promotion (no silent float32/float64 mixing) inside a test."""
    with jax.numpy_dtype_promotion("strict"):
        yield


@pytest.fixture
def key():
    return jax.random.key(20261124)
