"""Teacher specifications: the PSD target matrix ``S*`` and its spectral law.

THEORY.md section 1. A teacher is an immutable ``eqx.Module`` of parameters. It knows

* ``Q0`` -- the limit of ``Tr S*^2 / d`` (what the zero predictor's error is made of);
* ``moment(k, d)`` -- ``Tr S*^k / d`` of its (finite-``d`` or asymptotic) law;
* ``eigenvalues(d, key)`` -- a finite-``d`` spectrum (random for the network teacher);
* ``sample(key, d)`` -- a finite-``d`` matrix ``S*`` (Haar eigenvectors unless stated).

This module is the base layer of qnr: ``spectra``/``theory`` and ``sim`` both read teachers,
neither imports the other.

Built-in teachers
-----------------
``MarchenkoPastur(kappa_star)``
    Network teacher of width ``m* = kappa* d``: ``S* = W* W*^T / m*`` with ``W*`` iid N(0, 1).
    Its spectrum tends to Marchenko-Pastur with mean 1 and ``Q0 = 1 + 1/kappa*`` (an atom of
    mass ``1 - kappa*`` at zero when ``kappa* < 1``).
``PowerLaw(gamma, kappa_star)``
    Eigenvalues ``w_i = i^-gamma`` for ``i <= kappa* d`` (else 0), rescaled so that
    ``sum_i w_i^2 = d`` (``Q0 = 1`` at every ``d``), Haar eigenvectors.
``Spectrum(values)``
    Any user-given spectrum with Haar eigenvectors; ``Spectrum.from_density`` builds one from a
    density by quantiles.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from qnr._validate import check_nonnegative, check_positive, check_size, is_concrete

__all__ = [
    "check_teacher_or_kappa_star",
    "resolve_teacher",
    "Teacher",
    "MarchenkoPastur",
    "PowerLaw",
    "Spectrum",
    "haar_orthogonal",
    "teacher_from_name",
]


def _default_float():
    return jnp.zeros(()).dtype  # float64 when jax_enable_x64 is on, else float32


def haar_orthogonal(key: PRNGKeyArray, d: int, dtype=None) -> Float[Array, "d d"]:
    """A Haar-distributed orthogonal matrix: QR of a Gaussian matrix with the signs of
    ``diag(R)`` moved into ``Q`` (Mezzadri 2007)."""
    dtype = dtype or _default_float()
    g = jax.random.normal(key, (d, d), dtype=dtype)
    q, r = jnp.linalg.qr(g)
    return q * jnp.sign(jnp.diagonal(r))[None, :]


class Teacher(eqx.Module):
    """Abstract teacher: a law of PSD matrices ``S*`` (see module docstring)."""

    @abc.abstractmethod
    def eigenvalues(self, d: int, key: PRNGKeyArray | None = None, dtype=None) -> Array:
        """Eigenvalues of a finite-``d`` teacher (sorted in decreasing order)."""

    @property
    @abc.abstractmethod
    def Q0(self) -> Array:
        """Limit (or exact value) of ``Tr S*^2 / d``."""

    @abc.abstractmethod
    def moment(self, k: int, d: int | None = None) -> Array:
        """``Tr S*^k / d`` of the spectral law (asymptotic if ``d`` is None or irrelevant)."""

    def sample(self, key: PRNGKeyArray, d: int, dtype=None) -> Float[Array, "d d"]:
        """A finite-``d`` teacher matrix: ``O diag(w) O^T`` with ``O`` Haar."""
        d = check_size("d", d)
        k_eig, k_haar = jax.random.split(key)
        w = self.eigenvalues(d, k_eig, dtype)
        o = haar_orthogonal(k_haar, d, dtype or w.dtype)
        return (o * w[None, :]) @ o.T


class MarchenkoPastur(Teacher):
    """Network teacher of width ``m* = round(kappa* d)``: ``S* = W* W*^T / m*``.

    Asymptotic spectral law: Marchenko-Pastur with mean 1 and variance ``1/kappa*``
    (``Q0 = 1 + 1/kappa*``), plus an atom ``1 - kappa*`` at zero if ``kappa* < 1``.
    Moments of the law: ``m_k = sum_{j=0}^{k-1} N(k, j) kappa*^{-j}`` with Narayana numbers
    ``N(k, j) = C(k, j) C(k, j+1) / k``.
    """

    kappa_star: Float[Array, ""]

    def __init__(self, kappa_star):
        self.kappa_star = jnp.asarray(check_positive("kappa_star", kappa_star))

    def width(self, d: int) -> int:
        """Teacher width ``m* = max(1, round(kappa* d))`` (needs a concrete kappa*)."""
        return max(1, int(round(float(self.kappa_star) * d)))

    @property
    def Q0(self):
        return 1.0 + 1.0 / self.kappa_star

    def moment(self, k: int, d: int | None = None):
        from math import comb

        k = check_size("k", k)
        return sum(comb(k, j) * comb(k, j + 1) / k * self.kappa_star ** (-j) for j in range(k))

    def eigenvalues(self, d, key=None, dtype=None):
        if key is None:
            raise ValueError("key is required: the network teacher's spectrum is random")
        return jnp.linalg.eigvalsh(self.sample(key, d, dtype))[::-1]

    def sample(self, key, d, dtype=None):
        d = check_size("d", d)
        dtype = dtype or _default_float()
        m_star = self.width(d)
        w = jax.random.normal(key, (d, m_star), dtype=dtype)
        return w @ w.T / m_star


class PowerLaw(Teacher):
    """Power-law spectrum ``w_i = i^-gamma`` for ``i <= kappa* d`` (else 0), rescaled so that
    ``sum_i w_i^2 = d`` (``Q0 = 1``), with Haar eigenvectors. ``gamma >= 0``."""

    gamma: Float[Array, ""]
    kappa_star: Float[Array, ""]

    def __init__(self, gamma, kappa_star=1.0):
        self.gamma = jnp.asarray(check_nonnegative("gamma", gamma))
        self.kappa_star = jnp.asarray(check_positive("kappa_star", kappa_star))

    def rank(self, d: int) -> int:
        """Number of non-zero eigenvalues ``min(d, max(1, floor(kappa* d)))``."""
        return min(d, max(1, int(np.floor(float(self.kappa_star) * d + 1e-9))))

    def eigenvalues(self, d, key=None, dtype=None):
        d = check_size("d", d)
        dtype = dtype or _default_float()
        r = self.rank(d)
        i = jnp.arange(1, d + 1, dtype=dtype)
        w = jnp.where(i <= r, i ** (-self.gamma.astype(dtype)), 0.0)
        return w * jnp.sqrt(d / jnp.sum(w**2))

    @property
    def Q0(self):
        return jnp.asarray(1.0)

    def moment(self, k: int, d: int | None = None):
        if d is None:
            raise ValueError("d is required: the power-law spectrum depends on d")
        return jnp.mean(self.eigenvalues(d) ** check_size("k", k))


class Spectrum(Teacher):
    """A user-given spectrum (non-negative eigenvalues) with Haar eigenvectors.

    At the spectrum's own size ``d == len(values)`` the eigenvalues are used as given; at any
    other ``d`` the empirical quantile function is interpolated at the mid-quantiles
    ``(i - 1/2)/d``.
    """

    values: Float[Array, " p"]

    def __init__(self, values):
        if is_concrete(values):
            arr = np.asarray(values)
            if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
                raise ValueError(f"values must be real numbers, got {values!r:.60}")
        values = jnp.asarray(values)
        if values.ndim != 1 or values.shape[0] < 1:
            raise ValueError(f"values must be a non-empty 1-d array, got shape {values.shape}")
        if is_concrete(values):
            arr = np.asarray(values)
            if not np.all(np.isfinite(arr)):
                raise ValueError("values must be finite")
            if np.any(arr < 0):
                raise ValueError(
                    f"values must be >= 0 (the teacher is PSD), got min {arr.min():.3g}"
                )
        self.values = jnp.sort(values)[::-1]

    @classmethod
    def from_density(
        cls, density: Callable[[np.ndarray], np.ndarray], support: tuple[float, float], n: int
    ) -> Spectrum:
        """``n`` atoms at the mid-quantiles of a density on ``[a, b]`` (numerically inverted
        CDF on a fine grid)."""
        n = check_size("n", n)
        a, b = map(float, support)
        if not (0 <= a < b):
            raise ValueError(f"support must satisfy 0 <= a < b, got {support}")
        x = np.linspace(a, b, 20001)
        pdf = np.clip(np.asarray(density(x), dtype=np.float64), 0, None)
        cdf = np.concatenate([[0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * np.diff(x))])
        if cdf[-1] <= 0:
            raise ValueError("density must have positive mass on the support")
        cdf /= cdf[-1]
        q = (np.arange(n) + 0.5) / n
        return cls(np.interp(q, cdf, x))

    def eigenvalues(self, d, key=None, dtype=None):
        d = check_size("d", d)
        dtype = dtype or self.values.dtype
        p = self.values.shape[0]
        if d == p:
            return self.values.astype(dtype)
        q_src = (jnp.arange(p) + 0.5) / p
        q = (jnp.arange(d) + 0.5) / d
        return jnp.interp(q, q_src, self.values[::-1])[::-1].astype(dtype)

    @property
    def Q0(self):
        return jnp.mean(self.values**2)

    def moment(self, k: int, d: int | None = None):
        k = check_size("k", k)
        v = self.values if d is None else self.eigenvalues(d)
        return jnp.mean(v**k)


def teacher_from_name(name: str, *, kappa_star=None, gamma=None) -> Teacher:
    """Build a built-in teacher from the CLI/config name ``mp`` or ``power-law``."""
    key = name.replace("_", "-").lower()
    if key == "mp":
        if kappa_star is None:
            raise ValueError("kappa_star is required for the mp teacher")
        return MarchenkoPastur(kappa_star)
    if key == "power-law":
        if gamma is None:
            raise ValueError("gamma is required for the power-law teacher")
        return PowerLaw(gamma, 1.0 if kappa_star is None else kappa_star)
    raise ValueError(f"teacher must be 'mp' or 'power-law', got {name!r}")


def check_teacher_or_kappa_star(teacher, kappa_star) -> None:
    """Exactly one of ``teacher`` (any :class:`Teacher`) and ``kappa_star`` (the width ratio
    ``m*/d`` of the Marchenko-Pastur teacher) must be given."""
    if teacher is None and kappa_star is None:
        raise ValueError("give a teacher or kappa_star (MP teacher)")
    if teacher is not None and kappa_star is not None:
        raise ValueError("give either teacher or kappa_star, not both")


def resolve_teacher(teacher, kappa_star) -> Teacher:
    """``teacher``, or ``MarchenkoPastur(kappa_star)`` when only ``kappa_star`` is given
    (:func:`check_teacher_or_kappa_star`)."""
    check_teacher_or_kappa_star(teacher, kappa_star)
    return MarchenkoPastur(kappa_star) if teacher is None else teacher
