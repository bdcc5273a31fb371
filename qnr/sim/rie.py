"""Rotationally invariant estimator (RIE) of a matrix observed in GOE noise (THEORY.md section 4).

Observation ``Y = S* + sqrt(delta) G`` with ``G`` a GOE matrix normalised so that its
semicircle has variance 1 (off-diagonal entries ``N(0, 1/d)``, diagonal ``N(0, 2/d)``; then
``Var Tr(G A) = 2 ||A||_F^2 / d``, the same second moments as the centred sensing matrix
``Z = (x x^T - I)/sqrt(d)`` of THEORY.md section 1). The spectrum of ``Y`` tends to
``rho_delta = mu* boxplus semicircle(delta)``.

The Bayes-optimal rotationally invariant denoiser keeps the eigenvectors of ``Y`` and maps each
eigenvalue by (Bun, Allez, Bouchaud, Potters 2016; Maillard et al. 2024, eq. of the RIE)::

    f(lambda) = lambda - 2 delta H(lambda),   H(x) = p.v. int rho_delta(t) / (x - t) dt,

and its error is ``mmse(delta) = delta - (4 pi^2/3) delta^2 int rho_delta^3``
(``qnr.theory.bayes``). ``H`` can come from two places:

* **oracle** -- a callable ``hilbert(l, delta)`` giving the asymptotic Hilbert transform of
  ``rho_delta`` at the points ``l`` (elementwise in ``l``, traceable by JAX). The lead/CLI passes
  the one from ``qnr.spectra``; this is the oracle denoiser of Maillard et al. 2024, which
  knows the teacher's spectral law. (``qnr.sim`` never imports ``qnr.spectra`` itself.)
* **empirical** (``hilbert=None``) -- Ledoit-Peche style: the Hilbert transform of the
  empirical eigenvalue distribution of ``Y`` itself, regularised by a small imaginary part,
  ``H(lambda_i) = (1/d) sum_{j != i} (lambda_i - lambda_j) / ((lambda_i - lambda_j)^2 + eta^2)``
  with ``eta = eta_scale * std(lambda) * d^(-1/2)``. It needs nothing about the teacher; its
  bias is ``O(eta)`` in the bulk and its fluctuation ``O(1/(d eta))``.

The divergence of the matrix denoiser (needed as the Onsager term of GAMP-RIE) is computed for
the spectral function ``F(Y) = U diag(phi(lambda)) U^T``, in an orthonormal basis of the
``d(d+1)/2``-dimensional space of symmetric matrices::

    div F = sum_i d phi_i / d lambda_i + sum_{i<j} (phi_i - phi_j) / (lambda_i - lambda_j)

(the identity map has divergence ``d(d+1)/2``). For the oracle, ``d phi_i/d lambda_i`` is
``1 - 2 delta H'(lambda_i)`` by forward-mode autodiff of ``hilbert``; for the empirical
denoiser it differentiates the ``j != i`` sum above (``eta`` held fixed).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from qnr._validate import check_nonnegative, check_positive, check_shape, check_size
from qnr.sim import _linalg as _la

__all__ = [
    "RIEEstimate",
    "sample_goe",
    "empirical_hilbert",
    "rie",
    "rie_denoise",
]

HilbertFn = Callable[[Float[Array, " d"], Float[Array, ""]], Float[Array, " d"]]


class RIEEstimate(eqx.Module):
    """Output of :func:`rie`.

    ``value`` -- the denoised matrix ``U diag(phi) U^T``; ``eigenvalues`` -- ``phi``, the
    denoised eigenvalues (ordered like ``eigh``'s ascending eigenvalues of ``Y``);
    ``divergence`` -- ``div F`` over symmetric matrices (see the module docstring).
    """

    value: Float[Array, "d d"]
    eigenvalues: Float[Array, " d"]
    divergence: Float[Array, ""]


def sample_goe(key: PRNGKeyArray, d: int, dtype=None) -> Float[Array, "d d"]:
    """GOE matrix with off-diagonal entries ``N(0, 1/d)`` and diagonal ``N(0, 2/d)``.

    Its spectrum tends to the semicircle on ``[-2, 2]`` (variance 1) and
    ``Var Tr(G A) = 2 ||A||_F^2 / d`` for every symmetric ``A`` -- the second moments of the
    centred sensing matrix ``Z`` (THEORY.md section 1).
    """
    d = check_size("d", d)
    dtype = dtype or jnp.zeros(()).dtype
    a = jax.random.normal(key, (d, d), dtype=dtype)
    return (a + a.T) / jnp.sqrt(jnp.asarray(2 * d, dtype))


def _default_eta(lam: Float[Array, " d"], eta_scale) -> Float[Array, ""]:
    d = lam.shape[0]
    return eta_scale * jnp.std(lam) / jnp.sqrt(jnp.asarray(d, lam.dtype))


def empirical_hilbert(
    eigenvalues: Float[Array, " d"], eta_scale: float = 1.0
) -> tuple[Float[Array, " d"], Float[Array, " d"]]:
    """Regularised empirical Hilbert transform at the eigenvalues themselves.

    Returns ``(H, dH)`` with ``H_i = (1/d) sum_{j != i} u_ij / (u_ij^2 + eta^2)``,
    ``u_ij = lambda_i - lambda_j``, ``eta = eta_scale * std(lambda) / sqrt(d)``, and
    ``dH_i = d H_i / d lambda_i`` (at fixed ``eta``). ``H`` is ``Re g(lambda_i + i eta)`` of the
    empirical Stieltjes transform ``g(z) = (1/d) sum_j 1/(z - lambda_j)``; the ``j = i`` term is
    purely imaginary and drops out.
    """
    lam = jnp.asarray(eigenvalues)
    d = lam.shape[0]
    eta = _default_eta(lam, eta_scale)
    u = lam[:, None] - lam[None, :]
    den = u**2 + eta**2
    off = ~jnp.eye(d, dtype=bool)
    H = jnp.sum(jnp.where(off, u / den, 0.0), axis=1) / d
    dH = jnp.sum(jnp.where(off, (eta**2 - u**2) / den**2, 0.0), axis=1) / d
    return H, dH


def _pair_divergence(lam: Float[Array, " d"], phi: Float[Array, " d"], dphi) -> Array:
    """``sum_{i<j} (phi_i - phi_j)/(lambda_i - lambda_j)``; at (numerically) coincident
    eigenvalues the difference quotient is replaced by ``(phi'_i + phi'_j)/2``."""
    dl = lam[:, None] - lam[None, :]
    dp = phi[:, None] - phi[None, :]
    scale = jnp.max(jnp.abs(lam)) + 1.0
    tiny = dl.dtype.type(jnp.finfo(dl.dtype).eps ** 0.5) * scale
    close = jnp.abs(dl) < tiny
    q = jnp.where(close, (dphi[:, None] + dphi[None, :]) / 2, dp / jnp.where(close, 1.0, dl))
    upper = jnp.triu(jnp.ones_like(q, dtype=bool), k=1)
    return jnp.sum(jnp.where(upper, q, 0.0))


def rie(
    Y: Float[Array, "d d"],
    delta,
    hilbert: HilbertFn | None = None,
    *,
    eta_scale: float = 1.0,
) -> RIEEstimate:
    """RIE of ``S*`` from ``Y = S* + sqrt(delta) G`` (module docstring for the formulas).

    Args:
        Y: symmetric observation (only its lower triangle is read by ``eigh``).
        delta: the noise level, the variance of the semicircle ``sqrt(delta) G`` (> 0).
        hilbert: ``hilbert(l, delta) -> H(l)``, the oracle Hilbert transform of
            ``rho_delta`` (elementwise, JAX-traceable); ``None`` uses the empirical one.
        eta_scale: for the empirical transform, ``eta = eta_scale * std(lambda) / sqrt(d)``.

    Returns:
        :class:`RIEEstimate` with the denoised matrix, eigenvalues and divergence.
    """
    Y = jnp.asarray(Y)
    if Y.ndim != 2:
        raise ValueError(f"Y must be a square matrix, got shape {Y.shape}")
    check_shape("Y", Y, (Y.shape[0], Y.shape[0]))
    check_positive("delta", delta)
    check_nonnegative("eta_scale", eta_scale)
    delta = jnp.asarray(delta, Y.dtype)
    lam, U = _la.eigh(Y)
    if hilbert is None:
        H, dH = empirical_hilbert(lam, eta_scale)
    else:
        H, dH = jax.jvp(lambda x: hilbert(x, delta), (lam,), (jnp.ones_like(lam),))
    phi = lam - 2 * delta * H
    dphi = 1 - 2 * delta * dH
    div = jnp.sum(dphi) + _pair_divergence(lam, phi, dphi)
    value = (U * phi[None, :]) @ U.T
    return RIEEstimate(value=value, eigenvalues=phi, divergence=div)


def rie_denoise(
    Y: Float[Array, "d d"],
    delta,
    hilbert: HilbertFn | None = None,
    *,
    eta_scale: float = 1.0,
) -> Float[Array, "d d"]:
    """The denoised matrix only: ``rie(Y, delta, hilbert, eta_scale=...).value``."""
    return rie(Y, delta, hilbert, eta_scale=eta_scale).value
