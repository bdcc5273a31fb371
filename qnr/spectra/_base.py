"""Common interface of the laws ``rho_xi = mu* boxplus semicircle(xi)`` (THEORY.md section 2).

Conventions (THEORY.md section 2):

* Stieltjes transform ``g(z) = int rho(t) / (z - t) dt`` (so ``g(z) ~ 1/z`` and
  ``Im g < 0`` for ``Im z > 0``);
* density ``rho(x) = -Im g(x + i0) / pi`` and Hilbert transform
  ``H(x) = p.v. int rho(t) / (x - t) dt = Re g(x + i0)``.

Every law exposes edge-aware quadrature rules: on each support interval ``[a, c]`` the nodes
are ``x = m + h sin(theta)`` (``m = (a + c)/2``, ``h = (c - a)/2``) with Gauss-Legendre nodes in
``theta in [-pi/2, pi/2]``. Because ``1 + sin(theta) = 2 cos^2(pi/4 - theta/2)`` the square-root
vanishing ``rho ~ sqrt(x - a)`` at a soft edge becomes analytic in ``theta``, and so does an
integrand with a regular (cut) endpoint; the rule converges exponentially in the number of
nodes instead of the ``n^-1.5`` of a plain rule.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Complex, Float

from qnr.spectra._roots import newton_polish, safe_newton

__all__ = ["Support", "Quadrature", "SemicircleConvolution", "theta_rule"]


@functools.lru_cache(maxsize=64)
def _leggauss(n: int):
    t, w = np.polynomial.legendre.leggauss(n)
    return t * (np.pi / 2), w * (np.pi / 2)


def theta_rule(n: int, dtype) -> tuple[Array, Array]:
    """Gauss-Legendre nodes and weights on ``theta in [-pi/2, pi/2]`` (``n`` static)."""
    t, w = _leggauss(int(n))
    return jnp.asarray(t, dtype=dtype), jnp.asarray(w, dtype=dtype)


class Support(eqx.Module):
    """Support of a law as at most ``K`` disjoint intervals ``[lower[j], upper[j]]``, sorted;
    only entries with ``valid[j]`` are intervals (the others hold finite filler values)."""

    lower: Float[Array, " K"]
    upper: Float[Array, " K"]
    valid: Bool[Array, " K"]

    @property
    def left(self) -> Float[Array, ""]:
        """Leftmost edge."""
        return jnp.min(jnp.where(self.valid, self.lower, jnp.inf))

    @property
    def right(self) -> Float[Array, ""]:
        """Rightmost edge."""
        return jnp.max(jnp.where(self.valid, self.upper, -jnp.inf))

    @property
    def num_intervals(self) -> Array:
        return jnp.sum(self.valid)

    def as_list(self) -> list[tuple[float, float]]:
        """Concrete list of ``(lower, upper)`` pairs (outside ``jit`` only)."""
        lo, hi, ok = (np.asarray(a) for a in (self.lower, self.upper, self.valid))
        return [(float(a), float(b)) for a, b, v in zip(lo, hi, ok) if v]


class Quadrature(eqx.Module):
    """A quadrature rule over (part of) the support: ``int f(x) dx ~ sum(weight * f(x))``.

    Also carries the density and Hilbert transform at the nodes, so that integrals of
    ``f(x, rho(x), H(x))`` cost no extra transform evaluations. Nodes of inactive intervals
    carry weight exactly 0 (and finite, in-support values of ``x``, ``rho``, ``hilbert``)."""

    x: Float[Array, " N"]
    rho: Float[Array, " N"]
    hilbert: Float[Array, " N"]
    weight: Float[Array, " N"]

    def integrate(self, f: Callable) -> Array:
        """``int f(x, rho(x), H(x)) dx`` over the rule's domain."""
        vals = f(self.x, self.rho, self.hilbert)
        return jnp.sum(self.weight * vals, axis=-1)


class SemicircleConvolution(eqx.Module):
    """Abstract law ``rho_xi = mu* boxplus semicircle(variance xi)``: the limiting eigenvalue
    law of ``Y = S* + sqrt(xi) G`` (``G`` a GOE matrix normalised to a semicircle on
    ``[-2, 2]``). See the module docstring for conventions."""

    # Concrete subclasses define the fields ``xi`` (JAX scalar) and ``n_nodes`` (static int).

    # ---- abstract -------------------------------------------------------------------------
    @abc.abstractmethod
    def stieltjes(self, z: Complex[Array, "..."]) -> Complex[Array, "..."]:
        """``g(z) = int rho(t)/(z - t) dt`` for ``Im z > 0`` (any shape)."""

    @abc.abstractmethod
    def boundary_values(self, x: Float[Array, "..."]) -> tuple[Array, Array]:
        """``(rho(x), H(x))``: density and Hilbert transform on the real axis (``z = x + i0``)."""

    @abc.abstractmethod
    def support(self) -> Support:
        """Support intervals of ``rho_xi``."""

    @abc.abstractmethod
    def quadrature(self, lower=-jnp.inf) -> Quadrature:
        """Edge-aware rule over ``supp(rho_xi) cap [lower, inf)`` (``lower`` a scalar)."""

    @property
    @abc.abstractmethod
    def mean_teacher(self) -> Array:
        """Mean of the teacher law ``mu*`` (equal to the mean of ``rho_xi``)."""

    @property
    @abc.abstractmethod
    def second_moment_teacher(self) -> Array:
        """``int t^2 dmu*(t)`` (``= Q0``); ``rho_xi`` has second moment ``Q0 + xi``."""

    # ---- derived --------------------------------------------------------------------------
    def density(self, x: Float[Array, "..."]) -> Float[Array, "..."]:
        """``rho_xi(x) = -Im g(x + i0) / pi``."""
        return self.boundary_values(x)[0]

    def hilbert(self, x: Float[Array, "..."]) -> Float[Array, "..."]:
        """``H(x) = p.v. int rho_xi(t)/(x - t) dt = Re g(x + i0)``."""
        return self.boundary_values(x)[1]

    @eqx.filter_jit
    def integrate(self, f: Callable, lower=-jnp.inf) -> Array:
        """``int_{lower}^{inf} f(x, rho(x), H(x)) dx`` over the support, with edge-aware
        quadrature (``f`` is vectorised over nodes; include the factor ``rho`` yourself, e.g.
        ``f = lambda x, r, h: r**3`` gives ``int rho^3 dx``)."""
        return self.quadrature(lower).integrate(f)

    @eqx.filter_jit
    def mass_above(self, level) -> Array:
        """``rho_xi([level, inf))``."""
        return self.integrate(lambda x, r, h: r, level)

    @eqx.filter_jit
    def moment(self, k: int) -> Array:
        """``int x^k rho_xi(x) dx``."""
        return self.integrate(lambda x, r, h: x**k * r)

    @eqx.filter_jit
    def level_with_mass_above(self, mass) -> Array:
        """The level ``omega`` with ``rho_xi([omega, inf)) = mass`` (``0 < mass < 1``);
        differentiable (implicit function theorem: ``d omega = dM / rho(omega)``)."""
        mass = jnp.asarray(mass, dtype=self.xi.dtype)
        sup = self.support()

        def fn(level, args):
            law, m = args
            q = law.quadrature(level)
            r, _ = law.boundary_values(level)
            return q.integrate(lambda x, rr, h: rr) - m, -r

        level = safe_newton(fn, (self, mass), sup.left, sup.right, increasing=False)
        return newton_polish(fn, (self, mass), level, steps=1)
