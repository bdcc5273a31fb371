"""Li-Ma-Zhang matrix sensing (qnr.sim.factorized) at d = 40, r = 2: the qualitative findings
of arXiv 1712.09203, the gradient, the population identity and the PSD projection."""

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest

from qnr.sim.factorized import (
    LMZ_STEP,
    factorized_gd,
    factorized_gd_init_sweep,
    factorized_sgd,
    make_sensing_problem,
    projected_gd,
    psd_projection,
)
from qnr.sim.online import log_steps

D, R = 40, 2


@pytest.fixture(scope="module")
def lmz_problem():
    return make_sensing_problem(jax.random.key(0), D, R)  # m = 5 d r = 400


def test_generalisation_improves_as_init_shrinks(lmz_problem):
    """Measured (5000 steps of 0.0025): relative error 2.9e-3, 1.8e-2, 0.11, 3.3 for
    alpha = 1e-3, 1e-2, 1e-1, 1, with training loss < 3e-3 in every case."""
    alphas = jnp.array([1e-3, 1e-2, 1e-1, 1.0])
    tr = factorized_gd_init_sweep(lmz_problem, alphas, LMZ_STEP, steps=log_steps(5000, 10))
    assert bool(jnp.all(tr.result == optx.RESULTS.successful))
    err = np.asarray(tr.error[:, -1])
    assert np.all(np.diff(err) > 0), err
    assert err[0] < 0.01 and err[-1] > 1.0, err
    # the train-test gap (population loss ||X - X*||^2/2 minus training loss) shrinks too
    pop = 0.5 * err**2 * float(jnp.sum(lmz_problem.X_star**2))
    gap = pop - np.asarray(tr.train_loss[:, -1])
    assert np.all(np.diff(gap) > 0), gap


def test_projected_gd_needs_more_samples(lmz_problem):
    """m = 5 d r = 400 is below the PSD-cone threshold (~ 439 at d = 40, r = 2): projected GD
    interpolates with error ~0.4 while small-init factorised GD recovers X*; at m = 700 projected
    GD recovers X* exactly."""
    pgd = projected_gd(lmz_problem, steps=log_steps(3000, 6))
    assert pgd.train_loss[-1] < 1e-10 and pgd.error[-1] > 0.2
    fgd = factorized_gd(lmz_problem, 1e-3 * jnp.eye(D), steps=log_steps(5000, 6))
    assert fgd.error[-1] < 0.01
    more = make_sensing_problem(jax.random.key(0), D, R, m=700)
    assert projected_gd(more, steps=log_steps(4000, 6)).error[-1] < 1e-6


@pytest.mark.parametrize("method", ["gd", "sgd"])
def test_from_identity_interpolates_without_generalising(lmz_problem, method):
    U0 = jnp.eye(D)
    steps = log_steps(5000, 6)
    if method == "gd":
        tr = factorized_gd(lmz_problem, U0, steps=steps)
    else:
        tr = factorized_sgd(lmz_problem, U0, jax.random.key(1), batch_size=10, steps=steps)
    assert tr.train_loss[-1] < 1e-3 * tr.train_loss[0]
    assert tr.error[-1] > 1.0


def test_gradient_step_matches_autodiff_with_nonsymmetric_matrices():
    d, r, m, eta = 5, 2, 30, 0.01
    key = jax.random.key(3)
    prob = make_sensing_problem(key, d, r, m)
    A = jax.random.normal(jax.random.split(key)[1], (m, d, d))  # the raw (non-symmetric) A_i
    np.testing.assert_allclose(prob.A_sym, (A + jnp.swapaxes(A, 1, 2)) / 2, rtol=1e-12)
    U0 = jax.random.normal(jax.random.key(4), (d, d))

    def f(U):
        return jnp.sum((jnp.einsum("mij,ij->m", A, U @ U.T) - prob.b) ** 2) / (2 * m)

    tr = factorized_gd(prob, U0, eta, steps=(0, 1))
    np.testing.assert_allclose(tr.value, U0 - eta * jax.grad(f)(U0), rtol=1e-10)
    np.testing.assert_allclose(tr.train_loss[0], f(U0), rtol=1e-12)


def test_population_loss_identity():
    """E_A <A, D>^2 = ||D||_F^2 for iid N(0,1) entries and symmetric D (so E f = ||D||^2/2)."""
    d = 4
    prob = make_sensing_problem(jax.random.key(5), d, 1, m=200_000)
    Dm = jax.random.normal(jax.random.key(6), (d, d))
    Dm = Dm + Dm.T
    mc = jnp.mean(prob.measure(Dm) ** 2)
    assert abs(float(mc) / float(jnp.sum(Dm**2)) - 1) < 0.02


def test_psd_projection(key):
    X = jax.random.normal(key, (6, 6))
    X = X + X.T
    P = psd_projection(X)
    lam = np.linalg.eigvalsh(np.asarray(X))
    assert np.linalg.eigvalsh(np.asarray(P)).min() > -1e-12
    np.testing.assert_allclose(np.sum((P - X) ** 2), np.sum(lam[lam < 0] ** 2), rtol=1e-10)


def test_validation(lmz_problem):
    with pytest.raises(ValueError, match="r must be"):
        make_sensing_problem(jax.random.key(0), 3, 4)
    with pytest.raises(ValueError, match="U0"):
        factorized_gd(lmz_problem, jnp.eye(D + 1))
    with pytest.raises(ValueError, match="batch_size"):
        factorized_sgd(lmz_problem, jnp.eye(D), jax.random.key(0), batch_size=10_000)
    with pytest.raises(ValueError, match="X_star"):
        make_sensing_problem(jax.random.key(0), 3, 1, X_star=-jnp.eye(3))
