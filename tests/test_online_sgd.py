"""Online SGD / full-batch GD (qnr.sim.online) against the population Riccati ODE
(qnr.theory.dynamics), the time map t = 2 eta k / d, gradients, and failure codes."""

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest

from qnr.sim.data import make_dataset, make_dataset_from_matrix
from qnr.sim.online import (
    OnlineProblem,
    full_batch_gd,
    full_batch_gd_sweep,
    log_steps,
    online_sgd,
    online_sgd_sweep,
    population_risk,
)
from qnr.teachers import MarchenkoPastur, PowerLaw
from qnr.theory.dynamics import RiccatiFlow, fit_power_law, solve_riccati


def _setup(d, kappa_star, scale, dtype):
    teacher = MarchenkoPastur(kappa_star)
    S = teacher.sample(jax.random.key(0), d)
    m = teacher.width(d)
    W0 = scale * jax.random.normal(jax.random.key(1), (d, m)) / np.sqrt(m)
    prob = OnlineProblem.from_matrix(S.astype(dtype), W0.astype(dtype))
    return S, W0, prob


@pytest.mark.slow
def test_sgd_d200_follows_ode_within_10_percent():
    """d = 200, width m = m* = 50, eta = 1/d, batch 40 (eta d / B = 0.025), ODE time 1.5
    (30000 steps, risk falls 16x); float32, mean over 3 seeds. Measured max deviation ~5%."""
    d, c, B, T = 200, 1.0, 40, 1.5
    S, W0, prob = _setup(d, 0.25, 1.0, jnp.float32)
    assert prob.factor.shape[1] == 50  # numerical rank of the float32 teacher
    steps = log_steps(int(T * d * d / (2 * c)), 25)
    tr = online_sgd_sweep(
        prob, jnp.array([c / d]), jax.random.split(jax.random.key(2), 3), batch_size=B, steps=steps
    )
    assert bool(jnp.all(tr.result == optx.RESULTS.successful))
    times = tr.times[0, 0].astype(jnp.float64)
    np.testing.assert_allclose(times, 2 * (c / d) * np.asarray(steps) / d, rtol=1e-6)
    ode = solve_riccati(RiccatiFlow.from_matrices(S, W0), times)
    rel = np.abs(np.asarray(tr.risk[0].mean(0), np.float64) / np.asarray(ode.risk) - 1)
    assert ode.risk[-1] < ode.risk[0] / 10  # a real decrease, not a plateau
    assert rel.max() < 0.10, rel


def test_time_map_and_noise_drift(key):
    """Two step sizes at fixed batch: plotted against t = 2 eta k / d both follow the ODE, but
    the deviation grows with eta d / B (the O(eta d / B) noise drift) -- and against the step
    count k the curves are far apart."""
    d, B = 60, 10
    S, W0, prob = _setup(d, 0.5, 1.0, jnp.float64)
    cs = np.array([0.1, 2.0])
    T = 1.0
    # same ODE times for both step sizes: k_c = T d^2 / (2 c)
    steps_small = log_steps(int(T * d * d / (2 * cs[0])), 15)
    devs = []
    for c in cs:
        k_end = int(T * d * d / (2 * c))
        steps = tuple(sorted({int(round(s * k_end / steps_small[-1])) for s in steps_small}))
        tr = online_sgd_sweep(
            prob, jnp.array([c / d]), jax.random.split(key, 4), batch_size=B, steps=steps
        )
        ode = solve_riccati(RiccatiFlow.from_matrices(S, W0), tr.times[0, 0])
        devs.append(np.max(np.abs(np.asarray(tr.risk[0].mean(0) / ode.risk) - 1)))
        if c == cs[0]:
            risk_small_at_k = tr.risk[0].mean(0)
    assert devs[0] < 0.03, devs  # eta d / B = 0.01
    assert devs[1] > 2 * devs[0] and devs[1] > 0.03, devs  # eta d / B = 0.2
    # against the raw step count the curves differ: after k_end(c=2) steps, the small step
    # size has reached ODE time 2 * 0.1/d * k / d only
    k2 = int(T * d * d / (2 * cs[1]))
    tr = online_sgd(prob, cs[0] / d, key, batch_size=B, steps=(0, k2))
    assert tr.risk[-1] > 1.5 * float(risk_small_at_k[-1])


def test_population_risk_matches_monte_carlo(key):
    d, m = 12, 5
    k1, k2, k3 = jax.random.split(key, 3)
    S = MarchenkoPastur(0.5).sample(k1, d)
    W = jax.random.normal(k2, (d, m)) / np.sqrt(m)
    data = make_dataset_from_matrix(k3, S, 400_000)
    yhat = jnp.sum((data.X @ W) ** 2, 1) - jnp.sum(W**2)
    mc = jnp.mean((yhat / np.sqrt(d) - data.y) ** 2)
    exact = population_risk(W, S)
    np.testing.assert_allclose(exact, 2 * jnp.sum((W @ W.T - S) ** 2) / d, rtol=1e-12)
    assert abs(float(mc) / float(exact) - 1) < 0.02


def test_gd_step_is_gradient_of_empirical_loss(key):
    """One GD step equals W - eta * jax.grad of the explicitly written empirical loss."""
    d, m, n, lam, eta = 8, 3, 50, 0.1, 0.05
    data = make_dataset(key, PowerLaw(1.0), d, n, Delta=0.2)
    W0 = jax.random.normal(jax.random.key(5), (d, m)) / np.sqrt(m)

    def loss(W):
        Z = (data.X[:, :, None] * data.X[:, None, :] - jnp.eye(d)) / np.sqrt(d)
        yhat = jnp.einsum("nij,ij->n", Z, W @ W.T)
        return jnp.sum((data.y - yhat) ** 2) / (4 * n) + lam / d * jnp.sum(W**2)

    tr = full_batch_gd(data, W0, eta, lam=lam, steps=(0, 1))
    np.testing.assert_allclose(tr.value, W0 - eta * jax.grad(loss)(W0), rtol=1e-12)
    np.testing.assert_allclose(tr.train_loss[0], loss(W0), rtol=1e-12)


def test_full_batch_gd_large_n_follows_ode_small_n_interpolates(key):
    d = 16
    S, W0, _ = _setup(d, 1.0, 0.5, jnp.float64)
    eta = 0.5 / d
    steps = log_steps(int(2.0 * d / (2 * eta)), 12)  # ODE time 2
    devs = []
    for n in (2 * d * d, 8 * d * d):
        tr = full_batch_gd(make_dataset_from_matrix(key, S, n), W0, eta, steps=steps)
        ode = solve_riccati(RiccatiFlow.from_matrices(S, W0), tr.times)
        devs.append(np.max(np.abs(np.asarray(tr.risk - ode.risk))) / float(ode.risk[0]))
        assert tr.risk[-1] < 0.05 * tr.risk[0]
    # finite n: the empirical flow differs from the population one and the gap shrinks with n;
    # measured max |GD - ODE| / risk(0) = 2.1% at n = 8 d^2
    assert devs[1] < devs[0] and devs[1] < 0.05, devs
    # n = d^2/4 < d(d+1)/2 with a full-width student: training loss -> 0, risk stays O(1)
    small = make_dataset_from_matrix(key, S, d * d // 4)
    W0s = jnp.stack([W0, 2 * W0])
    sweep = full_batch_gd_sweep(small, W0s, jnp.array([eta]), steps=log_steps(20000, 8))
    assert sweep.risk.shape == (1, 2, len(log_steps(20000, 8)))
    assert bool(jnp.all(sweep.train_loss[..., -1] < 1e-4 * sweep.train_loss[..., 0]))
    assert bool(jnp.all(sweep.risk[..., -1] > 0.2 * sweep.risk[..., 0]))


def test_sgd_scaling_exponent_matches_ode():
    """Power-law teacher lambda_j ~ j^-1.5 (d = 50, full rank), small init: the time exponent
    fitted from SGD agrees with the ODE's within the fits' standard errors (+ 0.05)."""
    d, a = 50, 1.5
    flow = RiccatiFlow.from_teacher(PowerLaw(a), d, init_scale=1e-2, key=jax.random.key(0))
    prob = OnlineProblem(
        jnp.diag(jnp.sqrt(flow.eigenvalues)), flow.W0
    )  # teacher eigenbasis = standard basis (risk is rotation invariant)
    c, B, T = 1.0, 50, 20.0
    steps = log_steps(int(T * d * d / (2 * c)), 40)
    tr = online_sgd_sweep(
        prob, jnp.array([c / d]), jax.random.split(jax.random.key(1), 2), batch_size=B, steps=steps
    )
    t = np.asarray(tr.times[0, 0])
    ode = solve_riccati(flow, jnp.asarray(t))
    lam = np.asarray(flow.eigenvalues)
    lo, hi = 3 / lam[0], 0.3 / lam[-1]
    f_ode = fit_power_law(t, ode.risk, lo, hi)
    f_sgd = fit_power_law(t, tr.risk[0].mean(0), lo, hi)
    tol = 2 * np.hypot(float(f_ode.stderr), float(f_sgd.stderr)) + 0.05
    assert abs(float(f_ode.exponent) - float(f_sgd.exponent)) < tol, (f_ode, f_sgd)


def test_divergence_is_a_result_code(key):
    d = 20
    _, _, prob = _setup(d, 0.5, 1.0, jnp.float64)
    tr = online_sgd(prob, 50.0, key, batch_size=1, steps=(0, 10, 200))
    assert tr.result == optx.RESULTS.nonfinite
    assert bool(jnp.all(jnp.isnan(tr.risk)))


def test_validation():
    with pytest.raises(ValueError, match="eta"):
        online_sgd(OnlineProblem(jnp.eye(3), jnp.eye(3)), -1.0, jax.random.key(0), steps=(0, 1))
    with pytest.raises(ValueError, match="steps"):
        online_sgd(OnlineProblem(jnp.eye(3), jnp.eye(3)), 0.1, jax.random.key(0), steps=(1, 2))
    with pytest.raises(ValueError, match="W0"):
        OnlineProblem(jnp.eye(3), jnp.eye(4))
    with pytest.raises(ValueError, match="Delta"):
        OnlineProblem(jnp.eye(3), jnp.eye(3), Delta=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        online_sgd(OnlineProblem(jnp.eye(3), jnp.eye(3)), 0.1, jax.random.key(0), batch_size=0)
    assert log_steps(1000, 10)[0] == 0 and log_steps(1000, 10)[-1] == 1000
