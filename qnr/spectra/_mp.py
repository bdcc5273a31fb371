"""Marchenko-Pastur teacher convolved with a semicircle: closed-form cubic (THEORY.md section 2).

The teacher law is Marchenko-Pastur with mean 1 and variance ``1/kappa*`` (atom ``1 - kappa*``
at 0 when ``kappa* < 1``); its Stieltjes transform solves ``z G^2 - (1 - k + k z) G + k = 0``
(``k = kappa*``). Subordination ``g(z) = G(z - xi g(z))`` turns this into the cubic

    ``xi g^3 - (z + k xi) g^2 + (1 - k + k z) g - k = 0``,

whose discriminant in ``g`` is the quartic in ``x`` of THEORY.md whose real roots are the
candidate support edges. On the support the cubic has one complex-conjugate pair and
``g(x + i0)`` is its member with ``Im g < 0``; this is the "largest ``|Im|``" root, picked
exactly at ``z = x + i0`` by the root structure (no finite ``epsilon``).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from qnr.spectra._base import Quadrature, SemicircleConvolution, Support, theta_rule
from qnr.spectra._roots import cubic_roots, newton_polish, polynomial_roots

__all__ = ["MPConvolution", "mp_edge_quartic"]


def mp_edge_quartic(kappa_star, xi) -> Float[Array, "5"]:
    """Coefficients (highest degree first) of the edge quartic of THEORY.md section 2."""
    k, s = kappa_star, xi
    c4 = k**2
    c3 = -2 * k - 2 * k**2 - 2 * k**3 * s
    c2 = 1 - 2 * k + k**2 - 2 * k**2 * s + 8 * k**3 * s + k**4 * s**2
    c1 = 8 * k * s + 2 * k**2 * s - 10 * k**3 * s + 8 * k**3 * s**2 - 2 * k**4 * s**2
    c0 = (
        -4 * s
        + 12 * k * s
        - 12 * k**2 * s
        + 4 * k**3 * s
        - 8 * k**2 * s**2
        - 20 * k**3 * s**2
        + k**4 * s**2
        - 4 * k**4 * s**3
    )
    return jnp.stack([c4, c3, c2, c1, c0])


def _quartic_fn(x, c):
    p = (((c[0] * x + c[1]) * x + c[2]) * x + c[3]) * x + c[4]
    dp = ((4 * c[0] * x + 3 * c[1]) * x + 2 * c[2]) * x + c[3]
    return p, dp


class MPConvolution(SemicircleConvolution):
    """``rho_xi = MP(kappa*) boxplus semicircle(xi)`` via the closed-form cubic.

    Differentiable in ``xi`` and ``kappa_star`` (both JAX scalars; vmappable). ``n_nodes``
    (static) is the number of quadrature nodes per support interval (at most 3 intervals:
    the bulk and, for ``kappa* < 1`` and small ``xi``, the smoothed atom at 0).
    """

    kappa_star: Float[Array, ""]
    xi: Float[Array, ""]
    n_nodes: int = eqx.field(static=True, default=256)

    # ---- cubic ------------------------------------------------------------------------------
    def _cubic(self, z):
        z = jnp.asarray(z)
        k, s = (jnp.asarray(v).astype(z.dtype) for v in (self.kappa_star, self.xi))
        return cubic_roots(s, -(z + k * s), 1 - k + k * z, -k)

    def _on_support(self, x):
        """``(rho, H)`` from the root with the most negative imaginary part (exact on the
        support; ``rho`` is ``0`` up to rounding off the support)."""
        roots = self._cubic(x)
        idx = jnp.argmin(roots.imag, axis=-1)
        g = jnp.take_along_axis(roots, idx[..., None], axis=-1)[..., 0]
        return jnp.maximum(-g.imag, 0) / jnp.pi, g.real, roots

    @property
    def mean_teacher(self):
        return jnp.ones_like(self.xi)

    @property
    def second_moment_teacher(self):
        return 1 + 1 / self.kappa_star

    # ---- support ----------------------------------------------------------------------------
    @eqx.filter_jit
    def support(self) -> Support:
        k, s = self.kappa_star, self.xi
        coeffs = mp_edge_quartic(k, s)
        r = polynomial_roots(coeffs)
        is_real = jnp.abs(r.imag) <= 1e-7 * (1 + jnp.abs(r))
        e = jnp.sort(jnp.where(is_real, r.real, jnp.inf))
        finite = jnp.isfinite(e)
        e_safe = jnp.where(finite, e, 0.0)
        e_pol = newton_polish(_quartic_fn, coeffs, e_safe)
        e = jnp.where(finite, e_pol, jnp.inf)
        lo, hi = e[:-1], e[1:]
        ok = jnp.isfinite(lo) & jnp.isfinite(hi)
        mid = jnp.where(ok, (lo + hi) / 2, 0.0)
        # cubic discriminant at the midpoint: < 0 <=> one complex pair <=> inside the support
        a, b, c, d = s, -(mid + k * s), 1 - k + k * mid, -k
        disc = 18 * a * b * c * d - 4 * b**3 * d + b**2 * c**2 - 4 * a * c**3 - 27 * a**2 * d**2
        valid = ok & (disc < 0) & (hi > lo)
        j0 = jnp.argmax(valid)
        lo = jnp.where(valid, lo, lo[j0])
        hi = jnp.where(valid, hi, hi[j0])
        return Support(lo, hi, valid)

    # ---- quadrature -------------------------------------------------------------------------
    @eqx.filter_jit
    def quadrature(self, lower=-jnp.inf) -> Quadrature:
        sup = self.support()
        lower = jnp.asarray(lower, dtype=self.xi.dtype)
        a = jnp.maximum(sup.lower, lower)
        active = sup.valid & (sup.upper > a)
        j0 = jnp.argmax(sup.valid)
        a = jnp.where(active, a, sup.lower[j0])
        c = jnp.where(active, sup.upper, sup.upper[j0])
        theta, w = theta_rule(self.n_nodes, self.xi.dtype)
        mid, half = (a + c) / 2, (c - a) / 2
        x = mid[:, None] + half[:, None] * jnp.sin(theta)
        wt = jnp.where(active[:, None], half[:, None] * (w * jnp.cos(theta)), 0.0)
        rho, h, _ = self._on_support(x)
        return Quadrature(x.ravel(), rho.ravel(), h.ravel(), wt.ravel())

    # ---- transforms -------------------------------------------------------------------------
    def _reference(self, z):
        """``sum_k w_k rho(t_k)/(z - t_k)``: a quadrature estimate of ``g(z)`` used only to
        pick the physical root where the root structure alone cannot (off the support)."""
        q = self.quadrature()
        zz = jnp.asarray(z)[..., None]
        return jnp.sum((q.weight * q.rho).astype(zz.dtype) / (zz - q.x.astype(zz.dtype)), axis=-1)

    @eqx.filter_jit
    def stieltjes(self, z):
        z = jnp.asarray(z)
        roots = self._cubic(z)
        ref = self._reference(z)
        idx = jnp.argmin(jnp.abs(roots - ref[..., None]), axis=-1)
        return jnp.take_along_axis(roots, idx[..., None], axis=-1)[..., 0]

    @eqx.filter_jit
    def boundary_values(self, x):
        x = jnp.asarray(x, dtype=self.xi.dtype)
        rho, h, roots = self._on_support(x)
        inside = rho > 1e-12 * (1 + jnp.abs(h))
        ref = self._reference(x).real
        real_roots = jnp.where(
            jnp.abs(roots.imag) <= 1e-8 * (1 + jnp.abs(roots)), roots.real, jnp.inf
        )
        idx = jnp.argmin(jnp.abs(real_roots - ref[..., None]), axis=-1)
        h_out = jnp.take_along_axis(roots.real, idx[..., None], axis=-1)[..., 0]
        return jnp.where(inside, rho, 0.0), jnp.where(inside, h, h_out)
