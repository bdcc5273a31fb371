"""The canonical model's exact population metrics and conversions (THEORY.md section 1).

Normalization: ``Z(x) = (x x^T - I)/sqrt(d)``, ``y = Tr(Z S*) + sqrt(Delta) xi``,
``yhat = Tr(Z S)``. Because ``Var Tr(Z A) = 2 ||A||_F^2 / d`` for symmetric ``A``,

* ``E = ||S - S*||_F^2 / d``;
* ``e_test = E_{x, xi}[(y - yhat)^2] / 4 = (E + Delta/2) / 2`` exactly (no test set needed);
* the zero predictor has ``E = Tr S*^2 / d = Q0``.

Conversions to other papers' conventions:

* Bayes-optimal papers (Maillard et al. 2024) report ``MMSE = kappa* E``;
* the "lambda-tilde" convention (loss ``(1/d^2) sum (yhat - y)^2 + lt Tr S / d``) has
  ``lt = 4 alpha lam``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from qnr._validate import check_nonnegative, check_positive

__all__ = [
    "matrix_error",
    "e_test_from_error",
    "mmse_from_error",
    "error_from_mmse",
    "lambda_tilde_from_lam",
    "lam_from_lambda_tilde",
]


def matrix_error(S: Float[Array, "... d d"], S_star: Float[Array, "... d d"]) -> Array:
    """``E = ||S - S*||_F^2 / d``."""
    shape, shape_star = jnp.shape(S), jnp.shape(S_star)
    ok = len(shape) >= 2 and len(shape_star) >= 2 and shape[-2:] == shape_star[-2:]
    ok = ok and shape[-1] == shape[-2]
    if ok:
        try:
            jnp.broadcast_shapes(shape, shape_star)
        except ValueError:
            ok = False
    if not ok:
        raise ValueError(
            "S and S_star must be (batches of) d x d matrices of the same d, got shapes "
            f"{shape} and {shape_star}"
        )
    d = S.shape[-1]
    return jnp.sum((S - S_star) ** 2, axis=(-2, -1)) / d


def e_test_from_error(E, Delta=0.0):
    """Exact population test error ``e_test = (E + Delta/2)/2`` of an estimate with
    ``E = ||S - S*||_F^2/d`` under label-noise variance ``Delta`` (THEORY.md section 1)."""
    check_nonnegative("Delta", Delta)
    return (E + Delta / 2) / 2


def mmse_from_error(E, kappa_star):
    """Bayes-optimal papers' ``MMSE = kappa* E``."""
    return check_positive("kappa_star", kappa_star) * E


def error_from_mmse(mmse, kappa_star):
    """Inverse of :func:`mmse_from_error`: ``E = MMSE / kappa*``."""
    return mmse / check_positive("kappa_star", kappa_star)


def lambda_tilde_from_lam(lam, alpha):
    """``lt = 4 alpha lam`` (loss ``(1/d^2) sum (yhat - y)^2 + lt Tr S / d``)."""
    return 4 * check_positive("alpha", alpha) * check_nonnegative("lam", lam)


def lam_from_lambda_tilde(lt, alpha):
    """Inverse of :func:`lambda_tilde_from_lam`: ``lam = lt / (4 alpha)``."""
    return check_nonnegative("lambda_tilde", lt) / (4 * check_positive("alpha", alpha))
