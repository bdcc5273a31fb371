"""Dual certificate of the convex solver: duality gap and non-unique (degenerate) minimisers.

The degenerate case of issue 12 (d = 40, alpha = 0.1, lam = 0.01, Delta = 0.1, kappa* = 0.5):
one sample keeps the residual ``-2 n lam/sqrt(d)``, the dual slack ``M`` has rank one and the
optimal face is (almost) the whole PSD cone: it must be flagged, and two solvers started at
different points must reach the same objective with different ``E`` (the independent proof
that the minimiser is not unique). At d = 100 the same point has a unique minimiser.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from qnr.sim import (
    ERMProblem,
    ProximalGradient,
    dual_certificate,
    duality_gap,
    make_dataset,
    make_solver,
    n_samples,
    solve_convex,
)
from qnr.teachers import MarchenkoPastur

KAPPA_STAR, LAM, DELTA = 0.5, 0.01, 0.1


def _instance(seed, d, alpha):
    import jax

    data = make_dataset(
        jax.random.key(seed), MarchenkoPastur(KAPPA_STAR), d, n_samples(alpha, d), DELTA
    )
    return data, ERMProblem.from_dataset(data, LAM)


@pytest.mark.parametrize("seed", [0, 1])
def test_degenerate_small_d_is_flagged_and_really_non_unique(seed):
    d, alpha = 40, 0.1
    data, prob = _instance(seed, d, alpha)
    n = data.n
    sol = solve_convex(
        prob, make_solver("convex", d, gap_tol=1e-6), S_star=data.S_star, Delta=DELTA
    )
    assert bool(sol.converged)
    assert float(sol.stats["duality_gap"]) <= 1e-6
    assert bool(sol.degenerate)
    k = int(sol.stats["face_dim"])
    assert int(sol.stats["dual_rank"]) <= 3  # the slack M is (nearly) rank one
    assert k * (k + 1) / 2 > n + 1
    # the residual sits on ~one sample: r_mu0 = -2 n lam / sqrt(d)
    r = np.asarray(prob.residual(sol.Shat))
    big = np.argmax(np.abs(r))
    assert r[big] == pytest.approx(-2 * n * LAM / np.sqrt(d), rel=1e-3)
    assert float(sol.stats["residual_participation"]) < 2 / n
    # independent evidence: another start, same objective, different E
    other = solve_convex(
        prob, ProximalGradient(), S0=5 * jnp.eye(d), S_star=data.S_star, Delta=DELTA
    )
    assert bool(other.converged) and bool(other.degenerate)
    assert float(other.loss) == pytest.approx(float(sol.loss), rel=1e-6)
    assert abs(float(other.E) - float(sol.E)) > 0.02 * float(sol.E)


def test_unique_minimiser_at_d100_is_not_flagged():
    d, alpha = 100, 0.1
    data, prob = _instance(0, d, alpha)
    sol = solve_convex(
        prob, make_solver("convex", d, gap_tol=1e-6), S_star=data.S_star, Delta=DELTA
    )
    assert bool(sol.converged)
    assert float(sol.stats["duality_gap"]) <= 1e-6
    assert not bool(sol.degenerate)
    k = int(sol.stats["face_dim"])
    assert k * (k + 1) / 2 < data.n + 1
    # strict complementarity: rank S + rank M = d, and the rank is the replica prediction
    # (THEORY.md section 2: r = 0.2593 at alpha 0.1, kappa* 0.5, lam 0.01, Delta 0.1)
    assert int(sol.stats["complementarity_deficit"]) == 0
    assert float(sol.rank_fraction) == pytest.approx(0.2593, abs=0.02)


def test_duality_gap_bounds_the_suboptimality(key):
    """(F(S) - F*)/F(S) <= gap(S) for perturbed points, and the gap of the optimum is tiny."""
    d = 16
    data = make_dataset(key, MarchenkoPastur(0.5), d, n_samples(0.4, d), 0.1)
    prob = ERMProblem.from_dataset(data, 0.05)
    opt = solve_convex(prob, ProximalGradient(rtol=1e-12))
    F_star = float(opt.loss)
    assert float(duality_gap(prob, opt.Shat)) < 1e-8
    rng = np.random.default_rng(0)
    for eps in (1e-4, 1e-2, 1e-1):
        G = rng.standard_normal((d, d))
        S = np.asarray(opt.Shat) + eps * (G @ G.T) / d
        F = float(prob.objective(jnp.asarray(S)))
        gap = float(duality_gap(prob, jnp.asarray(S)))
        assert (F - F_star) / F <= gap * (1 + 1e-9)
        assert gap > 0.1 * (F - F_star) / F  # and it is not vacuous


def test_certificate_of_the_zero_solution(key):
    """Above lam_c the minimiser is S = 0; M = -(1/(2n)) A^*(y) + (lam/d) I is positive
    definite (rank d), the face is {0}: unique, no deficit."""
    d = 10
    data = make_dataset(key, MarchenkoPastur(0.5), d, n_samples(0.5, d), 0.0)
    prob = ERMProblem.from_dataset(data, 1e3)
    cert = dual_certificate(prob, jnp.zeros((d, d)), 0)
    assert int(cert["dual_rank"]) == d and int(cert["face_dim"]) == 0
    assert not bool(cert["degenerate"]) and int(cert["complementarity_deficit"]) == 0
    assert float(cert["dual_min_eig"]) > 0
