"""Two-layer quadratic student networks trained with optax (THEORY.md section 1).

Student of width ``m`` (``W`` in R^{d x m}), ``yhat(x) = (||W^T x||^2 - ||W||_F^2)/sqrt(d) =
Tr(Z W W^T)``, trained on

    L(W) = (1/(4n)) sum_mu (y_mu - yhat(x_mu))^2 + (lam/d) ||W||_F^2

(``= F(W W^T)``, the convex objective of :mod:`qnr.sim.convex` at ``S = W W^T``: the nuclear
route). Optimisers come from optax: ``"gd"`` (:func:`optax.sgd`), ``"momentum"`` (heavy ball,
:func:`optax.sgd` with ``momentum``), ``"adam"`` (:func:`optax.adam`) and ``"lbfgs"``
(:func:`optax.lbfgs` with its zoom line search, driven by
:func:`optax.value_and_grad_from_state`, so the line search's last evaluation is reused).

Training runs inside one ``lax.while_loop`` and stops when, at the current iterate,

    |L_k - L_{k-1}| <= rtol |L_k| + atol   and   ||grad L(W_k)||_F <= gtol,

or after ``max_steps`` updates (``result = max_steps_reached``). Optionally the loss, the
gradient norm and ``E`` are recorded every ``record_every`` steps in a fixed-size buffer
(NaN-padded after the end).

A 0/1 ``neuron_mask`` over the columns of ``W`` lets one compiled program serve several widths:
masked columns are zero at initialisation, receive zero gradient and zero updates, so they stay
exactly zero.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from qnr._validate import (
    check_nonnegative,
    check_positive,
    check_shape,
    check_size,
    is_concrete,
)
from qnr.model import matrix_error
from qnr.sim.erm import RANK_RTOL, RESULTS, ERMProblem, ERMSolution, make_solution
from qnr.sim.sensing import network_output

__all__ = ["NetworkSolver", "OPTIMIZERS", "train_network", "init_weights", "network_loss"]

OPTIMIZERS = ("gd", "momentum", "adam", "lbfgs")


class NetworkSolver(eqx.Module):
    """Settings of the network trainer.

    ``optimizer``: one of :data:`OPTIMIZERS`; ``learning_rate``: step size of gd/momentum/adam
    (a JAX scalar, so it can be vmapped; ignored by ``"lbfgs"``, whose step comes from the zoom
    line search); ``momentum``: heavy-ball coefficient of ``"momentum"``; ``max_steps``;
    ``rtol``, ``atol``, ``gtol``: the stopping rule of the module docstring (defaults suit
    float64; in float32 use e.g. ``rtol=1e-6, gtol=1e-4``); ``record_every``: trajectory stride
    (0: no trajectory); ``memory_size``: L-BFGS history.
    """

    optimizer: str = eqx.field(static=True)
    learning_rate: Float[Array, ""]
    momentum: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    gtol: float = eqx.field(static=True)
    record_every: int = eqx.field(static=True)
    memory_size: int = eqx.field(static=True)

    def __init__(
        self,
        optimizer: str = "lbfgs",
        learning_rate=1.0,
        *,
        momentum: float = 0.9,
        max_steps: int = 10_000,
        rtol: float = 1e-12,
        atol: float = 1e-15,
        gtol: float = 1e-8,
        record_every: int = 0,
        memory_size: int = 10,
    ):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        self.optimizer = optimizer
        self.learning_rate = jnp.asarray(check_positive("learning_rate", learning_rate))
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.max_steps = check_size("max_steps", max_steps)
        self.rtol = float(check_nonnegative("rtol", rtol))
        self.atol = float(check_nonnegative("atol", atol))
        self.gtol = float(check_nonnegative("gtol", gtol))
        self.record_every = check_size("record_every", record_every, minimum=0)
        self.memory_size = check_size("memory_size", memory_size)

    def transformation(self, dtype=None) -> optax.GradientTransformationExtraArgs:
        """The optax transformation (``learning_rate`` cast to ``dtype``)."""
        lr = self.learning_rate if dtype is None else self.learning_rate.astype(dtype)
        if self.optimizer == "gd":
            return optax.with_extra_args_support(optax.sgd(lr))
        if self.optimizer == "momentum":
            return optax.with_extra_args_support(optax.sgd(lr, momentum=self.momentum))
        if self.optimizer == "adam":
            return optax.with_extra_args_support(optax.adam(lr))
        return optax.lbfgs(memory_size=self.memory_size)


def network_loss(W: Float[Array, "d m"], problem: ERMProblem) -> Array:
    """``L(W) = (1/(4n)) sum_mu m_mu (y_mu - yhat_mu)^2 + (lam/d) ||W||_F^2``."""
    r = problem.sample_mask * (problem.y - network_output(problem.X, W))
    return jnp.sum(r**2) / (4 * problem.n) + problem.lam / problem.d * jnp.sum(W**2)


def init_weights(
    key: PRNGKeyArray, d: int, m, init_scale=1.0, *, m_max: int | None = None, dtype=None
) -> Float[Array, "d m_max"]:
    """``W0 = init_scale * G / sqrt(m)``, ``G`` iid N(0, 1), so that ``W0 W0^T`` has mean
    ``init_scale^2 I`` at any width. Column ``j`` is drawn from ``fold_in(key, j)``, so the
    first ``m`` columns do not depend on ``m_max``; columns ``j >= m`` (up to ``m_max``, which
    defaults to ``m``) are zero (masked neurons). ``m`` may be traced when ``m_max`` is given."""
    d = check_size("d", d)
    if m_max is None:
        m_max = check_size("m", m)
    m_max = check_size("m_max", m_max)
    check_nonnegative("init_scale", init_scale)
    dtype = dtype or jnp.zeros(()).dtype
    cols = jax.vmap(lambda j: jax.random.normal(jax.random.fold_in(key, j), (d,), dtype))(
        jnp.arange(m_max)
    )
    cols_index = jnp.arange(m_max)
    mask = (cols_index < jnp.asarray(m, cols_index.dtype)).astype(dtype)
    scale = jnp.asarray(init_scale, dtype) / jnp.sqrt(jnp.asarray(m, dtype))
    return cols.T * (scale * mask)[None, :]


def _train(problem: ERMProblem, W0, solver: NetworkSolver, neuron_mask, S_star):
    dtype = W0.dtype
    opt = solver.transformation(dtype)
    mask = neuron_mask[None, :]
    W0 = W0 * mask

    def loss(W):
        return network_loss(W * mask, problem)

    if solver.optimizer == "lbfgs":
        vg_state = optax.value_and_grad_from_state(loss)

        def value_and_grad(W, state):
            return vg_state(W, state=state)
    else:
        vg = jax.value_and_grad(loss)

        def value_and_grad(W, state):
            return vg(W)

    stride = solver.record_every
    n_rec = solver.max_steps // stride + 1 if stride else 0

    def metric(W):
        if S_star is None:
            return jnp.asarray(jnp.nan, dtype)
        return matrix_error(W @ W.T, S_star)

    def record(traj, step, value, gnorm, W):
        if not stride:
            return traj
        idx = step // stride
        hit = step % stride == 0
        new = dict(loss=value, grad_norm=gnorm, E=metric(W), step=step)
        return {
            k: traj[k].at[idx].set(jnp.where(hit, new[k], traj[k][idx]).astype(traj[k].dtype))
            for k in traj
        }

    def is_done(value, prev, gnorm):
        small_change = jnp.abs(value - prev) <= solver.rtol * jnp.abs(value) + solver.atol
        return small_change & (gnorm <= solver.gtol)

    state0 = opt.init(W0)
    v0, g0 = value_and_grad(W0, state0)
    gn0 = jnp.sqrt(jnp.sum(g0**2))
    traj0 = (
        dict(
            loss=jnp.full((n_rec,), jnp.nan, dtype),
            grad_norm=jnp.full((n_rec,), jnp.nan, dtype),
            E=jnp.full((n_rec,), jnp.nan, dtype),
            step=jnp.full((n_rec,), -1, jnp.int32),
        )
        if stride
        else {}
    )
    carry0 = dict(
        W=W0,
        state=state0,
        value=v0,
        grad=g0,
        gnorm=gn0,
        prev=jnp.asarray(jnp.inf, dtype),
        step=jnp.zeros((), jnp.int32),
        traj=record(traj0, jnp.zeros((), jnp.int32), v0, gn0, W0),
    )

    def cond(c):
        done = is_done(c["value"], c["prev"], c["gnorm"])
        return (~done) & (c["step"] < solver.max_steps) & jnp.isfinite(c["value"])

    def body(c):
        W, state, value, grad = c["W"], c["state"], c["value"], c["grad"]
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int32/int64, f32/f64 inside
            updates, state = opt.update(grad, state, W, value=value, grad=grad, value_fn=loss)
        W = optax.apply_updates(W, updates * mask)
        value_new, grad_new = value_and_grad(W, state)
        grad_new = grad_new * mask
        gnorm = jnp.sqrt(jnp.sum(grad_new**2))
        step = c["step"] + 1
        return dict(
            W=W,
            state=state,
            value=value_new,
            grad=grad_new,
            gnorm=gnorm,
            prev=value,
            step=step,
            traj=record(c["traj"], step, value_new, gnorm, W),
        )

    out = jax.lax.while_loop(cond, body, carry0)
    return out


@eqx.filter_jit
def _train_network(problem, W0, solver, neuron_mask, S_star, Delta, rank_rtol):
    out = _train(problem, W0, solver, neuron_mask, S_star)
    W, value = out["W"], out["value"]
    finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(W))
    small_change = jnp.abs(value - out["prev"]) <= solver.rtol * jnp.abs(value) + solver.atol
    converged = small_change & (out["gnorm"] <= solver.gtol)
    result = RESULTS.where(
        converged & finite,
        RESULTS.successful,
        RESULTS.where(finite, RESULTS.max_steps_reached, RESULTS.nonfinite),
    )
    stats = dict(grad_norm=out["gnorm"], loss_change=jnp.abs(value - out["prev"]))
    return make_solution(
        problem,
        W @ W.T,
        value,
        out["step"],
        result,
        stats,
        S_star=S_star,
        Delta=Delta,
        rank_rtol=rank_rtol,
        W=W,
        trajectory=out["traj"] if solver.record_every else None,
    )


def train_network(
    problem: ERMProblem,
    W0: Float[Array, "d m"],
    solver: NetworkSolver | None = None,
    *,
    neuron_mask: Float[Array, " m"] | None = None,
    S_star: Float[Array, "d d"] | None = None,
    Delta=0.0,
    rank_rtol: float = RANK_RTOL,
) -> ERMSolution:
    """Train the quadratic network from ``W0`` (shape ``(d, m)``; see :func:`init_weights`).

    ``neuron_mask``: optional 0/1 per column (masked neurons are zero and stay zero).
    ``S_star``/``Delta``: the teacher and ``Delta``, for ``E``/``e_test`` (NaN without them).
    Returns an :class:`qnr.sim.ERMSolution` with ``Shat = W W^T``, ``loss = L(W)``,
    ``trace = ||W||_F^2``, the final ``W`` and, if ``solver.record_every``, the trajectory
    (``loss``, ``grad_norm``, ``E``, ``step`` arrays of length ``max_steps // record_every + 1``).

    Example::

        W0 = init_weights(jax.random.key(1), d=30, m=30, init_scale=0.5)
        sol = train_network(ERMProblem.from_dataset(data, 0.05), W0, NetworkSolver("lbfgs"),
                            S_star=data.S_star)
    """
    if not isinstance(problem, ERMProblem):
        raise ValueError(f"problem must be an ERMProblem, got {type(problem).__name__}")
    solver = NetworkSolver() if solver is None else solver
    if not isinstance(solver, NetworkSolver):
        raise ValueError(f"solver must be a NetworkSolver, got {type(solver).__name__}")
    d = problem.d
    dtype = problem.X.dtype
    W0 = jnp.asarray(W0, dtype)
    if W0.ndim != 2:
        raise ValueError(f"W0 must have shape (d, m), got {W0.shape}")
    check_shape("W0", W0, (d, None))
    m = W0.shape[1]
    if neuron_mask is None:
        neuron_mask = jnp.ones((m,), dtype)
    check_shape("neuron_mask", neuron_mask, (m,))
    if is_concrete(neuron_mask):
        arr = np.asarray(neuron_mask)
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError("neuron_mask must be 0/1")
    if S_star is not None:
        check_shape("S_star", S_star, (d, d))
        S_star = jnp.asarray(S_star, dtype)
    check_nonnegative("Delta", Delta)
    check_positive("rank_rtol", rank_rtol)
    return _train_network(
        problem,
        W0,
        solver,
        jnp.asarray(neuron_mask, dtype),
        S_star,
        jnp.asarray(Delta, dtype),
        rank_rtol,
    )
