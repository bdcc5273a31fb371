"""Teacher-student data (THEORY.md section 1).

``x_mu ~ N(0, I_d)``, ``y_mu = (x_mu^T S* x_mu - Tr S*)/sqrt(d) + sqrt(Delta) xi_mu`` with
``xi_mu ~ N(0, 1)``, ``n = alpha d^2`` samples (rounded).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from qnr._validate import (
    check_key,
    check_nonnegative,
    check_positive,
    check_psd,
    check_shape,
    check_size,
)
from qnr.sim.sensing import apply_sensing
from qnr.teachers import Teacher

__all__ = ["Dataset", "make_dataset", "make_dataset_from_matrix", "n_samples"]


class Dataset(eqx.Module):
    """A teacher-student dataset. ``Delta`` is the label-noise variance."""

    X: Float[Array, "n d"]
    y: Float[Array, " n"]
    S_star: Float[Array, "d d"]
    Delta: Float[Array, ""]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def n(self) -> int:
        return self.X.shape[0]


def n_samples(alpha, d: int) -> int:
    """``n = max(1, round(alpha d^2))``."""
    check_positive("alpha", alpha)
    return max(1, int(round(float(alpha) * d * d)))


def make_dataset_from_matrix(
    key: PRNGKeyArray, S_star: Float[Array, "d d"], n: int, Delta=0.0, dtype=None
) -> Dataset:
    """``n`` samples labelled by a given PSD teacher matrix ``S_star``."""
    n = check_size("n", n)
    check_key("key", key)
    check_nonnegative("Delta", Delta)
    S_star = jnp.asarray(S_star, dtype=dtype)
    if S_star.ndim != 2 or S_star.shape[0] != S_star.shape[1]:
        raise ValueError(f"S_star must be a square matrix, got shape {S_star.shape}")
    check_shape("S_star", S_star, (S_star.shape[0], S_star.shape[0]))
    check_psd("S_star", S_star)
    dtype = S_star.dtype
    d = S_star.shape[0]
    k_x, k_xi = jax.random.split(key)
    X = jax.random.normal(k_x, (n, d), dtype=dtype)
    xi = jax.random.normal(k_xi, (n,), dtype=dtype)
    Delta = jnp.asarray(Delta, dtype=dtype)
    y = apply_sensing(X, S_star) + jnp.sqrt(Delta) * xi
    return Dataset(X=X, y=y, S_star=S_star, Delta=Delta)


def make_dataset(
    key: PRNGKeyArray, teacher: Teacher, d: int, n: int, Delta=0.0, dtype=None
) -> Dataset:
    """Sample ``S*`` from ``teacher`` at dimension ``d`` and ``n`` noisy labels.

    Example: ``make_dataset(jax.random.key(0), MarchenkoPastur(0.5), d=100, n=20000, Delta=0.1)``.
    """
    d = check_size("d", d)
    n = check_size("n", n)
    check_key("key", key)
    check_nonnegative("Delta", Delta)
    if not isinstance(teacher, Teacher):
        raise ValueError(f"teacher must be a qnr Teacher, got {type(teacher).__name__}")
    k_teacher, k_data = jax.random.split(key)
    S_star = teacher.sample(k_teacher, d, dtype)
    return make_dataset_from_matrix(k_data, S_star, n, Delta, dtype=S_star.dtype)
