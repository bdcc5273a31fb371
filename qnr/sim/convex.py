"""Convex (nuclear-norm) ERM solvers: accelerated proximal gradient on the PSD cone
(:class:`ProximalGradient`) and a factorised start + proximal polish (:class:`Factorized`).

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

Each step costs one forward product ``A(S+)`` per backtracking trial and ONE adjoint product:
the adjoint at the extrapolated point is the same combination of the adjoints at ``S+`` and
``S`` (``A`` is linear), and the adjoint at ``S+`` also feeds the duality-gap certificate.

Stopping rule: the fixed-point residual ``||S+ - Y||_F <= atol sqrt(d) + rtol ||S+||_F``
(``L (Y - S+)`` is the gradient mapping; it vanishes exactly at KKT points), or, with
``gap_tol > 0``, the certified relative duality gap (:func:`duality_gap`). The returned
``stats`` report the residual, ``L`` and, for the convex (rank-unconstrained) problem, the
relative duality gap of the dual certificate ``u = r/(2n)`` rescaled to feasibility
(dual: ``max_u <u, y> - n ||u||^2`` s.t. ``A^* u <= (lam/d) I``).

``lam = 0`` is PSD least squares (the prox is the projection onto the PSD cone).

Which solver where: :class:`Factorized` is the default of the simulations (``"convex"`` in
:func:`qnr.sim.make_solver`); FISTA alone (``"fista"``) remains the right choice for the
rank-constrained problem (``rank < d``: no certificate, the factorised start adds nothing)
and for tight fixed-point tolerances on tiny problems, and it is the polish phase of
:class:`Factorized`. Every convex solve also returns the dual certificate of
:func:`qnr.sim.dual_certificate` (``Shat`` may be one of many minimisers: ``degenerate``).
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from qnr._validate import (
    check_nonnegative,
    check_positive,
    check_psd,
    check_shape,
    check_size,
    is_concrete,
)
from qnr.sim import _linalg as _la
from qnr.sim.erm import RANK_RTOL, RESULTS, ERMProblem, ERMSolution, make_solution
from qnr.sim.sensing import adjoint_sensing, apply_sensing

__all__ = ["ProximalGradient", "Factorized", "solve_convex", "psd_prox", "duality_gap"]


class ProximalGradient(eqx.Module):
    """FISTA with backtracking and adaptive restart for the (rank-constrained) nuclear problem.

    ``max_steps``: iteration bound (``result = max_steps_reached`` beyond it);
    ``rtol``/``atol``: fixed-point residual tolerances (see module docstring);
    ``power_iterations``: steps of the power method for the initial ``L``;
    ``backtrack_factor``: ``L`` growth on a failed sufficient-decrease test;
    ``restart``: adaptive momentum restart;
    ``gap_tol``: also stop (convex problem only) once the certified relative duality gap of
    :func:`duality_gap` is ``<= gap_tol``, checked every ``check_every`` iterations (one extra
    adjoint product and ``eigvalsh``); ``0`` disables it (residual test only).
    """

    max_steps: int = eqx.field(static=True, default=20_000)
    rtol: float = eqx.field(static=True, default=1e-10)
    atol: float = eqx.field(static=True, default=1e-13)
    power_iterations: int = eqx.field(static=True, default=30)
    backtrack_factor: float = eqx.field(static=True, default=1.5)
    restart: bool = eqx.field(static=True, default=True)
    gap_tol: float = eqx.field(static=True, default=0.0)
    check_every: int = eqx.field(static=True, default=10)

    def __check_init__(self):
        check_size("max_steps", self.max_steps)
        check_positive("rtol", self.rtol)
        check_positive("atol", self.atol)
        check_size("power_iterations", self.power_iterations)
        check_nonnegative("gap_tol", self.gap_tol)
        check_size("check_every", self.check_every)
        if not self.backtrack_factor > 1:
            raise ValueError(f"backtrack_factor must be > 1, got {self.backtrack_factor}")


class Factorized(eqx.Module):
    """Burer-Monteiro L-BFGS on ``S = W W^T``, polished and certified in ``S``-space.

    Phase 1 minimises ``L(W) = f(W W^T) + (lam/d) ||W||_F^2`` over ``W`` (``d x width``)
    with :func:`optax.lbfgs` (zoom line search), from the spectral start ``W0 W0^T = `` the
    PSD part of ``(d/(2n)) A^*(y)`` (top ``width`` eigenpairs; ``E[(d/(2n)) A^*(y)] = S*``).
    Each step costs ``O(n d width)`` -- two products with ``X``, no eigen-decomposition -- and
    with ``float32_products`` the ``X W`` products run in float32 (accumulated into the
    float64 residual). It stops when ``||grad L|| <= gtol * |L|`` or after ``max_steps``.
    Phase 2 runs :class:`ProximalGradient` (float64, exact PSD prox) from ``W W^T`` until the
    certified relative duality gap (:func:`duality_gap`) is ``<= gap_tol`` or its residual
    test passes: the exact zeros of the prox give the rank, and the certificate is against
    the convex optimum whatever phase 1 did (a too-small ``width`` only costs polish steps).

    ``width``: columns of ``W`` (``None``: ``d``, which needs no rank guess; the rank bound
    when the problem is rank-constrained). ``mid_gap > 0`` inserts a float32 FISTA phase
    (at most ``mid_steps`` steps, down to the gap ``mid_gap``) before the float64 polish;
    off by default (measured at d = 100: no reliable gain).

    Measured (benchmarks/bench_convex): phase 1 identifies the optimal face in a hundred or
    so cheap steps, after which the polish needs about a hundred FISTA steps instead of the
    ~400 (alpha = 0.5) or ~4000 (alpha = 0.1, lam = 0.01) that FISTA needs from zero.
    """

    width: int | None = eqx.field(static=True, default=None)
    max_steps: int = eqx.field(static=True, default=5_000)
    gtol: float = eqx.field(static=True, default=1e-3)
    memory_size: int = eqx.field(static=True, default=20)
    float32_products: bool = eqx.field(static=True, default=True)
    gap_tol: float = eqx.field(static=True, default=1e-7)
    mid_gap: float = eqx.field(static=True, default=0.0)
    mid_steps: int = eqx.field(static=True, default=100)
    polish: ProximalGradient = ProximalGradient(power_iterations=3)

    def __check_init__(self):
        if self.width is not None:
            check_size("width", self.width)
        check_size("max_steps", self.max_steps, minimum=0)
        check_positive("gtol", self.gtol)
        check_size("memory_size", self.memory_size)
        check_nonnegative("gap_tol", self.gap_tol)
        if not isinstance(self.polish, ProximalGradient):
            raise ValueError("polish must be a ProximalGradient")


def _bm_phase(problem: ERMProblem, solver: Factorized, width: int, rank):
    """Phase 1 of :class:`Factorized`: returns ``(W, steps)``."""
    d = problem.d
    n = problem.n
    X, mask, y = problem.X, problem.sample_mask, problem.y
    dtype = X.dtype
    low = jnp.float32 if (solver.float32_products and dtype == jnp.float64) else dtype
    Xl = X.astype(low)
    sq = jnp.sqrt(jnp.asarray(d, dtype))
    lam_d = problem.lam / d
    col_mask = (jnp.arange(width, dtype=jnp.asarray(rank).dtype) < rank).astype(dtype)[None, :]

    def loss(W):
        W = W * col_mask
        H = (Xl @ W.astype(low)).astype(dtype)
        yhat = (jnp.sum(H * H, axis=1) - jnp.sum(W * W)) / sq
        r = mask * (y - yhat)
        return jnp.sum(r * r) / (4 * n) + lam_d * jnp.sum(W * W)

    # spectral start: the PSD part of (d/(2n)) A^*(y), an unbiased estimate of S*
    Y0 = adjoint_sensing(X, mask * y) * (d / (2 * n))
    w, U = _la.eigh((Y0 + Y0.T) / 2)
    w, U = w[::-1][:width], U[:, ::-1][:, :width]
    W0 = U * jnp.sqrt(jnp.maximum(w, 0.0))[None, :] * col_mask
    opt = optax.lbfgs(memory_size=solver.memory_size)
    vg = optax.value_and_grad_from_state(loss)

    def cond(c):
        return (c[2] < solver.max_steps) & (c[3] > solver.gtol) & jnp.isfinite(c[3])

    def body(c):
        W, state, k, _ = c
        v, g = vg(W, state=state)
        with jax.numpy_dtype_promotion("standard"):  # optax.lbfgs mixes int32/int64 inside
            upd, state = opt.update(g, state, W, value=v, grad=g, value_fn=loss)
        W = optax.apply_updates(W, upd) * col_mask
        ratio = jnp.sqrt(jnp.sum(g * g)) / jnp.maximum(jnp.abs(v), jnp.finfo(dtype).tiny)
        return W, state, k + 1, ratio

    init = (W0, opt.init(W0), jnp.zeros((), jnp.int32), jnp.asarray(jnp.finfo(dtype).max, dtype))
    W, _, steps, _ = jax.lax.while_loop(cond, body, init)
    W = jnp.where(jnp.all(jnp.isfinite(W)), W, W0)
    return W * col_mask, steps


def psd_prox(
    V: Float[Array, "d d"], threshold, rank=None
) -> tuple[Float[Array, "d d"], Float[Array, " d"]]:
    """PSD soft-thresholding: ``sum_i max(l_i - threshold, 0) v_i v_i^T`` over the ``rank``
    largest eigenvalues of the symmetrised ``V`` (all of them when ``rank`` is None).

    Returns the matrix and its eigenvalues (in increasing order, as ``eigh``)."""
    d = V.shape[-1]
    w, U = _la.eigh((V + V.T) / 2)
    w = jnp.maximum(w - threshold, 0.0)
    if rank is not None:
        from_top = d - 1 - jnp.arange(d, dtype=jnp.asarray(rank).dtype)
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

    def adj(AS):
        return adjoint_sensing(X, mask * (y - AS))  # A^*(r): -2n times the gradient

    L0 = jnp.maximum(_lipschitz_estimate(problem, solver.power_iterations), tiny)
    AS0 = fwd(S0)
    GS0 = adj(AS0)

    def cond(c):
        return (~c["done"]) & (c["step"] < solver.max_steps)

    def body(c):
        # A is linear, so A^* r at the extrapolated point Y = Sp + beta (Sp - S) is the same
        # combination of the adjoints at Sp and S: one adjoint product per step, and it also
        # serves the duality-gap certificate at Sp
        Y, AY = c["Y"], c["AY"]
        G = -c["GY"] / (2 * n)

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
        GSp = adj(ASp)
        if solver.gap_tol > 0:
            check = (rank >= d) & ((c["step"] + 1) % solver.check_every == 0) & ~done
            gap = jax.lax.cond(
                check,
                lambda: _gap(problem, Sp, mask * (y - ASp), GSp),
                lambda: jnp.asarray(jnp.inf, dtype),
            )
            done = done | (gap <= solver.gap_tol)
        done = done | ~jnp.isfinite(res)
        return dict(
            S=Sp,
            AS=ASp,
            GS=GSp,
            Y=Sp + beta * (Sp - S),
            AY=ASp + beta * (ASp - AS),
            GY=(1 + beta) * GSp - beta * c["GS"],
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
        GS=GS0,
        Y=S0,
        AY=AS0,
        GY=GS0,
        t=jnp.ones((), dtype),
        L=L0.astype(dtype),
        step=jnp.zeros((), jnp.int32),
        res=jnp.asarray(jnp.inf, dtype),
        done=jnp.asarray(False),
        restarts=jnp.zeros((), jnp.int32),
    )
    return jax.lax.while_loop(cond, body, init)


def _gap(problem: ERMProblem, S, r, Ar) -> Array:
    """Relative gap at ``S`` from its masked residual ``r`` and ``Ar = A^*(r)``."""
    n = problem.n
    u = r / (2 * n)
    lam_max = _la.eigvalsh(Ar / (2 * n))[-1]
    bound = problem.lam / problem.d
    c = jnp.where(lam_max > bound, bound / jnp.maximum(lam_max, jnp.finfo(S.dtype).tiny), 1.0)
    dual = c * jnp.sum(u * problem.y) - n * c**2 * jnp.sum(u**2)
    primal = jnp.sum(r**2) / (4 * n) + bound * jnp.trace(S)
    return (primal - dual) / jnp.maximum(primal, jnp.finfo(S.dtype).tiny)


def duality_gap(problem: ERMProblem, S: Float[Array, "d d"]) -> Array:
    """Certified relative duality gap ``(F(S) - D(c u)) / F(S)`` of a PSD ``S``.

    Dual of the convex problem: ``max_u D(u) = <u, y> - n ||u||^2`` s.t.
    ``A^* u <= (lam/d) I``. The certificate is ``u = r/(2n)`` (``r = y - A(S)``, optimal when
    ``S`` is) scaled by ``c = min(1, (lam/d)/lambda_max(A^* u))`` into the feasible set, so
    ``F(S) - F* <= F(S) - D(c u)``: the returned number bounds the relative suboptimality of
    ``S`` whatever solver produced it. It is sensitive: ``F - D(cu) ~ (1 - c) (lam/d) Tr S``,
    so a gap of ``1e-6`` needs the gradient eigenvalues to ``~1e-6 lam/d`` (float64)."""
    r = problem.residual(S)
    return _gap(problem, S, r, adjoint_sensing(problem.X, r))


_duality_gap = duality_gap


@eqx.filter_jit
def _solve_convex(problem, solver, rank, S0, S_star, Delta, rank_rtol):
    d = problem.d
    stats = {}
    if isinstance(solver, Factorized):
        width = d if solver.width is None else min(solver.width, d)
        W, bm_steps = _bm_phase(problem, solver, width, jnp.minimum(rank, width))
        S0 = jnp.where(jnp.all(S0 == 0), W @ W.T, S0)
        iterations = bm_steps
        if solver.float32_products and problem.X.dtype == jnp.float64 and solver.mid_gap > 0:
            # phase 2a: FISTA in float32 (products and eigh twice as fast) down to mid_gap
            p32 = ERMProblem(
                problem.X.astype(jnp.float32),
                problem.y.astype(jnp.float32),
                problem.lam.astype(jnp.float32),
                problem.sample_mask.astype(jnp.float32),
            )
            mid = dataclasses.replace(
                solver.polish,
                gap_tol=solver.mid_gap,
                rtol=1e-5,
                atol=1e-9,
                max_steps=min(solver.mid_steps, solver.polish.max_steps),
            )
            out32 = _fista(p32, mid, rank, S0.astype(jnp.float32))
            S32 = out32["S"].astype(problem.X.dtype)
            S0 = jnp.where(jnp.all(jnp.isfinite(S32)), S32, S0)
            stats["float32_polish_steps"] = out32["step"]
            iterations = iterations + out32["step"]
        polish = dataclasses.replace(solver.polish, gap_tol=solver.gap_tol)
        out = _fista(problem, polish, rank, S0)
        stats["factorized_steps"] = bm_steps
        stats["polish_steps"] = out["step"]
        iterations = iterations + out["step"]
    else:
        out = _fista(problem, solver, rank, S0)
        iterations = out["step"]
    S = out["S"]
    finite = jnp.all(jnp.isfinite(S))
    converged = out["done"] & finite & jnp.isfinite(out["res"])
    result = RESULTS.where(
        converged,
        RESULTS.successful,
        RESULTS.where(finite, RESULTS.max_steps_reached, RESULTS.nonfinite),
    )
    gap = jnp.where(rank >= d, duality_gap(problem, S), jnp.nan)
    # the eigh of make_solution runs after the gap's (see qnr.sim.erm.dual_certificate)
    S, gap = jax.lax.optimization_barrier((S, gap))
    stats.update(residual=out["res"], lipschitz=out["L"], restarts=out["restarts"], duality_gap=gap)
    return make_solution(
        problem,
        S,
        problem.objective(S),
        iterations,
        result,
        stats,
        S_star=S_star,
        Delta=Delta,
        rank_rtol=rank_rtol,
        certify=rank >= d,
    )


def solve_convex(
    problem: ERMProblem,
    solver: ProximalGradient | Factorized | None = None,
    *,
    rank=None,
    S0: Float[Array, "d d"] | None = None,
    S_star: Float[Array, "d d"] | None = None,
    Delta=0.0,
    rank_rtol: float = RANK_RTOL,
) -> ERMSolution:
    """Minimise ``F(S) = (1/(4n)) sum (y - Tr(Z S))^2 + (lam/d) Tr S`` over PSD ``S``.

    ``rank``: optional bound ``rank S <= rank`` (an integer, or a traced integer under
    ``vmap``; ``rank >= d`` is no constraint). ``S0``: PSD starting point (default 0).
    ``S_star``/``Delta``: the teacher and label-noise variance ``Delta``, for ``E`` and
    ``e_test`` (NaN without ``S_star``). ``solver``: :class:`ProximalGradient` (default) or
    :class:`Factorized` (a non-zero ``S0`` then replaces its factorised start). Returns an
    :class:`qnr.sim.ERMSolution`; its ``result`` is ``successful`` when the fixed-point
    residual or the duality gap met its tolerance; ``stats`` hold the certified
    ``duality_gap`` and the dual certificate (``dual_rank``, ``face_dim``,
    ``complementarity_deficit``, ``dual_min_eig``, ``residual_participation``), and
    ``degenerate`` flags a non-unique minimiser (convex problem only).

    Example::

        data = make_dataset(key, MarchenkoPastur(0.5), d=30, n=270, Delta=0.0)
        sol = solve_convex(ERMProblem.from_dataset(data, lam=0.05), S_star=data.S_star)
    """
    if not isinstance(problem, ERMProblem):
        raise ValueError(f"problem must be an ERMProblem, got {type(problem).__name__}")
    solver = ProximalGradient() if solver is None else solver
    if not isinstance(solver, ProximalGradient | Factorized):
        raise ValueError(f"solver must be ProximalGradient or Factorized, got {solver!r}")
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
    check_nonnegative("Delta", Delta)
    return _solve_convex(problem, solver, rank, S0, S_star, jnp.asarray(Delta, dtype), rank_rtol)
