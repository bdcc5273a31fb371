"""Online SGD and full-batch GD for the quadratic student ``yhat = Tr(Z W W^T)``.

Canonical model (THEORY.md s. 1): ``Z = (x x^T - I)/sqrt(d)``, ``y = Tr(Z S*) + sqrt(Delta) xi``,
per-sample loss ``(y - yhat)^2 / 4``, whose gradient is ``-(y - yhat) Z W``. Gradients are
evaluated matrix-free, ``sum_mu r_mu Z_mu W = (X^T (r * (X W)) - (sum r) W)/sqrt(d)``, in
``O(B d m)`` per step.

* :func:`online_sgd`: each step draws ``B`` fresh Gaussian inputs (one-pass SGD) and takes
  ``W <- W - eta * mean_batch grad`` (``optax.sgd``).
* :func:`full_batch_gd`: gradient descent on the empirical loss
  ``L_n(W) = (1/(4n)) sum_mu (y_mu - yhat_mu)^2 + (lam/d) ||W||_F^2`` of a fixed
  :class:`~qnr.sim.data.Dataset`.

Both record the exact population risk ``E_x (yhat - y*)^2 = 2 ||W W^T - S*||_F^2 / d`` (no test
set) at a fixed array of step indices (:func:`log_steps`), with one compiled program (a scan
over record intervals; inside, a loop over the steps of the interval), and both are written for
``jax.vmap`` over keys and step sizes (:func:`online_sgd_sweep`, :func:`full_batch_gd_sweep`).

Time: ``k`` steps of size ``eta`` correspond to the rescaled time ``t = 2 eta k / d`` of the
population Riccati flow ``dM/dt = M* M + M M* - 2 M^2`` (derivation in
``qnr.theory.dynamics``); SGD tracks it when ``eta d / B`` is small (noise drift
``O(eta d / B)``). The traces report ``times = 2 eta k / d``.
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

from qnr._validate import (
    check_nonnegative,
    check_positive,
    check_psd,
    check_shape,
    check_size,
    is_concrete,
)
from qnr.sim.data import Dataset
from qnr.sim.sensing import network_output

__all__ = [
    "OnlineProblem",
    "DynamicsTrace",
    "log_steps",
    "population_risk",
    "online_sgd",
    "online_sgd_sweep",
    "full_batch_gd",
    "full_batch_gd_sweep",
]


def log_steps(num_steps: int, num_records: int) -> tuple[int, ...]:
    """Step indices ``0 = k_0 < k_1 < ... = num_steps``, roughly logarithmically spaced
    (duplicates from rounding removed, so at most ``num_records`` entries)."""
    num_steps = check_size("num_steps", num_steps)
    num_records = check_size("num_records", num_records, minimum=2)
    k = np.unique(np.round(np.geomspace(1, num_steps, num_records - 1)).astype(np.int64))
    return tuple(int(v) for v in np.concatenate([[0], k]))


def population_risk(W: Float[Array, "d m"], S_star: Float[Array, "d d"]) -> Float[Array, ""]:
    """Exact ``E_x (Tr(Z W W^T) - Tr(Z S*))^2 = 2 ||W W^T - S*||_F^2 / d``, evaluated as
    ``2 (||W^T W||^2 - 2 Tr(W^T S* W) + ||S*||^2) / d`` (no ``d x d`` product for ``m < d``)."""
    d = W.shape[0]
    G = W.T @ W
    cross = jnp.sum(W * (S_star @ W))
    val = jnp.sum(G**2) - 2 * cross + jnp.sum(S_star**2)
    return 2 * jnp.maximum(val, 0.0) / d


class OnlineProblem(eqx.Module):
    """Teacher ``S* = F F^T`` (stored through a factor ``F``, ``d x r``: labels cost
    ``O(B d r)``), label-noise variance ``Delta`` and initial weights ``W0``."""

    factor: Float[Array, "d r"]
    W0: Float[Array, "d m"]
    Delta: Float[Array, ""]

    def __init__(self, factor, W0, Delta=0.0):
        factor = jnp.asarray(factor)
        W0 = jnp.asarray(W0, dtype=factor.dtype)
        if factor.ndim != 2:
            raise ValueError(f"factor must be a d x r matrix, got shape {factor.shape}")
        check_shape("W0", W0, (factor.shape[0], None))
        check_nonnegative("Delta", Delta)
        self.factor = factor
        self.W0 = W0
        self.Delta = jnp.asarray(Delta, dtype=factor.dtype)

    @classmethod
    def from_matrix(cls, S_star, W0, Delta=0.0, *, rtol: float | None = None) -> OnlineProblem:
        """Factor a PSD ``S*`` by ``eigh``, dropping eigenvalues below ``rtol * max``
        (default ``rtol = 10 d eps`` of the dtype of ``S*``)."""
        S_star = jnp.asarray(S_star)
        if rtol is None:
            rtol = 10 * S_star.shape[-1] * float(jnp.finfo(S_star.dtype).eps)
        check_psd("S_star", S_star)
        if not is_concrete(S_star):
            raise ValueError("S_star must be concrete to choose its numerical rank")
        lam, V = np.linalg.eigh(np.asarray(S_star, dtype=np.float64))
        keep = lam > rtol * max(lam.max(), 1e-300)
        F = V[:, keep] * np.sqrt(lam[keep])[None, :]
        return cls(jnp.asarray(F, dtype=S_star.dtype), W0, Delta)

    @property
    def S_star(self) -> Float[Array, "d d"]:
        return self.factor @ self.factor.T

    @property
    def d(self) -> int:
        return self.factor.shape[0]


class DynamicsTrace(eqx.Module):
    """Recorded trajectory: ``steps`` (R,), ``times = 2 eta steps / d`` (R,), ``risk`` (R,) the
    exact population risk ``2||W W^T - S*||_F^2/d``, ``train_loss`` (R,) (full-batch GD only;
    NaN for online SGD), ``value`` the final ``W``, ``result`` (``optimistix.RESULTS``:
    ``nonfinite`` when the run diverged; the arrays are then NaN), ``stats``."""

    steps: Int[Array, " R"]
    times: Float[Array, " R"]
    risk: Float[Array, " R"]
    train_loss: Float[Array, " R"]
    value: Float[Array, "d m"]
    result: optx.RESULTS
    stats: dict


def _zw_sum(X, r, W):
    """``sum_mu r_mu Z_mu W = (X^T (r * (X W)) - (sum r) W)/sqrt(d)``."""
    d = X.shape[-1]
    return (X.T @ (r[:, None] * (X @ W)) - jnp.sum(r) * W) / jnp.sqrt(jnp.asarray(d, X.dtype))


def _run_recorded(step_fn, W0, state0, steps, record_fn):
    """Scan over record intervals; a ``fori_loop`` over the steps of each interval."""
    steps = np.asarray(steps, dtype=np.int64)
    gaps = jnp.asarray(np.diff(steps), dtype=jnp.int32)

    def interval(carry, gap_and_start):
        gap, start = gap_and_start

        def body(i, c):
            return step_fn(start + i, c)

        carry = jax.lax.fori_loop(0, gap, body, carry)
        return carry, record_fn(carry)

    carry0 = (W0, state0)
    starts = jnp.asarray(steps[:-1], dtype=jnp.int32)
    final, recs = jax.lax.scan(interval, carry0, (gaps, starts))
    first = record_fn(carry0)
    recs = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), first, recs)
    return final, recs


def _finish(steps, eta, d, risk, train, W, dtype, stats):
    ok = jnp.all(jnp.isfinite(risk)) & jnp.all(jnp.isfinite(W))
    steps_arr = jnp.asarray(np.asarray(steps), dtype=jnp.int32)
    times = 2 * eta * steps_arr.astype(dtype) / d
    nan = jnp.asarray(jnp.nan, dtype)
    return DynamicsTrace(
        steps=steps_arr,
        times=times,
        risk=jnp.where(ok, risk, nan),
        train_loss=jnp.where(ok, train, nan),
        value=jnp.where(ok, W, nan),
        result=optx.RESULTS.where(ok, optx.RESULTS.successful, optx.RESULTS.nonfinite),
        stats=stats,
    )


def _check_steps(steps):
    steps = tuple(int(s) for s in steps)
    if len(steps) < 2 or steps[0] != 0 or any(b <= a for a, b in zip(steps[:-1], steps[1:])):
        raise ValueError("steps must be strictly increasing integers starting at 0")
    return steps


@eqx.filter_jit
def _online_sgd(problem, eta, key, batch_size, steps):
    F, W0 = problem.factor, problem.W0
    d, dtype = problem.d, W0.dtype
    S_star = F @ F.T
    opt = optax.sgd(eta)
    sqrt_Delta = jnp.sqrt(problem.Delta)
    sqrt_d = jnp.sqrt(jnp.asarray(d, dtype))

    def step_fn(k, carry):
        W, opt_state = carry
        kx, kn = jax.random.split(jax.random.fold_in(key, k))
        X = jax.random.normal(kx, (batch_size, d), dtype=dtype)
        y = network_output(X, F) + sqrt_Delta * jax.random.normal(kn, (batch_size,), dtype)
        h = X @ W  # computed once: the output and the gradient both use it
        r = y - (jnp.sum(h**2, axis=-1) - jnp.sum(W**2)) / sqrt_d
        grad = -(X.T @ (r[:, None] * h) - jnp.sum(r) * W) / (sqrt_d * batch_size)
        updates, opt_state = opt.update(grad, opt_state, W)
        return optax.apply_updates(W, updates), opt_state

    def record_fn(carry):
        return population_risk(carry[0], S_star)

    (W, _), risk = _run_recorded(step_fn, W0, opt.init(W0), steps, record_fn)
    return W, risk


def online_sgd(
    problem: OnlineProblem,
    eta,
    key: PRNGKeyArray,
    *,
    batch_size: int = 1,
    steps: tuple[int, ...] = (0, 1),
) -> DynamicsTrace:
    """One-pass SGD: ``steps[-1]`` steps, each on ``batch_size`` fresh samples, step ``eta``
    (THEORY.md s. 5 uses ``eta = c/d``). Records the exact population risk at ``steps``
    (e.g. :func:`log_steps`); ``times = 2 eta steps / d`` are ODE times."""
    batch_size = check_size("batch_size", batch_size)
    check_positive("eta", eta)
    steps = _check_steps(steps)
    eta = jnp.asarray(eta, dtype=problem.W0.dtype)
    W, risk = _online_sgd(problem, eta, key, batch_size, steps)
    nan = jnp.full_like(risk, jnp.nan)
    stats = {"batch_size": batch_size, "samples": steps[-1] * batch_size}
    return _finish(steps, eta, problem.d, risk, nan, W, W.dtype, stats)


def online_sgd_sweep(
    problem: OnlineProblem,
    etas: Float[Array, " E"],
    keys: PRNGKeyArray,
    *,
    batch_size: int = 1,
    steps: tuple[int, ...] = (0, 1),
) -> DynamicsTrace:
    """:func:`online_sgd` vmapped over step sizes (outer axis) and seeds (inner axis): one
    compiled program; every field gains leading axes ``(E, S)``."""
    batch_size = check_size("batch_size", batch_size)
    etas = jnp.asarray(etas, dtype=problem.W0.dtype)
    check_positive("etas", etas)
    steps = _check_steps(steps)
    run = jax.vmap(
        jax.vmap(lambda e, k: _online_sgd(problem, e, k, batch_size, steps), (None, 0)), (0, None)
    )
    W, risk = run(etas, keys)
    nan = jnp.full_like(risk, jnp.nan)
    stats = {"batch_size": batch_size, "samples": steps[-1] * batch_size}
    fin = jax.vmap(jax.vmap(lambda e, r, t, w: _finish(steps, e, problem.d, r, t, w, w.dtype, {})))
    trace = fin(jnp.broadcast_to(etas[:, None], risk.shape[:2]), risk, nan, W)
    return dataclasses.replace(trace, stats=stats)


@eqx.filter_jit
def _full_batch_gd(data, W0, eta, lam, steps):
    X, y = data.X, data.y
    n, d = X.shape
    opt = optax.sgd(eta)

    def loss_and_grad(W):
        r = y - network_output(X, W)
        loss = jnp.sum(r**2) / (4 * n) + lam / d * jnp.sum(W**2)
        grad = -_zw_sum(X, r, W) / n + 2 * lam / d * W
        return loss, grad

    def step_fn(k, carry):
        W, opt_state = carry
        _, grad = loss_and_grad(W)
        updates, opt_state = opt.update(grad, opt_state, W)
        return optax.apply_updates(W, updates), opt_state

    def record_fn(carry):
        W = carry[0]
        return population_risk(W, data.S_star), loss_and_grad(W)[0]

    (W, _), (risk, train) = _run_recorded(step_fn, W0, opt.init(W0), steps, record_fn)
    return W, risk, train


def full_batch_gd(
    data: Dataset,
    W0: Float[Array, "d m"],
    eta,
    *,
    lam=0.0,
    steps: tuple[int, ...] = (0, 1),
) -> DynamicsTrace:
    """Gradient descent on ``L_n(W) = (1/(4n)) sum (y - Tr(Z W W^T))^2 + (lam/d)||W||_F^2``
    over a fixed dataset; records the exact population risk and ``L_n`` at ``steps``."""
    W0 = jnp.asarray(W0, dtype=data.X.dtype)
    check_shape("W0", W0, (data.d, None))
    check_positive("eta", eta)
    check_nonnegative("lam", lam)
    steps = _check_steps(steps)
    eta = jnp.asarray(eta, dtype=W0.dtype)
    lam = jnp.asarray(lam, dtype=W0.dtype)
    W, risk, train = _full_batch_gd(data, W0, eta, lam, steps)
    return _finish(steps, eta, data.d, risk, train, W, W.dtype, {"n": data.n})


def full_batch_gd_sweep(
    data: Dataset,
    W0s: Float[Array, "S d m"],
    etas: Float[Array, " E"],
    *,
    lam=0.0,
    steps: tuple[int, ...] = (0, 1),
) -> DynamicsTrace:
    """:func:`full_batch_gd` vmapped over step sizes (outer) and initialisations (inner)."""
    W0s = jnp.asarray(W0s, dtype=data.X.dtype)
    check_shape("W0s", W0s, (None, data.d, None))
    etas = jnp.asarray(etas, dtype=W0s.dtype)
    check_positive("etas", etas)
    check_nonnegative("lam", lam)
    steps = _check_steps(steps)
    lam = jnp.asarray(lam, dtype=W0s.dtype)
    run = jax.vmap(
        jax.vmap(lambda w, e: _full_batch_gd(data, w, e, lam, steps), (0, None)), (None, 0)
    )
    W, risk, train = run(W0s, etas)
    fin = jax.vmap(jax.vmap(lambda e, r, t, w: _finish(steps, e, data.d, r, t, w, w.dtype, {})))
    trace = fin(jnp.broadcast_to(etas[:, None], risk.shape[:2]), risk, train, W)
    return dataclasses.replace(trace, stats={"n": data.n})
