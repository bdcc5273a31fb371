"""Population Riccati flow (qnr.theory.dynamics): closed form vs RK4, scalar closed form,
long-horizon limits, gradients vs finite differences, failure codes, power-law fits."""

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest
from _fd import central_difference

from qnr.teachers import MarchenkoPastur, PowerLaw
from qnr.theory.dynamics import (
    RiccatiFlow,
    RiccatiSolver,
    fit_power_law,
    heuristic_time_exponent,
    log_times,
    population_risk_eig,
    riccati_rhs,
    solve_riccati,
)


def _rk4(M0, lam, t_end, n_steps):
    """Generic classical RK4 on dM/dt = M* M + M M* - 2 M^2 (independent reference)."""
    A = jnp.diag(lam)
    h = t_end / n_steps

    def f(M, _):
        k1 = riccati_rhs(M, A)
        k2 = riccati_rhs(M + h / 2 * k1, A)
        k3 = riccati_rhs(M + h / 2 * k2, A)
        k4 = riccati_rhs(M + h * k3, A)
        return M + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

    return jax.lax.scan(f, M0, None, length=n_steps)[0]


@pytest.mark.parametrize("width", [16, 5])  # exact-inverse path (m >= d) and factor path (m < d)
def test_closed_form_matches_rk4(key, width):
    d = 16
    k1, k2 = jax.random.split(key)
    S_star = MarchenkoPastur(0.5).sample(k1, d)
    W0 = 0.3 * jax.random.normal(k2, (d, width)) / np.sqrt(width)
    prob = RiccatiFlow.from_matrices(S_star, W0)
    sol = solve_riccati(prob, jnp.array([0.25, 0.5, 1.0]))
    assert sol.result == optx.RESULTS.successful
    M_rk4 = _rk4(prob.W0 @ prob.W0.T, prob.eigenvalues, 1.0, 4000)
    np.testing.assert_allclose(sol.value, M_rk4, atol=1e-8, rtol=0)
    # risk is 2 ||M - M*||_F^2 / d, also in the original basis
    assert np.isclose(sol.risk[-1], population_risk_eig(M_rk4, prob.eigenvalues), rtol=1e-7)


def test_identity_init_matches_scalar_riccati():
    """W0 = s I keeps M diagonal: m_j(t) = lam m0 e^{2 lam t} / (lam + m0 (e^{2 lam t} - 1))."""
    lam = jnp.array([4.0, 2.0, 1.0, 0.3, 0.0])
    s2 = 1e-4
    prob = RiccatiFlow(lam, np.sqrt(s2) * jnp.eye(5))
    t = jnp.array([0.1, 1.0, 3.0, 10.0])
    sol = solve_riccati(prob, t)
    lt = np.asarray(lam)[None, :] * np.asarray(t)[:, None]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e = np.exp(2 * lt)
        ref = np.where(
            lt > 0,
            np.asarray(lam) * s2 * e / (np.asarray(lam) + s2 * (e - 1)),
            s2 / (1 + 2 * s2 * np.asarray(t)[:, None]),
        )
    np.testing.assert_allclose(sol.overlaps, ref, rtol=1e-10)
    off = sol.value - jnp.diag(jnp.diagonal(sol.value))
    assert float(jnp.max(jnp.abs(off))) < 1e-14


@pytest.mark.parametrize("width", [20, 6])
def test_long_horizon_is_finite_and_converges(key, width):
    """At t = 1e4 (the naive formula overflows: e^{2 lam t} with lam t ~ 1e4) the flow reaches
    M* (full-width student) or the best rank-m approximation (m < rank M*)."""
    d = 20
    lam = jnp.linspace(3.0, 0.2, d)
    W0 = 1e-2 * jax.random.normal(key, (d, width))
    sol = solve_riccati(RiccatiFlow(lam, W0), log_times(1e-2, 1e4, 25))
    assert sol.result == optx.RESULTS.successful
    assert bool(jnp.all(jnp.isfinite(sol.risk)))
    target = jnp.where(jnp.arange(d) < width, lam, 0.0)
    np.testing.assert_allclose(sol.overlaps[-1], target, atol=1e-10)
    expected_risk = 2 * float(jnp.sum(lam[width:] ** 2)) / d
    np.testing.assert_allclose(sol.risk[-1], expected_risk, atol=1e-10)
    # risk never increases along gradient flow
    assert bool(jnp.all(jnp.diff(sol.risk) <= 1e-12))
    # the naive closed form really overflows here
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(np.asarray(lam) * 1e4)
        assert not np.all(np.isfinite(e * e))


def test_gradient_wrt_teacher_and_init_matches_finite_differences():
    d = 12
    t = jnp.array([0.5, 2.0])
    g0 = jax.random.normal(jax.random.key(3), (d, d)) / np.sqrt(d)

    def risk(gamma, scale):
        lam = jnp.arange(1, d + 1, dtype=jnp.float64) ** (-gamma)  # PowerLaw(gamma) at d
        lam = lam * jnp.sqrt(d / jnp.sum(lam**2))
        return solve_riccati(RiccatiFlow(lam, scale * g0), t).risk[-1]

    gamma, scale = 1.2, 0.05
    grad = jax.grad(risk, argnums=(0, 1))(gamma, scale)
    fd_g, fd_s = central_difference(lambda v: risk(*v), jnp.asarray([gamma, scale]), 1e-6)
    np.testing.assert_allclose(grad[0], fd_g, rtol=1e-6)
    np.testing.assert_allclose(grad[1], fd_s, rtol=1e-6)
    assert abs(float(grad[1])) > 1e-6  # the init scale matters at t = 2


def test_factor_path_under_jit_needs_static_substeps(key):
    lam = jnp.linspace(2.0, 0.5, 8)
    W0 = 0.1 * jax.random.normal(key, (8, 3))
    t = jnp.array([0.5, 1.0])
    ref = solve_riccati(RiccatiFlow(lam, W0), t).risk
    with pytest.raises(ValueError, match="substeps"):
        jax.jit(lambda l: solve_riccati(RiccatiFlow(l, W0), t).risk)(lam)
    f = jax.jit(lambda l: solve_riccati(RiccatiFlow(l, W0), t, RiccatiSolver(substeps=4)).risk)
    np.testing.assert_allclose(f(lam), ref, rtol=1e-10)


def test_singular_init_is_a_result_code():
    lam = jnp.array([1.0, 0.5, 0.2])
    W0 = jnp.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).T * 0.1  # rank 2, m = d
    W0 = W0.at[:, 1].set(W0[:, 0])
    sol = solve_riccati(RiccatiFlow(lam, W0), jnp.array([1.0]))
    assert sol.result == optx.RESULTS.nonfinite
    assert bool(jnp.all(jnp.isnan(sol.risk)))


def test_input_validation():
    with pytest.raises(ValueError, match="eigenvalues"):
        RiccatiFlow(jnp.array([1.0, -0.1]), jnp.eye(2))
    with pytest.raises(ValueError, match="W0"):
        RiccatiFlow(jnp.array([1.0, 0.1]), jnp.eye(3))
    with pytest.raises(ValueError, match="times"):
        solve_riccati(RiccatiFlow(jnp.array([1.0, 0.1]), jnp.eye(2)), jnp.array([1.0, 0.5]))
    with pytest.raises(ValueError, match="S_star"):
        RiccatiFlow.from_matrices(-jnp.eye(2), jnp.eye(2))
    with pytest.raises(ValueError, match="a must be"):
        heuristic_time_exponent(0.4)


def test_fit_power_law_recovers_known_exponent():
    rng = np.random.default_rng(0)
    t = np.geomspace(1, 1e3, 40)
    covered = 0
    for _ in range(50):
        r = 3.0 * t**-1.3 * np.exp(0.05 * rng.standard_normal(t.size))
        fit = fit_power_law(t, r)
        covered += abs(float(fit.exponent) - 1.3) < 2 * float(fit.stderr)
    assert covered >= 40  # ~95% nominal coverage of +- 2 se
    exact = fit_power_law(t, 2 * t**-0.7)
    assert abs(float(exact.exponent) - 0.7) < 1e-12 and float(exact.stderr) < 1e-10
    with pytest.raises(ValueError, match="3 points"):
        fit_power_law(t, t**-1.0, t_min=2e3)


@pytest.mark.parametrize("a", [1.0, 1.5])
def test_ode_time_exponent_vs_heuristic(a):
    """Measured ODE exponent (d = 200, small Gaussian init, window 3/lam_1 < t < 0.3/lam_d):
    a = 1.0 -> 1.075 +- 0.049 (heuristic 1.0); a = 1.5 -> 1.444 +- 0.028 (heuristic 1.333):
    the heuristic underestimates the decay at a = 1.5 by ~8% (4 standard errors)."""
    d = 200
    prob = RiccatiFlow.from_teacher(PowerLaw(a), d, init_scale=1e-3, key=jax.random.key(0))
    lam = np.asarray(prob.eigenvalues)
    t = log_times(1e-2, 1e3, 50)
    sol = solve_riccati(prob, t)
    fit = fit_power_law(t, sol.risk, 3 / lam[0], 0.3 / lam[-1])
    heur = float(heuristic_time_exponent(a))
    assert float(fit.stderr) < 0.06
    assert abs(float(fit.exponent) - heur) / heur < 0.15
    if a == 1.5:  # a real, resolved deviation from the heuristic
        assert float(fit.exponent) - heur > 2 * float(fit.stderr)


@pytest.mark.parametrize("kind", ["ode", "sgd", "gd"])
def test_cli_dynamics_json(capsys, kind):
    import json

    from qnr.cli import main

    argv = ["dynamics", "--kind", kind, "--d", "16", "--t-max", "3", "--num-times", "12"]
    argv += ["--gamma", "1.5", "--c", "0.5", "--batch", "20", "--alpha", "4", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    for k in ("times", "risk", "exponent", "exponent_err", "heuristic_exponent", "result"):
        assert k in out
    assert out["result"] == "successful"
    assert len(out["times"]) == len(out["risk"]) and out["times"][-1] == pytest.approx(3.0)
    assert out["risk"][-1] < out["risk"][0]
    assert out["heuristic_exponent"] == pytest.approx(4 / 3)
    if kind == "ode":  # the same computation through the library
        teacher = PowerLaw(1.5)
        k_t, k_w, _ = jax.random.split(jax.random.key(0), 3)
        S = teacher.sample(k_t, 16)
        W0 = 1e-2 * jax.random.normal(k_w, (16, 16)) / 4.0
        sol = solve_riccati(RiccatiFlow.from_matrices(S, W0), jnp.asarray(out["times"]))
        np.testing.assert_allclose(out["risk"], sol.risk, rtol=1e-9)
        assert out["exponent_err"] is not None and out["exponent_err"] > 0


def test_width_scaling_of_the_long_time_risk():
    """d = 200, a = 1.5, widths 2..16, run to t = 20 log(1e4)/lambda_m: the flow reaches the
    Eckart-Young limit 2 sum_{j>m} lambda_j^2/d (factor path, up to ~350 semigroup steps per
    interval), and the fitted width exponent is 1.80 +- 0.04 vs the heuristic 2a - 1 = 2 (the
    discrete tail sum_{j>m} j^-3 approaches m^-2/2 slowly; widths 8..64 give 2.00 +- 0.03)."""
    from qnr.theory.dynamics import heuristic_width_exponent, limit_risk

    d, a = 200, 1.5
    lam = PowerLaw(a).eigenvalues(d)
    widths = [2, 4, 8, 16]
    risks = []
    for m in widths:
        W0 = 1e-2 * jax.random.normal(jax.random.key(m), (d, m)) / np.sqrt(m)
        t_end = 20 * np.log(1e4) / float(lam[m - 1])
        sol = solve_riccati(RiccatiFlow(lam, W0), jnp.array([t_end / 10, t_end]))
        np.testing.assert_allclose(sol.risk[-1], limit_risk(lam, m), rtol=1e-9)
        risks.append(float(sol.risk[-1]))
    fit = fit_power_law(widths, risks)
    assert float(fit.stderr) < 0.1
    assert 1.7 < float(fit.exponent) < float(heuristic_width_exponent(a))
