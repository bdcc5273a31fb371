"""qnr.theory.erm: ERM replica fixed point (THEORY.md section 2)."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fd import central_difference

import qnr
from qnr.cli import main
from qnr.spectra import convolved_law
from qnr.teachers import MarchenkoPastur, PowerLaw, Spectrum
from qnr.theory.erm import (
    BRANCH_GENERAL,
    BRANCH_TAU_ZERO,
    ERMProblem,
    ERMSolver,
    LearnedSpectrum,
    erm_D,
    erm_E,
    erm_problem_grid,
    erm_rank,
    erm_terms,
    learned_spectrum,
    solve_erm,
    solve_erm_curve,
    solve_erm_grid,
)

solve = jax.jit(solve_erm)


def test_reference_point():
    """THEORY.md section 2 table: alpha 0.3, kappa* 0.5, lam 0.05, Delta 0."""
    sol = solve(ERMProblem(0.3, kappa_star=0.5, lam=0.05))
    assert sol.converged and int(sol.branch) == BRANCH_GENERAL
    np.testing.assert_allclose(float(sol.xi), 0.6327, atol=5e-5)
    np.testing.assert_allclose(float(sol.tau), 0.5732, atol=5e-5)
    np.testing.assert_allclose(float(sol.E), 0.3796, atol=5e-5)
    np.testing.assert_allclose(float(sol.e_train), 0.001444, atol=5e-7)
    np.testing.assert_allclose(float(sol.rank), 0.501, atol=5e-4)
    # identities of the outputs
    np.testing.assert_allclose(float(sol.e_test), float(sol.E) / 2, rtol=1e-9)
    np.testing.assert_allclose(
        float(sol.e_train), float(sol.e_test * (0.05 / sol.tau) ** 2), rtol=1e-9
    )
    assert float(sol.stats["residual"]) < 1e-10


@pytest.mark.parametrize("alpha, E, r", [(0.1, 2.126, 0.260), (0.3, 0.322, 0.542)])
def test_reference_noiseless_min_nuclear_norm(alpha, E, r):
    """lam -> 0+, Delta = 0, kappa* = 0.5 (THEORY.md): interpolating branch."""
    sol = solve(ERMProblem(alpha, kappa_star=0.5, lam=0.0))
    assert sol.converged and int(sol.branch) == BRANCH_GENERAL
    np.testing.assert_allclose(float(sol.E), E, atol=5e-4)
    np.testing.assert_allclose(float(sol.rank), r, atol=5e-4)
    assert float(sol.e_train) == 0.0
    np.testing.assert_allclose(float(sol.D), alpha, rtol=1e-10)  # interpolation: D = alpha


def test_branch_switch_at_interpolation_threshold():
    """kappa* 0.5, Delta 0.1: alpha_inter = 0.3597 (THEORY.md section 3). Below it the
    lam -> 0+ solution interpolates (D = alpha, e_train = 0); above it tau = 0 with
    D(0, xi) < alpha and e_train = xi (alpha - D)^2 / alpha > 0."""
    below = solve(ERMProblem(0.355, kappa_star=0.5, Delta=0.1))
    above = solve(ERMProblem(0.365, kappa_star=0.5, Delta=0.1))
    assert int(below.branch) == BRANCH_GENERAL and float(below.e_train) == 0
    assert int(above.branch) == BRANCH_TAU_ZERO and float(above.tau) == 0
    assert float(above.D) < 0.365 and float(above.e_train) > 0
    xi, D = float(above.xi), float(above.D)
    np.testing.assert_allclose(float(above.e_train), xi * (0.365 - D) ** 2 / 0.365, rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.25, 0.6])
def test_lam_to_zero_limit_is_continuous(alpha):
    """The lam = 0 solution is the limit of lam -> 0+ on both branches."""
    at0 = solve(ERMProblem(alpha, kappa_star=0.5, Delta=0.1))
    small = solve(ERMProblem(alpha, kappa_star=0.5, Delta=0.1, lam=1e-7))
    for name in ("xi", "E", "e_train", "rank"):
        np.testing.assert_allclose(
            float(getattr(small, name)), float(getattr(at0, name)), rtol=2e-5, atol=1e-8
        )


def test_building_blocks_match_solution():
    sol = solve(ERMProblem(0.3, kappa_star=0.5, lam=0.05))
    t = MarchenkoPastur(0.5)
    xi, tau = sol.xi, sol.tau
    np.testing.assert_allclose(float(erm_D(t, xi, tau)), float(sol.D), rtol=1e-12)
    np.testing.assert_allclose(float(erm_E(t, xi, tau)), float(sol.E), rtol=1e-12)
    np.testing.assert_allclose(float(erm_rank(t, xi, tau)), float(sol.rank), rtol=1e-12)


def test_no_threshold_closed_form():
    """With b below the support (Shat = Y - tau, no thresholding): D = 1/2 exactly
    (int H rho = 0 and int x H rho = 1/2 by antisymmetry), rank 1, and
    E = ||sqrt(xi) G - tau I||_F^2 / d = xi + tau^2."""
    for teacher, d in [(MarchenkoPastur(0.5), None), (PowerLaw(1.0, 0.5), 60)]:
        for tau in (-8.0, -12.0):
            terms = erm_terms(teacher, 0.4, tau, d=d)
            np.testing.assert_allclose(float(terms.D), 0.5, rtol=1e-10)
            np.testing.assert_allclose(float(terms.E), 0.4 + tau**2, rtol=1e-10)
            np.testing.assert_allclose(float(terms.rank), 1.0, rtol=1e-12)


# ---------------------------------------------------------------- rank constraint
def test_rank_constraint():
    free = solve(ERMProblem(0.3, kappa_star=0.5, lam=0.05))
    r_free = float(free.rank)
    loose = solve(ERMProblem(0.3, kappa_star=0.5, lam=0.05, kappa=0.9))
    np.testing.assert_allclose(float(loose.xi), float(free.xi), rtol=1e-10)
    tight = solve(ERMProblem(0.3, kappa_star=0.5, lam=0.05, kappa=0.3))
    assert tight.converged
    np.testing.assert_allclose(float(tight.rank), 0.3, rtol=1e-9)
    assert float(tight.b) > float(tight.tau) and float(tight.rank) < r_free


# ---------------------------------------------------------------- gradients
def test_implicit_gradients_vs_finite_differences():
    """d e_test / d (alpha, kappa*, lam, Delta) by the implicit function theorem vs central
    finite differences (float64), 1e-6 relative."""

    @jax.jit
    def e_test(v):
        problem = ERMProblem(v[0], kappa_star=v[1], lam=v[2], Delta=v[3])
        return solve_erm(problem).e_test

    x0 = jnp.asarray([0.3, 0.5, 0.05, 0.1])
    g = np.asarray(jax.jit(jax.grad(e_test))(x0))
    h = 1e-5
    fd = np.asarray(central_difference(e_test, x0, h))
    np.testing.assert_allclose(g, fd, rtol=1e-6)
    # forward mode agrees
    _, jv = jax.jvp(e_test, (x0,), (jnp.asarray([0.0, 0.0, 1.0, 0.0]),))
    np.testing.assert_allclose(float(jv), g[2], rtol=1e-10)


def test_gradient_lam_zero_branches():
    """Gradients through the branch selection at lam = 0 (both branches)."""

    @jax.jit
    def f(a):
        return solve_erm(ERMProblem(a, kappa_star=0.5, Delta=0.1)).E

    grad = jax.jit(jax.grad(f))
    for alpha in (0.3, 0.6):  # interpolating branch, tau = 0 branch
        g = float(grad(jnp.asarray(alpha)))
        fd = float(central_difference(f, jnp.asarray(alpha), 1e-5))
        np.testing.assert_allclose(g, fd, rtol=1e-6)


# ---------------------------------------------------------------- grids
def test_vmapped_grid_compiles_once():
    alphas = np.linspace(0.05, 0.9, 8)

    @jax.jit
    @jax.vmap
    @chex.assert_max_traces(n=1)
    def run(alpha, lam, delta, ks):
        # lam > 0 on these grids: leave the lam -> 0+ branch logic out (static lam_zero)
        problem = ERMProblem(alpha, kappa_star=ks, lam=lam, Delta=delta, lam_zero=False)
        return solve_erm(problem, ERMSolver()).E

    chex.clear_trace_counter()
    e1 = run(alphas, np.full(8, 0.05), np.full(8, 0.1), np.full(8, 0.5))
    e2 = run(alphas, np.linspace(0.01, 0.1, 8), np.full(8, 0.0), np.linspace(0.3, 2.0, 8))
    assert np.all(np.isfinite(e1)) and np.all(np.isfinite(e2))
    # the grid agrees with point-wise solves
    np.testing.assert_allclose(
        float(e1[3]),
        float(solve(ERMProblem(alphas[3], kappa_star=0.5, lam=0.05, Delta=0.1)).E),
        rtol=1e-10,
    )


def test_grid_and_curve_helpers():
    alphas = np.linspace(0.05, 1.0, 12)
    probs, shape = erm_problem_grid(alphas, kappa_star=0.5, lam=[[0.0], [0.05]], Delta=0.1)
    assert shape == (2, 12)
    sol = solve_erm_grid(probs)
    assert np.all(np.asarray(sol.converged))
    curve_probs, _ = erm_problem_grid(alphas, kappa_star=0.5, lam=0.05, Delta=0.1)
    curve = solve_erm_curve(curve_probs)
    np.testing.assert_allclose(np.asarray(curve.E), np.asarray(sol.E).reshape(shape)[1], rtol=1e-9)
    # e_test decreases with alpha at fixed lam on this curve
    assert np.all(np.diff(np.asarray(curve.e_test)) < 0)


def test_failure_is_a_result_code_and_nan():
    """A solve that cannot converge in 1 step reports failure and NaN outputs."""
    sol = solve_erm(ERMProblem(0.3, kappa_star=0.5, lam=0.05), ERMSolver(max_steps=1))
    assert sol.result == qnr.RESULTS.nonlinear_max_steps_reached
    assert np.isnan(float(sol.E)) and np.isnan(float(sol.xi))


# ---------------------------------------------------------------- other teachers
def test_discretised_mp_teacher_matches_cubic():
    """The subordination path on a fine quantile discretisation of MP(kappa* = 2) reproduces
    the closed-form cubic fixed point (discretisation error ~ 1/p)."""
    k = 2.0
    lo, hi = (1 - 1 / np.sqrt(k)) ** 2, (1 + 1 / np.sqrt(k)) ** 2
    dens = lambda x: k * np.sqrt(np.clip((hi - x) * (x - lo), 0, None)) / (2 * np.pi * x)  # noqa: E731
    spec = Spectrum.from_density(dens, (lo, hi), 400)
    exact = solve(ERMProblem(0.3, kappa_star=k, lam=0.05))
    approx = solve(ERMProblem(0.3, spec, lam=0.05))
    assert approx.converged
    np.testing.assert_allclose(float(approx.E), float(exact.E), rtol=2e-3)
    np.testing.assert_allclose(float(approx.xi), float(exact.xi), rtol=2e-3)
    np.testing.assert_allclose(float(approx.tau), float(exact.tau), rtol=2e-3)


def test_power_law_teacher():
    p = ERMProblem(0.3, PowerLaw(1.0, 1.0), lam=0.01, d=100)
    sol = solve(p)
    assert sol.converged and float(sol.E) < 1.0  # Q0 = 1 is the zero predictor's error
    # validation
    with pytest.raises(ValueError, match="d is required"):
        ERMProblem(0.3, PowerLaw(1.0, 1.0), lam=0.01)


def test_learned_spectrum_mass():
    problem = ERMProblem(0.3, kappa_star=0.5, lam=0.05)
    sol = solve(problem)
    law = convolved_law(MarchenkoPastur(0.5), sol.xi)
    ls = learned_spectrum(problem, sol)
    assert isinstance(ls, LearnedSpectrum)
    mass = law.integrate(lambda x, r, h: r, sol.b)
    np.testing.assert_allclose(float(ls.atom + mass), 1.0, rtol=1e-12)
    assert float(ls.density(-1e-3)) == 0.0 and float(ls.density(0.5)) > 0
    assert float(ls.moment(1)) > 0


# ---------------------------------------------------------------- validation and CLI
def test_validation():
    with pytest.raises(ValueError, match="alpha"):
        ERMProblem(-0.1, kappa_star=0.5)
    with pytest.raises(ValueError, match="lam"):
        ERMProblem(0.1, kappa_star=0.5, lam=-1.0)
    with pytest.raises(ValueError, match="Delta"):
        ERMProblem(0.1, kappa_star=0.5, Delta=-1.0)
    with pytest.raises(ValueError, match="kappa"):
        ERMProblem(0.1, kappa_star=0.5, kappa=0.0)


def test_cli_json(capsys):
    rc = main(["erm-theory", "--alpha", "0.3", "--kappa-star", "0.5", "--lam", "0.05", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"xi", "tau", "E", "e_test", "e_train", "rank", "converged"}
    assert out["converged"] is True
    np.testing.assert_allclose(out["xi"], 0.6327, atol=5e-5)
    rc = main(["erm-theory", "--alpha", "-1", "--json"])
    assert rc == 2
