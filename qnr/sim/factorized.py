"""Low-rank matrix sensing with Gaussian measurements: factorised GD from small initialisation
(Li, Ma, Zhang, COLT 2018, arXiv 1712.09203), projected GD on ``X`` and SGD baselines
(THEORY.md s. 5).

Measurement model (NOT the canonical centred model of THEORY.md s. 1): ``m`` sensing matrices
``A_i`` (``d x d``) with iid N(0, 1) entries and noiseless labels ``b_i = <A_i, X*>``, with a
rank-``r`` PSD target ``X* = U* U*^T`` (by default ``U*`` has orthonormal columns, so ``X*``
has ``r`` unit eigenvalues: condition number 1). Only the symmetric part
``A_i^s = (A_i + A_i^T)/2`` acts on symmetric matrices, and ``E <A_i^s, X> A_i^s = X``, so

* empirical loss ``f(U) = (1/(2m)) sum_i (<A_i, U U^T> - b_i)^2``, gradient
  ``(2/m) sum_i r_i A_i^s U``;
* population loss ``E f = ||U U^T - X*||_F^2 / 2``; the reported generalisation error is the
  relative ``||U U^T - X*||_F / ||X*||_F``.

LMZ setting: ``d = 100``, ``r = 5``, ``m = 5 d r``, ``U0 = alpha I`` (``d x d``, fully
over-parameterised), step ``0.0025``. Findings reproduced (tests at ``d = 30-40``, benchmark at
``d = 100``): the generalisation error shrinks with ``alpha``; projected GD on ``X`` (PSD
cone, no rank information) needs more samples (its threshold is the statistical dimension of
the PSD cone's descent cone, ``~ (1/4 + kappa*/2 - kappa*^2/4) d^2`` with ``kappa* = r/d``, cf.
THEORY.md s. 3); GD/SGD from ``U0 = I`` interpolate (train loss -> 0) without generalising.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optimistix as optx
from jaxtyping import Array, Float, Int, PRNGKeyArray

from qnr._validate import check_positive, check_psd, check_shape, check_size
from qnr.sim import _linalg as _la
from qnr.sim.online import _check_steps, _run_recorded

__all__ = [
    "SensingProblem",
    "make_sensing_problem",
    "FactorizedTrace",
    "factorized_gd",
    "factorized_gd_init_sweep",
    "factorized_sgd",
    "projected_gd",
    "psd_projection",
    "LMZ_STEP",
]

LMZ_STEP = 0.0025  # Li, Ma, Zhang's step size


class SensingProblem(eqx.Module):
    """Gaussian-measurement sensing problem: ``A_sym`` (m, d, d) symmetric parts of the
    sensing matrices, labels ``b`` (m,), target ``X_star`` (d, d)."""

    A_sym: Float[Array, "m d d"]
    b: Float[Array, " m"]
    X_star: Float[Array, "d d"]

    @property
    def d(self) -> int:
        return self.X_star.shape[0]

    @property
    def m(self) -> int:
        return self.b.shape[0]

    def measure(self, X: Float[Array, "d d"]) -> Float[Array, " m"]:
        """``<A_i, X>`` for symmetric ``X``."""
        return jnp.einsum("mij,ij->m", self.A_sym, X)

    def adjoint(self, r: Float[Array, " m"]) -> Float[Array, "d d"]:
        """``sum_i r_i A_i^s``."""
        return jnp.einsum("m,mij->ij", r, self.A_sym)


def make_sensing_problem(
    key: PRNGKeyArray,
    d: int,
    r: int,
    m: int | None = None,
    *,
    X_star: Float[Array, "d d"] | None = None,
    dtype=None,
) -> SensingProblem:
    """``m`` (default ``5 d r``) Gaussian measurements of ``X* = U* U*^T`` (``U*`` with
    orthonormal columns, Haar) or of a given PSD ``X_star``."""
    d = check_size("d", d)
    r = check_size("r", r)
    if r > d:
        raise ValueError(f"r must be <= d, got r={r} > d={d}")
    m = 5 * d * r if m is None else check_size("m", m)
    dtype = dtype or jnp.zeros(()).dtype
    k_u, k_a = jax.random.split(key)
    if X_star is None:
        g = jax.random.normal(k_u, (d, r), dtype=dtype)
        U, _ = jnp.linalg.qr(g)
        X_star = U @ U.T
    else:
        X_star = jnp.asarray(X_star, dtype=dtype)
        check_shape("X_star", X_star, (d, d))
        check_psd("X_star", X_star)
    A = jax.random.normal(k_a, (m, d, d), dtype=dtype)
    A_sym = (A + jnp.swapaxes(A, 1, 2)) / 2
    b = jnp.einsum("mij,ij->m", A_sym, X_star)
    return SensingProblem(A_sym=A_sym, b=b, X_star=X_star)


class FactorizedTrace(eqx.Module):
    """``steps`` (R,), ``train_loss`` (R,) ``= f``, ``error`` (R,) ``= ||X - X*||_F/||X*||_F``,
    ``value`` (the final ``U``, or ``X`` for projected GD), ``result``, ``stats``."""

    steps: Int[Array, " R"]
    train_loss: Float[Array, " R"]
    error: Float[Array, " R"]
    value: Array
    result: optx.RESULTS
    stats: dict


def _loss(problem, X):
    res = problem.measure(X) - problem.b
    return jnp.sum(res**2) / (2 * problem.m), res


def _rel_error(problem, X):
    return jnp.linalg.norm(X - problem.X_star) / jnp.linalg.norm(problem.X_star)


def _trace(steps, loss, err, value, stats):
    ok = jnp.all(jnp.isfinite(loss)) & jnp.all(jnp.isfinite(value))
    nan = jnp.asarray(jnp.nan, loss.dtype)
    return FactorizedTrace(
        steps=jnp.asarray(np.asarray(steps), dtype=jnp.int32),
        train_loss=jnp.where(ok, loss, nan),
        error=jnp.where(ok, err, nan),
        value=jnp.where(ok, value, nan),
        result=optx.RESULTS.where(ok, optx.RESULTS.successful, optx.RESULTS.nonfinite),
        stats=stats,
    )


@eqx.filter_jit
def _factorized(problem, U0, eta, key, batch_size, steps):
    opt = optax.sgd(eta)
    m = problem.m

    def grad_fn(U, k):
        if batch_size is None:
            _, res = _loss(problem, U @ U.T)
            return 2 * problem.adjoint(res) @ U / m
        idx = jax.random.choice(jax.random.fold_in(key, k), m, (batch_size,), replace=False)
        A = problem.A_sym[idx]
        res = jnp.einsum("bij,ij->b", A, U @ U.T) - problem.b[idx]
        return 2 * jnp.einsum("b,bij->ij", res, A) @ U / batch_size

    def step_fn(k, carry):
        U, state = carry
        updates, state = opt.update(grad_fn(U, k), state, U)
        return optax.apply_updates(U, updates), state

    def record_fn(carry):
        X = carry[0] @ carry[0].T
        return _loss(problem, X)[0], _rel_error(problem, X)

    (U, _), (loss, err) = _run_recorded(step_fn, U0, opt.init(U0), steps, record_fn)
    return U, loss, err


def factorized_gd(
    problem: SensingProblem,
    U0: Float[Array, "d k"],
    eta=LMZ_STEP,
    *,
    steps: tuple[int, ...] = (0, 1),
) -> FactorizedTrace:
    """Full-batch GD ``U <- U - eta grad f(U)`` (``optax.sgd``) from ``U0`` (LMZ: ``alpha I``)."""
    U0 = jnp.asarray(U0, dtype=problem.b.dtype)
    check_shape("U0", U0, (problem.d, None))
    check_positive("eta", eta)
    steps = _check_steps(steps)
    eta = jnp.asarray(eta, dtype=U0.dtype)
    U, loss, err = _factorized(problem, U0, eta, jax.random.key(0), None, steps)
    return _trace(steps, loss, err, U, {"m": problem.m})


def factorized_gd_init_sweep(
    problem: SensingProblem,
    alphas: Float[Array, " A"],
    eta=LMZ_STEP,
    *,
    steps: tuple[int, ...] = (0, 1),
) -> FactorizedTrace:
    """:func:`factorized_gd` from ``U0 = alpha I`` for every ``alpha``, vmapped (one compiled
    program); fields gain a leading axis ``A``."""
    alphas = jnp.asarray(alphas, dtype=problem.b.dtype)
    check_positive("alphas", alphas)
    check_positive("eta", eta)
    steps = _check_steps(steps)
    eta = jnp.asarray(eta, dtype=alphas.dtype)
    eye = jnp.eye(problem.d, dtype=alphas.dtype)
    run = jax.vmap(lambda a: _factorized(problem, a * eye, eta, jax.random.key(0), None, steps))
    U, loss, err = run(alphas)
    tr = jax.vmap(lambda lo, e, u: _trace(steps, lo, e, u, {}))(loss, err, U)
    return dataclasses.replace(tr, stats={"m": problem.m})


def factorized_sgd(
    problem: SensingProblem,
    U0: Float[Array, "d k"],
    key: PRNGKeyArray,
    eta=LMZ_STEP,
    *,
    batch_size: int = 1,
    steps: tuple[int, ...] = (0, 1),
) -> FactorizedTrace:
    """Minibatch SGD on ``f``: each step uses ``batch_size`` measurements drawn without
    replacement (multi-pass over the fixed ``m`` measurements)."""
    U0 = jnp.asarray(U0, dtype=problem.b.dtype)
    check_shape("U0", U0, (problem.d, None))
    check_positive("eta", eta)
    batch_size = check_size("batch_size", batch_size)
    if batch_size > problem.m:
        raise ValueError(f"batch_size must be <= m={problem.m}, got {batch_size}")
    steps = _check_steps(steps)
    eta = jnp.asarray(eta, dtype=U0.dtype)
    U, loss, err = _factorized(problem, U0, eta, key, batch_size, steps)
    return _trace(steps, loss, err, U, {"m": problem.m, "batch_size": batch_size})


def psd_projection(X: Float[Array, "d d"]) -> Float[Array, "d d"]:
    """Frobenius projection onto the PSD cone: ``V max(Lambda, 0) V^T``."""
    lam, V = _la.eigh((X + X.T) / 2)
    return (V * jnp.maximum(lam, 0.0)[None, :]) @ V.T


@eqx.filter_jit
def _pgd(problem, X0, eta, steps):
    m = problem.m

    def step_fn(k, carry):
        X, s = carry
        _, res = _loss(problem, X)
        return psd_projection(X - eta * problem.adjoint(res) / m), s

    def record_fn(carry):
        X = carry[0]
        return _loss(problem, X)[0], _rel_error(problem, X)

    (X, _), (loss, err) = _run_recorded(step_fn, X0, jnp.zeros(()), steps, record_fn)
    return X, loss, err


def projected_gd(
    problem: SensingProblem,
    eta=None,
    *,
    X0: Float[Array, "d d"] | None = None,
    steps: tuple[int, ...] = (0, 1),
) -> FactorizedTrace:
    """Projected GD on the convex PSD least squares ``min_{X psd} (1/(2m)) sum (<A_i,X> - b_i)^2``:
    ``X <- Pi_psd(X - eta grad)``. Default step ``1/L`` with the Gaussian-design estimate
    ``L = (1 + sqrt(d(d+1)/(2m)))^2`` of the largest eigenvalue of ``A^* A / m``."""
    d, m = problem.d, problem.m
    if eta is None:
        eta = 1.0 / (1.0 + np.sqrt(d * (d + 1) / (2 * m))) ** 2
    check_positive("eta", eta)
    steps = _check_steps(steps)
    X0 = jnp.zeros((d, d), problem.b.dtype) if X0 is None else jnp.asarray(X0, problem.b.dtype)
    check_shape("X0", X0, (d, d))
    X, loss, err = _pgd(problem, X0, jnp.asarray(eta, dtype=X0.dtype), steps)
    return _trace(steps, loss, err, X, {"m": m, "eta": float(eta)})
