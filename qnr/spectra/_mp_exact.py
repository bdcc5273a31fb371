"""Exact spectral integrals of ``rho_xi = MP(kappa*) boxplus semicircle(xi)`` (THEORY.md
section 6): no quadrature.

Notation: ``k = kappa*``, ``g = g(x + i0)`` the Stieltjes transform on the real axis
(``Im g <= 0``), whose inverse is rational,

    ``x(g) = xi g + 1/g - k/(g - k)``  (``xi g`` plus the inverse Stieltjes transform of MP).

On the support ``rho = -Im g/pi`` and ``H = Re g``, so for a polynomial ``p``

    ``int p rho dx = -(1/pi) Im int p(x) g dx``,  ``int p H rho dx = -(1/(2 pi)) Im int p g^2 dx``,

and ``int x^j g^m dx = int x(g)^j g^m x'(g) dg``. The integrand is rational in ``g`` with poles
at ``0`` and ``k`` only; its antiderivative is written here as

    ``A_jm(g) = R_jm(g) + C0_jm log(g) + Ck_jm log(1 - k/g)``

(``R`` rational; ``c_0, c_k`` the residues at ``0`` and ``k``, ``C0 = c_0 + c_k`` written in
closed form, :func:`residue_sums`, since it is ``O(xi)`` where ``c_0, c_k`` are ``O(1/k)``).
Where ``|g| > k`` (near the smoothed atom at small ``xi``) the split
``log(g - k) = log g + log(1 - k/g)`` is used, elsewhere ``c_0 log g + c_k log(g - k)``: each
keeps the cancellation between the two logarithms exact. Logarithms take the branch continuous on
the closed lower half-plane (argument in ``[-pi, 0]``), along which ``g(x + i0)`` moves; off
the support ``g`` is real and adds nothing to the imaginary part. Hence only ``g(b + i0)``
matters:

* ``x -> -inf`` is ``g -> 0^-``: ``Im A(0^-) = -pi C0``; this gives the integrals *below* ``b``,
  ``int_{-inf}^b x^j rho = -(1/pi) (Im R + C0 arg(-g) + c_k arg(1 - k/g))`` (``/2`` for
  ``g^2``; ``arg(-g) = arg g + pi``);
* ``x -> +inf`` is ``g -> 0^+``, where ``Im A = -pi c_k``: the integrals *above* ``b`` use
  ``arg(g)`` in place of ``arg(-g)`` and add ``c_k``.

Both forms are exact; they round differently. The ERM error
``E = Q0 + int_b (tau^2 - x^2) rho + 4 xi D`` cancels to ``O(xi)`` near perfect recovery; its
lower-integral form (derived from the totals ``int x^2 rho = Q0 + xi``, ``int H rho = 0``,
``int x H rho = 1/2``)

    ``E = xi + tau^2 + m2_low - tau^2 m0_low - 4 xi (h1_low - tau h0_low)``

has no ``O(1)`` cancellation and keeps ~1e-11 relative accuracy down to ``xi = 1e-12``
(checked against 60-digit arithmetic and 40-digit quadrature), where the direct form loses
``1e-16 / xi``. The rank and ``D`` use the integrals above ``b``.

The antiderivatives were derived by partial fractions (sympy ``apart``) and are checked in the
tests by differentiation (sympy) and against adaptive quadrature.

``g(b + i0)`` is the physical root of the cubic ``xi g^3 - (b + k xi) g^2 + (1 - k + k b) g - k``
(started in real arithmetic, polished by Newton):
the member of the complex pair with ``Im g < 0`` on the support, and off the support the
unique real root with ``x'(g) < 0`` (``g`` decreases in ``x`` off the support; on each real
branch of ``x(g)`` only the physical root lies on a decreasing segment). Gradients reach ``g``
through one Newton step on the cubic (implicit function theorem).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from qnr.spectra._roots import newton_polish, safe_newton

__all__ = [
    "mp_boundary_g",
    "MPIntegrals",
    "mp_integrals",
    "mp_level_with_mass_above",
    "rational_parts",
    "residues",
    "residue_sums",
]


def _x_prime(g, xi, k):
    return xi - 1 / g**2 + k / (g - k) ** 2


def _physical_root_start(k, xi, x):
    """A first approximation of ``g(x + i0)`` in real arithmetic (no complex transcendental
    functions): Cardano / Viete on the cubic in ``u = 1/g``,
    ``u^3 + a u^2 + b u + c = 0`` with ``a = -(1 - k + k x)/k``, ``b = (x + k xi)/k``,
    ``c = -xi/k`` (well scaled for small ``xi``). One real root and a complex pair: on the
    support, ``g = 1/u`` of the pair member with ``Im u > 0`` (``Im g < 0``). Three real roots:
    off the support, the one with ``x'(g) < 0``."""
    a = -(1 - k + k * x) / k
    b = (x + k * xi) / k
    c = -xi / k
    p = b - a * a / 3
    q = 2 * a**3 / 27 - a * b / 3 + c
    disc = (q / 2) ** 2 + (p / 3) ** 3
    shift = -a / 3
    # one real root + pair (disc > 0): A = -sign(q) cbrt(|q|/2 + sqrt(disc)), B = -p/(3A)
    sq = jnp.sqrt(jnp.maximum(disc, 0.0))
    big = jnp.cbrt(jnp.abs(q) / 2 + sq)
    A = jnp.where(q >= 0, -big, big)
    B = jnp.where(A != 0, -p / (3 * jnp.where(A != 0, A, 1.0)), 0.0)
    u_pair = jax.lax.complex(shift - (A + B) / 2, (jnp.sqrt(3.0) / 2) * jnp.abs(A - B))
    # three real roots (disc <= 0): Viete's trigonometric form
    m = 2 * jnp.sqrt(jnp.maximum(-p / 3, 0.0))
    cos_arg = jnp.where(m > 0, 3 * q / (p * jnp.where(m > 0, m, 1.0)), 0.0)
    theta = jnp.arccos(jnp.clip(cos_arg, -1.0, 1.0)) / 3
    ks = jnp.arange(3, dtype=x.dtype)
    u3 = shift[..., None] + m[..., None] * jnp.cos(theta[..., None] - 2 * jnp.pi * ks / 3)
    g3 = 1 / jnp.where(u3 == 0, 1e-300, u3)
    xp = _x_prime(g3, xi[..., None], k[..., None])
    xp = jnp.where(jnp.isfinite(xp), xp, jnp.inf)
    g_real = jnp.take_along_axis(g3, jnp.argmin(xp, axis=-1)[..., None], axis=-1)[..., 0]
    g_pair = 1 / jnp.where(u_pair == 0, 1e-300 + 0j, u_pair)
    return jnp.where(disc > 0, g_pair, g_real.astype(g_pair.dtype)), disc > 0


def _cubic_newton_step(g, k, xi, x):
    k, xi, x = (v.astype(g.dtype) for v in (k, xi, x))
    f = ((xi * g - (x + k * xi)) * g + (1 - k + k * x)) * g - k
    df = (3 * xi * g - 2 * (x + k * xi)) * g + (1 - k + k * x)
    ok = df != 0
    return g - jnp.where(ok, f / jnp.where(ok, df, 1), 0)


def mp_boundary_g(kappa_star, xi, x) -> Array:
    """``g(x + i0)`` of ``MP(kappa*) boxplus semicircle(xi)`` at real ``x`` (broadcast), with
    ``Im g <= 0``; differentiable in all three arguments (one Newton step on the cubic)."""
    k, xi, x = jnp.broadcast_arrays(*(jnp.asarray(v) for v in (kappa_star, xi, x)))
    dtype = jnp.result_type(k, xi, x, float)
    k, xi, x = (v.astype(dtype) for v in (k, xi, x))
    ks, xs, bs = (jax.lax.stop_gradient(v) for v in (k, xi, x))
    g, on_support = _physical_root_start(ks, xs, bs)
    # polish on the original cubic (complex arithmetic, no transcendental functions)
    for _ in range(2):
        g_new = _cubic_newton_step(g, ks, xs, bs)
        g = jnp.where(jnp.isfinite(g_new), g_new, g)
    g = jnp.where(on_support, g, g.real.astype(g.dtype))
    g = jax.lax.stop_gradient(jax.lax.complex(g.real, jnp.minimum(g.imag, 0.0)))
    # re-attach gradients: one Newton step with the parameters live (exact first derivatives)
    return _cubic_newton_step(g, k, xi, x)


def _arg_lhp(u):
    """Argument of ``u`` in ``[-pi, 0]`` (branch continuous on the closed lower half-plane;
    a real negative ``u`` gets ``-pi`` whatever the sign of its zero imaginary part)."""
    return -jnp.arctan2(jnp.abs(jnp.minimum(u.imag, 0.0)), u.real)


def rational_parts(g, xi, k) -> tuple:
    """The rational parts ``R_jm(g)`` of the antiderivatives ``A_jm = R_jm + c0_jm log g +
    ck_jm log(g - k)`` of ``x(g)^j g^m x'(g)``, for ``(j, m)`` in ``(0,1), (1,1), (2,1),
    (0,2), (1,2)`` (plain arithmetic: works on arrays and on sympy symbols)."""
    q = g - k
    r01 = xi * g**2 / 2 - k**2 / q
    r11 = xi**2 * g**3 / 3 + k**3 / (2 * q**2) - k * (k**2 * xi - k + 1) / q + 1 / g
    r21 = (
        xi**3 * g**4 / 4
        + xi**2 * (1 - k) * g**2 / 2
        - k**4 / (3 * q**3)
        + k**2 * (2 * k**2 * xi - k + 2) / (2 * q**2)
        - (k**4 * xi**2 - 3 * k**3 * xi + 2 * k**2 * xi - k + 1) / q
        + 2 / g
        + 1 / (2 * g**2)
    )
    r02 = xi * g**3 / 3 - k**3 / q + (k - 1) * g
    r12 = xi**2 * g**4 / 4 + k**4 / (2 * q**2) + k**2 * xi * g - k**2 * (k**2 * xi - 2 * k + 1) / q
    return r01, r11, r21, r02, r12


def residues(xi, k) -> tuple[tuple, tuple]:
    """``(c0_jm, ck_jm)``: residues of ``x(g)^j g^m x'(g)`` at ``g = 0`` and ``g = k`` (same
    order as :func:`rational_parts`)."""
    c0 = (-1 + 0 * k, -1 + 0 * k, -(k * xi + k + 1) / k, 0 * k, -1 + 0 * k)
    ck = (
        k,
        k**2 * xi + 1,
        (k**4 * xi**2 - k**3 * xi + 2 * k**2 * xi + k + 1) / k,
        2 * k**2,
        k * (2 * k**2 * xi - k + 2),
    )
    return c0, ck


def residue_sums(xi, k) -> tuple:
    """``c0_jm + ck_jm`` in closed form: near the smoothed atom they multiply ``log g`` and
    are ``O(xi)`` while ``c0`` and ``ck`` are ``O(1/k)``, so the sum is not formed by
    subtraction (which would cost ``eps/(k xi)`` relative accuracy in ``E``)."""
    return (
        k - 1,
        k**2 * xi,
        k**3 * xi**2 - k**2 * xi + 2 * k * xi - xi,
        2 * k**2,
        2 * k**3 * xi - k**2 + 2 * k - 1,
    )


class MPIntegrals(eqx.Module):
    """Partial integrals of ``rho_xi`` above (``*_up``: ``int_b^inf``) and below (``*_low``:
    ``int_{-inf}^b``) a level ``b``: ``m_j = int x^j rho``, ``h_j = int x^j H rho``; plus
    ``rho(b)`` and ``H(b)``."""

    m0_up: Float[Array, "..."]
    m1_up: Float[Array, "..."]
    m2_up: Float[Array, "..."]
    h0_up: Float[Array, "..."]
    h1_up: Float[Array, "..."]
    m0_low: Float[Array, "..."]
    m1_low: Float[Array, "..."]
    m2_low: Float[Array, "..."]
    h0_low: Float[Array, "..."]
    h1_low: Float[Array, "..."]
    rho: Float[Array, "..."]
    hilbert: Float[Array, "..."]


def mp_integrals(kappa_star, xi, b) -> MPIntegrals:
    """Exact ``int_b^inf x^j rho_xi`` (``j <= 2``), ``int_b^inf x^j H rho_xi`` (``j <= 1``) and
    their complements below ``b`` for the MP teacher (module docstring; THEORY.md section 6).
    Broadcasts over its arguments; differentiable in all of them."""
    g = mp_boundary_g(kappa_star, xi, b)
    rdt = g.real.dtype
    k = jnp.asarray(kappa_star, rdt)
    xi = jnp.asarray(xi, rdt)
    rat = jnp.stack(rational_parts(g, xi.astype(g.dtype), k.astype(g.dtype))).imag
    c0, ck = (jnp.stack(c) for c in residues(xi, k))
    c_sum = jnp.stack(residue_sums(xi, k))
    im = jnp.abs(jnp.minimum(g.imag, 0.0))
    # arguments on the closed lower half-plane branch, each computed without cancellation
    arg_g = -jnp.arctan2(im, g.real)  # arg g in [-pi, 0]
    arg_minus_g = jnp.arctan2(im, -g.real)  # arg g + pi
    arg_k_minus_g = jnp.arctan2(im, k - g.real)  # arg(g - k) + pi
    arg_one_minus = -jnp.arctan2(im * k / jnp.abs(g) ** 2, 1 - k * g.real / jnp.abs(g) ** 2)
    # near the smoothed atom (|g| > k) the split log(g - k) = log g + log(1 - k/g) is exact
    # where the two logarithms nearly cancel; elsewhere the residues are used as they are
    split = jnp.abs(g) > k
    low_direct = rat + c0 * arg_minus_g + ck * arg_k_minus_g
    low_split = rat + c_sum * arg_minus_g + ck * arg_one_minus
    up_direct = rat + c0 * arg_g + ck * arg_k_minus_g
    up_split = rat + c_sum * arg_g + ck * (arg_one_minus + jnp.pi)
    scale = jnp.asarray([1.0, 1.0, 1.0, 0.5, 0.5], rdt).reshape((5,) + (1,) * g.ndim)
    low = -jnp.where(split, low_split, low_direct) / jnp.pi * scale
    up = jnp.where(split, up_split, up_direct) / jnp.pi * scale
    return MPIntegrals(
        *(up[i] for i in range(5)),
        *(low[i] for i in range(5)),
        rho=jnp.maximum(-g.imag, 0.0) / jnp.pi,
        hilbert=g.real,
    )


def _mass_above_fn(level, args):
    k, xi, mass = args
    i = mp_integrals(k, xi, level)
    return i.m0_up - mass, -i.rho


def mp_level_with_mass_above(kappa_star, xi, mass) -> Array:
    """The level ``omega`` with ``rho_xi([omega, inf)) = mass`` (``0 < mass < 1``), exact mass
    function, bracketed Newton on ``[-2 sqrt(xi), (1 + 1/sqrt(kappa*))^2 + 2 sqrt(xi)]`` (the
    support lies inside: the teacher's spectrum is in ``[0, (1 + 1/sqrt k)^2]`` and the
    semicircle's radius is ``2 sqrt(xi)``); differentiable (implicit function theorem,
    ``d omega = (dM - d_theta mass_above) / rho(omega)``)."""
    k, xi, mass = jnp.broadcast_arrays(*(jnp.asarray(v) for v in (kappa_star, xi, mass)))
    r = 2 * jnp.sqrt(xi)
    lo = -r * (1 + 1e-12) - 1e-300
    hi = (1 + 1 / jnp.sqrt(k)) ** 2 + r * (1 + 1e-12)
    args = (k, xi, mass)
    level = safe_newton(_mass_above_fn, args, lo, hi, increasing=False)
    return newton_polish(_mass_above_fn, args, level, steps=1)
