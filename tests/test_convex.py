"""The convex nuclear-norm solver: KKT optimality, closed-form limits, rank constraint."""

import jax.numpy as jnp
import numpy as np
import pytest

from qnr.sim import (
    RESULTS,
    ERMProblem,
    ProximalGradient,
    make_dataset,
    n_samples,
    psd_prox,
    solve_convex,
)
from qnr.teachers import MarchenkoPastur, PowerLaw


def dense_data_grad(X, y, S):
    """grad f(S) = -(1/(2n)) sum_mu (y_mu - Tr(Z_mu S)) Z_mu with the Z_mu formed explicitly
    (independent of the matrix-free operators)."""
    X = np.asarray(X)
    n, d = X.shape
    Z = (np.einsum("ni,nj->nij", X, X) - np.eye(d)[None]) / np.sqrt(d)
    r = np.asarray(y) - np.einsum("nij,ij->n", Z, np.asarray(S))
    return -np.einsum("n,nij->ij", r, Z) / (2 * n), r


def problem_for(key, teacher, d, alpha, lam, noise):
    data = make_dataset(key, teacher, d, n_samples(alpha, d), noise)
    return data, ERMProblem.from_dataset(data, lam)


@pytest.mark.parametrize(
    "alpha, kappa_star, lam, noise",
    [
        (0.3, 0.5, 0.05, 0.0),
        (0.2, 0.3, 0.02, 0.1),
        (0.5, 1.0, 0.1, 0.5),
        (0.15, 0.5, 0.0, 0.0),
        (0.6, 0.5, 0.0, 0.5),
    ],
)
def test_kkt(key, alpha, kappa_star, lam, noise):
    """KKT of min_{S psd} f(S) + (lam/d) Tr S: G = grad f(Shat) + (lam/d) I is PSD and
    vanishes on the range of Shat (complementary slackness G Shat = 0)."""
    d = 16
    data, prob = problem_for(key, MarchenkoPastur(kappa_star), d, alpha, lam, noise)
    sol = solve_convex(prob, S_star=data.S_star)
    assert bool(sol.converged)
    S = np.asarray(sol.Shat)
    grad, r = dense_data_grad(data.X, data.y, S)
    G = grad + lam / d * np.eye(d)
    scale = np.abs(dense_data_grad(data.X, data.y, 0 * S)[0]).max()  # |grad f(0)|
    assert np.linalg.eigvalsh(G)[0] >= -1e-7 * scale
    w, V = np.linalg.eigh(S)
    rng = V[:, w > 1e-8 * max(w.max(), 1)]
    assert rng.shape[1] >= 1
    np.testing.assert_allclose(
        rng.T @ grad @ rng, -lam / d * np.eye(rng.shape[1]), atol=1e-7 * scale
    )
    np.testing.assert_allclose(G @ S, 0, atol=1e-7 * scale * np.abs(S).max())
    # the training error matches the explicit residual
    np.testing.assert_allclose(
        float(sol.e_train), np.sum(r**2) / (4 * len(r)), rtol=1e-8, atol=1e-20
    )
    # the rank fraction counts the eigenvalues above the tolerance
    assert float(sol.rank_fraction) == pytest.approx(rng.shape[1] / d)
    if lam > 0:
        assert float(sol.stats["duality_gap"]) < 1e-6


def test_zero_solution_threshold(key):
    """Shat = 0 iff lam/d >= lambda_max(A^* y)/(2n) (= lambda_max(-grad f(0)))."""
    d = 14
    data, prob = problem_for(key, MarchenkoPastur(0.5), d, 0.4, 0.0, 0.0)
    grad0, _ = dense_data_grad(data.X, data.y, np.zeros((d, d)))
    lam_c = d * np.linalg.eigvalsh(-grad0)[-1]
    above = solve_convex(ERMProblem(data.X, data.y, 1.01 * lam_c))
    below = solve_convex(ERMProblem(data.X, data.y, 0.9 * lam_c))
    assert float(jnp.max(jnp.abs(above.Shat))) == 0.0
    assert float(above.rank_fraction) == 0.0
    assert float(below.rank_fraction) * d == 1  # the top eigen-direction enters first
    assert bool(above.converged) and bool(below.converged)


def test_psd_least_squares_exact_recovery(key):
    """lam = 0, noiseless, n > d(d+1)/2: the least-squares solution is unique, Shat = S*."""
    d = 12
    teacher = PowerLaw(1.0, 0.5)
    data = make_dataset(key, teacher, d, 2 * d * d, 0.0)
    sol = solve_convex(ERMProblem.from_dataset(data, 0.0), S_star=data.S_star)
    assert bool(sol.converged)
    assert float(sol.E) < 1e-16
    assert float(sol.e_train) < 1e-18
    assert float(sol.e_test) == pytest.approx(float(sol.E) / 2)


def test_rank_constraint(key):
    """With a rank bound below the unconstrained rank the solution has rank <= the bound, a
    larger objective, and is a fixed point of the rank-constrained proximal-gradient map."""
    d = 20
    data, prob = problem_for(key, MarchenkoPastur(0.8), d, 0.4, 0.01, 0.0)
    free = solve_convex(prob, S_star=data.S_star)
    r_free = int(round(float(free.rank_fraction) * d))
    k = r_free // 2
    assert k >= 2
    cons = solve_convex(prob, rank=k, S_star=data.S_star)
    assert bool(cons.converged)
    assert int(round(float(cons.rank_fraction) * d)) <= k
    assert float(cons.loss) > float(free.loss)
    L = float(cons.stats["lipschitz"])
    S = cons.Shat
    S_next, _ = psd_prox(S - prob.data_grad(S) / L, prob.lam / d / L, k)
    assert float(jnp.max(jnp.abs(S_next - S))) < 1e-8 * float(jnp.max(jnp.abs(S)))
    # a bound at or above the free rank changes nothing
    loose = solve_convex(prob, rank=r_free + 1, S_star=data.S_star)
    assert float(loose.loss) == pytest.approx(float(free.loss), rel=1e-10)
    np.testing.assert_allclose(loose.Shat, free.Shat, atol=1e-6)


def test_masked_samples_equal_truncated_problem(key):
    """Masked samples contribute nothing and the normalisation uses the true n."""
    d = 12
    data, _ = problem_for(key, MarchenkoPastur(0.5), d, 0.6, 0.03, 0.2)
    n = 50
    mask = (jnp.arange(data.n) < n).astype(data.X.dtype)
    full = solve_convex(ERMProblem(data.X, data.y, 0.03, mask), S_star=data.S_star, Delta=0.2)
    trunc = solve_convex(ERMProblem(data.X[:n], data.y[:n], 0.03), S_star=data.S_star, Delta=0.2)
    np.testing.assert_allclose(full.Shat, trunc.Shat, atol=1e-9)
    np.testing.assert_allclose(full.e_train, trunc.e_train, rtol=1e-8)


def test_max_steps_result_code(key):
    d = 12
    _, prob = problem_for(key, MarchenkoPastur(0.5), d, 0.3, 0.01, 0.0)
    sol = solve_convex(prob, ProximalGradient(max_steps=3))
    assert not bool(sol.converged)
    assert int(sol.iterations) == 3
    assert sol.result == RESULTS.max_steps_reached


def test_float32(key):
    d = 12
    data = make_dataset(key, MarchenkoPastur(0.5), d, 100, 0.0, dtype=jnp.float32)
    prob = ERMProblem.from_dataset(data, 0.05)
    sol = solve_convex(prob, ProximalGradient(rtol=1e-5, atol=1e-7), S_star=data.S_star)
    ref = solve_convex(
        ERMProblem(data.X.astype(jnp.float64), data.y.astype(jnp.float64), 0.05),
        S_star=data.S_star.astype(jnp.float64),
    )
    assert sol.Shat.dtype == jnp.float32
    assert bool(sol.converged)
    assert float(jnp.sum((sol.Shat.astype(ref.Shat.dtype) - ref.Shat) ** 2)) / d < 1e-6
    assert float(sol.E) == pytest.approx(float(ref.E), abs=1e-3)


def test_bad_inputs(key):
    d = 6
    data, prob = problem_for(key, MarchenkoPastur(0.5), d, 1.0, 0.1, 0.0)
    with pytest.raises(ValueError, match="lam"):
        ERMProblem(data.X, data.y, -1.0)
    with pytest.raises(ValueError, match="y"):
        ERMProblem(data.X, data.y[:-1], 0.1)
    with pytest.raises(ValueError, match="sample_mask"):
        ERMProblem(data.X, data.y, 0.1, jnp.full(data.n, 0.5))
    with pytest.raises(ValueError, match="rank"):
        solve_convex(prob, rank=0)
    with pytest.raises(ValueError, match="S0"):
        solve_convex(prob, S0=-jnp.eye(d))
    with pytest.raises(ValueError, match="S_star"):
        solve_convex(prob, S_star=jnp.eye(d + 1))
    with pytest.raises(ValueError, match="Delta"):
        solve_convex(prob, Delta=-0.1)
    with pytest.raises(ValueError, match="max_steps"):
        ProximalGradient(max_steps=0)
    with pytest.raises(ValueError, match="rtol"):
        ProximalGradient(rtol=-1.0)
    with pytest.raises(ValueError, match="problem"):
        solve_convex(data)
    with pytest.raises(ValueError, match="X"):
        ERMProblem(data.y, data.y, 0.1)
    with pytest.raises(ValueError, match="rank"):
        solve_convex(prob, rank=1.5)


@pytest.mark.parametrize(
    "width, f32",
    [(None, True), (None, False), (4, True)],  # width 4 is below the rank: the polish fixes it
)
def test_factorized_reaches_the_fista_optimum(key, width, f32):
    """Factorized (L-BFGS on W W^T, then FISTA polish) and FISTA alone reach the same convex
    optimum: same objective to the certified gap, same rank, and the KKT conditions hold."""
    from qnr.sim import Factorized, duality_gap

    d = 16
    data, prob = problem_for(key, MarchenkoPastur(0.5), d, 0.35, 0.03, 0.1)
    ref = solve_convex(prob, ProximalGradient(rtol=1e-12), S_star=data.S_star, Delta=0.1)
    sol = solve_convex(
        prob,
        Factorized(width=width, float32_products=f32, gap_tol=1e-8),
        S_star=data.S_star,
        Delta=0.1,
    )
    assert bool(sol.converged)
    assert int(sol.stats["factorized_steps"]) > 0
    gap = float(duality_gap(prob, sol.Shat))
    assert gap <= 1e-6
    assert (float(sol.loss) - float(ref.loss)) / float(ref.loss) <= gap
    assert float(sol.rank_fraction) == float(ref.rank_fraction)
    assert float(sol.E) == pytest.approx(float(ref.E), rel=1e-4)
    S = np.asarray(sol.Shat)
    grad, _ = dense_data_grad(data.X, data.y, S)
    G = grad + 0.03 / d * np.eye(d)
    scale = np.abs(dense_data_grad(data.X, data.y, 0 * S)[0]).max()
    assert np.linalg.eigvalsh(G)[0] >= -1e-6 * scale


def test_gap_stopping_rule(key):
    """gap_tol stops FISTA once the certified gap is met, in fewer steps than the residual
    test, and the returned gap is <= gap_tol."""
    d = 14
    _, prob = problem_for(key, MarchenkoPastur(0.5), d, 0.4, 0.05, 0.1)
    tight = solve_convex(prob, ProximalGradient(rtol=1e-12))
    loose = solve_convex(prob, ProximalGradient(rtol=1e-12, gap_tol=1e-5))
    assert bool(loose.converged)
    assert float(loose.stats["duality_gap"]) <= 1e-5
    assert int(loose.iterations) < int(tight.iterations)
    assert int(loose.iterations) % 10 == 0  # checked every check_every = 10 steps
