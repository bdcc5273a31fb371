"""Convex (nuclear-norm) ERM solver: accelerated proximal gradient on the PSD cone.

THEORY.md section 1 (the nuclear route). Solves

    min_{S psd, rank S <= m} F(S),   F(S) = (1/(4n)) sum_mu (y_mu - Tr(Z_mu S))^2 + (lam/d) Tr S

(the rank bound only when asked; ``m = kappa d`` is the width of the equivalent network) by
FISTA (Beck & Teboulle 2009) with

* the PSD soft-thresholding prox: with ``V = sum_i l_i v_i v_i^T``,
  ``prox_{t(lam/d) Tr + I_psd}(V) = sum_i max(l_i - t lam/d, 0) v_i v_i^T``; under the rank bound
  only the ``m`` largest eigenvalues are kept (the exact prox of the non-convex set);
* a step ``1/L`` started from a power-iteration estimate of the Lipschitz constant of
  ``grad f`` (the top eigenvalue of ``(1/(2n)) A^* A``) and certified by backtracking: ``f`` is
  quadratic, so the sufficient-decrease test ``f(S+) <= f(Y) + <grad f(Y), D> + (L/2)||D||^2``
  is the exact inequality ``(1/(4n)) ||A D||^2 <= (L/2) ||D||_F^2`` (``D = S+ - Y``), checked
  for free because the forward values ``A(S)`` are carried along (``A`` is linear);
* adaptive gradient restart (O'Donoghue & Candes 2015): momentum is reset whenever
  ``<Y - S+, S+ - S> > 0``.

Stopping rule: the fixed-point residual ``||S+ - Y||_F <= atol sqrt(d) + rtol ||S+||_F``
(``L (Y - S+)`` is the gradient mapping; it vanishes exactly at KKT points). The returned
``stats`` report the residual, ``L`` and, for the convex (rank-unconstrained) problem, the
relative duality gap of the dual certificate ``u = r/(2n)`` rescaled to feasibility
(dual: ``max_u <u, y> - n ||u||^2`` s.t. ``A^* u <= (lam/d) I``).

``lam = 0`` is PSD least squares (the prox is the projection onto the PSD cone).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from qnr._validate import (
    check_nonnegative,
    check_positive,
    check_psd,
    check_shape,
    check_size,
    is_concrete,
)
from qnr.sim.erm import RANK_RTOL, RESULTS, ERMProblem, ERMSolution, make_solution
from qnr.sim.sensing import adjoint_sensing, apply_sensing

__all__ = ["ProximalGradient", "solve_convex", "psd_prox"]


class ProximalGradient(eqx.Module):
    """FISTA with backtracking and adaptive restart for the (rank-constrained) nuclear problem.

    ``max_steps``: iteration bound (``result = max_steps_reached`` beyond it);
    ``rtol``/``atol``: fixed-point residual tolerances (see module docstring);
    ``power_iterations``: steps of the power method for the initial ``L``;
    ``backtrack_factor``: ``L`` growth on a failed sufficient-decrease test;
    ``restart``: adaptive momentum restart.
    """

    max_steps: int = eqx.field(static=True, default=20_000)
    rtol: float = eqx.field(static=True, default=1e-10)
    atol: float = eqx.field(static=True, default=1e-13)
    power_iterations: int = eqx.field(static=True, default=30)
    backtrack_factor: float = eqx.field(static=True, default=1.5)
    restart: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        check_size("max_steps", self.max_steps)
        check_positive("rtol", self.rtol)
        check_positive("atol", self.atol)
        check_size("power_iterations", self.power_iterations)
        if not self.backtrack_factor > 1:
            raise ValueError(f"backtrack_factor must be > 1, got {self.backtrack_factor}")


def psd_prox(
    V: Float[Array, "d d"], threshold, rank=None
) -> tuple[Float[Array, "d d"], Float[Array, " d"]]:
    """PSD soft-thresholding: ``sum_i max(l_i - threshold, 0) v_i v_i^T`` over the ``rank``
    largest eigenvalues of the symmetrised ``V`` (all of them when ``rank`` is None).

    Returns the matrix and its eigenvalues (in increasing order, as ``eigh``)."""
    d = V.shape[-1]
    w, U = jnp.linalg.eigh((V + V.T) / 2)
    w = jnp.maximum(w - threshold, 0.0)
    if rank is not None:
        from_top = d - 1 - jnp.arange(d)
        w = jnp.where(from_top < rank, w, 0.0)
    return (U * w[None, :]) @ U.T, w


def _lipschitz_estimate(problem: ERMProblem, iterations: int) -> Array:
    """Power iteration for the top eigenvalue of ``(1/(2n)) A^* diag(mask) A`` on symmetric
    matrices (a lower bound on the Lipschitz constant; backtracking certifies the step)."""
    d = problem.d
    n = problem.n
    V = jax.random.normal(jax.random.key(0), (d, d), problem.X.dtype)
    V = (V + V.T) / jnp.sqrt(jnp.sum((V + V.T) ** 2))

    def hess(V):
        return adjoint_sensing(problem.X, problem.sample_mask * apply_sensing(problem.X, V)) / (
            2 * n
        )

    def body(_, V):
        HV = hess(V)
        return HV / jnp.maximum(jnp.sqrt(jnp.sum(HV**2)), jnp.finfo(V.dtype).tiny)

    V = jax.lax.fori_loop(0, iterations, body, V)
    return jnp.sqrt(jnp.sum(hess(V) ** 2))


def _fista(problem: ERMProblem, solver: ProximalGradient, rank, S0):
    d = problem.d
    n = problem.n
    X, mask, y = problem.X, problem.sample_mask, problem.y
    dtype = X.dtype
    thr_unit = problem.lam / d
    tiny = jnp.finfo(dtype).tiny

    def fwd(S):
        return mask * apply_sensing(X, S)

    L0 = jnp.maximum(_lipschitz_estimate(problem, solver.power_iterations), tiny)
    AS0 = fwd(S0)

    def cond(c):
        return (~c["done"]) & (c["step"] < solver.max_steps)

    def body(c):
        Y, AY = c["Y"], c["AY"]
        G = -adjoint_sensing(X, mask * (y - AY)) / (2 * n)

        def trial(L):
            Sp, _ = psd_prox(Y - G / L, thr_unit / L, rank)
            ASp = fwd(Sp)
            D = Sp - Y
            lhs = jnp.sum((ASp - AY) ** 2) / (4 * n)
            rhs = L / 2 * jnp.sum(D**2)
            ok = lhs <= rhs * (1 + 1e3 * jnp.finfo(dtype).eps) + tiny
            return Sp, ASp, ok

        Sp, ASp, ok = trial(c["L"])

        def bt_cond(b):
            return (~b[3]) & (b[4] < 60)

        def bt_body(b):
            L = b[0] * solver.backtrack_factor
            Sp, ASp, ok = trial(L)
            return (L, Sp, ASp, ok, b[4] + 1)

        L, Sp, ASp, ok, _ = jax.lax.while_loop(bt_cond, bt_body, (c["L"], Sp, ASp, ok, 0))

        S, AS = c["S"], c["AS"]
        D = Sp - Y
        if solver.restart:
            reset = jnp.sum((Y - Sp) * (Sp - S)) > 0
        else:
            reset = jnp.asarray(False)
        t = jnp.where(reset, 1.0, c["t"])
        t_next = (1 + jnp.sqrt(1 + 4 * t**2)) / 2
        beta = (t - 1) / t_next
        res = jnp.sqrt(jnp.sum(D**2))
        done = res <= solver.atol * jnp.sqrt(d) + solver.rtol * jnp.sqrt(jnp.sum(Sp**2))
        done = done | ~jnp.isfinite(res)
        return dict(
            S=Sp,
            AS=ASp,
            Y=Sp + beta * (Sp - S),
            AY=ASp + beta * (ASp - AS),
            t=t_next.astype(dtype),
            L=L,
            step=c["step"] + 1,
            res=res,
            done=done,
            restarts=c["restarts"] + reset.astype(jnp.int32),
        )

    init = dict(
        S=S0,
        AS=AS0,
        Y=S0,
        AY=AS0,
        t=jnp.ones((), dtype),
        L=L0.astype(dtype),
        step=jnp.zeros((), jnp.int32),
        res=jnp.asarray(jnp.inf, dtype),
        done=jnp.asarray(False),
        restarts=jnp.zeros((), jnp.int32),
    )
    return jax.lax.while_loop(cond, body, init)


def _duality_gap(problem: ERMProblem, S) -> Array:
    """Relative gap ``(F(S) - D(c u)) / max(F(S), tiny)`` with ``u = r/(2n)`` and
    ``c = min(1, (lam/d)/lambda_max(A^* u))`` (feasible for the dual of the convex problem)."""
    n = problem.n
    r = problem.residual(S)
    u = r / (2 * n)
    lam_max = jnp.linalg.eigvalsh(-problem.data_grad(S))[-1]
    bound = problem.lam / problem.d
    c = jnp.where(lam_max > bound, bound / jnp.maximum(lam_max, jnp.finfo(S.dtype).tiny), 1.0)
    dual = c * jnp.sum(u * problem.y) - n * c**2 * jnp.sum(u**2)
    primal = problem.objective(S)
    return (primal - dual) / jnp.maximum(primal, jnp.finfo(S.dtype).tiny)


@eqx.filter_jit
def _solve_convex(problem, solver, rank, S0, S_star, noise, rank_rtol):
    d = problem.d
    out = _fista(problem, solver, rank, S0)
    S = out["S"]
    finite = jnp.all(jnp.isfinite(S))
    converged = out["done"] & finite & jnp.isfinite(out["res"])
    result = RESULTS.where(
        converged,
        RESULTS.successful,
        RESULTS.where(finite, RESULTS.max_steps_reached, RESULTS.nonfinite),
    )
    gap = jnp.where(rank >= d, _duality_gap(problem, S), jnp.nan)
    stats = dict(residual=out["res"], lipschitz=out["L"], restarts=out["restarts"], duality_gap=gap)
    return make_solution(
        problem,
        S,
        problem.objective(S),
        out["step"],
        result,
        stats,
        S_star=S_star,
        noise=noise,
        rank_rtol=rank_rtol,
    )


def solve_convex(
    problem: ERMProblem,
    solver: ProximalGradient | None = None,
    *,
    rank=None,
    S0: Float[Array, "d d"] | None = None,
    S_star: Float[Array, "d d"] | None = None,
    noise=0.0,
    rank_rtol: float = RANK_RTOL,
) -> ERMSolution:
    """Minimise ``F(S) = (1/(4n)) sum (y - Tr(Z S))^2 + (lam/d) Tr S`` over PSD ``S``.

    ``rank``: optional bound ``rank S <= rank`` (an integer, or a traced integer under
    ``vmap``; ``rank >= d`` is no constraint). ``S0``: PSD starting point (default 0).
    ``S_star``/``noise``: the teacher and label-noise variance ``Delta``, for ``E`` and
    ``e_test`` (NaN without ``S_star``). Returns an :class:`qnr.sim.ERMSolution`; its
    ``result`` is ``successful`` when the fixed-point residual met the tolerance.

    Example::

        data = make_dataset(key, MarchenkoPastur(0.5), d=30, n=270, noise=0.0)
        sol = solve_convex(ERMProblem.from_dataset(data, lam=0.05), S_star=data.S_star)
    """
    if not isinstance(problem, ERMProblem):
        raise ValueError(f"problem must be an ERMProblem, got {type(problem).__name__}")
    solver = ProximalGradient() if solver is None else solver
    d = problem.d
    dtype = problem.X.dtype
    if rank is None:
        rank = d
    elif is_concrete(rank):
        rank = check_size("rank", rank if np.ndim(rank) == 0 else None)
    rank = jnp.asarray(rank, jnp.int32)
    if S0 is None:
        S0 = jnp.zeros((d, d), dtype)
    else:
        check_shape("S0", S0, (d, d))
        check_psd("S0", S0)
        S0 = jnp.asarray(S0, dtype)
    if S_star is not None:
        check_shape("S_star", S_star, (d, d))
        S_star = jnp.asarray(S_star, dtype)
    check_positive("rank_rtol", rank_rtol)
    check_nonnegative("Delta", noise)
    return _solve_convex(problem, solver, rank, S0, S_star, jnp.asarray(noise, dtype), rank_rtol)
