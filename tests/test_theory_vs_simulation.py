"""Replica theory (qnr.theory) against the convex nuclear-norm simulator (qnr.sim).

THEORY.md section 2 predicts the d -> inf limit of ``E = ||Shat - S*||_F^2/d`` for the convex
problem of section 1. At three points (one rank-constrained, one noisy) the simulated ``E`` at
d in {30, 50, 80}, averaged over seeds, is extrapolated linearly in 1/d (weighted least
squares) and must land within max(5%, 2 standard errors of the extrapolation) of the theory.
"""

import numpy as np
import pytest

from qnr.sim import simulate_grid
from qnr.teachers import MarchenkoPastur
from qnr.theory import ERMProblem, solve_erm

DIMS_SEEDS = ((30, 32), (50, 16), (80, 8))

POINTS = {
    "reference": dict(alpha=0.3, kappa_star=0.5, lam=0.05, Delta=0.0, kappa=None),
    "noisy": dict(alpha=0.4, kappa_star=0.5, lam=0.1, Delta=0.5, kappa=None),
    "rank-constrained": dict(alpha=0.3, kappa_star=0.5, lam=0.05, Delta=0.0, kappa=0.3),
}


def extrapolate(inv_d, means, sems):
    """Weighted least-squares fit ``E(d) = E_inf + b/d``; returns ``(E_inf, its std error)``."""
    A = np.stack([np.ones_like(inv_d), inv_d], axis=1)
    w = 1.0 / sems**2
    cov = np.linalg.inv(A.T @ (A * w[:, None]))
    coef = cov @ (A.T @ (w * means))
    return coef[0], np.sqrt(cov[0, 0])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(POINTS))
def test_convex_simulation_extrapolates_to_theory(name):
    p = POINTS[name]
    theory = solve_erm(
        ERMProblem(
            p["alpha"], kappa_star=p["kappa_star"], lam=p["lam"], Delta=p["Delta"], kappa=p["kappa"]
        )
    )
    assert bool(theory.converged)
    E_theory = float(theory.E)

    inv_d, means, sems = [], [], []
    for d, seeds in DIMS_SEEDS:
        res = simulate_grid(
            MarchenkoPastur(p["kappa_star"]),
            alpha=p["alpha"],
            kappa=p["kappa"],
            lam=p["lam"],
            Delta=p["Delta"],
            d=d,
            seeds=seeds,
            solver="convex",
        )
        E = np.asarray(res.E).ravel()
        assert np.all(np.isfinite(E)), f"{name}: a convex run did not converge at d={d}"
        if p["kappa"] is not None:  # the rank bound is respected
            assert np.all(np.asarray(res.rank_fraction) <= p["kappa"] + 1e-12)
        inv_d.append(1.0 / d)
        means.append(E.mean())
        sems.append(E.std(ddof=1) / np.sqrt(E.size))
    E_inf, se = extrapolate(np.array(inv_d), np.array(means), np.array(sems))
    tol = max(0.05 * E_theory, 2 * se)
    print(
        f"{name}: theory {E_theory:.4f}, extrapolated {E_inf:.4f} +- {se:.4f}, "
        f"finite-d means {np.round(means, 4)}"
    )
    # the seed-to-seed spread of E is dominated by the teacher's O(1/d) spectral fluctuations
    # (std of Tr S*^2/d ~ 12/d for kappa* = 0.5); demand an informative extrapolation
    assert se < 0.1 * E_theory, "too few seeds: the extrapolation is not informative"
    assert abs(E_inf - E_theory) < tol
