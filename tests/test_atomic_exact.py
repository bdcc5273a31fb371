"""Exact spectral integrals for discrete teachers (qnr.spectra.atomic_integrals, THEORY.md
section 6) against an independent reference: the density from numpy polynomial roots of the
subordination equation and scipy's adaptive quadrature (tests/_atomic_reference.py)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _atomic_reference import Reference

from qnr.spectra import (
    atomic_boundary_w,
    atomic_integrals,
    atomic_level_with_mass_above,
    atomic_outer_edges,
    teacher_atoms,
)
from qnr.teachers import PowerLaw
from qnr.theory import ERMProblem, erm_terms, solve_erm

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")

FIELDS = ("m0", "m1", "m2", "h0", "h1")

# a zero atom (rank-deficient teacher), two close atoms, an isolated top atom
ATOMS = np.array([0.0, 0.7, 1.0, 2.5])
WEIGHTS = np.array([0.3, 0.2, 0.1, 0.4])


@jax.jit
def _integrals(t, p, xi, b):
    i = atomic_integrals(t, p, xi, b)
    up = jnp.stack([getattr(i, f + "_up") for f in FIELDS], axis=-1)
    low = jnp.stack([getattr(i, f + "_low") for f in FIELDS], axis=-1)
    return up, low, i.rho


def _levels(xi):
    """Below the support, inside the smoothed zero atom, in the gap / bulk, inside the atom
    at 1, just inside the top atom's lower part."""
    s = np.sqrt(xi)
    return np.array(
        [-1.0, 0.5 * s * np.sqrt(0.3), 0.85, 1.0 + 0.3 * s * np.sqrt(0.1), 2.5 - s * np.sqrt(0.4)]
    )


@pytest.mark.parametrize("xi", [1e-10, 1e-6, 1e-3, 1.0, 1e3])
def test_integrals_match_adaptive_quadrature(xi):
    ref = Reference(ATOMS, WEIGHTS, xi)
    bs = _levels(xi)
    up, low, _ = (np.asarray(a) for a in _integrals(ATOMS, WEIGHTS, xi, bs))
    refs = [(ref.integrals(b, "up"), ref.integrals(b, "low")) for b in bs]
    # h0 has total 0: compare it on the scale of |h0| over the levels
    h0_scale = max(abs(ru[3]) + abs(rl[3]) for ru, rl in refs)
    for n, b in enumerate(bs):
        ru, rl = refs[n]
        for j in range(5):
            for got, want in ((up[n, j], ru[j]), (low[n, j], rl[j])):
                tol = 1e-9 * (abs(want) if j != 3 else h0_scale) + 1e-300
                assert abs(got - want) <= tol, (xi, b, FIELDS[j], got, want)


@pytest.mark.parametrize("xi, s", [(1e-10, 0.5), (1e-8, 1.3), (1e-6, 0.2)])
def test_E_relative_accuracy_at_small_xi(xi, s):
    """Near perfect recovery ``E = O(xi)``; the lower form keeps relative accuracy (the
    reference's lower integrals are computed directly by quadrature)."""
    tau = s * np.sqrt(xi)
    ref = Reference(ATOMS, WEIGHTS, xi)
    ru, rl = ref.integrals(tau, "up"), ref.integrals(tau, "low")
    E_ref = xi + tau**2 * ru[0] + rl[2] - 4 * xi * (rl[4] - tau * rl[3])
    up, low, _ = (np.asarray(a) for a in _integrals(ATOMS, WEIGHTS, xi, tau))
    E = xi + tau**2 * up[0] + low[2] - 4 * xi * (low[4] - tau * low[3])
    assert 0 < E < 10 * xi
    np.testing.assert_allclose(E, E_ref, rtol=1e-9)


def test_two_atoms_in_gap_is_exact_and_rho_matches():
    """In a gap ``w_b`` is real and the integral above is the sum of the coefficients of the
    atoms above: at small ``xi`` the mass above is exactly the teacher's."""
    t, p = np.array([0.5, 3.0]), np.array([0.25, 0.75])
    up, low, rho = _integrals(t, p, 1e-4, jnp.asarray([1.7, 0.5]))
    np.testing.assert_allclose(np.asarray(up[0, 0]), 0.75, rtol=1e-15)
    # coefficient of log(w - 3): p t^2 + xi (p^2 + 2 p t gamma) + xi^2 (p^2 gamma' + p gamma^2)
    gam, gam1 = 0.25 / 2.5, -0.25 / 2.5**2
    c = 0.75 * 9 + 1e-4 * (0.75**2 + 2 * 0.75 * 3 * gam) + 1e-8 * (0.75**2 * gam1 + 0.75 * gam**2)
    np.testing.assert_allclose(np.asarray(up[0, 2]), c, rtol=1e-14)
    assert float(rho[0]) == 0.0
    ref = Reference(t, p, 1e-4)
    r, _ = ref.rho_h(0, 0.0)
    np.testing.assert_allclose(float(rho[1]), r, rtol=1e-12)
    w = complex(atomic_boundary_w(t, p, 1e-4, 0.5))
    np.testing.assert_allclose(w + 1e-4 * np.sum(p / (w - t)), 0.5, atol=1e-15)


@pytest.fixture(scope="module")
def power_law():
    t, p = teacher_atoms(PowerLaw(1.5, 1.0), 400)
    return t, p


@pytest.mark.parametrize("xi", [1e-10, 1e-7, 1e-3, 1.0])
def test_power_law_totals_and_monotone_mass(power_law, xi):
    """d = 400 atoms: up + low equal the closed-form totals ``1, mu_1, Q0 + xi, 0, 1/2`` at every
    level (in gaps, inside merged intervals, below and above); the mass above decreases."""
    t, p = power_law
    bs = jnp.asarray(np.concatenate([[-10.0, 30.0], np.geomspace(1e-3, 20, 40)]))
    up, low, rho = (np.asarray(a) for a in _integrals(t, p, xi, bs))
    tot = np.array([1.0, float(jnp.sum(p * t)), float(jnp.sum(p * t * t)) + xi, 0.0, 0.5])
    np.testing.assert_allclose(up + low, np.broadcast_to(tot, up.shape), rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(up[0], tot, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(low[1], tot, rtol=1e-11, atol=1e-11)
    m = up[2:, 0]
    assert np.all(np.diff(m) <= 1e-15) and np.all(rho >= 0)
    if xi <= 1e-7:  # the top atoms are isolated: the mass above a gap is k/400 exactly
        k = np.sum(np.asarray(t) > np.asarray(bs)[2:, None], axis=1)
        iso = np.asarray(rho[2:]) == 0
        np.testing.assert_allclose(m[iso], k[iso] / 400, rtol=1e-12, atol=1e-15)


def test_level_with_mass_above_and_edges(power_law):
    t, p = power_law
    xi, mass = (jnp.asarray(v) for v in np.meshgrid([1e-7, 1e-3, 1.0], [0.05, 0.3, 0.9]))
    om = jax.jit(jax.vmap(atomic_level_with_mass_above, (None, None, 0, 0)))(
        t, p, xi.ravel(), mass.ravel()
    )
    up = jax.jit(jax.vmap(lambda x, b: _integrals(t, p, x, b)[0]))(xi.ravel(), om)
    np.testing.assert_allclose(np.asarray(up[:, 0]), np.asarray(mass.ravel()), rtol=1e-12)
    lo, hi = atomic_outer_edges(ATOMS, WEIGHTS, 1.0)
    up, low, rho = _integrals(ATOMS, WEIGHTS, 1.0, jnp.asarray([lo, hi]))
    np.testing.assert_allclose(np.asarray(up[:, 0]), [1.0, 0.0], atol=1e-14)
    np.testing.assert_allclose(np.asarray(rho), 0.0, atol=1e-6)


def test_semicircle_limit_at_large_xi():
    """``xi -> inf``: ``rho_xi`` is a semicircle of variance ``xi`` around the teacher's mean,
    up to ``O(Var mu*/xi)``: section 3's ``m0(s)``, ``s = (b - mu_1)/sqrt(xi)``."""
    xi = 1e6
    mu1 = float(np.sum(ATOMS * WEIGHTS))
    s = np.array([-1.9, -0.7, 0.0, 0.4, 1.5])
    up, _, _ = _integrals(ATOMS, WEIGHTS, xi, mu1 + s * np.sqrt(xi))
    m0 = 0.5 - s * np.sqrt(4 - s**2) / (4 * np.pi) - np.arcsin(s / 2) / np.pi
    np.testing.assert_allclose(np.asarray(up[:, 0]), m0, rtol=1e-5, atol=1e-6)


def test_gradients_match_finite_differences():
    t, p = jnp.asarray(ATOMS), jnp.asarray(WEIGHTS)

    def f(xi, b, t1):
        tt = t.at[1].set(t1)
        i = atomic_integrals(tt, p, xi, b)
        return jnp.stack([i.m0_up, i.m2_low, i.h1_up, i.h0_low])

    def both(xi, b, t1):
        return f(xi, b, t1), jax.jacfwd(f, argnums=(0, 1, 2))(xi, b, t1)

    # one compiled program for all points and both directions of the differences
    both = jax.jit(jax.vmap(both))
    pts = [(1e-3, 0.72), (0.3, 0.5), (1e-6, 1.0002e0), (2.0, 4.0)]
    hs = [1e-5, 1e-7, 1e-7]
    xi0, b0 = (np.array(v) for v in zip(*pts))
    args = [xi0, b0, np.full(4, 0.7)]
    _, J = both(*(jnp.asarray(a) for a in args))
    shifted = []
    for n in range(3):
        for sgn in (1, -1):
            a = [v.copy() for v in args]
            a[n] = a[n] + sgn * hs[n] * (xi0 if n == 0 else np.ones(4))
            shifted.append(a)
    stacked = [jnp.asarray(np.concatenate([a[m] for a in shifted])) for m in range(3)]
    vals, _ = both(*stacked)
    vals = np.asarray(vals).reshape(6, 4, 4)
    for n in range(3):
        fd = (vals[2 * n] - vals[2 * n + 1]) / (2 * hs[n] * (xi0 if n == 0 else np.ones(4)))[
            :, None
        ]
        Jn = np.asarray(J[n])
        for i in range(4):
            np.testing.assert_allclose(Jn[i], fd[i], rtol=2e-5, atol=1e-6 * np.max(np.abs(fd[i])))
    # the rank level's implicit derivative in xi
    lv = jax.jit(jax.value_and_grad(lambda xi: atomic_level_with_mass_above(t, p, xi, 0.5)))
    _, g = lv(0.2)
    h = 1e-6
    fd = (lv(0.2 + h)[0] - lv(0.2 - h)[0]) / (2 * h)
    np.testing.assert_allclose(float(g), float(fd), rtol=1e-6)


def test_power_law_erm_small_xi_is_solved_exactly(key):
    """The published failure (power law, d = 400, Delta 0.5, lam 1.2e-3, alpha large, xi ~
    1e-7: quadrature answers E < 0 or 22x too large, or 'unresolved'): now a solution with
    E >= 0 and its own residual, matching a Monte-Carlo of the effective denoiser
    ``(S* + sqrt(xi) G - tau)_+`` at the same ``(xi, tau)``."""
    problem = ERMProblem(2.5e6, PowerLaw(2.0), lam=1.2e-3, Delta=0.5, d=400)
    sol = eqx.filter_jit(solve_erm)(problem)
    assert bool(sol.converged)
    xi, tau, E = float(sol.xi), float(sol.tau), float(sol.E)
    assert 1e-8 < xi < 1e-6 and E > 0 and 0 < float(sol.rank) < 1
    np.testing.assert_allclose(2 * 2.5e6 * xi, E + 0.25, rtol=1e-8)
    t, _ = teacher_atoms(PowerLaw(2.0), 400)
    eig = np.repeat(np.asarray(t), 2)
    n = eig.size
    A = np.asarray(jax.random.normal(key, (n, n)))
    Y = np.diag(eig) + np.sqrt(xi) * (A + A.T) / np.sqrt(2 * n)
    lam_, V = np.linalg.eigh(Y)
    Sh = (V * np.maximum(lam_ - tau, 0)) @ V.T
    E_mc = np.sum((Sh - np.diag(eig)) ** 2) / n
    np.testing.assert_allclose(E, E_mc, rtol=3e-3)
    # erm_terms agrees with the solution (same exact integrals)
    terms = erm_terms(PowerLaw(2.0), xi, tau, d=400)
    np.testing.assert_allclose(float(terms.E), E, rtol=1e-10)
