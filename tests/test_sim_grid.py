"""Batched ERM experiments: one compiled program per grid, masking = running points alone."""

import chex
import equinox as eqx
import numpy as np
import pytest

from qnr.sim import ProximalGradient, simulate, simulate_grid
from qnr.sim import grid as grid_mod
from qnr.teachers import MarchenkoPastur, PowerLaw

METRICS = ("E", "e_test", "e_train", "loss", "rank_fraction", "trace", "iterations", "result")


def _assert_point_equal(point, single, rtol):
    for k in METRICS:
        np.testing.assert_allclose(getattr(point, k), getattr(single, k), rtol=rtol, err_msg=k)


def test_convex_grid_equals_points_alone():
    """A masked (alpha, kappa, lam, Delta) grid equals each point run at its own n and m
    (tight FISTA, so that the different padding changes nothing beyond 1e-9)."""
    teacher = MarchenkoPastur(0.5)
    alpha = np.array([0.3, 0.45, 0.45, 0.3])  # two sample sizes: two programs for the singles
    kappa = np.array([1.0, 0.2, 2.0, 0.35])
    lam = np.array([0.05, 0.02, 0.1, 0.03])
    delta = np.array([0.0, 0.1, 0.0, 0.3])
    fista = ProximalGradient()
    res = simulate_grid(teacher, alpha, kappa, lam, delta, d=14, seeds=[0, 5], solver=fista)
    assert res.E.shape == (4, 2) and res.eigenvalues.shape == (4, 2, 14)
    assert bool(np.all(res.converged))
    np.testing.assert_array_equal(res.n, np.round(alpha * 14**2))
    for i in range(4):
        single = simulate(
            teacher, alpha[i], kappa[i], lam[i], delta[i], d=14, seeds=[0, 5], solver=fista
        )
        _assert_point_equal(res.point(i), single, rtol=1e-9)
        assert np.all(single.rank_fraction <= np.round(kappa[i] * 14) / 14 + 1e-12)
    # rank-constrained points obey their bound
    assert np.all(res.rank_fraction[1] <= 3 / 14)
    assert np.all(res.rank_fraction[3] <= 5 / 14)
    # all points in one vmap (point_batch_size=None): the same numbers
    full = simulate_grid(
        teacher, alpha, kappa, lam, delta, d=14, seeds=[0, 5], point_batch_size=None, solver=fista
    )
    for k in METRICS:
        np.testing.assert_allclose(getattr(full, k), getattr(res, k), rtol=1e-9, err_msg=k)


@pytest.mark.parametrize("solver", ["adam"])
def test_network_grid_equals_points_alone(solver):
    """Masked samples and neurons: a fixed number of optimizer steps on the padded problem
    equals the same steps on each point alone (vmapped over lam, learning rate, init scale)."""
    teacher = PowerLaw(1.0, 0.5)
    alpha = np.array([0.2, 0.45, 0.2])  # points 0 and 2 differ only in lam, lr, init
    kappa = np.array([0.5, 1.5, 0.5])
    lam = np.array([0.01, 0.05, 0.02])
    lr = np.array([0.1, 0.2, 0.15]) if solver == "gd" else np.array([0.01, 0.005, 0.02])
    init = np.array([0.3, 1.0, 0.6])
    kw = dict(d=10, seeds=3, solver=solver, max_steps=60, mask_failures=False)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        res = simulate_grid(
            teacher, alpha, kappa, lam, 0.1, learning_rate=lr, init_scale=init, **kw
        )
    assert np.all(res.iterations == 60)
    for i in range(3):
        with pytest.warns(RuntimeWarning):
            single = simulate(
                teacher,
                alpha[i],
                kappa[i],
                lam[i],
                0.1,
                learning_rate=lr[i],
                init_scale=init[i],
                **kw,
            )
        _assert_point_equal(res.point(i), single, rtol=1e-9)
        assert np.all(single.rank_fraction <= np.round(kappa[i] * 10) / 10 + 1e-12)


def test_grid_compiles_once(monkeypatch):
    """One trace for a whole grid, and none for a new grid with the same largest n and m."""
    chex.clear_trace_counter()
    traced = eqx.filter_jit(chex.assert_max_traces(grid_mod._grid_impl, n=1))
    monkeypatch.setattr(grid_mod, "_compiled_grid", traced)
    teacher = MarchenkoPastur(0.5)
    kw = dict(d=8, seeds=2, solver="lbfgs", max_steps=200, mask_failures=False)
    with pytest.warns(RuntimeWarning):
        # (alpha, kappa) grid: 2 x 2 points, largest n = 0.5 d^2, largest m = 1.5 d
        a, k = np.meshgrid([0.25, 0.5], [0.5, 1.5])
        first = simulate_grid(teacher, a.ravel(), k.ravel(), lam=0.05, **kw)
        # new values, same largest sizes: no retrace (assert_max_traces would raise)
        second = simulate_grid(
            teacher, [0.5, 0.3, 0.4, 0.1], [1.5, 0.2, 1.0, 0.7], lam=[0.1, 0, 0.01, 0.2], **kw
        )
    assert first.E.shape == second.E.shape == (4, 2)
    with pytest.raises(AssertionError, match="trace"):
        # a different largest n is a different program
        simulate_grid(teacher, [0.7], [1.5], lam=0.05, **kw)


def test_seeds_are_prefix_consistent():
    """Seed s at a point gives the same data whatever the other seeds and grid points."""
    teacher = MarchenkoPastur(0.7)
    fista = ProximalGradient()
    both = simulate_grid(teacher, [0.3, 0.6], None, 0.02, 0.0, d=10, seeds=[1, 4], solver=fista)
    alone = simulate(teacher, 0.3, None, 0.02, 0.0, d=10, seeds=[4], solver=fista)
    np.testing.assert_allclose(both.E[0, 1], alone.E[0], rtol=1e-10)
    assert both.E[0, 0] != both.E[0, 1]


def test_summary_and_failure_masking():
    teacher = MarchenkoPastur(0.5)
    with pytest.warns(RuntimeWarning, match="3 of 3 runs did not converge"):
        res = simulate(teacher, 0.3, 1.0, 0.05, 0.0, d=8, seeds=3, solver="gd", max_steps=5)
    assert np.all(np.isnan(res.E)) and not np.any(res.converged)
    s = res.summary()
    assert s["converged_fraction"] == 0.0 and np.isnan(s["E_mean"])
    ok = simulate(teacher, 0.3, 1.0, 0.05, 0.1, d=8, seeds=3)
    s = ok.summary()
    assert s["converged_fraction"] == 1.0 and s["n_seeds"] == 3
    assert s["E_mean"] == pytest.approx(np.mean(ok.E))
    assert s["E_std"] == pytest.approx(np.std(ok.E, ddof=1))
    np.testing.assert_allclose(ok.e_test, (ok.E + 0.05) / 2, rtol=1e-12)


def test_bad_inputs():
    t = MarchenkoPastur(0.5)
    with pytest.raises(ValueError, match="alpha"):
        simulate(t, -0.1, d=6, seeds=1)
    with pytest.raises(ValueError, match="kappa"):
        simulate(t, 0.3, 0.0, d=6, seeds=1)
    with pytest.raises(ValueError, match="lam"):
        simulate(t, 0.3, 1.0, -1.0, d=6, seeds=1)
    with pytest.raises(ValueError, match="Delta"):
        simulate(t, 0.3, 1.0, 0.1, -0.5, d=6, seeds=1)
    with pytest.raises(ValueError, match="seeds"):
        simulate(t, 0.3, d=6, seeds=0)
    with pytest.raises(ValueError, match="seeds"):
        simulate(t, 0.3, d=6, seeds=[0.5])
    with pytest.raises(ValueError, match="d"):
        simulate(t, 0.3, d=1, seeds=1)
    with pytest.raises(ValueError, match="solver"):
        simulate(t, 0.3, d=6, seeds=1, solver="newton")
    with pytest.raises(ValueError, match="learning_rate"):
        simulate(t, 0.3, d=6, seeds=1, solver="gd", learning_rate=0.0)
    with pytest.raises(ValueError, match="init_scale"):
        simulate(t, 0.3, d=6, seeds=1, solver="gd", init_scale=-1.0)
    with pytest.raises(ValueError, match="broadcast"):
        simulate_grid(t, [0.1, 0.2], [1.0, 1.0, 1.0], d=6, seeds=1)
    with pytest.raises(ValueError, match="alpha must be a scalar"):
        simulate(t, [0.1, 0.2], d=6, seeds=1)
    with pytest.raises(ValueError, match="teacher"):
        simulate("mp", 0.3, d=6, seeds=1)
    with pytest.raises(ValueError, match="key"):
        simulate(t, 0.3, d=6, seeds=1, key=3)


def test_cli_simulate(capsys):
    """``qnr simulate --json`` prints one object whose statistics are those of simulate()."""
    import json

    from qnr.cli import main

    argv = ["simulate", "--alpha", "0.3", "--kappa-star", "0.5", "--lam", "0.05"]
    argv += ["--delta", "0.1", "--d", "10", "--seeds", "3", "--solver", "convex", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    for k in ("E_mean", "E_std", "e_test_mean", "e_train_mean", "rank_mean", "converged_fraction"):
        assert k in out
    ref = simulate(MarchenkoPastur(0.5), 0.3, None, 0.05, 0.1, d=10, seeds=3)
    assert out["E_mean"] == pytest.approx(float(np.mean(ref.E)), rel=1e-12)
    assert out["e_train_mean"] == pytest.approx(float(np.mean(ref.e_train)), rel=1e-12)
    assert out["converged_fraction"] == 1.0 and out["n"] == 30
    argv = ["simulate", "--alpha", "0.3", "--d", "8", "--seeds", "2", "--solver", "lbfgs"]
    argv += ["--kappa", "0.5", "--lam", "0.05", "--teacher", "power-law", "--gamma", "1", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["m"] == 4 and out["rank_mean"] <= 0.5
    assert main(["simulate", "--alpha", "-1", "--json"]) == 2
    assert "alpha" in capsys.readouterr().err
