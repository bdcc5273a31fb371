"""Quadratic networks trained with optax, and the nuclear route to the convex problem."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qnr.model import matrix_error
from qnr.sim import (
    RESULTS,
    ERMProblem,
    NetworkSolver,
    init_weights,
    make_dataset,
    n_samples,
    network_loss,
    solve_convex,
    train_network,
)
from qnr.teachers import MarchenkoPastur, PowerLaw


def _padded_problem(data, alpha, lam):
    """The first n(alpha) samples of ``data`` (padding masked) -- one compiled shape."""
    n = n_samples(alpha, data.d)
    mask = (jnp.arange(data.n) < n).astype(data.X.dtype)
    return ERMProblem(data.X, data.y, lam, mask)


def test_network_loss_is_convex_objective_at_wwt(key):
    """L(W) = F(W W^T): the data terms coincide and ||W||_F^2 = Tr W W^T (explicit Z)."""
    d, m, n = 7, 5, 40
    data = make_dataset(key, MarchenkoPastur(0.5), d, n, 0.3)
    prob = ERMProblem.from_dataset(data, 0.17)
    W = jax.random.normal(jax.random.key(3), (d, m))
    X = np.asarray(data.X)
    Z = (np.einsum("ni,nj->nij", X, X) - np.eye(d)[None]) / np.sqrt(d)
    yhat = np.einsum("nij,ij->n", Z, np.asarray(W @ W.T))
    expected = np.sum((np.asarray(data.y) - yhat) ** 2) / (4 * n) + 0.17 / d * np.sum(
        np.asarray(W) ** 2
    )
    assert float(network_loss(W, prob)) == pytest.approx(expected, rel=1e-12)
    assert float(prob.objective(W @ W.T)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kappa", [1.0, 1.5])
def test_nuclear_route(key, kappa):
    """L-BFGS on W (width kappa d >= d) and the convex solver on S agree on E and the training
    loss to 1e-5 relative, and ||W||_F^2 = Tr Shat at the optimum (THEORY.md section 1)."""
    d = 30
    m = int(round(kappa * d))
    cases = [  # (alpha, kappa*, lam, Delta)
        (0.3, 0.5, 0.05, 0.0),
        (0.5, 0.3, 0.02, 0.1),
        (0.2, 1.0, 0.1, 0.5),
        (0.4, 0.5, 0.01, 0.0),
    ]
    alpha_max = max(c[0] for c in cases)
    solver = NetworkSolver("lbfgs", max_steps=5000, gtol=1e-9)
    for i, (alpha, kappa_star, lam, noise) in enumerate(cases):
        k_data, k_init = jax.random.split(jax.random.fold_in(key, i))
        data = make_dataset(k_data, MarchenkoPastur(kappa_star), d, n_samples(alpha_max, d), noise)
        prob = _padded_problem(data, alpha, lam)
        cvx = solve_convex(prob, S_star=data.S_star, Delta=noise)
        net = train_network(
            prob, init_weights(k_init, d, m, 0.5), solver, S_star=data.S_star, Delta=noise
        )
        assert bool(cvx.converged) and bool(net.converged), (i, net.stats, cvx.stats)
        assert float(net.E) == pytest.approx(float(cvx.E), rel=1e-5)
        assert float(net.e_train) == pytest.approx(float(cvx.e_train), rel=1e-5)
        assert float(net.e_test) == pytest.approx(float(cvx.e_test), rel=1e-5)
        assert float(net.loss) == pytest.approx(float(cvx.loss), rel=1e-9)
        assert float(jnp.sum(net.W**2)) == pytest.approx(float(cvx.trace), rel=1e-5)
        assert float(net.rank_fraction) == pytest.approx(float(cvx.rank_fraction))
        assert float(cvx.rank_fraction) < m / d  # the width exceeds the solution's rank


@pytest.mark.parametrize(
    "optimizer, lr, tol", [("gd", 1.0, 1e-4), ("momentum", 0.3, 1e-4), ("adam", 0.01, 1e-4)]
)
def test_first_order_optimizers_reach_convex_optimum(key, optimizer, lr, tol):
    d = 12
    data = make_dataset(key, PowerLaw(1.0, 0.5), d, n_samples(0.5, d), 0.05)
    prob = ERMProblem.from_dataset(data, 0.05)
    cvx = solve_convex(prob, S_star=data.S_star)
    solver = NetworkSolver(optimizer, lr, max_steps=50_000, rtol=1e-13, gtol=1e-8)
    net = train_network(
        prob, init_weights(jax.random.key(5), d, d, 0.5), solver, S_star=data.S_star
    )
    assert bool(net.converged), net.stats
    assert float(net.E) == pytest.approx(float(cvx.E), rel=tol)
    assert float(net.loss) == pytest.approx(float(cvx.loss), rel=1e-8)


def test_masked_neurons_stay_zero(key):
    """A width-m network padded to m_max with masked neurons is the width-m network."""
    d, m, m_max = 10, 4, 9
    data = make_dataset(key, MarchenkoPastur(0.3), d, n_samples(0.4, d), 0.0)
    prob = ERMProblem.from_dataset(data, 0.02)
    k_init = jax.random.key(11)
    W0 = init_weights(k_init, d, m, 0.3, m_max=m_max)
    np.testing.assert_array_equal(W0[:, :m], init_weights(k_init, d, m, 0.3))
    assert float(jnp.max(jnp.abs(W0[:, m:]))) == 0.0
    mask = (jnp.arange(m_max) < m).astype(W0.dtype)
    # a few first-order steps: identical up to rounding
    for opt, lr in [("gd", 0.5), ("adam", 0.02)]:
        solver = NetworkSolver(opt, lr, max_steps=50)
        padded = train_network(prob, W0, solver, neuron_mask=mask)
        narrow = train_network(prob, W0[:, :m], solver)
        assert float(jnp.max(jnp.abs(padded.W[:, m:]))) == 0.0
        np.testing.assert_allclose(padded.W[:, :m], narrow.W, rtol=1e-10, atol=1e-13)
    # L-BFGS to convergence (rounding may steer the line search: compare the optimum)
    solver = NetworkSolver("lbfgs", max_steps=3000)
    padded = train_network(prob, W0, solver, neuron_mask=mask)
    narrow = train_network(prob, W0[:, :m], solver)
    assert bool(padded.converged) and bool(narrow.converged)
    assert float(jnp.max(jnp.abs(padded.W[:, m:]))) == 0.0
    assert float(padded.loss) == pytest.approx(float(narrow.loss), rel=1e-10)
    np.testing.assert_allclose(padded.Shat, narrow.Shat, atol=1e-6)
    assert float(padded.rank_fraction) <= m / d


def test_init_scale(key):
    """W0 W0^T has mean init_scale^2 I: Tr(W0 W0^T)/d -> init_scale^2."""
    d, m = 200, 400
    W0 = init_weights(key, d, m, 0.7)
    assert float(jnp.sum(W0**2)) / d == pytest.approx(0.49, rel=0.02)


def test_trajectory_and_result_codes(key):
    d = 10
    data = make_dataset(key, MarchenkoPastur(0.5), d, n_samples(0.5, d), 0.0)
    prob = ERMProblem.from_dataset(data, 0.05)
    W0 = init_weights(jax.random.key(2), d, d, 1.0)
    sol = train_network(
        prob, W0, NetworkSolver("gd", 0.5, max_steps=40, record_every=4), S_star=data.S_star
    )
    assert sol.result == RESULTS.max_steps_reached and int(sol.iterations) == 40
    traj = sol.trajectory
    assert traj["loss"].shape == (11,)
    np.testing.assert_array_equal(traj["step"], np.arange(0, 41, 4))
    assert float(traj["loss"][0]) == pytest.approx(float(network_loss(W0, prob)), rel=1e-12)
    assert float(traj["loss"][-1]) == pytest.approx(float(sol.loss), rel=1e-12)
    assert float(traj["E"][-1]) == pytest.approx(float(sol.E), rel=1e-10)
    assert float(traj["E"][0]) == pytest.approx(float(matrix_error(W0 @ W0.T, data.S_star)))
    assert np.all(np.diff(np.asarray(traj["loss"])) < 0)  # small-step GD decreases the loss
    # converged run: entries past the end stay NaN
    conv = train_network(prob, W0, NetworkSolver("lbfgs", max_steps=2000, record_every=1))
    assert bool(conv.converged)
    k = int(conv.iterations)
    assert float(conv.trajectory["loss"][k]) == pytest.approx(float(conv.loss), rel=1e-12)
    assert np.all(np.isnan(np.asarray(conv.trajectory["loss"][k + 1 :])))
    # divergent GD is reported, not returned as a number
    bad = train_network(prob, W0, NetworkSolver("gd", 1e4, max_steps=100))
    assert bad.result == RESULTS.nonfinite


def test_float32_training(key):
    d = 10
    data = make_dataset(key, MarchenkoPastur(0.5), d, n_samples(0.5, d), 0.0, dtype=jnp.float32)
    prob = ERMProblem.from_dataset(data, 0.05)
    W0 = init_weights(jax.random.key(2), d, d, 0.5, dtype=jnp.float32)
    sol = train_network(prob, W0, NetworkSolver("lbfgs", max_steps=500, rtol=1e-6, gtol=1e-4))
    assert sol.W.dtype == jnp.float32 and sol.loss.dtype == jnp.float32
    assert bool(sol.converged)


def test_bad_inputs(key):
    d = 6
    data = make_dataset(key, MarchenkoPastur(0.5), d, 30, 0.0)
    prob = ERMProblem.from_dataset(data, 0.1)
    W0 = init_weights(key, d, d)
    with pytest.raises(ValueError, match="optimizer"):
        NetworkSolver("sgd-typo")
    with pytest.raises(ValueError, match="learning_rate"):
        NetworkSolver("gd", -0.1)
    with pytest.raises(ValueError, match="max_steps"):
        NetworkSolver("gd", max_steps=0)
    with pytest.raises(ValueError, match="momentum"):
        NetworkSolver("momentum", momentum=1.0)
    with pytest.raises(ValueError, match="gtol"):
        NetworkSolver(gtol=-1.0)
    with pytest.raises(ValueError, match="W0"):
        train_network(prob, W0[:-1])
    with pytest.raises(ValueError, match="neuron_mask"):
        train_network(prob, W0, neuron_mask=jnp.ones(d + 1))
    with pytest.raises(ValueError, match="neuron_mask"):
        train_network(prob, W0, neuron_mask=jnp.full(d, 0.5))
    with pytest.raises(ValueError, match="S_star"):
        train_network(prob, W0, S_star=jnp.eye(3))
    with pytest.raises(ValueError, match="Delta"):
        train_network(prob, W0, Delta=-1.0)
    with pytest.raises(ValueError, match="init_scale"):
        init_weights(key, d, d, -1.0)
    with pytest.raises(ValueError, match="m"):
        init_weights(key, d, 0)
    with pytest.raises(ValueError, match="solver"):
        train_network(prob, W0, "lbfgs")
