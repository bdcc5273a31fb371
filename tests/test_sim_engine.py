"""One simulation engine: simulate_grid, the sweep's simulation task, learning_curve
(``qnr curve``) and ``qnr simulate`` give the same numbers for the same point and seed; every
``qnr simulate`` flag reaches the solver; teachers are fresh per (point, seed)."""

import json

import jax
import numpy as np
import pytest

from qnr.sim import run_key, simulate, simulate_grid
from qnr.sim.grid import run_data
from qnr.teachers import MarchenkoPastur

D, ALPHAS, LAM, DELTA, SEEDS = 10, (0.5, 0.8), 0.05, 0.1, (0, 1)  # unique minimisers


def _cli(argv, capsys, code=0):
    """``qnr ... --json`` as a dict (exit status 3: not converged)."""
    from qnr.cli import main

    assert main(argv) == code
    return json.loads(capsys.readouterr().out)


def test_three_entry_points_give_identical_results(tmp_path, capsys):
    """Same point and seed -> same teacher and data (bitwise: the zero predictor at lam = 1e3
    has E = Tr S*^2/d exactly) and the same solution up to the certified solver tolerance
    (the entry points batch points differently, which changes floating-point paths)."""
    from qnr.experiments import learning_curve
    from qnr.sweep import SweepConfig, load, run_sweep

    teacher = MarchenkoPastur(0.5)
    a_grid = np.repeat(ALPHAS, 2)
    lam_grid = np.tile([LAM, 1e3], 2)
    grid = simulate_grid(teacher, a_grid, None, lam_grid, DELTA, d=D, seeds=len(SEEDS))
    cfg = SweepConfig(
        kind="simulation",
        grid={"alpha": ALPHAS, "lam": (LAM, 1e3), "delta": (DELTA,), "d": (D,)},
        seeds=SEEDS,
    )
    run_sweep(cfg, tmp_path / "sweep", quiet=True)
    df = load(tmp_path / "sweep")
    curve = learning_curve(
        lam=LAM,
        delta=DELTA,
        alphas_theory=np.array(ALPHAS),
        alphas_sim=np.array(ALPHAS),
        d=D,
        seeds=len(SEEDS),
        bayes=False,
    )
    sim = curve.simulation
    for i, (a, lam) in enumerate(zip(a_grid, lam_grid)):
        rows = df[(df["alpha"] == a) & (df["lam"] == lam)].sort_values("seed")
        exact = 1e-13 if lam > 1 else 1e-4  # certified gap 1e-5
        np.testing.assert_allclose(rows["E"], grid.E[i], rtol=exact, err_msg=f"sweep {a} {lam}")
        np.testing.assert_allclose(rows["rank"], grid.rank_fraction[i], atol=1e-12)
        if lam == LAM:
            curve_E = sim["E"][sim["alpha"] == a]
            np.testing.assert_allclose(curve_E, grid.E[i], rtol=1e-4, err_msg=f"curve {a}")
    # qnr simulate at the largest alpha (the same sample allocation as the grid)
    out = _cli(
        ["simulate", "--alpha", "0.8", "--lam", str(LAM), "--delta", str(DELTA)]
        + ["--d", str(D), "--seeds", "2", "--json"],
        capsys,
    )
    assert out["E_mean"] == pytest.approx(float(np.mean(grid.E[2])), rel=1e-4)
    assert out["rank_mean"] == pytest.approx(float(np.mean(grid.rank_fraction[2])), abs=1e-12)
    assert not np.any(grid.degenerate[::2])
    # a different seed is a different teacher
    assert np.all(np.diff(grid.E[1]) != 0)


def test_fresh_teacher_per_point_and_seed():
    """Different points (and seeds) get different teachers; the same point and seed the same
    one; ``common_data`` restores one teacher per seed."""
    key = jax.random.key(0)
    k = jax.random.fold_in(key, 3)
    S = [
        run_data(run_key(k, a, 1.0, LAM, DELTA), MarchenkoPastur(0.5), D, 5, float)[0]
        for a in (0.2, 0.2, 0.3)
    ]
    np.testing.assert_array_equal(S[0], S[1])
    assert float(np.abs(S[0] - S[2]).max()) > 0.1
    S_seed = run_data(
        run_key(jax.random.fold_in(key, 4), 0.2, 1.0, LAM, DELTA), MarchenkoPastur(0.5), D, 5, float
    )[0]
    assert float(np.abs(S[0] - S_seed).max()) > 0.1
    # measured through the simulation: the zero predictor (huge lam) has E = Tr S*^2/d
    fresh = simulate_grid(MarchenkoPastur(0.5), [0.2, 0.3], None, 1e3, 0.0, d=D, seeds=2)
    common = simulate_grid(
        MarchenkoPastur(0.5), [0.2, 0.3], None, 1e3, 0.0, d=D, seeds=2, common_data=True
    )
    assert np.all(fresh.E[0] != fresh.E[1])
    np.testing.assert_array_equal(common.E[0], common.E[1])


def test_cli_max_steps_reaches_the_solver(capsys):
    base = ["simulate", "--alpha", "0.3", "--lam", "0.05", "--d", "8", "--seeds", "2", "--json"]
    out = _cli(base + ["--solver", "lbfgs", "--max-steps", "3"], capsys, 3)
    assert out["iterations_mean"] == 3 and out["converged_fraction"] == 0.0
    out = _cli(base + ["--solver", "convex", "--max-steps", "3"], capsys, 3)
    assert out["iterations_max"] <= 6 and out["converged_fraction"] == 0.0  # 3 + 3 polish
    out = _cli(base + ["--solver", "fista", "--max-steps", "3"], capsys, 3)
    assert out["iterations_max"] == 3 and out["converged_fraction"] == 0.0
    out = _cli(base + ["--solver", "convex"], capsys)
    assert out["converged_fraction"] == 1.0 and out["iterations_max"] > 6


def test_cli_lr_reaches_the_solver(capsys):
    """gd converges to the same optimum at two step sizes, in different numbers of steps; the
    CLI's step counts are those of simulate() at the given --lr."""
    base = ["simulate", "--alpha", "0.5", "--lam", "0.05", "--d", "8", "--seeds", "2"]
    base += ["--solver", "gd", "--json"]
    iters = {}
    for lr in (0.1, 0.2):
        out = _cli(base + ["--lr", str(lr)], capsys)
        ref = simulate(
            MarchenkoPastur(0.5), 0.5, None, 0.05, 0.0, d=8, seeds=2, solver="gd", learning_rate=lr
        )
        assert out["converged_fraction"] == 1.0
        assert out["iterations_mean"] == float(np.mean(ref.iterations))
        assert out["E_mean"] == pytest.approx(float(np.mean(ref.E)), rel=1e-9)
        iters[lr] = out["iterations_mean"]
    assert iters[0.1] > 1.5 * iters[0.2]


def test_cli_init_scale_reaches_the_solver(capsys):
    base = ["simulate", "--alpha", "0.3", "--lam", "0.05", "--d", "8", "--seeds", "2"]
    base += ["--solver", "lbfgs", "--json"]
    for s in (0.05, 2.0):
        out = _cli(base + ["--init-scale", str(s)], capsys)
        ref = simulate(
            MarchenkoPastur(0.5), 0.3, None, 0.05, 0.0, d=8, seeds=2, solver="lbfgs", init_scale=s
        )
        assert out["E_mean"] == pytest.approx(float(np.mean(ref.E)), rel=1e-9)


def test_unbounded_kappa_is_no_rank_constraint():
    """kappa = inf or 1e12 (convex solver) is the unconstrained problem, not an overflow."""
    teacher = MarchenkoPastur(0.5)
    kw = dict(lam=0.05, Delta=0.1, d=12, seeds=2)
    ref = simulate(teacher, 0.5, kappa=None, **kw)
    for kappa in (np.inf, 1e12):
        res = simulate(teacher, 0.5, kappa=kappa, **kw)
        np.testing.assert_allclose(res.E, ref.E, rtol=1e-12)
