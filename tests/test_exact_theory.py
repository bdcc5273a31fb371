"""The exact MP engine (THEORY.md section 6) against independent numbers: symbolic
differentiation, adaptive quadrature, 50-digit arithmetic, an independent numpy solver; and the
ERM solver's invariants, branches and implicit derivatives in the hard regimes."""

import pathlib
import sys
import warnings

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
from _fd import central_difference
from scipy import integrate

import qnr
from qnr.spectra import mp_integrals
from qnr.theory.erm import (
    BRANCH_GENERAL,
    BRANCH_PERFECT,
    ERMProblem,
    erm_problem_grid,
    solve_erm,
    solve_erm_grid,
)
from qnr.theory.thresholds import strong_recovery

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import numpy_replica  # noqa: E402  (independent numpy implementation, no qnr import)

solve = jax.jit(solve_erm)


# --------------------------------------------------------------------------- independent law
def _roots(x, xi, k):
    return np.roots([xi, -(x + k * xi), 1 - k + k * x, -k]).astype(complex)


def _rho_h(x, xi, k):
    """Density and Hilbert transform from np.roots of the cubic (the root with Im g < 0)."""
    r = _roots(x, xi, k)
    g = r[np.argmin(r.imag)]
    return max(-g.imag, 0.0) / np.pi, g.real


def _edges(xi, k):
    """Support edges: real roots of the edge quartic (THEORY.md section 2), plus the real parts
    of near-real complex pairs (near-cusps) as extra quadrature breakpoints."""
    s = xi
    c = [
        k**2,
        -2 * k - 2 * k**2 - 2 * k**3 * s,
        1 - 2 * k + k**2 - 2 * k**2 * s + 8 * k**3 * s + k**4 * s**2,
        8 * k * s + 2 * k**2 * s - 10 * k**3 * s + 8 * k**3 * s**2 - 2 * k**4 * s**2,
        -4 * s
        + 12 * k * s
        - 12 * k**2 * s
        + 4 * k**3 * s
        - 8 * k**2 * s**2
        - 20 * k**3 * s**2
        + k**4 * s**2
        - 4 * k**4 * s**3,
    ]
    e = np.roots(c)
    real = np.sort(e[np.abs(e.imag) < 1e-6 * (1 + np.abs(e))].real)
    near = np.sort(e[np.abs(e.imag) < 0.2 * (1 + np.abs(e))].real)
    return real, near


def _quad(f, lo, hi, points):
    pts = [p for p in points if lo < p < hi]
    val, _ = integrate.quad(f, lo, hi, points=pts or None, epsabs=0, epsrel=1e-13, limit=2000)
    return val


def _quad_integrals(b, xi, k):
    real, near = _edges(xi, k)
    lo, hi = max(b, real[0]), real[-1]
    if lo >= hi:
        return np.zeros(5)
    fs = [
        lambda x: _rho_h(x, xi, k)[0],
        lambda x: x * _rho_h(x, xi, k)[0],
        lambda x: x * x * _rho_h(x, xi, k)[0],
        lambda x: np.prod(_rho_h(x, xi, k)),
        lambda x: x * np.prod(_rho_h(x, xi, k)),
    ]
    return np.array([_quad(f, lo, hi, list(real) + list(near)) for f in fs])


# --------------------------------------------------------------------------- antiderivatives
def test_antiderivatives_by_symbolic_differentiation():
    """d/dg A_jm(g) = x(g)^j g^m x'(g), with x(g) = xi g + 1/g - k/(g - k) (section 6)."""
    sp = pytest.importorskip("sympy")
    g, xi, k = sp.symbols("g xi k", positive=True)
    x = xi * g + 1 / g - k / (g - k)

    from qnr.spectra._mp_exact import rational_parts, residues

    parts = rational_parts(g, xi, k)
    c0s, cks = residues(xi, k)
    for i, (j, m) in enumerate([(0, 1), (1, 1), (2, 1), (0, 2), (1, 2)]):
        A = parts[i] + c0s[i] * sp.log(g) + cks[i] * sp.log(g - k)
        assert sp.simplify(sp.diff(A, g) - x**j * g**m * sp.diff(x, g)) == 0, (j, m)


# --------------------------------------------------------------------------- vs quadrature
def _random_points(n, seed):
    rng = np.random.default_rng(seed)
    pts = []
    xis = [1e-10, 1e-6, 1e-3, 1.0, 1e3]
    for i in range(n):
        k = float(10 ** rng.uniform(-1.3, 0.45))
        xi = xis[i % len(xis)] * float(10 ** rng.uniform(-0.3, 0.3))
        real, _ = _edges(xi, k)
        b = float(rng.uniform(real[0], real[-1]))
        pts.append((k, xi, b))
    # just after the smoothed atom has merged with the bulk (kappa* 0.5: xi ~ 0.04-0.1)
    for xi in (0.045, 0.06, 0.08):
        real, _ = _edges(xi, 0.5)
        pts.append((0.5, xi, 0.3 * real[0] + 0.7 * real[-1]))
        pts.append((0.5, xi, 0.05))
    return pts


@pytest.mark.parametrize("chunk", range(3))
def test_integrals_match_adaptive_quadrature(chunk):
    """Exact partial integrals above b vs scipy quad (epsrel 1e-13, edges and near-cusps as
    breakpoints; density from np.roots), 56 points over xi in {1e-10, ..., 1e3}."""
    pts = _random_points(50, seed=7)[chunk::3]
    k, xi, b = (jnp.asarray(v) for v in zip(*pts, strict=True))
    ex = mp_integrals(k, xi, b)
    got = np.stack([np.asarray(v) for v in (ex.m0_up, ex.m1_up, ex.m2_up, ex.h0_up, ex.h1_up)])
    worst = 0.0
    for j, (kk, xx, bb) in enumerate(pts):
        ref = _quad_integrals(bb, xx, kk)
        # relative to the integral of |integrand| (h0 can vanish by symmetry)
        scale = np.maximum(np.abs(ref), 1e-3 * np.max(np.abs(ref)))
        err = np.max(np.abs(got[:, j] - ref) / scale)
        worst = max(worst, err)
        assert err < 1e-9, (kk, xx, bb, got[:, j], ref)
    assert worst < 1e-9


def test_integrals_complements_sum_to_totals():
    """up + low = the totals 1, 1, Q0 + xi, 0, 1/2 (exact identities of the law)."""
    rng = np.random.default_rng(3)
    k = jnp.asarray(10 ** rng.uniform(-1.3, 0.5, 200))
    xi = jnp.asarray(10 ** rng.uniform(-10, 5, 200))
    b = jnp.asarray(rng.uniform(-1, 1, 200)) * (1 + 3 * jnp.sqrt(xi)) + 2 * rng.uniform(0, 1)
    i = mp_integrals(k, xi, b)
    tot = [1.0, 1.0, 1 + 1 / k + xi, 0.0, 0.5]
    ups = [i.m0_up, i.m1_up, i.m2_up, i.h0_up, i.h1_up]
    lows = [i.m0_low, i.m1_low, i.m2_low, i.h0_low, i.h1_low]
    for u, lo, t in zip(ups, lows, tot, strict=True):
        err = np.abs(np.asarray(u + lo - t)) / (1 + np.abs(np.asarray(t)))
        assert np.max(err) < 1e-9, np.max(err)
    assert bool(jnp.all((i.m0_up >= -1e-12) & (i.m0_up <= 1 + 1e-12)))


# --------------------------------------------------------------------------- small xi
def _E_mpmath(k, xi, tau):
    """E(tau, xi) = Q0 + int_tau (tau^2 - x^2) rho + 4 xi int_tau (x - tau) H rho by 40-digit
    adaptive quadrature of the density from mpmath polyroots (independent of the engine)."""
    mp.mp.dps = 40
    k, xi, tau = mp.mpf(k), mp.mpf(xi), mp.mpf(tau)

    def g_of(x):
        r = mp.polyroots([xi, -(x + k * xi), 1 - k + k * x, -k], maxsteps=200, extraprec=100)
        return min((mp.mpc(z) for z in r), key=lambda z: z.imag)

    real, _ = _edges(float(xi), float(k))
    hi = mp.mpf(real[-1])
    # the smoothed atom [l0, r0] (semicircle of radius ~2 sqrt(xi (1-k))) and the bulk
    pieces = [tau] + [mp.mpf(e) for e in real if float(tau) < e < float(hi)] + [hi]

    def f(x):
        g = g_of(x)
        rho = max(-g.imag, 0) / mp.pi
        return (tau**2 - x**2) * rho + 4 * xi * (x - tau) * g.real * rho

    return 1 + 1 / k + mp.quad(f, pieces)


@pytest.mark.slow
@pytest.mark.parametrize("xi, s", [(1e-6, 1.0), (1e-10, 0.6)])
def test_E_relative_accuracy_at_small_xi(xi, s):
    """Near perfect recovery E = O(xi) (the O(1) terms cancel): the cancellation-free form keeps
    relative accuracy (THEORY.md section 6), checked against 40-digit quadrature."""
    k = 0.3
    tau = s * np.sqrt(xi)
    t = qnr.theory.erm_terms(qnr.MarchenkoPastur(k), xi, tau)
    ref = float(_E_mpmath(k, xi, tau))
    assert 0 < ref < 10 * xi
    np.testing.assert_allclose(float(t.E), ref, rtol=1e-8)


# --------------------------------------------------------------------------- solver
def test_grid_matches_independent_numpy_solver():
    """A 16 x 16 (alpha, kappa*) grid at (lam 0.05, Delta 0.1): qnr vs the vectorised numpy
    closed-form solver in benchmarks/numpy_replica.py (written without qnr)."""
    a, ks = np.meshgrid(np.geomspace(0.01, 1.5, 16), np.geomspace(0.05, 3, 16), indexing="ij")
    probs, shape = erm_problem_grid(a, kappa_star=ks, lam=0.05, Delta=0.1)
    sol = solve_erm_grid(probs)
    ref = numpy_replica.solve(a.ravel(), ks.ravel(), np.full(a.size, 0.05), np.full(a.size, 0.1))
    assert bool(jnp.all(sol.converged)) and np.all(ref["converged"])
    assert int(jnp.max(sol.stats["num_steps"])) <= 15
    for name in ("xi", "tau", "E", "rank", "e_train"):
        np.testing.assert_allclose(np.asarray(getattr(sol, name)), ref[name], rtol=1e-8)


def _broad_grid(n, seed):
    rng = np.random.default_rng(seed)
    alpha = 10 ** rng.uniform(-4, np.log10(20), n)
    lam = np.where(rng.random(n) < 0.25, 0.0, 10 ** rng.uniform(-4, 2, n))
    Delta = np.where(rng.random(n) < 0.25, 0.0, 10 ** rng.uniform(-4, 3, n))
    ks = 10 ** rng.uniform(np.log10(0.02), np.log10(3), n)
    kmin = np.asarray(strong_recovery(np.minimum(ks, 0.99)).kappa_min)
    choice = rng.integers(0, 3, n)
    kappa = np.where(choice == 0, np.inf, np.where(choice == 1, 0.8 * kmin, 1.2 * kmin))
    kappa = np.where(ks >= 1, np.where(choice == 0, np.inf, 0.8 + 0.4 * (choice == 2)), kappa)
    return alpha, lam, Delta, ks, kappa


@pytest.mark.slow
def test_broad_grid_never_silently_wrong():
    """6-d broad grid (alpha 1e-4..20, lam 0..100, Delta 0..1000, kappa* 0.02..3,
    kappa in {inf, 0.8 kappa_min, 1.2 kappa_min}): every success satisfies its invariants
    (E >= 0, 0 <= rank <= min(1, kappa), residual <= 1e-8, e_test = (E + Delta/2)/2); the
    failures are flagged with a code and NaN."""
    alpha, lam, Delta, ks, kappa = _broad_grid(256, seed=11)
    probs, _ = erm_problem_grid(alpha, kappa_star=ks, lam=lam, Delta=Delta, kappa=kappa)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the failure count is asserted below
        sol = solve_erm_grid(probs)
    ok = np.asarray(sol.converged)
    E, rank = np.asarray(sol.E), np.asarray(sol.rank)
    assert np.all(E[ok] >= 0)
    assert np.all((rank[ok] >= -1e-10) & (rank[ok] <= np.minimum(1, kappa[ok]) + 1e-10))
    assert np.all(np.asarray(sol.stats["residual"])[ok] <= 1e-8)
    np.testing.assert_allclose(np.asarray(sol.e_test)[ok], (E[ok] + Delta[ok] / 2) / 2, rtol=1e-7)
    assert np.all(np.isnan(E[~ok]))
    assert ok.mean() >= 0.95, f"{(~ok).sum()} failures"


def test_perfect_recovery_branch_and_continuity():
    """Noiseless lam = 0 above alpha_SR: xi = E = 0 exactly (a solution, branch PERFECT);
    lam -> 0+ there: E -> 0 continuously; below alpha_SR: E(lam) -> E(lam = 0) > 0."""
    a_sr = float(strong_recovery(0.5).alpha_SR)
    above, below = a_sr + 0.05, a_sr - 0.1
    sol = solve(ERMProblem(above, kappa_star=0.5, lam=0.0))
    assert bool(sol.converged) and int(sol.branch) == BRANCH_PERFECT
    assert float(sol.E) == 0.0 and float(sol.xi) == 0.0
    assert float(sol.rank) == 0.5
    Es = [float(solve(ERMProblem(above, kappa_star=0.5, lam=lam)).E) for lam in (1e-2, 1e-3, 1e-4)]
    assert Es[0] > Es[1] > Es[2] > 0 and Es[2] < 1e-5
    E0 = float(solve(ERMProblem(below, kappa_star=0.5, lam=0.0)).E)
    Elam = float(solve(ERMProblem(below, kappa_star=0.5, lam=1e-6)).E)
    assert E0 > 0.05
    np.testing.assert_allclose(Elam, E0, rtol=1e-4)
    # Delta -> 0+ at lam = 0 below alpha_SR is continuous too
    Ed = float(solve(ERMProblem(below, kappa_star=0.5, lam=0.0, Delta=1e-8)).E)
    np.testing.assert_allclose(Ed, E0, rtol=1e-4)


def test_small_xi_near_strong_recovery_converges():
    """Noiseless, lam = 0, just below alpha_SR: xi -> 0 (here ~1e-7) and E > 0 relative-exact;
    the rank tends to kappa_min."""
    sr = strong_recovery(0.5)
    a = float(sr.alpha_SR) * (1 - 1e-3)
    sol = solve(ERMProblem(a, kappa_star=0.5, lam=0.0))
    assert bool(sol.converged) and int(sol.branch) == BRANCH_GENERAL
    assert 0 < float(sol.xi) < 1e-4 and float(sol.E) > 0
    np.testing.assert_allclose(float(sol.rank), float(sr.kappa_min), atol=5e-3)


@pytest.mark.parametrize(
    "point",
    [
        dict(alpha=0.3, kappa_star=0.5, lam=0.05, Delta=0.1),  # general
        dict(alpha=0.35, kappa_star=0.5, lam=1e-4, Delta=0.0),  # small xi (~1e-8)
        dict(alpha=0.4, kappa_star=0.3, lam=0.02, Delta=0.05, kappa=0.45),  # rank-constrained
    ],
)
def test_implicit_gradients_match_finite_differences(point):
    """Jacobian of (E, rank, xi) w.r.t. (alpha, lam, kappa*) through the implicit function
    theorem (jax.jacfwd) vs central finite differences (float64), one compiled program each."""
    base = dict(point)
    names = ("alpha", "lam", "kappa_star")
    theta0 = jnp.asarray([base[n] for n in names], jnp.float64)
    extra = {k: v for k, v in base.items() if k not in names}

    def outputs(theta):
        p = ERMProblem(
            theta[0],
            kappa_star=theta[2],
            lam=theta[1],
            rank_constrained="kappa" in extra,
            lam_zero=False,
            **extra,
        )
        sol = solve_erm(p)
        return jnp.stack([sol.E, sol.rank, sol.xi])

    jac = np.asarray(jax.jit(jax.jacfwd(outputs))(theta0))
    fd = np.asarray(central_difference(outputs, theta0, 1e-5 * theta0, vectorize=True))
    assert np.all(np.isfinite(jac))
    np.testing.assert_allclose(jac, fd, rtol=2e-4, atol=1e-7 * np.max(np.abs(fd)))
