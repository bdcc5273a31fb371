"""Design of the estimator from the asymptotic theory: the optimal regularisation.

THEORY.md section 2: the ERM fixed point ``(xi, tau)`` predicts the population test error
``e_test(lam) = alpha xi(lam) = (E + Delta/2)/2`` of
``L(W) = (1/(4n)) sum (y - yhat)^2 + (lam/d) ||W||_F^2``. :func:`optimal_lam` minimises it
over ``lam > 0``:

1. a coarse scan of ``log lam`` over ``bounds`` (one vmapped solve) picks the start;
2. ``optimistix.BFGS`` on ``u = log lam`` refines it, with gradients ``d e_test / d lam``
   from the implicit derivatives of the ERM solver (:func:`qnr.theory.erm.solve_erm`,
   ``ImplicitAdjoint``) -- never finite differences.

When the optimum is on the boundary of ``bounds`` (for instance ``lam -> 0+`` in the noiseless
strong-recovery phase, where the minimum-nuclear-norm estimator is already exact) the
boundary value is returned and ``stats["interior"]`` is False.

Limitation: the inner fixed point must converge at every ``lam`` BFGS visits. Where it does
not (noiseless problems above ``alpha_SR``, where ``xi -> 0`` as ``lam -> 0``), the implicit
derivative of the failed solve is non-finite and lineax raises an ``EquinoxRuntimeError``
instead of returning a result code; use ``Delta > 0`` or bounds away from ``lam = 0`` there.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Float

from qnr._validate import check_nonnegative, check_positive
from qnr.teachers import check_teacher_or_kappa_star
from qnr.theory.erm import (
    ERMSolution,
    ERMSolver,
    _rank_constrained,
    _vmapped_problems,
    solve_erm,
)

__all__ = ["OptimalLam", "optimal_lam"]


class OptimalLam(eqx.Module):
    """Optimal regularisation.

    **Fields:** ``lam`` (the minimiser ``lam*``), ``e_test`` (``e_test(lam*)``), ``E``
    (``||Shat - S*||_F^2/d`` at ``lam*``), ``solution`` (the :class:`ERMSolution` at ``lam*``),
    ``result`` (``optimistix.RESULTS``; failed entries are NaN) and ``stats``
    (``num_steps`` of BFGS, ``grad``: ``d e_test/d log lam`` at ``lam*``, ``interior``).
    """

    lam: Float[Array, "..."]
    e_test: Float[Array, "..."]
    E: Float[Array, "..."]
    solution: ERMSolution
    result: optx.RESULTS
    stats: dict[str, Array]


def _e_test(u, args):
    problem, solver = args
    p = eqx.tree_at(lambda q: q.lam, problem, jnp.exp(u))
    return solve_erm(p, solver).e_test


@eqx.filter_jit
def _optimal_lam(problem, solver, log_lo, log_hi, n_scan, rtol, atol, max_steps):
    dtype = problem.alpha.dtype
    grid = jnp.linspace(log_lo, log_hi, n_scan, dtype=dtype)
    scan = jax.vmap(lambda u: _e_test(u, (problem, solver)))(grid)
    scan = jnp.where(jnp.isfinite(scan), scan, jnp.inf)
    i = jnp.argmin(scan)
    u0 = grid[i]
    sol = optx.minimise(
        _e_test,
        optx.BFGS(rtol=rtol, atol=atol),
        u0,
        args=(problem, solver),
        max_steps=max_steps,
        throw=False,
    )
    u = jnp.clip(sol.value, log_lo, log_hi)
    # BFGS cannot leave the scan's best point by more than the domain: a boundary optimum
    at_edge = (i == 0) | (i == n_scan - 1)
    grad = jax.grad(_e_test)(u, (problem, solver))
    interior = ~(at_edge & ((u <= log_lo) | (u >= log_hi)))
    best = eqx.tree_at(lambda q: q.lam, problem, jnp.exp(u))
    erm = solve_erm(best, solver)
    ok = (
        ((sol.result == optx.RESULTS.successful) | ~interior)
        & erm.converged
        & (erm.e_test <= scan[i] * (1 + 1e-12) + 1e-300)
    )
    result = optx.RESULTS.where(
        ok,
        optx.RESULTS.successful,
        optx.RESULTS.where(
            sol.result == optx.RESULTS.successful, optx.RESULTS.nonlinear_divergence, sol.result
        ),
    )
    nan = jnp.nan
    return OptimalLam(
        lam=jnp.where(ok, jnp.exp(u), nan),
        e_test=jnp.where(ok, erm.e_test, nan),
        E=jnp.where(ok, erm.E, nan),
        solution=erm,
        result=result,
        stats=dict(num_steps=sol.stats["num_steps"], grad=grad, interior=interior),
    )


def optimal_lam(
    alpha,
    kappa_star=None,
    Delta=0.0,
    kappa=None,
    *,
    teacher=None,
    d: int | None = None,
    bounds: tuple[float, float] = (1e-4, 10.0),
    n_scan: int = 16,
    solver: ERMSolver | None = None,
    rtol: float = 1e-10,
    atol: float = 1e-10,
    max_steps: int = 64,
) -> OptimalLam:
    """``lam* = argmin_{lam in bounds} e_test(lam)`` of the ERM asymptotics (module docstring).

    ``alpha``, ``kappa_star`` (MP teacher; or ``teacher`` with ``d`` atoms), ``Delta``,
    ``kappa`` broadcast together (one vmapped, jitted program). ``bounds``: the search
    interval for ``lam`` (scanned log-uniformly with ``n_scan`` points for the start).
    ``solver``: :class:`qnr.theory.erm.ERMSolver` settings of the inner fixed point.
    Failures are a result code with NaN outputs.
    """
    check_positive("alpha", alpha)
    check_nonnegative("Delta", Delta)
    lo, hi = (float(b) for b in bounds)
    if not (0 < lo < hi):
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    check_teacher_or_kappa_star(teacher, kappa_star)
    if teacher is None:
        k = jnp.asarray(check_positive("kappa_star", kappa_star))
    else:
        k = jnp.ones(())
    constrained = _rank_constrained(kappa)
    kap = jnp.inf if kappa is None else check_positive("kappa", kappa)
    fdt = jnp.zeros(()).dtype
    a, k, dl, kap = jnp.broadcast_arrays(
        *(jnp.asarray(v, dtype=fdt) for v in (alpha, k, Delta, kap))
    )
    shape = a.shape
    a, k, dl, kap = (v.ravel() for v in (a, k, dl, kap))
    lam = jnp.ones_like(a)  # a placeholder: _optimal_lam sets lam > 0 (no lam -> 0+ branch)
    problems = _vmapped_problems(
        teacher, k, a, lam, dl, kap, d=d, constrained=constrained, lam_zero=False
    )
    solver = ERMSolver() if solver is None else solver
    out = eqx.filter_vmap(
        lambda p: _optimal_lam(p, solver, math.log(lo), math.log(hi), n_scan, rtol, atol, max_steps)
    )(problems)
    return jax.tree_util.tree_map(lambda x: x.reshape(shape + x.shape[1:]), out)
