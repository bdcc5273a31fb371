"""Landscape checks for quadratic networks (Gamarnik, Kizildag, Zadik, arXiv 1912.01599;
THEORY.md s. 5).

Energy barrier. For any PSD ``S`` of rank ``< d`` and a PSD teacher ``S*`` with smallest
eigenvalue ``lambda_min``, Eckart-Young (the best rank-``(d-1)`` approximation of a PSD matrix is
PSD) gives ``||S - S*||_F^2 >= lambda_min(S*)^2``, with equality at ``S* - lambda_min v v^T``.
Hence, for rank-deficient ``W`` (``rank W W^T < d``):

* canonical normalization (THEORY.md s. 1, ``S = W W^T``, risk ``E_x (yhat - y*)^2``):
  ``2 ||S - S*||_F^2 / d >= 2 lambda_min(S*)^2 / d`` (:func:`energy_barrier`);
* GKZ normalization (``y = ||W*^T x||^2``, ``yhat = ||W^T x||^2``, uncentred): the risk
  ``E (yhat - y)^2 = 2 ||Delta||_F^2 + (Tr Delta)^2`` with ``Delta = W W^T - W* W*^T`` is
  ``>= 2 sigma_min(W*)^4`` (:func:`energy_barrier_gkz`, :func:`gkz_population_risk`).

So any descent method started below the barrier never reaches a rank-deficient ``W``; since
full-rank stationary points of the population loss are global minima, it converges to
``S*`` (:func:`below_barrier`). The identity-multiple initialisation ``W0 = s I`` with
``s^2 = Tr S*/d`` (the closest multiple of the identity, :func:`identity_multiple_init`) is
below the barrier iff ``d Var(lambda(S*)) < lambda_min(S*)^2`` -- i.e. only for well-conditioned
teachers (note the canonical barrier is ``O(1/d)``).

Interpolation condition. The span of ``{x_i x_i^T}`` in the ``N* = d(d+1)/2``-dimensional
space of symmetric matrices has dimension ``min(n, N*)`` almost surely (:func:`span_rank`), so
for ``n >= N*`` noiseless interpolation pins ``S = S*``: every empirical minimiser generalises.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optimistix as optx
from jaxtyping import Array, Float, PRNGKeyArray

from qnr._validate import check_psd, check_shape, check_size
from qnr.sim import _linalg as _la

__all__ = [
    "energy_barrier",
    "energy_barrier_gkz",
    "gkz_population_risk",
    "min_rank_deficient_risk",
    "RankDeficientOptimum",
    "optimize_rank_deficient",
    "identity_multiple_init",
    "below_barrier",
    "n_star",
    "sym_features",
    "span_rank",
]


def _eigvalsh(S):
    return _la.eigvalsh((S + S.T) / 2)


def energy_barrier(S_star: Float[Array, "d d"]) -> Float[Array, ""]:
    """``2 lambda_min(S*)^2 / d``: lower bound on the canonical population risk
    ``2 ||W W^T - S*||_F^2 / d`` of every rank-deficient ``W`` (tight)."""
    check_psd("S_star", S_star)
    lam = _eigvalsh(jnp.asarray(S_star))
    return 2 * jnp.maximum(lam[0], 0.0) ** 2 / S_star.shape[0]


def energy_barrier_gkz(W_star: Float[Array, "d m"]) -> Float[Array, ""]:
    """``2 sigma_min(W*)^4`` (GKZ normalization; zero unless ``W*`` has rank ``d``)."""
    W_star = jnp.asarray(W_star)
    d, m = W_star.shape
    if m < d:
        return jnp.zeros((), W_star.dtype)
    s = jnp.linalg.svd(W_star, compute_uv=False)
    return 2 * s[d - 1] ** 4


def gkz_population_risk(W: Float[Array, "d m"], W_star: Float[Array, "d k"]) -> Float[Array, ""]:
    """Uncentred ``E_x (||W^T x||^2 - ||W*^T x||^2)^2 = 2 ||Delta||_F^2 + (Tr Delta)^2``,
    ``Delta = W W^T - W* W*^T``, ``x ~ N(0, I_d)``."""
    Delta = W @ W.T - W_star @ W_star.T
    return 2 * jnp.sum(Delta**2) + jnp.trace(Delta) ** 2


def min_rank_deficient_risk(S_star: Float[Array, "d d"], rank: int | None = None) -> Array:
    """Closed-form ``min_{rank S <= rank, S psd} 2 ||S - S*||_F^2 / d = 2 sum_{j > rank}
    lambda_j^2 / d`` (Eckart-Young; ``rank`` defaults to ``d - 1``, giving
    :func:`energy_barrier`)."""
    check_psd("S_star", S_star)
    d = S_star.shape[0]
    rank = d - 1 if rank is None else check_size("rank", rank, minimum=0)
    lam = jnp.sort(jnp.maximum(_eigvalsh(jnp.asarray(S_star)), 0.0))[::-1]
    return 2 * jnp.sum(lam[rank:] ** 2) / d


class RankDeficientOptimum(eqx.Module):
    """Numerical minimiser ``value`` (``d x rank``) of ``2 ||W W^T - S*||_F^2 / d``, its
    ``risk``, ``result`` and ``stats`` (iterations, gradient norm)."""

    value: Float[Array, "d k"]
    risk: Float[Array, ""]
    result: optx.RESULTS
    stats: dict


def optimize_rank_deficient(
    S_star: Float[Array, "d d"],
    key: PRNGKeyArray,
    rank: int | None = None,
    *,
    max_steps: int = 2000,
    gtol: float = 1e-10,
) -> RankDeficientOptimum:
    """Minimise the canonical risk over ``W`` of width ``rank`` (default ``d - 1``) with
    ``optax.lbfgs`` from a random start -- an independent numerical check of
    :func:`min_rank_deficient_risk` / :func:`energy_barrier`."""
    S_star = jnp.asarray(S_star)
    check_psd("S_star", S_star)
    d = S_star.shape[0]
    rank = d - 1 if rank is None else check_size("rank", rank)
    max_steps = check_size("max_steps", max_steps)
    scale = jnp.sqrt(jnp.trace(S_star) / d)
    W0 = scale * jax.random.normal(key, (d, rank), S_star.dtype) / jnp.sqrt(rank)

    def risk(W):
        return 2 * jnp.sum((W @ W.T - S_star) ** 2) / d

    return _lbfgs(risk, W0, max_steps, gtol)


@eqx.filter_jit
def _lbfgs(risk, W0, max_steps, gtol):
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(risk)

    def cond(carry):
        _, state, k, gnorm = carry
        return (k < max_steps) & (gnorm > gtol)

    def body(carry):
        W, state, k, _ = carry
        value, grad = value_and_grad(W, state=state)
        with jax.numpy_dtype_promotion("standard"):  # optax.lbfgs mixes int32/int64 inside
            updates, state = opt.update(grad, state, W, value=value, grad=grad, value_fn=risk)
        W = optax.apply_updates(W, updates)
        return W, state, k + 1, optax.tree_utils.tree_norm(grad)

    inf = jnp.asarray(jnp.inf, W0.dtype)
    W, _, k, gnorm = jax.lax.while_loop(cond, body, (W0, opt.init(W0), 0, inf))
    val = risk(W)
    ok = jnp.isfinite(val) & (gnorm <= gtol)
    finite = jnp.isfinite(val)
    failure = optx.RESULTS.where(
        finite, optx.RESULTS.nonlinear_max_steps_reached, optx.RESULTS.nonfinite
    )
    result = optx.RESULTS.where(ok, optx.RESULTS.successful, failure)
    return RankDeficientOptimum(
        value=W, risk=val, result=result, stats={"num_steps": k, "grad_norm": gnorm}
    )


def identity_multiple_init(S_star: Float[Array, "d d"]) -> Float[Array, ""]:
    """Scale ``s`` of the identity-multiple initialisation ``W0 = s I``: ``s^2 = Tr S* / d``
    minimises ``||s^2 I - S*||_F`` (canonical risk ``2 d Var(lambda) / d = 2 Var(lambda)``)."""
    check_psd("S_star", S_star)
    return jnp.sqrt(jnp.trace(jnp.asarray(S_star)) / S_star.shape[0])


def below_barrier(W0: Float[Array, "d m"], S_star: Float[Array, "d d"]) -> Array:
    """True when ``2 ||W0 W0^T - S*||_F^2 / d < energy_barrier(S*)``: then every descent path
    of the population risk from ``W0`` stays full rank and ends at ``S*`` (GKZ)."""
    S_star = jnp.asarray(S_star)
    check_shape("W0", W0, (S_star.shape[0], None))
    d = S_star.shape[0]
    risk = 2 * jnp.sum((W0 @ W0.T - S_star) ** 2) / d
    return risk < energy_barrier(S_star)


def n_star(d: int) -> int:
    """``N* = d (d + 1) / 2``, the dimension of the symmetric ``d x d`` matrices."""
    d = check_size("d", d)
    return d * (d + 1) // 2


def sym_features(X: Float[Array, "n d"]) -> Float[Array, "n N"]:
    """Isometric coordinates of ``x_i x_i^T`` in the symmetric matrices: the upper triangle
    with off-diagonal entries times ``sqrt(2)`` (so ``<phi(x), phi(y)> = (x^T y)^2``)."""
    d = X.shape[-1]
    iu, ju = np.triu_indices(d)
    w = np.where(iu == ju, 1.0, np.sqrt(2.0))
    return X[:, iu] * X[:, ju] * jnp.asarray(w, X.dtype)


def span_rank(X: Float[Array, "n d"], *, rtol: float | None = None) -> int:
    """Dimension of ``span{x_i x_i^T}`` (numerical rank of :func:`sym_features`, singular
    values above ``rtol * s_max``; default ``rtol = max(n, N*) eps * 10``)."""
    X = jnp.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be an n x d matrix, got shape {X.shape}")
    F = sym_features(X)
    s = np.asarray(jnp.linalg.svd(F, compute_uv=False))
    if rtol is None:
        rtol = 10 * max(F.shape) * float(jnp.finfo(F.dtype).eps)
    return int(np.sum(s > rtol * s[0]))
