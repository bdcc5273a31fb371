"""Optimal regularisation (qnr.theory.design) against a fine grid of lam solved by the ERM
theory, the stationarity condition, and the independent scipy reference."""

import pathlib
import sys

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest

from qnr.theory.design import optimal_lam
from qnr.theory.erm import ERMSolver, erm_problem_grid, solve_erm

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import _scipy_reference as ref  # noqa: E402

SOLVER = ERMSolver()
# one vmapped, jitted solve over a batch of problems
solve_batch = eqx.filter_jit(eqx.filter_vmap(lambda p: solve_erm(p, SOLVER)))


@pytest.fixture(scope="module")
def noisy():
    return optimal_lam(jnp.array([0.3, 0.5]), 0.5, 0.1, solver=SOLVER)


def test_optimal_lam_matches_fine_grid(noisy):
    assert np.all(np.asarray(noisy.result == optx.RESULTS.successful))
    assert np.all(np.asarray(noisy.stats["interior"]))
    for j, alpha in enumerate([0.3, 0.5]):
        lam_star, e_star = float(noisy.lam[j]), float(noisy.e_test[j])
        lams = np.geomspace(lam_star / 2, lam_star * 2, 201)
        step = np.log(lams[1] / lams[0])
        p, _ = erm_problem_grid(alpha, kappa_star=0.5, lam=lams, Delta=0.1)
        e = np.asarray(solve_batch(p).e_test)
        i = int(np.nanargmin(e))
        assert 0 < i < len(lams) - 1  # the grid brackets the minimum
        assert abs(np.log(lams[i] / lam_star)) <= step  # minimiser to grid resolution
        assert e_star <= e[i] * (1 + 1e-12)  # no grid point beats it
        assert e_star == pytest.approx(e[i], rel=1e-6)


def test_optimal_lam_is_stationary(noisy):
    # d e_test / d log lam from the implicit derivatives vanishes at lam*
    assert np.all(np.abs(np.asarray(noisy.stats["grad"])) < 1e-7)
    # and consistency of the reported outputs: e_test = (E + Delta/2)/2
    np.testing.assert_allclose(noisy.e_test, (noisy.E + 0.05) / 2, rtol=1e-12)


def test_optimal_lam_against_scipy_reference(noisy):
    """The independent reference agrees on e_test(lam*) and finds it lower than at
    lam* (1 +- 10%)."""
    lam_star, e_star = float(noisy.lam[0]), float(noisy.e_test[0])
    r = ref.Reference(0.5, epsabs=1e-10, epsrel=1e-10, xtol=1e-12)
    e = [r.solve(0.3, lam_star * f, 0.1)["e_test"] for f in (0.9, 1.0, 1.1)]
    assert e[1] == pytest.approx(e_star, rel=1e-8)
    assert e[1] < e[0] and e[1] < e[2]


def test_bad_input_raises():
    with pytest.raises(ValueError, match="alpha"):
        optimal_lam(-0.3, 0.5, 0.1)
    with pytest.raises(ValueError, match="Delta"):
        optimal_lam(0.3, 0.5, -0.1)
    with pytest.raises(ValueError, match="bounds"):
        optimal_lam(0.3, 0.5, 0.1, bounds=(1.0, 0.1))
