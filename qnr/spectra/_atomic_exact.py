"""Exact spectral integrals of ``rho_xi = (sum_i p_i delta_{t_i}) boxplus semicircle(xi)`` for
any discrete teacher (THEORY.md section 6): no quadrature.

Subordination (Biane 1997): ``g(z) = G(w)`` with ``G(w) = sum_i p_i/(w - t_i)`` and
``z = x(w) = w + xi G(w)``. On the real axis ``w_x = w(x + i0)`` lies in the closed upper
half-plane (``Im g = -Im w/xi <= 0``), it is real off the support and runs from ``-inf`` to
``+inf`` as ``x`` does. Since ``rho = -Im g/pi`` and ``H = Re g``,

    ``int_b^inf x^j rho dx = -(1/pi) Im int x^j g dx``,
    ``int_b^inf x^j H rho dx = -(1/(2 pi)) Im int x^j g^2 dx``,

and ``int x^j g^m dx = int x(w)^j G(w)^m x'(w) dw`` has a rational integrand with poles at the
atoms only. With ``delta_i = w - t_i``, the teacher constants
``gamma_i = sum_{j != i} p_j/(t_i - t_j)``, ``gamma'_i = -sum_{j != i} p_j/(t_i - t_j)^2``,
``mu_1 = sum p t`` and the sums ``P2 = sum p^2/delta``, ``W1 = int w G^2 dw``,
``W3 = int G^3 dw`` (partial fractions of ``G^2``, ``w G^2``, ``G^3``; derived here, checked in
the tests by differentiation and against adaptive quadrature) the antiderivatives are

* ``m0``: ``A = sum p log delta + xi G^2/2``
* ``m1``: ``A = w + sum p t log delta + xi w G^2/2 + xi (sum p gamma log delta - P2/2)
  + xi^2 G^3/3``
* ``m2``: ``A = w^2/2 + mu_1 w + sum p t^2 log delta + xi W1 + xi w^2 G^2/2 + xi^2 W3/3
  + 2 xi^2 w G^3/3 + xi^3 G^4/4``
* ``h0`` (``g^2``): ``A = 2 sum p gamma log delta - P2 + xi G^3/3``
* ``h1``: ``A = W1 + 2 xi W3/3 + xi w G^3/3 + xi^2 G^4/4``

with ``W1 = sum (p^2 + 2 p t gamma) log delta - sum p^2 t/delta`` and
``W3 = sum 3 (p^2 gamma' + p gamma^2) log delta - sum p^3/(2 delta^2) - 3 sum p^2 gamma/delta``.
Each is ``A = R(w) + sum_i c_i log(w - t_i)`` with a rational ``R`` (real on the real axis)
and per-atom coefficients ``c_i`` (polynomials in ``xi``). The logarithms take the branch
continuous on the closed upper half-plane, ``arg(w - t_i)`` in ``[0, pi]``; ``A`` is then
continuous along the path ``w_x`` (gaps add nothing to ``Im A``), real at ``w -> +inf`` and
``Im A(-inf) = pi sum c_i``. Hence only ``w_b`` matters:

    ``int_b^inf = (1/pi) (Im R(w_b) + sum_i c_i arg(w_b - t_i))``,
    ``int_{-inf}^b = (1/pi) (sum_i c_i arg(t_i - w_b) - Im R(w_b))``

(``1/(2 pi)`` for the ``H`` integrals; ``arg(t_i - w) = pi - arg(w - t_i)`` is computed
directly, without the subtraction). The totals ``sum c_i`` are ``1, mu_1, mu_2 + xi, 0, 1/2``.

Organisation per atom (relative accuracy at small ``xi``): everything is evaluated in the
variable ``delta = w - t_k`` anchored at the atom ``t_k`` nearest to ``Re w_b``, with
``w - t_i = (t_k - t_i) + delta``; at small ``xi`` each atom is a semicircle of radius
``~2 sqrt(xi p_k)`` and ``delta = O(sqrt(xi p_k))`` keeps full relative precision. No large
residues are formed and subtracted: the coefficient of ``log delta_i`` of an atom at ``0`` is
``O(xi)`` as it is, so the lower integrals (which the ERM error uses) keep relative accuracy
about ``eps/sqrt(xi)`` (``~1e-11`` at ``xi = 1e-10``). Limitation: atoms closer than the local
scale ``sqrt(xi p)`` enter through ``gamma ~ p/Delta t`` and ``gamma' ~ p/Delta t^2``; the
``log`` terms of ``W3`` (coefficients ``~ p^3/Delta t^2``) cancel pairwise, costing about
``eps xi^2 p^3/Delta t^2`` absolute in ``m2`` and ``h1``. Where ``w_b`` is far from the atoms
(``|w - t_c| >= 1.25 R``, ``t_c`` the centre and ``R`` the half-spread of the atoms: every
``b`` once ``xi >~ R^2``) ``W3`` is instead summed from its expansion at infinity
(:func:`_w3_far`), which has no such loss: the power law at ``d = 400`` keeps ``1e-13`` in the
totals at ``xi = 1e3`` (``5e-6`` with the partial fractions).

The root ``w_b`` of ``w + xi G(w) = b``: first Biane's parametrisation of the real axis by
``u = Re w`` (``x(u)`` is a continuous increasing bijection; ``v = Im w = 0`` where
``F(u) = xi sum p/(u - t)^2 <= 1``, else ``v^2`` solves ``xi sum p/((u - t)^2 + v^2) = 1``, by
Newton on the concave ``1/(xi S(v^2)) - 1`` from a point left of its root, so that it
converges monotonically), solved by bracketed Newton in ``u``; then complex Newton steps in the
anchored ``delta`` (full relative precision).

Derivatives (custom JVPs, :func:`_tangents`): in ``xi`` and ``b`` in closed form from the values
already computed (``d/db`` is minus the integrand at ``b``; in ``xi``, Burgers' equation
``d_xi g = -(1/2) d_x g^2`` and an integration by parts, which needs ``int g^3 = W3 + xi G^4/4``);
in the atoms and the weights by the implicit function theorem through the root (one Newton step
with live parameters), traced only when they carry tangents. The ERM Newton differentiates every
evaluation in ``(xi, tau)``, so its compiled programs no longer contain a differentiated copy
of the root finding and of the partial fractions. The level search evaluates only the mass above
(not the other integrals) and returns the by-products of its last evaluation.

Compile time of ``solve_erm`` (power law gamma 1.5, d = 400, process CPU seconds of the XLA
compile on a loaded 2-core machine, ``benchmarks/bench_compile_atomic.py``): unconstrained
8.0-8.9 -> 6.5-7.7, rank-constrained (kappa 0.3) 12.7-14.0 -> 8.2-9.0, lam = Delta = 0
13.2-13.6 -> 9.6-10.9; warm calls unchanged or faster.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from qnr.spectra._mp_exact import MPIntegrals
from qnr.spectra._roots import newton_polish, safe_newton

__all__ = [
    "atomic_boundary_w",
    "atomic_integrals",
    "atomic_level_with_mass_above",
    "atomic_outer_edges",
]


def _cdt(dtype):
    return jnp.complex128 if jnp.dtype(dtype) == jnp.float64 else jnp.complex64


def teacher_constants(t, p):
    """``gamma_i = sum_{j != i} p_j/(t_i - t_j)`` and ``gamma'_i = -sum_{j != i}
    p_j/(t_i - t_j)^2`` (``O(n^2)``; distinct atoms)."""
    n = t.shape[-1]
    diff = t[:, None] - t[None, :]
    eye = jnp.eye(n, dtype=bool)
    inv = jnp.where(eye, 0.0, 1 / jnp.where(eye, 1.0, diff))
    return inv @ p, -((inv * inv) @ p)


# --------------------------------------------------------------------------- Biane's u-map
def _v2_of_u(u, t, p, xi):
    """``s = v(u)^2``: ``0`` where ``F(u) <= 1``, else the root of ``xi S(s) = 1``,
    ``S(s) = sum p/((u - t)^2 + s)``. ``1/(xi S)`` is concave increasing in ``s`` (a harmonic
    mean of affine functions), so Newton from ``s0 = max(0, max_i (xi p_i - a_i^2))`` (left of
    the root: one term alone is below the sum) converges monotonically. Returns ``(s, F)``."""
    a2 = (u[..., None] - t) ** 2
    s0 = jnp.maximum(jnp.max(xi[..., None] * p - a2, axis=-1), 0.0)
    xi_ = xi

    def psi(s):
        q = a2 + s[..., None]
        S = jnp.sum(p / q, axis=-1)
        M2 = jnp.sum(p / (q * q), axis=-1)
        return 1 / (xi_ * S) - 1, M2 / (xi_ * S * S)

    f0, _ = psi(s0)
    on = f0 < 0

    def cond(c):
        i, _, done = c
        return (i < 60) & ~jnp.all(done)

    def body(c):
        i, s, done = c
        f, df = psi(s)
        step = jnp.where(df > 0, -f / jnp.where(df > 0, df, 1.0), 0.0)
        step = jnp.where(jnp.isfinite(step), jnp.maximum(step, 0.0), 0.0)
        s_new = jnp.where(done, s, s + step)
        done = done | (step <= 1e-15 * s_new) | (f >= 0)
        return i + 1, s_new, done

    _, s, _ = lax.while_loop(cond, body, (jnp.asarray(0), s0, ~on))
    F = xi * jnp.sum(p / jnp.where(a2 > 0, a2, 1e-300), axis=-1)
    return jnp.where(on, s, 0.0), F


def _x_of_u(u, t, p, xi):
    """``x(u)``, ``v(u)``, ``dx/du`` of Biane's parametrisation (``dx/du = 1 - F`` off the
    support, ``2 xi (s M2 + M1^2/M2)`` on it; ``M_j = sum p a^(2-j)/q^2``, ``q = a^2 + s``)."""
    s, F = _v2_of_u(u, t, p, xi)
    on = s > 0
    a = u[..., None] - t
    q = a * a + s[..., None]
    x = u + xi * jnp.sum(p * a / q, axis=-1)
    M1 = jnp.sum(p * a / (q * q), axis=-1)
    M2 = jnp.sum(p / (q * q), axis=-1)
    dx = jnp.where(on, 2 * xi * (s * M2 + M1 * M1 / jnp.where(on, M2, 1.0)), 1 - F)
    return x, jnp.sqrt(s), dx


def _invert_fn(u, args):
    t, p, xi, target = args
    x, _, dx = _x_of_u(u, t, p, xi)
    return x - target, dx


def _bracket(t, xi, level):
    r = 2 * jnp.sqrt(xi) + 1.0
    return jnp.minimum(level, t[0]) - r, jnp.maximum(level, t[-1]) + r


# --------------------------------------------------------------------------- anchored root
def _anchor(u, t):
    return jnp.argmin(jnp.abs(u[..., None] - t), axis=-1)


def _f_delta(delta, c, b_rel, p, xi):
    """``f = delta - b_rel + xi sum p/(c + delta)`` (``b_rel = b - t_k``, ``c_i = t_k - t_i``)
    and ``f'``."""
    inv = 1 / (c + delta[..., None])
    G = jnp.sum(p * inv, axis=-1)
    G1 = jnp.sum(p * inv * inv, axis=-1)
    return delta - b_rel + xi * G, 1 - xi * G1


def _complex_polish(delta, c, b_rel, p, xi, steps=3):
    """Safeguarded complex Newton on ``f(delta) = 0``: a step is taken only if it is small
    (relative ``1e-6``), lowers ``|f|`` and keeps ``Im delta >= 0``. A rolled loop carrying
    ``(delta, f, f')`` (one evaluation of ``f`` per step; compiled once, not ``steps`` times)."""

    def body(_, carry):
        delta, f, df = carry
        ok = df != 0
        step = jnp.where(ok, f / jnp.where(ok, df, 1), 0)
        new = delta - step
        f_new, df_new = _f_delta(new, c, b_rel, p, xi)
        # the start is accurate to ~1e-14 in u: only small corrections are genuine (near an
        # edge, where f' -> 0, a large step would jump to another root)
        small = jnp.abs(step) <= 1e-6 * jnp.abs(delta)
        good = jnp.isfinite(new) & small & (jnp.abs(f_new) <= jnp.abs(f)) & (new.imag >= 0)
        return (
            jnp.where(good, new, delta),
            jnp.where(good, f_new, f),
            jnp.where(good, df_new, df),
        )

    f, df = _f_delta(delta, c, b_rel, p, xi)
    delta, _, _ = lax.fori_loop(0, steps, body, (delta, f, df))
    return delta


def _real_args(atoms, weights, xi, b):
    dtype = jnp.result_type(atoms, weights, xi, b, float)
    t = jnp.asarray(atoms).astype(dtype)
    p = jnp.asarray(weights).astype(dtype)
    xi = jnp.asarray(xi).astype(dtype)
    b = jnp.asarray(b).astype(dtype)
    return t, p, xi, b


def _bracketed_newton(fn, args, lo, hi, *, increasing, iters=200, rtol=2e-16):
    """Bracketed Newton (the iteration of :func:`qnr.spectra._roots.safe_newton`) for
    ``fn(x, args) -> (f, f', extra)``, returning the last point evaluated before convergence
    and its ``extra`` (the by-products of ``f``: no second evaluation after the loop). A lane's
    result is frozen once it has converged, so it does not depend on the other lanes of a
    batch. No gradients (stop-gradient inputs)."""
    args = lax.stop_gradient(args)
    lo, hi = jnp.broadcast_arrays(lax.stop_gradient(lo), lax.stop_gradient(hi))
    x = (lo + hi) / 2
    sgn = 1.0 if increasing else -1.0
    extra = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(fn, x, args)[2])

    def cond(c):
        i, _, _, _, done, _, _ = c
        return (i < iters) & ~jnp.all(done)

    def body(c):
        i, x, lo, hi, done, x_eval, extra = c
        f, df, ex = fn(x, args)
        keep = done
        x_eval = jnp.where(keep, x_eval, x)
        extra = jax.tree.map(
            lambda a, b: jnp.where(keep.reshape(keep.shape + (1,) * (a.ndim - keep.ndim)), a, b),
            extra,
            ex,
        )
        f = sgn * f
        df = sgn * df
        right = f > 0
        hi = jnp.where(right, x, hi)
        lo = jnp.where(right, lo, x)
        ok = df != 0
        step = x - jnp.where(ok, f / jnp.where(ok, df, 1), 0)
        good = jnp.isfinite(step) & (step >= lo) & (step <= hi) & (df > 0)
        x_new = jnp.where(good, step, (lo + hi) / 2)
        x_new = jnp.where((f == 0) | done, x, x_new)
        tol = rtol * (1 + jnp.abs(x))
        done = done | (jnp.abs(x_new - x) <= tol) | (hi - lo <= tol)
        return i + 1, x_new, lo, hi, done, x_eval, extra

    init = (jnp.asarray(0), x, lo, hi, jnp.zeros(x.shape, bool), x, extra)
    _, _, _, _, _, x_eval, extra = lax.while_loop(cond, body, init)
    return x_eval, extra


def _solve_delta(t, p, xi, b):
    """Stop-gradient anchor ``k`` and ``delta = w_b - t_k`` (complex, ``Im >= 0``)."""
    ts, ps, xs, bs = (lax.stop_gradient(v) for v in (t, p, xi, b))
    lo, hi = _bracket(ts, xs, bs)
    args = (ts, ps, xs, bs)
    # the root is recomputed after the loop (not carried out of it): the integrals of close
    # atoms are sensitive to the last bits of the root, and this keeps them as they were
    u = safe_newton(_invert_fn, args, lo, hi, increasing=True, iters=200, rtol=2e-16)
    _, v, _ = _x_of_u(u, ts, ps, xs)
    return _delta_from_uv(u, v, ts, ps, xs, bs)


def _delta_from_uv(u, v, t, p, xi, level):
    """From Biane's ``(u, v)`` at ``level``: anchor and polished ``delta`` (stop-gradient)."""
    k = _anchor(u, t)
    tk = t[k]
    cdt = _cdt(t.dtype)
    c = (tk[..., None] - t).astype(cdt)
    delta = lax.complex(u - tk, v)
    delta = _complex_polish(delta, c, (level - tk).astype(cdt), p.astype(cdt), xi.astype(cdt))
    on = v > 0
    delta = jnp.where(on, delta, delta.real.astype(cdt))
    delta = lax.complex(delta.real, jnp.where(delta.imag > 0, delta.imag, 0.0))
    return k, lax.stop_gradient(delta)


def _attach(k, delta, t, p, xi, b):
    """Re-attach gradients to the (stop-gradient) root: ``delta - (f - sg(f))/sg(f')``, whose
    value is ``delta`` and whose first derivatives are the implicit-function-theorem ones
    ``-f_theta/f'`` (a plain Newton step would move the value where ``f' -> 0`` at an edge);
    also returns ``c = t_k - t`` (live) and ``t_k``."""
    cdt = _cdt(t.dtype)
    tk = t[k]
    c = (tk[..., None] - t).astype(cdt)
    f, df = _f_delta(delta, c, (b - tk).astype(cdt), p.astype(cdt), xi.astype(cdt))
    df = lax.stop_gradient(df)
    ok = df != 0
    df_safe = jnp.where(ok, df, 1)
    delta = delta - jnp.where(ok, (f - lax.stop_gradient(f)) / df_safe, 0)
    on = delta.imag > 0
    return jnp.where(on, delta, delta.real.astype(cdt)), c, tk


def atomic_boundary_w(atoms, weights, xi, b):
    """``w(b + i0)``, the subordination point at real ``b`` (``Im w >= 0``; real off the
    support): root of ``w + xi sum p_i/(w - t_i) = b``. Differentiable (implicit function
    theorem). ``atoms`` sorted ascending, distinct; ``b`` scalar or batch."""
    t, p, xi, b = _real_args(atoms, weights, xi, b)
    k, delta = _solve_delta(t, p, xi, b)
    delta, _, tk = _attach(k, delta, t, p, xi, b)
    return tk.astype(delta.dtype) + delta


# --------------------------------------------------------------------------- the integrals
_N_FAR = 170  # terms of the expansion of W3 at infinity (0.8^170 < 3e-17)
_R_FAR = 1.25  # used where |w - t_c| >= _R_FAR R


def _w3_far(w, t, p):
    """``W3 = int G^3 dw`` by its expansion at infinity about the centre ``t_c`` of the
    atoms, in units of their half-spread ``R``: with ``zeta = (w - t_c)/R`` and
    ``nu_k = sum p ((t - t_c)/R)^k``, ``R G = sum_k nu_k zeta^-(k+1)``,
    ``R^3 G^3 = sum_n C_n zeta^-n`` (``C = nu * nu * nu``, ``n >= 3``), so
    ``W3 = -R^-2 sum_m C_(m+3) zeta^-(m+2)/(m+2)``, up to a real constant (both sides are real
    at ``w -> +inf``). Used where ``|zeta| >= 1.25``: there the partial-fraction form loses
    ``eps xi^2 p^3/Delta t^2`` to the pairwise cancellation of close atoms' ``log`` terms, the
    expansion nothing. Returns ``(Im W3, far)``."""
    cdt = w.dtype
    tc = (t[0] + t[-1]) / 2
    R = (t[-1] - t[0]) / 2
    Rs = jnp.where(R > 0, R, 1.0)
    zeta = (w - tc.astype(cdt)) / Rs.astype(cdt)
    far = (jnp.abs(zeta) >= _R_FAR) & (R > 0)
    safe = jnp.where(far, zeta, jnp.asarray(2.0, cdt))
    powers = ((t - tc) / Rs)[:, None] ** jnp.arange(_N_FAR, dtype=t.dtype)
    nu = p @ powers
    C = jnp.convolve(jnp.convolve(nu, nu), nu)[:_N_FAR]
    coef = -C / (jnp.arange(_N_FAR, dtype=t.dtype) + 2)
    q = 1 / safe
    val = q * q * jnp.polyval(coef[::-1].astype(cdt), q, unroll=1) / (Rs * Rs).astype(cdt)
    return val.imag, far


def _parts(delta, c, tk, t, p, xi, gam, gam1):
    """``(up, low, G, G1, W3_up, W3_low)``: ``Im R_j + sum_i c_ij arg(w - t_i)`` and
    ``sum_i c_ij arg(t_i - w) - Im R_j`` for ``j = m0, m1, m2, h0, h1`` (module docstring),
    ``G(w)``, ``G1 = sum p/(w - t)^2 = -G'(w)`` and ``Im W3`` in the same two forms (for the
    closed-form derivatives, :func:`_tangents`)."""
    cdt = delta.dtype
    D = c + delta[..., None]  # w - t_i
    inv = 1 / D
    pc, tc = p.astype(cdt), t.astype(cdt)
    xc = xi.astype(cdt)
    gc = gam.astype(cdt)
    w = tk.astype(cdt) + delta
    G = jnp.sum(pc * inv, axis=-1)
    P2 = jnp.sum(pc * pc * inv, axis=-1)
    rW1 = -jnp.sum(pc * pc * tc * inv, axis=-1)
    rW3 = -jnp.sum(pc**3 * inv * inv, axis=-1) / 2 - 3 * jnp.sum(pc * pc * gc * inv, axis=-1)
    G2, G3 = G * G, G * G * G
    G4 = G2 * G2
    mu1 = jnp.sum(p * t).astype(cdt)
    r_m0 = xc * G2 / 2
    r_m1 = w + xc * w * G2 / 2 - xc * P2 / 2 + xc**2 * G3 / 3
    r_m2 = (
        w * w / 2
        + mu1 * w
        + xc * rW1
        + xc * w * w * G2 / 2
        + 2 * xc**2 * w * G3 / 3
        + xc**3 * G4 / 4
    )
    r_h0 = -P2 + xc * G3 / 3
    r_h1 = rW1 + xc * w * G3 / 3 + xc**2 * G4 / 4
    im_r = jnp.stack([r.imag for r in (r_m0, r_m1, r_m2, r_h0, r_h1)])
    xi_ = xi[..., None]
    aW1 = p * p + 2 * p * t * gam
    aW3 = 3 * (p * p * gam1 + p * gam * gam)
    a_m0 = jnp.broadcast_to(p, D.shape)
    a_m1 = p * t + xi_ * p * gam
    a_m2 = p * t * t + xi_ * aW1
    a_h0 = jnp.broadcast_to(2 * p * gam, D.shape)
    a_h1 = aW1
    coef = jnp.stack([jnp.broadcast_to(a, D.shape) for a in (a_m0, a_m1, a_m2, a_h0, a_h1)])
    im = jnp.where(D.imag > 0, D.imag, 0.0)
    arg_up = jnp.arctan2(im, D.real)  # arg(w - t_i) in [0, pi]
    arg_low = jnp.arctan2(im, -D.real)  # arg(t_i - w) = pi - arg(w - t_i)
    up = im_r + jnp.sum(coef * arg_up, axis=-1)
    low = jnp.sum(coef * arg_low, axis=-1) - im_r
    # W3 = int G^3 (in m2 with xi^2/3, in h1 with 2 xi/3): partial fractions near the atoms,
    # the expansion at infinity far from them (no cancellation between close atoms' logs)
    w3_up = rW3.imag + jnp.sum(aW3 * arg_up, axis=-1)
    w3_low = jnp.sum(aW3 * arg_low, axis=-1) - rW3.imag
    w3_far, far = _w3_far(w, t, p)
    w3_up = jnp.where(far, w3_far, w3_up)
    w3_low = jnp.where(far, -w3_far, w3_low)
    w3_fac = jnp.stack([0 * xi, 0 * xi, xi**2 / 3, 0 * xi, 2 * xi / 3]).reshape(
        (5,) + xi.shape + (1,) * (w3_up.ndim - xi.ndim)
    )
    up = up + w3_fac * w3_up
    low = low + w3_fac * w3_low
    G1 = jnp.sum(pc * inv * inv, axis=-1)
    return up, low, G, G1, w3_up, w3_low


_SCALE = (1.0, 1.0, 1.0, 0.5, 0.5)  # 1/pi for the m_j, 1/(2 pi) for the h_j


def _outputs(parts, dtype):
    """``(up, low, rho, hilbert)`` (the integrals, scaled) from :func:`_parts`."""
    up, low, G = parts[:3]
    scale = jnp.asarray(_SCALE, dtype).reshape((5,) + (1,) * G.ndim) / jnp.pi
    return up * scale, low * scale, jnp.maximum(-G.imag, 0.0) / jnp.pi, G.real


def _generic(k, delta, t, p, xi, b):
    """The outputs with gradients through the root by the implicit function theorem
    (:func:`_attach`): used for the derivatives in the atoms and the weights."""
    delta, c, tk = _attach(k, delta, t, p, xi, b)
    gam, gam1 = teacher_constants(t, p)
    return _outputs(_parts(delta, c, tk, t, p, xi, gam, gam1), t.dtype)


def _tangents(parts, xi, b, xi_dot, b_dot):
    """Closed-form derivatives of ``(up, low, rho, hilbert)`` in ``xi`` and ``b``.

    ``d/db int_b^inf f = -f(b)``. In ``xi`` at fixed ``x``: ``g = G(x - xi g)`` gives Burgers'
    equation ``d_xi g = -g d_x g = -(1/2) d_x g^2`` (``d_xi g^2 = -(2/3) d_x g^3``); integrating
    by parts (the boundary terms at ``+inf`` are real),
    ``d_xi m_j = -b^j Im g(b)^2/(2 pi) + j h_(j-1)`` and
    ``d_xi h_j = -b^j Im g(b)^3/(3 pi) - j Im int_b^inf g^3 dx/(3 pi)``, with
    ``int g^3 dx = W3 + xi G^4/4`` (``Im`` of it above ``b`` is ``-(W3_up + xi Im G^4/4)``).
    The lower integrals' derivatives are written in the lower forms (no cancellation against
    the totals ``1, mu_1, mu_2 + xi, 0, 1/2``). ``rho`` and ``H`` from
    ``d_b g = G'(w)/(1 + xi G'(w))`` and ``d_xi g = -g d_b g``."""
    up, low, G, G1, w3_up, w3_low = parts
    pi = jnp.pi
    g2 = (G * G).imag
    g3 = (G * G * G).imag
    g4 = (G * G * G * G).imag
    s = jnp.asarray(_SCALE, b.dtype).reshape((5,) + (1,) * G.ndim) / pi
    h0_up, h1_up = up[3] * s[3], up[4] * s[4]
    h0_low, h1_low = low[3] * s[3], low[4] * s[4]
    bb = b * b
    # d/db of the upper integrals (the lower ones: the negatives)
    db_up = jnp.stack(
        [G.imag / pi, b * G.imag / pi, bb * G.imag / pi, g2 / (2 * pi), b * g2 / (2 * pi)]
    )
    k3 = xi * g4 / 4
    dxi_up = jnp.stack(
        [
            -g2 / (2 * pi),
            -b * g2 / (2 * pi) + h0_up,
            -bb * g2 / (2 * pi) + 2 * h1_up,
            -g3 / (3 * pi),
            -b * g3 / (3 * pi) + (w3_up + k3) / (3 * pi),
        ]
    )
    dxi_low = jnp.stack(
        [
            g2 / (2 * pi),
            b * g2 / (2 * pi) + h0_low,
            bb * g2 / (2 * pi) + 2 * h1_low,
            g3 / (3 * pi),
            b * g3 / (3 * pi) + (w3_low - k3) / (3 * pi),
        ]
    )
    d_up = 0.0
    d_low = 0.0
    dG = jnp.zeros_like(G)
    cdt = G.dtype
    den = 1 - xi.astype(cdt) * G1
    ok = den != 0
    dG_db = jnp.where(ok, -G1 / jnp.where(ok, den, 1), 0)  # d_b g
    if b_dot is not None:
        d_up = d_up + db_up * b_dot
        d_low = d_low - db_up * b_dot
        dG = dG + dG_db * b_dot.astype(cdt)
    if xi_dot is not None:
        d_up = d_up + dxi_up * xi_dot
        d_low = d_low + dxi_low * xi_dot
        dG = dG - G * dG_db * xi_dot.astype(cdt)
    d_rho = jnp.where(-G.imag > 0, -dG.imag / pi, 0.0)
    return d_up, d_low, d_rho, dG.real


@jax.custom_jvp
def _atomic_core(t, p, xi, b):
    """``(up, low, rho, hilbert)``; primal: root without gradients, then :func:`_parts`."""
    k, delta = _solve_delta(t, p, xi, b)
    cdt = _cdt(t.dtype)
    tk = t[k]
    c = (tk[..., None] - t).astype(cdt)
    gam, gam1 = teacher_constants(t, p)
    return _outputs(_parts(delta, c, tk, t, p, xi, gam, gam1), t.dtype)


def _is_zero(x):
    return isinstance(x, SymbolicZero)


def _atomic_core_jvp(primals, tangents):
    t, p, xi, b = primals
    t_dot, p_dot, xi_dot, b_dot = tangents
    k, delta = _solve_delta(t, p, xi, b)
    # the primal outputs and the ingredients of the closed forms with gradients through the
    # root (implicit function theorem), so that the rule itself is differentiable
    delta_a, c, tk = _attach(k, delta, t, p, xi, b)
    gam, gam1 = teacher_constants(t, p)
    parts = _parts(delta_a, c, tk, t, p, xi, gam, gam1)
    out = _outputs(parts, t.dtype)
    d_up, d_low, d_rho, d_h = _tangents(
        parts, xi, b, None if _is_zero(xi_dot) else xi_dot, None if _is_zero(b_dot) else b_dot
    )
    if not (_is_zero(t_dot) and _is_zero(p_dot)):
        t_dot = jnp.zeros_like(t) if _is_zero(t_dot) else t_dot
        p_dot = jnp.zeros_like(p) if _is_zero(p_dot) else p_dot
        _, tp = jax.jvp(lambda tt, pp: _generic(k, delta, tt, pp, xi, b), (t, p), (t_dot, p_dot))
        d_up, d_low, d_rho, d_h = (a + u for a, u in zip((d_up, d_low, d_rho, d_h), tp))
    d_out = tuple(
        jnp.broadcast_to(jnp.asarray(d, o.dtype), o.shape)
        for d, o in zip((d_up, d_low, d_rho, d_h), out)
    )
    return out, d_out


_atomic_core.defjvp(_atomic_core_jvp, symbolic_zeros=True)


def _as_integrals(up, low, rho, hilbert) -> MPIntegrals:
    return MPIntegrals(
        *(up[i] for i in range(5)), *(low[i] for i in range(5)), rho=rho, hilbert=hilbert
    )


def atomic_integrals(atoms, weights, xi, b) -> MPIntegrals:
    """Exact ``int_b^inf x^j rho_xi`` (``j <= 2``), ``int_b^inf x^j H rho_xi`` (``j <= 1``),
    their complements below ``b`` (``*_low``), ``rho(b)`` and ``H(b)``, for the discrete
    teacher ``sum_i p_i delta_{t_i}`` (atoms sorted ascending and distinct, weights summing to
    1) convolved with a semicircle of variance ``xi > 0`` (module docstring; THEORY.md
    section 6). ``b`` scalar or batch; jit/vmap-friendly; differentiable in ``xi``, ``b``, the
    atoms and the weights (closed forms in ``xi`` and ``b``, :func:`_tangents`; the implicit
    function theorem through the root in the atoms and weights)."""
    t, p, xi, b = _real_args(atoms, weights, xi, b)
    return _as_integrals(*_atomic_core(t, p, xi, b))


# --------------------------------------------------------------------------- level, edges
def _m0_up(delta, c, p, xi):
    """``pi rho([b, inf)) = Im(xi G^2/2) + sum_i p_i arg(w - t_i)`` alone (the ``m0`` row of
    :func:`_parts`, without the other rows and the expansion of ``W3``)."""
    cdt = delta.dtype
    D = c + delta[..., None]
    G = jnp.sum(p.astype(cdt) / D, axis=-1)
    im = jnp.where(D.imag > 0, D.imag, 0.0)
    return (xi.astype(cdt) * (G * G) / 2).imag + jnp.sum(p * jnp.arctan2(im, D.real), axis=-1)


def _mass_of_u(u, args):
    """``rho([x(u), inf))`` as a function of Biane's ``u`` (decreasing) and its derivative
    ``-rho(x(u)) x'(u)``; no root solve in ``x``."""
    t, p, xi, mass = args
    x, v, dx = _x_of_u(u, t, p, xi)
    k, delta = _delta_from_uv(u, v, t, p, xi, x)
    cdt = _cdt(t.dtype)
    c = (t[k][..., None] - t).astype(cdt)
    return _m0_up(delta, c, p, xi) / jnp.pi - mass, -(v / (jnp.pi * xi)) * dx, (x, k, delta)


def _level_root(t, p, xi, mass):
    """Stop-gradient ``(level, k, delta)``: bracketed Newton in Biane's ``u`` on the exact
    mass function (no nested solve in ``x``)."""
    ts, ps, xs, ms = (lax.stop_gradient(v) for v in (t, p, xi, mass))
    lo, hi = _bracket(ts, xs, jnp.broadcast_to(ts[0], ms.shape))
    args = (ts, ps, xs, ms)
    _, (x, k, delta) = _bracketed_newton(_mass_of_u, args, lo, hi, increasing=False)
    return lax.stop_gradient(x), k, delta


@jax.custom_jvp
def _level_core(t, p, xi, mass):
    return _level_root(t, p, xi, mass)[0]


def _level_core_jvp(primals, tangents):
    """``d omega = (d m0_up - d mass)/rho(omega)`` (implicit function theorem) with the
    closed form ``d_xi m0_up = H rho`` (:func:`_tangents`): ``d omega = H d xi - d mass/rho
    + (d_(t, p) m0_up)/rho``; zero where ``rho(omega) = 0``."""
    t, p, xi, mass = primals
    t_dot, p_dot, xi_dot, m_dot = tangents
    level, k, delta = _level_root(t, p, xi, mass)
    cdt = _cdt(t.dtype)
    c = (t[k][..., None] - t).astype(cdt)
    G = jnp.sum(p.astype(cdt) / (c + delta[..., None]), axis=-1)
    rho = jnp.maximum(-G.imag, 0.0) / jnp.pi
    pos = rho > 0
    r = jnp.where(pos, rho, 1.0)
    d = jnp.zeros_like(level)
    if not _is_zero(xi_dot):
        d = d + G.real * xi_dot
    if not _is_zero(m_dot):
        d = d - m_dot / r
    if not (_is_zero(t_dot) and _is_zero(p_dot)):
        t_dot = jnp.zeros_like(t) if _is_zero(t_dot) else t_dot
        p_dot = jnp.zeros_like(p) if _is_zero(p_dot) else p_dot

        def m0(tt, pp):
            dl, cc, _ = _attach(k, delta, tt, pp, xi, level)
            return _m0_up(dl, cc, pp, xi) / jnp.pi

        _, dm = jax.jvp(m0, (t, p), (t_dot, p_dot))
        d = d + dm / r
    return level, jnp.broadcast_to(jnp.where(pos, d, 0.0), level.shape)


_level_core.defjvp(_level_core_jvp, symbolic_zeros=True)


def atomic_level_with_mass_above(atoms, weights, xi, mass):
    """The level ``omega`` with ``rho_xi([omega, inf)) = mass`` (``0 < mass < 1``): bracketed
    Newton in Biane's ``u`` on the exact mass function (no nested solve in ``x``); first
    derivatives by the implicit function theorem, ``d omega = (d mass_above - d mass)/rho``
    (``d_xi`` of the mass above is ``H rho`` in closed form: ``d omega/d xi = H(omega)``)."""
    t, p, xi, mass = _real_args(atoms, weights, xi, mass)
    return _level_core(t, p, xi, mass)


def _edge_fn(u, args):
    """``F(u)^(-1/2) - 1`` (nearly linear near an isolated atom) and its derivative."""
    t, p, xi = args
    inv = 1 / (u[..., None] - t)
    f = xi * jnp.sum(p * inv * inv, axis=-1)
    f1 = -2 * xi * jnp.sum(p * inv**3, axis=-1)
    return lax.rsqrt(f) - 1, -0.5 * f1 * f ** (-1.5)


def atomic_outer_edges(atoms, weights, xi):
    """The leftmost and rightmost support edges ``x(u)`` at the roots of
    ``xi sum p/(u - t)^2 = 1`` left of the smallest and right of the largest atom."""
    t, p, xi, _ = _real_args(atoms, weights, xi, 0.0)
    args = (t, p, xi)
    sq = jnp.sqrt(xi)
    L = safe_newton(_edge_fn, args, t[0] - sq, t[0], increasing=False, rtol=2e-16)
    R = safe_newton(_edge_fn, args, t[-1], t[-1] + sq, increasing=True, rtol=2e-16)
    L = newton_polish(_edge_fn, args, L)
    R = newton_polish(_edge_fn, args, R)

    def x(u):
        return u + xi * jnp.sum(p / (u - t))

    return x(L), x(R)
