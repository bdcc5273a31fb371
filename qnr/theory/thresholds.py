"""Sample-complexity thresholds of the quadratic network / PSD matrix sensing problem.

THEORY.md section 3 (canonical normalization of section 1, ``n = alpha d^2``, MP teacher of
width ``kappa* d``, student of width ``kappa d``):

* Bayes-optimal perfect recovery ``alpha_BO = kappa* - kappa*^2/2`` (``1/2`` for
  ``kappa* >= 1``) -- Maillard et al. 2024.
* Strong recovery of ERM in the ``lam -> 0+`` limit (minimum nuclear norm on the PSD cone):
  the statistical dimension of the descent cone of ``Tr`` on the PSD cone at a rank
  ``kappa* d`` matrix (Amelunxen-Lotz-McCoy-Tropp), divided by ``2 d^2``. With the unit
  semicircle partial moments ``m_j(s) = int_s^2 x^j rho_sc(x) dx``, ``s*`` in ``(0, 2)`` solves
  ``kappa* s = (1 - kappa*) (m1(s) - s m0(s))`` and
  ``alpha_SR = kappa* - kappa*^2/2 + ((1 - kappa*)^2/2) (m2(s*) - s* m1(s*))``; the rank of the
  solution at threshold is ``kappa_min = kappa* + (1 - kappa*) m0(s*)`` ("The Nuclear Route",
  Erba et al. 2025).
  A student narrower than ``kappa_min`` (rank constraint ``kappa``) truncates the moments at
  ``u = max(s, w)`` with ``m0(w) = (kappa - kappa*)/(1 - kappa*)``. The first-order condition
  ``kappa* s = (1 - kappa*) (m1(u) - s m0(u))`` is then linear in ``s`` (derived: since
  ``w > s*`` the root lies below ``w``), so ``s = (1 - kappa*) m1(w) / (kappa* + (1 - kappa*)
  m0(w))`` in closed form, and ``alpha_SR(kappa) -> alpha_BO`` as ``kappa -> kappa*+``.
  For ``kappa < min(kappa*, 1)`` the student cannot represent the teacher: ``alpha_SR = inf``.
  For ``kappa* >= 1`` the teacher has full rank, the descent cone is the whole space of
  symmetric matrices, statistical dimension ``d(d+1)/2``: ``alpha_SR = 1/2``,
  ``kappa_min = 1`` -- also the ``kappa* -> 1-`` limit of the formulas above (``s* -> 0``).
* Interpolation threshold (``lam -> 0+``, ``Delta > 0``): ``xi_bar`` solves
  ``2 xi D(0, xi) = E(0, xi) + Delta/2`` and ``alpha_inter = D(0, xi_bar)`` with ``D``, ``E``
  of THEORY.md section 2 (see :func:`interpolation_threshold`).

Every threshold is the root of a smooth condition: roots are found with optimistix
(``Newton`` started where it converges monotonically, or ``Bisection``) and differentiated with
``optimistix.ImplicitAdjoint`` -- the implicit function theorem, never finite differences. All
functions are ``jit``/``vmap``/``grad`` compatible; failures are reported in ``.result``
(``optimistix.RESULTS``) and the value is masked to NaN.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Float, Int

from qnr._validate import check_positive, is_concrete
from qnr.spectra._roots import newton_polish, safe_newton
from qnr.teachers import check_teacher_or_kappa_star

__all__ = [
    "semicircle_partial_moments",
    "alpha_bo",
    "StrongRecovery",
    "strong_recovery",
    "alpha_sr",
    "kappa_min",
    "alpha_inter_noiseless",
    "InterpolationThreshold",
    "interpolation_threshold",
    "alpha_inter",
]

_PI = math.pi


def _float(x) -> Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.zeros(()).dtype)
    return x


def semicircle_partial_moments(s) -> tuple[Array, Array, Array]:
    """``(m0, m1, m2)(s) = int_s^2 x^j rho_sc(x) dx`` for the unit semicircle on ``[-2, 2]``.

    ``m0 = 1/2 - s sqrt(4 - s^2)/(4 pi) - arcsin(s/2)/pi``, ``m1 = (4 - s^2)^(3/2)/(6 pi)``,
    ``m2 = 1/2 - sqrt(4 - s^2)(s^3 - 2 s)/(8 pi) - arcsin(s/2)/pi`` (THEORY.md section 3).
    """
    s = _float(s)
    r = jnp.sqrt(jnp.maximum(4.0 - s * s, 0.0))
    a = jnp.arcsin(jnp.clip(s / 2, -1.0, 1.0))
    m0 = 0.5 - s * r / (4 * _PI) - a / _PI
    m1 = r**3 / (6 * _PI)
    m2 = 0.5 - r * (s**3 - 2 * s) / (8 * _PI) - a / _PI
    return m0, m1, m2


def alpha_bo(kappa_star) -> Float[Array, "..."]:
    """Bayes-optimal perfect-recovery threshold ``kappa* - kappa*^2/2`` (``1/2`` if
    ``kappa* >= 1``), THEORY.md section 3 (Maillard et al. 2024)."""
    k = _float(check_positive("kappa_star", kappa_star))
    kc = jnp.minimum(k, 1.0)
    return kc - kc**2 / 2


class StrongRecovery(eqx.Module):
    """Strong-recovery threshold of minimum-nuclear-norm ERM (THEORY.md section 3).

    **Fields:** ``alpha_SR`` (``inf`` when ``kappa < min(kappa*, 1)``), ``kappa_min`` (rank
    fraction of the solution at threshold), ``s_star`` (the optimal threshold of the
    statistical-dimension problem, in units of the complement's semicircle edge/2), ``w`` (the
    rank-constraint cut, ``2`` when inactive), ``result`` (``optimistix.RESULTS``) and
    ``stats`` (Newton/bisection step counts).
    """

    alpha_SR: Float[Array, "..."]
    kappa_min: Float[Array, "..."]
    s_star: Float[Array, "..."]
    w: Float[Array, "..."]
    result: optx.RESULTS
    stats: dict[str, Int[Array, "..."]]


def _foc(s, k):
    """First-order condition ``kappa* s - (1 - kappa*)(m1(s) - s m0(s))``: increasing and
    concave on ``(0, 2)``, so Newton from ``s = 0`` increases monotonically to the root."""
    m0, m1, _ = semicircle_partial_moments(s)
    return k * s - (1 - k) * (m1 - s * m0)


def _s_star(k, rtol, atol, max_steps):
    solver = optx.Newton(rtol=rtol, atol=atol)
    sol = optx.root_find(_foc, solver, jnp.zeros_like(k), args=k, max_steps=max_steps, throw=False)
    return sol.value, sol.result, sol.stats["num_steps"]


def _m0_cut(w, target):
    """``(m0(w) - target, m0'(w))`` with ``m0'(w) = -sqrt(4 - w^2)/(2 pi)``."""
    return semicircle_partial_moments(w)[0] - target, -jnp.sqrt(jnp.maximum(4 - w * w, 0)) / (
        2 * jnp.pi
    )


def _w_cut(target, rtol, atol, max_steps):
    """``m0(w) = target`` in ``[0, 2]`` (``m0`` decreases from 1/2 to 0) by bracketed Newton
    (bisection where Newton leaves the bracket: it stalls at ``w -> 2`` where
    ``m0 ~ (2 - w)^(3/2)``); a pure ``while_loop`` (no host callback, so programs that contain
    it stay cacheable), gradients by one Newton step (implicit function theorem)."""
    del atol
    zero = jnp.zeros_like(target)
    w = safe_newton(_m0_cut, target, zero, zero + 2.0, increasing=False, iters=max_steps, rtol=rtol)
    w = newton_polish(_m0_cut, target, w, steps=1)
    m0, _ = _m0_cut(w, target)
    ok = jnp.abs(m0) <= 1e3 * jnp.finfo(w.dtype).eps
    result = optx.RESULTS.where(
        ok, optx.RESULTS.successful, optx.RESULTS.nonlinear_max_steps_reached
    )
    return w, result, jnp.asarray(max_steps)


@eqx.filter_jit
def _strong_recovery(k, kappa, rtol, atol, max_steps):
    full_rank = k >= 1
    k_s = jnp.where(full_rank, 0.5, k)  # safe value for the unused branch
    s, res_s, steps_s = _s_star(k_s, rtol, atol, max_steps)
    m0, m1, m2 = semicircle_partial_moments(s)
    kmin = jnp.where(full_rank, 1.0, k_s + (1 - k_s) * m0)
    alpha_free = k_s - k_s**2 / 2 + (1 - k_s) ** 2 / 2 * (m2 - s * m1)

    # rank-constrained student: kappa* <= kappa < kappa_min
    constrained = (~full_rank) & (kappa < kmin) & (kappa >= k)
    # m0(w) = target in (0, 1/2); the clamp keeps the bisection bracket [0, 2] valid at
    # kappa = kappa* (w = 2, alpha_SR = alpha_BO) up to O(1e-12).
    kappa_c = jnp.where(constrained, kappa, k_s + 0.25 * (1 - k_s))  # finite where unused
    target = (kappa_c - k_s) / (1 - k_s)
    target = jnp.clip(target, 1e-12, 0.5 - 1e-12)
    w, res_w, steps_w = _w_cut(target, rtol, atol, max_steps)
    m0w, m1w, m2w = semicircle_partial_moments(w)
    s_c = (1 - k_s) * m1w / (k_s + (1 - k_s) * m0w)
    alpha_c = k_s - k_s**2 / 2 + (1 - k_s) ** 2 / 2 * (m2w - s_c * m1w)

    impossible = kappa < jnp.minimum(k, 1.0)
    alpha = jnp.where(full_rank, 0.5, jnp.where(constrained, alpha_c, alpha_free))
    alpha = jnp.where(impossible, jnp.inf, alpha)
    s_out = jnp.where(full_rank, 0.0, jnp.where(constrained, s_c, s))
    w_out = jnp.where(constrained, w, 2.0)

    res_s = optx.RESULTS.where(full_rank, optx.RESULTS.successful, res_s)
    res_w = optx.RESULTS.where(constrained, res_w, optx.RESULTS.successful)
    result = optx.RESULTS.where(res_s == optx.RESULTS.successful, res_w, res_s)
    ok = result == optx.RESULTS.successful
    nan = jnp.nan
    return StrongRecovery(
        alpha_SR=jnp.where(ok, alpha, nan),
        kappa_min=jnp.where(ok, kmin, nan),
        s_star=jnp.where(ok, s_out, nan),
        w=jnp.where(ok, w_out, nan),
        result=result,
        stats=dict(newton_steps=steps_s, bisection_steps=jnp.where(constrained, steps_w, 0)),
    )


def strong_recovery(
    kappa_star,
    kappa=None,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 256,
) -> StrongRecovery:
    """Strong-recovery threshold ``alpha_SR(kappa*, kappa)`` and ``kappa_min(kappa*)``.

    ``kappa=None`` (or ``kappa >= kappa_min``) is the unconstrained student. Broadcasts over
    array inputs (vmapped internally); differentiable in ``kappa_star`` and ``kappa`` by the
    implicit function theorem. Tolerances default to ``1e-12`` (float64) / ``1e-6`` (float32).
    Formulas and the ``kappa* >= 1`` / ``kappa < kappa*`` conventions: module docstring.
    """
    k = _float(check_positive("kappa_star", kappa_star))
    if kappa is None:
        kappa = jnp.full_like(k, jnp.inf)
    kap = _float(check_positive("kappa", kappa)).astype(k.dtype)
    k, kap = jnp.broadcast_arrays(k, kap)
    eps = jnp.finfo(k.dtype).eps
    rtol = float(1e4 * eps) if rtol is None else rtol
    atol = float(1e4 * eps) if atol is None else atol
    fn = _strong_recovery
    for _ in range(k.ndim):
        fn = jax.vmap(fn, in_axes=(0, 0, None, None, None))
    return fn(k, kap, rtol, atol, max_steps)


def alpha_sr(kappa_star, kappa=None) -> Float[Array, "..."]:
    """``strong_recovery(kappa_star, kappa).alpha_SR`` (NaN where the solve failed)."""
    return strong_recovery(kappa_star, kappa).alpha_SR


def kappa_min(kappa_star) -> Float[Array, "..."]:
    """``strong_recovery(kappa_star).kappa_min``: the smallest student width that does not
    change the strong-recovery threshold."""
    return strong_recovery(kappa_star).kappa_min


@eqx.filter_jit
def _alpha_inter_noiseless(k, kappa, rtol, atol, max_steps):
    full_rank = k >= 1
    k_s = jnp.where(full_rank, 0.5, k)
    # the cut falls inside the noise blob of mass 1 - kappa* above its centre
    constrained = (~full_rank) & (kappa >= k) & (kappa - k_s < (1 - k_s) / 2)
    kappa_c = jnp.where(constrained, kappa, k_s + 0.25 * (1 - k_s))
    target = jnp.clip((kappa_c - k_s) / (1 - k_s), 1e-12, 0.5 - 1e-12)
    w, res_w, _ = _w_cut(target, rtol, atol, max_steps)
    w = jnp.where(constrained, w, 0.0)
    m2 = semicircle_partial_moments(w)[2]
    val = jnp.where(full_rank, 0.5, k_s - k_s**2 / 2 + (1 - k_s) ** 2 / 2 * m2)
    ok = (res_w == optx.RESULTS.successful) | ~constrained
    return jnp.where(ok & (kappa >= jnp.minimum(k, 1.0)), val, jnp.nan)


def alpha_inter_noiseless(kappa_star, kappa=None) -> Float[Array, "..."]:
    """``lim_{Delta -> 0+} alpha_inter``: ``1/4 + kappa*/2 - kappa*^2/4`` (THEORY.md section 3,
    also the uniqueness threshold of PSD least squares), ``1/2`` for ``kappa* >= 1``.

    Derived for a rank-constrained student ``kappa* <= kappa < 1``: as ``Delta -> 0+``,
    ``xi_bar -> 0`` and the atom ``1 - kappa*`` of the teacher at zero becomes a semicircle of
    radius ``2 sqrt(xi)`` whose Hilbert transform is ``x/(2 xi)`` times its mass; its part
    above ``max(0, w)`` contributes ``(1 - kappa*)^2 m2(max(0, w)) / 2`` to ``D(0, xi)``, with
    ``m0(w) = (kappa - kappa*)/(1 - kappa*)``:
    ``alpha_inter -> kappa* - kappa*^2/2 + ((1 - kappa*)^2/2) m2(max(0, w))`` (checked against
    the scipy reference at ``Delta = 1e-2 ... 1e-6``, where the gap closes as ``Delta^(1/3)``).
    Not defined (``ValueError``; NaN under tracing) for ``kappa < min(kappa*, 1)``.
    """
    k = _float(check_positive("kappa_star", kappa_star))
    if kappa is None:
        kappa = jnp.full_like(k, jnp.inf)
    kap = _float(check_positive("kappa", kappa)).astype(k.dtype)
    k, kap = jnp.broadcast_arrays(k, kap)
    if is_concrete((k, kap)) and bool(jnp.any(kap < jnp.minimum(k, 1.0))):
        raise ValueError("kappa must be >= min(kappa_star, 1) for the noiseless alpha_inter")
    eps = float(jnp.finfo(k.dtype).eps)
    fn = _alpha_inter_noiseless
    for _ in range(k.ndim):
        fn = jax.vmap(fn, in_axes=(0, 0, None, None, None))
    return fn(k, kap, 1e4 * eps, 1e4 * eps, 256)


class InterpolationThreshold(eqx.Module):
    """Interpolation threshold of ``lam -> 0+`` ERM with label noise (THEORY.md section 3).

    **Fields:** ``alpha_inter = D(0, xi_bar)``, ``xi_bar`` (the effective noise at threshold),
    ``result`` (``optimistix.RESULTS``; failed entries are NaN) and ``stats``
    (``bisection_steps``, ``newton_steps``, ``residual``: ``|2 xi D/(E + Delta/2) - 1|``).
    """

    alpha_inter: Float[Array, "..."]
    xi_bar: Float[Array, "..."]
    result: optx.RESULTS
    stats: dict[str, Array]


def _inter_terms(u, problem):
    t = problem.terms(jnp.exp(u), jnp.zeros_like(u))
    return t.D, t.E


def _inter_residual(u, problem):
    D, E = _inter_terms(u, problem)
    return 2 * jnp.exp(u) * D / (E + problem.Delta / 2) - 1


@eqx.filter_jit
def _interpolation_threshold(problem, log_lo, log_hi, n_bisect, rtol, atol, max_steps):
    # 1. bracketing bisection in u = log xi on the sign of 2 xi D(0, xi) - E(0, xi) - Delta/2,
    #    which rises from -Delta/2 at xi -> 0 to +inf (a single crossing)
    def g(u):
        D, E = _inter_terms(u, problem)
        return 2 * jnp.exp(u) * D - E - problem.Delta / 2

    lo = jnp.asarray(log_lo, problem.alpha.dtype)
    # 2 xi D - E grows like sqrt(xi)/2.4 at large xi (xi_bar ~ 1.4 Delta^2): widen the
    # bracket to 16 Delta^2 for large Delta
    big = jax.lax.stop_gradient(jnp.log(16 * problem.Delta**2))
    hi = jnp.maximum(jnp.asarray(log_hi, problem.alpha.dtype), big)
    bracketed = (g(lo) < 0) & (g(hi) > 0)

    def body(_, carry):
        a, b = carry
        m = (a + b) / 2
        neg = g(m) < 0
        return jnp.where(neg, m, a), jnp.where(neg, b, m)

    a, b = jax.lax.fori_loop(0, n_bisect, body, (lo, hi))
    u0 = jax.lax.stop_gradient((a + b) / 2)
    # 2. Newton polish with implicit differentiation (ImplicitAdjoint) in Delta, kappa*, kappa
    sol = optx.root_find(
        _inter_residual,
        optx.Newton(rtol=rtol, atol=atol),
        u0,
        args=problem,
        max_steps=max_steps,
        throw=False,
    )
    u = sol.value
    D, E = _inter_terms(u, problem)
    resid = jnp.abs(2 * jnp.exp(u) * D / (E + problem.Delta / 2) - 1)
    ok = (sol.result == optx.RESULTS.successful) & bracketed & jnp.isfinite(D)
    result = optx.RESULTS.where(
        bracketed,
        optx.RESULTS.where(ok, optx.RESULTS.successful, optx.RESULTS.nonlinear_divergence),
        optx.RESULTS.nonlinear_max_steps_reached,
    )
    return InterpolationThreshold(
        alpha_inter=jnp.where(ok, D, jnp.nan),
        xi_bar=jnp.where(ok, jnp.exp(u), jnp.nan),
        result=result,
        stats=dict(
            bisection_steps=jnp.asarray(n_bisect),
            newton_steps=sol.stats["num_steps"],
            residual=jnp.where(ok, resid, jnp.nan),
        ),
    )


def interpolation_threshold(
    Delta,
    kappa_star=None,
    kappa=None,
    *,
    teacher=None,
    d: int | None = None,
    n_nodes: int | None = None,
    xi_bracket: tuple[float, float] = (1e-3, 1e4),
    n_bisect: int = 60,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 32,
) -> InterpolationThreshold:
    """Interpolation threshold ``alpha_inter(Delta, kappa*, kappa)`` (THEORY.md section 3).

    ``xi_bar`` solves ``2 xi D(0, xi) = E(0, xi) + Delta/2`` and ``alpha_inter = D(0, xi_bar)``,
    with ``D``, ``E`` the ERM building blocks of :mod:`qnr.theory.erm` at ``tau = 0``
    (rank constraint ``rho_xi([omega, inf)) = kappa`` when ``kappa < 1``). Below
    ``alpha_inter`` the ``lam -> 0+`` estimator interpolates the noisy labels
    (``e_train = 0``). Limits: ``1/4 + kappa*/2 - kappa*^2/4`` as ``Delta -> 0+``
    (:func:`alpha_inter_noiseless`) and ``1/4`` as ``Delta -> inf``.

    ``Delta > 0``. MP teacher through ``kappa_star`` (arrays broadcast together with ``Delta``
    and ``kappa``), or any ``teacher`` with ``d`` atoms (see
    :class:`qnr.theory.erm.ERMProblem`; ``n_nodes`` its quadrature nodes per support
    interval: raise it when a rank constraint cuts close to a near-gap of ``rho_xi``).
    Numerics: bisection in ``log xi`` over ``xi_bracket`` (upper end at least
    ``16 Delta^2``; ``n_bisect`` halvings), then ``optimistix.Newton`` with ``ImplicitAdjoint``,
    so ``jax.grad`` in ``Delta``, ``kappa_star``, ``kappa`` is the implicit function theorem.
    A root below ``xi_bracket`` (``Delta`` below about ``1e-5`` for ``kappa* = 0.5``, where
    ``xi_bar < 1e-3`` and the spectral quadrature is unreliable) is reported as
    ``nonlinear_max_steps_reached`` with NaN outputs.
    """
    from qnr.theory.erm import _rank_constrained, _vmapped_problems  # spectra via erm

    check_positive("Delta", Delta)
    check_teacher_or_kappa_star(teacher, kappa_star)
    k = jnp.ones(()) if teacher is not None else _float(check_positive("kappa_star", kappa_star))
    constrained = _rank_constrained(kappa)
    kap = jnp.inf if kappa is None else check_positive("kappa", kappa)
    dl = _float(Delta)
    k, dl, kap = jnp.broadcast_arrays(k, dl.astype(k.dtype), jnp.asarray(kap, k.dtype))
    shape = k.shape
    k, dl, kap = k.ravel(), dl.ravel(), kap.ravel()
    ones, zeros = jnp.ones_like(dl), jnp.zeros_like(dl)  # alpha = 1, lam = 0
    problems = _vmapped_problems(
        teacher, k, ones, zeros, dl, kap, d=d, constrained=constrained, n_nodes=n_nodes
    )
    # the residual is a small difference at small Delta: Newton on log xi stops at
    # 1e-2 sqrt(eps) (1.5e-10 in float64), well above its rounding noise
    tol = 1e-2 * math.sqrt(float(jnp.finfo(k.dtype).eps))
    rtol = tol if rtol is None else rtol
    atol = tol if atol is None else atol
    lo, hi = (math.log(float(v)) for v in xi_bracket)
    sol = eqx.filter_vmap(
        lambda p: _interpolation_threshold(p, lo, hi, n_bisect, rtol, atol, max_steps)
    )(problems)
    return jax.tree_util.tree_map(lambda x: x.reshape(shape + x.shape[1:]), sol)


def alpha_inter(Delta, kappa_star=None, kappa=None, **kwargs) -> Float[Array, "..."]:
    """``interpolation_threshold(Delta, kappa_star, kappa).alpha_inter`` (NaN on failure)."""
    return interpolation_threshold(Delta, kappa_star, kappa, **kwargs).alpha_inter
