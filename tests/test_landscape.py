"""Landscape checks (qnr.sim.landscape): energy barrier of rank-deficient W (random W and the
numerical optimum), identity-multiple initialisation, and the N* = d(d+1)/2 condition."""

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest

from qnr.sim.data import make_dataset_from_matrix
from qnr.sim.landscape import (
    below_barrier,
    energy_barrier,
    energy_barrier_gkz,
    gkz_population_risk,
    identity_multiple_init,
    min_rank_deficient_risk,
    n_star,
    optimize_rank_deficient,
    span_rank,
    sym_features,
)
from qnr.sim.online import population_risk
from qnr.teachers import MarchenkoPastur
from qnr.theory.dynamics import RiccatiFlow, log_times, solve_riccati


def test_random_rank_deficient_w_are_above_the_barrier(key):
    d = 10
    k1, k2 = jax.random.split(key)
    S = MarchenkoPastur(3.0).sample(k1, d)  # full rank, lambda_min ~ 0.3
    barrier = energy_barrier(S)
    assert barrier > 0
    ws = jax.random.normal(k2, (500, d, d - 1)) * jnp.linspace(0.05, 1.5, 500)[:, None, None]
    risks = jax.vmap(lambda W: population_risk(W, S))(ws)
    assert float(jnp.min(risks)) >= float(barrier)
    # GKZ normalization: W* = sqrt(m*) chol-like factor, uncentred risk >= 2 sigma_min(W*)^4
    W_star = jnp.linalg.cholesky(S)
    g = jax.vmap(lambda W: gkz_population_risk(W, W_star))(ws)
    assert float(jnp.min(g)) >= float(energy_barrier_gkz(W_star))
    np.testing.assert_allclose(energy_barrier_gkz(W_star), 2 * np.linalg.eigvalsh(S)[0] ** 2)


def test_barrier_is_attained_by_the_numerical_rank_deficient_optimum(key):
    d = 8
    S = MarchenkoPastur(2.0).sample(key, d)
    opt = optimize_rank_deficient(S, jax.random.key(7))
    assert opt.result == optx.RESULTS.successful
    np.testing.assert_allclose(opt.risk, energy_barrier(S), rtol=1e-8)
    np.testing.assert_allclose(min_rank_deficient_risk(S), energy_barrier(S), rtol=1e-12)
    lam = np.sort(np.linalg.eigvalsh(np.asarray(S)))[::-1]
    opt3 = optimize_rank_deficient(S, jax.random.key(8), rank=3)
    np.testing.assert_allclose(opt3.risk, 2 * np.sum(lam[3:] ** 2) / d, rtol=1e-8)
    np.testing.assert_allclose(min_rank_deficient_risk(S, 3), opt3.risk, rtol=1e-8)


def test_gkz_risk_monte_carlo(key):
    d = 6
    k1, k2, k3 = jax.random.split(key, 3)
    W, Ws = jax.random.normal(k1, (d, 4)), jax.random.normal(k2, (d, 3))
    x = jax.random.normal(k3, (400_000, d))
    mc = jnp.mean((jnp.sum((x @ W) ** 2, 1) - jnp.sum((x @ Ws) ** 2, 1)) ** 2)
    assert abs(float(mc) / float(gkz_population_risk(W, Ws)) - 1) < 0.03


def test_identity_multiple_init(key):
    d = 12
    G = jax.random.normal(key, (d, d)) / np.sqrt(d)
    well = jnp.eye(d) + 0.02 * (G + G.T)  # well conditioned: d Var(lambda) < lambda_min^2
    s = identity_multiple_init(well)
    assert bool(below_barrier(s * jnp.eye(d), well))
    # the flow from there never approaches the rank-deficient set and ends at S*
    sol = solve_riccati(RiccatiFlow.from_matrices(well, s * jnp.eye(d)), log_times(0.01, 50, 20))
    assert float(jnp.max(sol.risk)) < float(energy_barrier(well))
    assert float(sol.risk[-1]) < 1e-12
    # s^2 = Tr S*/d is the best multiple of the identity
    risk = lambda c: float(population_risk(c * jnp.eye(d), well))  # noqa: E731
    assert risk(s) < min(risk(1.01 * s), risk(0.99 * s))
    # an ill-conditioned teacher is not certified
    ill = MarchenkoPastur(1.5).sample(key, d)
    assert not bool(below_barrier(identity_multiple_init(ill) * jnp.eye(d), ill))


@pytest.mark.parametrize("n", [20, 36, 50])
def test_span_rank_is_min_n_nstar(key, n):
    d = 8
    assert n_star(d) == 36
    X = jax.random.normal(key, (n, d))
    assert span_rank(X) == min(n, n_star(d))


def test_sym_features_isometry_and_interpolation_pins_s_star(key):
    d = 6
    k1, k2 = jax.random.split(key)
    X = jax.random.normal(k1, (5, d))
    F = sym_features(X)
    np.testing.assert_allclose(F @ F.T, (X @ X.T) ** 2, rtol=1e-12)
    S = MarchenkoPastur(0.5).sample(k2, d)
    errs = {}
    for n in (n_star(d) - 6, n_star(d) + 6):
        data = make_dataset_from_matrix(jax.random.fold_in(key, n), S, n)
        # min-norm interpolator of y = Tr(Z S) = (x^T S x - Tr S)/sqrt(d) in symmetric matrices
        Fd = sym_features(data.X) - sym_features(jnp.eye(d)).sum(0)[None, :]
        coef = jnp.linalg.lstsq(Fd / np.sqrt(d), data.y)[0]
        iu, ju = np.triu_indices(d)
        w = np.where(iu == ju, 1.0, 1 / np.sqrt(2.0))
        Shat = jnp.zeros((d, d)).at[iu, ju].set(coef * w)
        Shat = Shat + jnp.triu(Shat, 1).T
        assert float(jnp.max(jnp.abs(Fd @ coef / np.sqrt(d) - data.y))) < 1e-8  # interpolates
        errs[n] = float(jnp.sum((Shat - S) ** 2) / d)
    assert errs[n_star(d) + 6] < 1e-16 and errs[n_star(d) - 6] > 1e-3, errs
