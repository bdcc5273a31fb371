"""Spectral tools: free convolutions with a semicircle, Stieltjes/Hilbert transforms,
supports, exact spectral integrals and edge-aware quadrature (THEORY.md sections 2 and 6).

Exact integrals (no quadrature; THEORY.md section 6): :func:`mp_integrals` for the MP teacher,
:func:`atomic_integrals` for any discrete teacher (``teacher_atoms``), each returning the
partial moments ``int_b x^j rho`` and ``int_b x^j H rho`` above and below a level ``b``.

The central object is the law ``rho_xi = mu* boxplus semicircle(variance xi)``: the limiting
eigenvalue density of ``Y = S* + sqrt(xi) G`` (``G`` a GOE matrix with semicircle on
``[-2, 2]``), where ``mu*`` is the teacher's spectral law. Build it with::

    law = convolved_law(teacher, xi)          # MP teacher: closed-form cubic (d -> inf)
    law = convolved_law(PowerLaw(1.0), xi, d=500)   # any teacher's d atoms: subordination

Every law (a :class:`SemicircleConvolution`, an immutable ``eqx.Module``: jit-, vmap- and
grad-friendly in ``xi`` and the teacher parameters) provides

* ``law.stieltjes(z)``: ``g(z) = int rho(t)/(z - t) dt`` for ``Im z > 0``;
* ``law.density(x)``, ``law.hilbert(x)``, ``law.boundary_values(x)``: ``rho(x) = -Im g(x+i0)/pi``
  and ``H(x) = Re g(x+i0) = p.v. int rho(t)/(x - t) dt`` on the real axis;
* ``law.support()``: a :class:`Support` (padded arrays of interval edges + mask);
* ``law.quadrature(lower)``: an edge-aware :class:`Quadrature` rule on
  ``supp cap [lower, inf)`` carrying ``x``, ``rho(x)``, ``H(x)`` and weights at its nodes;
* ``law.integrate(f, lower=-inf)``: ``int_lower^inf f(x, rho(x), H(x)) dx`` (put the factor
  ``rho`` in ``f`` yourself: ``int rho^3 dx = law.integrate(lambda x, r, h: r**3)``);
* ``law.mass_above(level)`` = ``rho([level, inf))``, ``law.level_with_mass_above(mass)`` (its
  inverse, differentiable), ``law.moment(k)``.

Conventions: ``g(z) ~ 1/z``; the RIE denoiser of Maillard et al. is
``f(l) = l - 2 xi H(l)`` with these signs.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from qnr._validate import check_positive, check_size, is_concrete
from qnr.spectra._atomic import AtomicConvolution, atomic_law
from qnr.spectra._atomic_exact import (
    atomic_boundary_w,
    atomic_integrals,
    atomic_level_with_mass_above,
    atomic_outer_edges,
)
from qnr.spectra._base import Quadrature, SemicircleConvolution, Support, theta_rule
from qnr.spectra._mp import MPConvolution, mp_edge_quartic
from qnr.spectra._mp_exact import (
    MPIntegrals,
    mp_boundary_g,
    mp_integrals,
    mp_level_with_mass_above,
)
from qnr.teachers import MarchenkoPastur, PowerLaw, Spectrum, Teacher

__all__ = [
    "SemicircleConvolution",
    "MPConvolution",
    "AtomicConvolution",
    "Support",
    "Quadrature",
    "convolved_law",
    "atomic_law",
    "teacher_atoms",
    "mp_edge_quartic",
    "MPIntegrals",
    "mp_boundary_g",
    "mp_integrals",
    "mp_level_with_mass_above",
    "atomic_boundary_w",
    "atomic_integrals",
    "atomic_level_with_mass_above",
    "atomic_outer_edges",
    "theta_rule",
]


def teacher_atoms(teacher: Teacher, d: int | None = None):
    """``(atoms, weights)`` of a teacher's discrete spectral law at size ``d`` (sorted
    ascending; the zero eigenvalues of a rank-deficient power law are merged into one atom).

    ``PowerLaw`` needs ``d``; ``Spectrum`` uses its own values when ``d`` is None. Exact
    duplicates of a concrete spectrum are merged (fewer atoms, same law).
    """
    if isinstance(teacher, MarchenkoPastur):
        raise ValueError(
            "the MP teacher's finite-d spectrum is random: use convolved_law(teacher, xi) for "
            "the d -> inf law, or Spectrum(teacher.eigenvalues(d, key)) for one draw"
        )
    if isinstance(teacher, PowerLaw):
        if d is None:
            raise ValueError("d is required for the power-law teacher (its atoms depend on d)")
        d = check_size("d", d)
        r = teacher.rank(d)
        eig = teacher.eigenvalues(d)[:r][::-1]
        w = jnp.full((r,), 1.0 / d, dtype=eig.dtype)
        if r < d:
            eig = jnp.concatenate([jnp.zeros((1,), eig.dtype), eig])
            w = jnp.concatenate([jnp.full((1,), (d - r) / d, dtype=eig.dtype), w])
        return eig, w
    if isinstance(teacher, Spectrum) and d is None:
        vals = teacher.values[::-1]
    else:
        if d is None:
            raise ValueError("d is required for this teacher")
        vals = jnp.sort(teacher.eigenvalues(check_size("d", d)))
    n = vals.shape[0]
    if is_concrete(vals):
        u, counts = np.unique(np.asarray(vals), return_counts=True)
        if u.shape[0] < n:
            return jnp.asarray(u, vals.dtype), jnp.asarray(counts / n, vals.dtype)
    return vals, jnp.full((n,), 1.0 / n, dtype=vals.dtype)


def convolved_law(
    teacher: Teacher,
    xi,
    d: int | None = None,
    *,
    n_nodes: int | None = None,
    max_intervals: int = 32,
    n_panels: int = 128,
) -> SemicircleConvolution:
    """The law ``rho_xi = mu* boxplus semicircle(xi)`` of ``S* + sqrt(xi) G`` (THEORY.md
    section 2).

    * ``MarchenkoPastur`` teacher (``d`` must be None): the ``d -> inf`` law through the
      closed-form cubic (:class:`MPConvolution`).
    * any other teacher: its ``d`` atoms (``teacher_atoms``) through subordination
      (:class:`AtomicConvolution`); ``Spectrum`` defaults to its own values.

    ``xi > 0``. ``n_nodes``: Gauss nodes per support interval for MP (default 256), per panel
    for atomic laws (default 16); atomic laws use ``n_panels`` panels distributed over at most
    ``max_intervals`` separately-resolved support intervals.
    """
    xi = jnp.asarray(check_positive("xi", xi))
    if isinstance(teacher, MarchenkoPastur):
        if d is not None:
            teacher_atoms(teacher, d)  # raises the explanatory error
        xi = xi.astype(jnp.result_type(xi, teacher.kappa_star, float))
        return MPConvolution(teacher.kappa_star.astype(xi.dtype), xi, n_nodes=n_nodes or 256)
    atoms, weights = teacher_atoms(teacher, d)
    xi = xi.astype(atoms.dtype)
    return AtomicConvolution(
        atoms,
        weights,
        xi,
        n_nodes=n_nodes or 16,
        max_intervals=check_size("max_intervals", max_intervals),
        n_panels=check_size("n_panels", n_panels),
    )
