"""Population gradient flow of the quadratic network: the matrix Riccati ODE (THEORY.md s. 5).

Time conventions (derived; tested against online SGD in ``tests/test_online_sgd.py``)
------------------------------------------------------------------------------------
The canonical population loss (THEORY.md s. 1, noiseless part) of ``S = W W^T`` is

    L(W) = E_x (y - yhat)^2 / 4 = ||S - S*||_F^2 / (2 d)  (+ Delta/4),

with gradient ``grad_W L = 2 (S - S*) W / d``. Gradient flow ``dW/dtau = -grad_W L`` gives
``dS/dtau = (2/d) (S* S + S S* - 2 S^2)``, so in the rescaled time

    t = 2 tau / d

``M = S`` obeys the Riccati ODE ``dM/dt = M* M + M M* - 2 M^2`` with ``M* = S*``.
Online SGD with step ``eta`` on the per-sample loss ``(y - yhat)^2/4`` (gradient averaged over a
batch of ``B`` fresh samples) is a noisy Euler scheme of the same flow with ``dtau = eta`` per
step, hence after ``k`` steps

    t = 2 eta k / d        (``k B`` samples used).

The SGD noise is of relative size ``O(eta d / B)`` per unit of ``t`` (the Ito term
``eta^2 E[g g^T]`` and the martingale part), and it accumulates in the slowly contracting
directions (the null space of ``M*``, where the flow relaxes like ``1/t``), so SGD tracks the
ODE when ``(eta d / B) t`` is small -- with ``eta = c/d`` and fixed ``c``, ``B`` the deviation
does not vanish as ``d -> infinity``. Measured (``tests/test_online_sgd.py``, notebook 04):
``eta d / B = 0.025``, ``t <= 1.5``: max relative deviation ~6% at ``d = 200``;
``eta d / B = 0.25``: ~85% at ``d = 60``. ``k = t d^2 / (2 c)`` steps reach ODE time ``t``.

Closed form and its stable evaluation
-------------------------------------
With ``K(t) = int_0^t e^{2 M* s} ds`` the solution is
``M(t) = e^{M* t} W0 (I + 2 W0^T K(t) W0)^{-1} W0^T e^{M* t}``. The naive formula overflows
(``e^{M* t}`` and ``K(t)`` grow like ``e^{2 lambda_max t}`` while ``M(t)`` stays bounded).
Everything here is done in the eigenbasis of ``M* = diag(lambda)``, ``lambda >= 0``, using
only the bounded quantities ``e^{-lambda t}`` and ``k(lambda, t) = -expm1(-2 lambda t)/lambda``
(``= 2t`` at ``lambda = 0``):

* full-rank initialisation (``W0`` of rank ``d``, so ``m >= d``): ``P = M^{-1}`` obeys the
  *linear* ODE ``dP/dt = -M* P - P M* + 2 I``, solved exactly at every time without stepping,
  ``P(t)_{ij} = e^{-(lambda_i + lambda_j) t} P(0)_{ij} + delta_{ij} k(lambda_i, t)``;
* rank-deficient initialisation (``m < d``): ``M = Q P^{-1} Q^T`` with ``Q`` (``d x m``)
  orthonormal and ``P`` (``m x m``) SPD, stepped by the exact semigroup map over ``h``:
  ``e^{M* h} Q = Q' R'`` (Householder QR, rows graded in decreasing order), then
  ``P' = R'^{-T} P R'^{-1} + Q'^T diag(k(lambda, h)) Q'``. Step sizes satisfy
  ``lambda_max h <= max_growth`` (exact for any ``h``; the bound only keeps ``e^{lambda h}``
  far from overflow and the QR well graded).

Outputs: the population risk ``E_x (yhat - y*)^2 = 2 ||M - M*||_F^2 / d`` and the overlaps
``v_j^T M(t) v_j`` with the eigenvectors ``v_j`` of ``M*``.

Scaling laws (Ben Arous, Erdogdu, Vural, Wu, arXiv 2508.03688): for power-law teacher
eigenvalues ``lambda_j ~ j^-a`` a heuristic additive model predicts risk ``~ t^{-(2a-1)/a}``
(:func:`heuristic_time_exponent`); :func:`fit_power_law` measures exponents with a standard
error, and the tests/notebook report where they differ.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import optimistix as optx
from jaxtyping import Array, Float, PRNGKeyArray

from qnr._validate import (
    check_nonnegative,
    check_positive,
    check_psd,
    check_shape,
    check_size,
    is_concrete,
)
from qnr.teachers import Teacher

__all__ = [
    "RiccatiFlow",
    "RiccatiSolver",
    "RiccatiSolution",
    "solve_riccati",
    "riccati_rhs",
    "population_risk_eig",
    "fit_power_law",
    "PowerLawFit",
    "heuristic_time_exponent",
    "heuristic_width_exponent",
    "limit_risk",
    "log_times",
]


class RiccatiFlow(eqx.Module):
    """Population gradient flow of ``M = W W^T`` towards a PSD teacher ``M* = S*``.

    Stored in the eigenbasis of ``M*``: ``eigenvalues`` (``lambda_j >= 0``) and the initial
    weights ``W0`` expressed in that basis (``V^T W0`` for ``M* = V diag(lambda) V^T``). Risk
    and overlaps are rotation invariant / defined in this basis, so nothing else is needed and
    gradients w.r.t. the eigenvalues never pass through an eigen-decomposition.
    """

    eigenvalues: Float[Array, " d"]
    W0: Float[Array, "d m"]

    def __init__(self, eigenvalues, W0):
        eigenvalues = jnp.asarray(eigenvalues)
        W0 = jnp.asarray(W0, dtype=eigenvalues.dtype)
        if eigenvalues.ndim != 1:
            raise ValueError(f"eigenvalues must be 1-d, got shape {eigenvalues.shape}")
        check_nonnegative("eigenvalues", eigenvalues)
        check_shape("W0", W0, (eigenvalues.shape[0], None))
        if is_concrete(W0) and not np.all(np.isfinite(np.asarray(W0))):
            raise ValueError("W0 must be finite")
        self.eigenvalues = eigenvalues
        self.W0 = W0

    @property
    def d(self) -> int:
        return self.eigenvalues.shape[0]

    @property
    def m(self) -> int:
        return self.W0.shape[1]

    @classmethod
    def from_matrices(cls, S_star: Float[Array, "d d"], W0: Float[Array, "d m"]) -> RiccatiFlow:
        """From a teacher matrix and initial weights in the original basis (one ``eigh``)."""
        S_star = jnp.asarray(S_star)
        check_psd("S_star", S_star)
        lam, V = jnp.linalg.eigh((S_star + S_star.T) / 2)
        lam, V = lam[::-1], V[:, ::-1]
        return cls(jnp.clip(lam, 0.0, None), V.T @ jnp.asarray(W0, dtype=S_star.dtype))

    @classmethod
    def from_teacher(
        cls,
        teacher: Teacher,
        d: int,
        *,
        width: int | None = None,
        init_scale=1e-3,
        init: str = "gaussian",
        key: PRNGKeyArray | None = None,
        dtype=None,
    ) -> RiccatiFlow:
        """Teacher spectrum at dimension ``d`` and an isotropic initialisation.

        ``init="gaussian"``: ``W0 = init_scale * G / sqrt(width)`` with ``G`` iid N(0, 1)
        (``width`` defaults to ``d``; the law is rotation invariant, so it is drawn directly in
        the teacher's eigenbasis). ``init="identity"``: ``W0 = init_scale * I_d``.
        """
        d = check_size("d", d)
        check_positive("init_scale", init_scale)
        lam = teacher.eigenvalues(d, key, dtype)
        lam = jnp.sort(lam)[::-1]
        scale = jnp.asarray(init_scale, dtype=lam.dtype)
        if init == "identity":
            return cls(lam, scale * jnp.eye(d, dtype=lam.dtype))
        if init != "gaussian":
            raise ValueError(f"init must be 'gaussian' or 'identity', got {init!r}")
        width = d if width is None else check_size("width", width)
        if key is None:
            raise ValueError("key is required for the gaussian initialisation")
        g = jax.random.normal(jax.random.fold_in(key, 1), (d, width), dtype=lam.dtype)
        return cls(lam, scale * g / jnp.sqrt(jnp.asarray(width, lam.dtype)))


class RiccatiSolver(eqx.Module):
    """Settings of the exact semigroup evaluation.

    ``max_growth``: largest ``lambda_max h`` of one semigroup step (rank-deficient path).
    ``substeps``: number of steps per output interval; ``None`` picks the smallest number that
    respects ``max_growth`` (needs concrete eigenvalues, i.e. not under ``jit``/``grad``).
    """

    max_growth: float = eqx.field(static=True, default=30.0)
    substeps: int | None = eqx.field(static=True, default=None)


class RiccatiSolution(eqx.Module):
    """``times`` (T,), ``risk`` (T,) = ``2||M - M*||_F^2/d``, ``overlaps`` (T, d) =
    ``v_j^T M v_j``, ``value`` = ``M`` at the last time (teacher eigenbasis), ``result``
    (``optimistix.RESULTS``), ``stats`` (``substeps``, ``path``: 0 exact-inverse, 1 factor)."""

    times: Float[Array, " T"]
    risk: Float[Array, " T"]
    overlaps: Float[Array, "T d"]
    value: Float[Array, "d d"]
    result: optx.RESULTS
    stats: dict


def riccati_rhs(M: Float[Array, "d d"], M_star: Float[Array, "d d"]) -> Float[Array, "d d"]:
    """``dM/dt = M* M + M M* - 2 M^2`` (THEORY.md s. 5)."""
    return M_star @ M + M @ M_star - 2 * M @ M


def population_risk_eig(M: Float[Array, "... d d"], eigenvalues: Float[Array, " d"]) -> Array:
    """``2 ||M - diag(lambda)||_F^2 / d`` = ``E_x (Tr(Z M) - Tr(Z M*))^2`` in the eigenbasis."""
    d = eigenvalues.shape[0]
    diff = M - jnp.diag(eigenvalues)
    return 2 * jnp.sum(diff**2, axis=(-2, -1)) / d


def _k(lam, h):
    """``-expm1(-2 lam h)/lam`` (``= 2 int_0^h e^{-2 lam s} ds``), ``2h`` at ``lam = 0``;
    safe to differentiate at ``lam = 0`` (double-where)."""
    small = lam * h < 1e-8
    lam_safe = jnp.where(small, 1.0, lam)
    exact = -jnp.expm1(-2 * lam_safe * h) / lam_safe
    series = 2 * h * (1 - lam * h)
    return jnp.where(small, series, exact)


def _sym(A):
    return (A + jnp.swapaxes(A, -1, -2)) / 2


def _spd_inverse(P):
    c = jnp.linalg.cholesky(_sym(P))
    eye = jnp.eye(P.shape[-1], dtype=P.dtype)
    return _sym(jsl.cho_solve((c, True), eye))


def _full_rank(diag):
    """Numerical full rank from the diagonal of a triangular (Cholesky/QR) factor."""
    a = jnp.abs(diag)
    tol = 100 * diag.shape[-1] * jnp.finfo(diag.dtype).eps
    return jnp.min(a) > tol * jnp.max(a)


def _check_times(times):
    times = jnp.asarray(times)
    if times.ndim != 1 or times.shape[0] < 1:
        raise ValueError(f"times must be a non-empty 1-d array, got shape {times.shape}")
    if is_concrete(times):
        arr = np.asarray(times)
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError("times must be finite and >= 0")
        if np.any(np.diff(arr) < 0):
            raise ValueError("times must be non-decreasing")
    return times


@eqx.filter_jit
def _exact_inverse_path(problem: RiccatiFlow, times):
    lam = problem.eigenvalues
    W0 = problem.W0
    # rank check on W0 itself (QR of W0^T), not on the squared Gram matrix
    rank_ok = _full_rank(jnp.diagonal(jnp.linalg.qr(W0.T, mode="r")))
    P0 = _spd_inverse(W0 @ W0.T)

    def at(t):
        decay = jnp.exp(-lam * t)
        P = decay[:, None] * P0 * decay[None, :] + jnp.diag(_k(lam, t))
        return _spd_inverse(P)

    # lax.map rather than vmap: batched triangular solves are much slower than a loop of
    # unbatched ones on the CPU backend (benchmarks/bench_dynamics.py)
    return jax.lax.map(at, times), rank_ok


@eqx.filter_jit
def _factor_path(problem: RiccatiFlow, times, substeps: int):
    lam = problem.eigenvalues
    dtype = lam.dtype
    Q0, R0 = jnp.linalg.qr(problem.W0)
    eye_m = jnp.eye(problem.m, dtype=dtype)
    rank_ok = _full_rank(jnp.diagonal(R0))
    R0inv = jsl.solve_triangular(R0, eye_m, lower=False)
    P0 = _sym(R0inv.T @ R0inv)  # (R R^T)^{-1}

    def step(state, h):
        Q, P = state
        Qn, Rn = jnp.linalg.qr(jnp.exp(lam * h)[:, None] * Q)
        Rinv = jsl.solve_triangular(Rn, eye_m, lower=False)
        Pn = Rinv.T @ P @ Rinv + (Qn.T * _k(lam, h)[None, :]) @ Qn
        return (Qn, _sym(Pn)), None

    def interval(state, dt):
        h = dt / substeps
        state, _ = jax.lax.scan(step, state, jnp.full((substeps,), h, dtype=dtype))
        Q, P = state
        M = Q @ _spd_inverse(P) @ Q.T
        return state, _sym(M)

    dts = jnp.diff(times, prepend=jnp.zeros((1,), dtype=dtype))
    _, Ms = jax.lax.scan(interval, (Q0, P0), dts)
    return Ms, rank_ok


def solve_riccati(
    problem: RiccatiFlow, times: Float[Array, " T"], solver: RiccatiSolver | None = None
) -> RiccatiSolution:
    """Exact population gradient flow of ``M = W W^T`` at the given (non-decreasing) times.

    ``t`` is the rescaled time of THEORY.md s. 5 (``t = 2 tau / d`` for gradient flow on the
    canonical population loss; ``t = 2 eta k / d`` after ``k`` SGD steps of size ``eta``). A
    singular initialisation (``W0`` not of full column rank, or of rank < d when ``m >= d``)
    is reported as ``RESULTS.nonfinite`` with NaN outputs, never as a garbage number.
    """
    solver = RiccatiSolver() if solver is None else solver
    check_positive("max_growth", solver.max_growth)
    dtype = problem.eigenvalues.dtype
    times = _check_times(times).astype(dtype)
    d, m = problem.d, problem.m
    if m >= d:
        Ms, rank_ok = _exact_inverse_path(problem, times)
        substeps, path = 0, 0
    else:
        if solver.substeps is not None:
            substeps = check_size("substeps", solver.substeps)
        elif is_concrete(problem.eigenvalues) and is_concrete(times):
            lam_max = float(np.max(np.asarray(problem.eigenvalues)))
            dt_max = float(np.max(np.diff(np.asarray(times), prepend=0.0)))
            substeps = max(1, math.ceil(lam_max * dt_max / solver.max_growth))
        else:
            raise ValueError(
                "RiccatiSolver.substeps is required when eigenvalues or times are traced "
                "(rank-deficient initialisation, m < d)"
            )
        Ms, rank_ok = _factor_path(problem, times, substeps)
        path = 1
    ok = rank_ok & jnp.all(jnp.isfinite(Ms))
    Ms = jnp.where(ok, Ms, jnp.nan)
    risk = population_risk_eig(Ms, problem.eigenvalues)
    overlaps = jnp.diagonal(Ms, axis1=-2, axis2=-1)
    result = optx.RESULTS.where(ok, optx.RESULTS.successful, optx.RESULTS.nonfinite)
    return RiccatiSolution(
        times=times,
        risk=risk,
        overlaps=overlaps,
        value=Ms[-1],
        result=result,
        stats={"substeps": substeps, "path": path},
    )


def log_times(t_min: float, t_max: float, num: int, *, dtype=None) -> Float[Array, " T"]:
    """``num`` logarithmically spaced times in ``[t_min, t_max]``."""
    check_positive("t_min", t_min)
    check_positive("t_max", t_max)
    num = check_size("num", num)
    if t_max < t_min:
        raise ValueError(f"t_max must be >= t_min, got {t_max} < {t_min}")
    return jnp.geomspace(t_min, t_max, num, dtype=dtype)


class PowerLawFit(eqx.Module):
    """``risk ~ C t^{-exponent}``: OLS of ``log risk`` on ``log t``; ``stderr`` is the
    standard error of the slope; ``num_points`` used."""

    exponent: Float[Array, ""]
    stderr: Float[Array, ""]
    log_prefactor: Float[Array, ""]
    num_points: int = eqx.field(static=True)


def fit_power_law(t, risk, t_min: float | None = None, t_max: float | None = None) -> PowerLawFit:
    """Least-squares fit of ``log risk = log C - exponent log t`` on ``t_min <= t <= t_max``.

    Standard error ``se = sqrt(s^2 / sum (u - mean u)^2)`` with ``s^2`` the residual variance
    (``n - 2`` degrees of freedom). Needs concrete inputs and at least 3 points with positive,
    finite risk in the window.
    """
    t = np.asarray(t, dtype=np.float64).ravel()
    r = np.asarray(risk, dtype=np.float64).ravel()
    if t.shape != r.shape:
        raise ValueError(f"t and risk must have the same shape, got {t.shape} and {r.shape}")
    sel = np.isfinite(t) & np.isfinite(r) & (t > 0) & (r > 0)
    if t_min is not None:
        sel &= t >= t_min
    if t_max is not None:
        sel &= t <= t_max
    if sel.sum() < 3:
        raise ValueError(f"need >= 3 points in the fit window, got {int(sel.sum())}")
    u, v = np.log(t[sel]), np.log(r[sel])
    n = u.size
    uc = u - u.mean()
    slope = float(np.sum(uc * (v - v.mean())) / np.sum(uc**2))
    intercept = float(v.mean() - slope * u.mean())
    resid = v - (intercept + slope * u)
    s2 = float(np.sum(resid**2) / max(n - 2, 1))
    se = math.sqrt(s2 / float(np.sum(uc**2)))
    return PowerLawFit(
        exponent=jnp.asarray(-slope),
        stderr=jnp.asarray(se),
        log_prefactor=jnp.asarray(intercept),
        num_points=n,
    )


def heuristic_time_exponent(a) -> Array:
    """Heuristic additive-model exponent ``(2a - 1)/a`` of risk ``~ t^-exponent`` for teacher
    eigenvalues ``lambda_j ~ j^-a``, ``a > 1/2`` (THEORY.md s. 5; direction ``j`` is learned
    at ``t_j ~ 1/lambda_j``, the unlearned tail ``sum_{j > t^{1/a}} lambda_j^2`` remains)."""
    a = jnp.asarray(check_positive("a", a))
    if is_concrete(a) and float(a) <= 0.5:
        raise ValueError(f"a must be > 1/2, got {float(a)}")
    return (2 * a - 1) / a


def heuristic_width_exponent(a) -> Array:
    """Heuristic exponent ``2a - 1`` of the long-time risk ``~ m^-(2a-1)`` of a width-``m``
    student for teacher eigenvalues ``lambda_j ~ j^-a`` (the tail ``sum_{j > m} lambda_j^2``)."""
    a = jnp.asarray(check_positive("a", a))
    if is_concrete(a) and float(a) <= 0.5:
        raise ValueError(f"a must be > 1/2, got {float(a)}")
    return 2 * a - 1


def limit_risk(eigenvalues: Float[Array, " d"], width: int) -> Array:
    """``t -> infinity`` risk of the flow from a generic width-``m`` initialisation: the
    student converges to the best rank-``m`` approximation of ``M*`` (the top-``m``
    eigen-directions), so the risk is ``2 sum_{j > m} lambda_j^2 / d`` (eigenvalues sorted
    in decreasing order)."""
    width = check_size("width", width)
    lam = jnp.sort(jnp.asarray(eigenvalues))[::-1]
    return 2 * jnp.sum(lam[width:] ** 2) / lam.shape[0]
