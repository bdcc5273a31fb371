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

__all__ = [
    "semicircle_partial_moments",
    "alpha_bo",
    "StrongRecovery",
    "strong_recovery",
    "alpha_sr",
    "kappa_min",
    "alpha_inter_noiseless",
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
    return semicircle_partial_moments(w)[0] - target


def _w_cut(target, rtol, atol, max_steps):
    """``m0(w) = target`` in ``[0, 2]`` by bisection (``m0`` decreases from 1/2 to 0; Newton
    stalls at ``w -> 2`` where ``m0 ~ (2 - w)^(3/2)``)."""
    solver = optx.Bisection(rtol=rtol, atol=atol)
    zero = jnp.zeros_like(target)
    sol = optx.root_find(
        _m0_cut,
        solver,
        zero + 1.0,
        args=target,
        options=dict(lower=zero, upper=zero + 2.0),
        max_steps=max_steps,
        throw=False,
    )
    return sol.value, sol.result, sol.stats["num_steps"]


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
