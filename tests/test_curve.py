"""``qnr curve`` and ``qnr phase-diagram`` end to end at tiny sizes, against THEORY.md values."""

import json

import numpy as np
import pyarrow.csv as pacsv
import pytest

from qnr.cli import main


def _png_is_a_figure(path):
    import matplotlib.image as mpimg

    assert path.stat().st_size > 20_000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 600
    rgb = img[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05  # not blank
    assert len(np.unique((rgb * 255).astype(int), axis=0)) > 50  # lines, markers, text


def test_qnr_curve_tiny(tmp_path, capsys):
    """Tiny run: files exist, PNG is a real figure, JSON parses, and the theory at alpha = 0.3
    (kappa* = 0.5, lam = 0.05, Delta = 0) reproduces the THEORY.md section 2 reference row
    xi = 0.6327, tau = 0.5732, E = 0.3796, e_train = 0.001444, rank = 0.501."""
    out = tmp_path / "out"
    args = [
        "curve",
        "--d",
        "12",
        "--seeds",
        "2",
        "--alphas",
        "2",
        "--alpha-min",
        "0.3",
        "--alpha-max",
        "0.6",
        "--theory-points",
        "6",
        "--lam",
        "0.05",
        "--delta",
        "0",
        "--out",
        str(out),
        "--json",
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("png", "pdf", "json", "theory_csv", "simulation_csv"):
        assert (out / summary[key].split("/")[-1]).is_file(), key
    _png_is_a_figure(out / "curve.png")
    assert (out / "curve.pdf").read_bytes()[:4] == b"%PDF"
    assert summary["theory_failures"] == 0 and summary["simulation_failures"] == 0
    assert np.isfinite(summary["max_rel_dev_e_test"])
    full = json.loads((out / "curve.json").read_text())
    assert full["params"]["d"] == 12 and full["params"]["lam"] == 0.05
    # thresholds: closed form alpha_BO = k - k^2/2, THEORY.md alpha_SR(0.5) = 0.422175
    assert full["thresholds"]["alpha_BO"] == pytest.approx(0.375, rel=1e-12)
    assert full["thresholds"]["alpha_SR"] == pytest.approx(0.422175, rel=2e-6)

    table = pacsv.read_csv(out / "curve_summary.csv").to_pydict()
    i = int(np.argmin(np.abs(np.asarray(table["alpha"]) - 0.3)))
    assert table["alpha"][i] == pytest.approx(0.3)
    ref = {"xi": 0.6327, "tau": 0.5732, "E": 0.3796, "e_train": 0.001444, "rank": 0.501}
    for k, v in ref.items():
        assert table[f"theory_{k}"][i] == pytest.approx(v, rel=1.5e-3), k
    # e_test = alpha xi = (E + Delta/2)/2 (the two forms of THEORY.md section 2)
    assert table["theory_e_test"][i] == pytest.approx(0.3 * table["theory_xi"][i], rel=1e-12)
    assert table["theory_e_test"][i] == pytest.approx(table["theory_E"][i] / 2, rel=1e-8)

    sims = pacsv.read_csv(out / "curve_simulation.csv").to_pydict()
    assert len(sims["alpha"]) == 2 * 2 and set(sims["seed"]) == {0, 1}
    np.testing.assert_allclose(sims["e_test"], np.asarray(sims["E"]) / 2, rtol=1e-12)
    theory = pacsv.read_csv(out / "curve_theory.csv").to_pydict()
    assert len(theory["alpha"]) == 6
    assert np.all(np.diff(theory["e_test"]) < 0)  # more data, less error (noiseless)
    bayes = pacsv.read_csv(out / "curve_bayes.csv").to_pydict()
    # Bayes-optimal is a lower bound on the ERM test error
    assert np.all(np.asarray(bayes["e_test"]) <= np.asarray(theory["e_test"]) * (1 + 1e-9))


def test_qnr_curve_bad_input(capsys):
    assert main(["curve", "--d", "1"]) == 2
    assert "d must be" in capsys.readouterr().err
    assert main(["curve", "--alpha-min", "0.5", "--alpha-max", "0.2"]) == 2
    assert main(["curve", "--lam", "-1"]) == 2


def test_phase_diagram_tiny(tmp_path, capsys):
    out = tmp_path / "pd"
    args = [
        "phase-diagram",
        "--alphas",
        "5",
        "--kappa-stars",
        "3",
        "--lam",
        "0.05",
        "--delta",
        "0.1",
        "--alpha-max",
        "0.6",
        "--out",
        str(out),
        "--json",
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_failed"] == 0
    _png_is_a_figure(out / "phase_diagram.png")
    meta = json.loads((out / "phase_diagram.json").read_text())
    ks = np.asarray(meta["kappa_star"])
    np.testing.assert_allclose(meta["thresholds"]["alpha_BO"], ks - ks**2 / 2, rtol=1e-12)
    table = pacsv.read_csv(out / "phase_diagram.csv").to_pydict()
    assert len(table["alpha"]) == 15
    e = np.asarray(table["e_test"]).reshape(3, 5)
    assert np.all(np.isfinite(e)) and np.all(np.diff(e, axis=1) < 0)
    # exact: e_test = (E + Delta/2)/2
    np.testing.assert_allclose(table["e_test"], (np.asarray(table["E"]) + 0.05) / 2, rtol=1e-8)


def test_curve_thresholds_match_theory_md():
    """THEORY.md section 3: alpha_BO(0.5) = 0.375, alpha_SR(0.5) = 0.422175 (noiseless
    notions: drawn only at Delta = 0) and alpha_inter(kappa* = 0.5, Delta = 0.1) = 0.3597
    (only at Delta > 0)."""
    from qnr import theory
    from qnr.experiments.curve import _thresholds

    if not hasattr(theory, "alpha_inter"):
        pytest.skip("qnr.theory.alpha_inter not available")
    t = _thresholds(0.5, 1.0, 0.1, "mp")
    assert t["alpha_inter"] == pytest.approx(0.3597, abs=1e-4)
    assert np.isnan(t["alpha_BO"]) and np.isnan(t["alpha_SR"])
    t0 = _thresholds(0.5, 1.0, 0.0, "mp")
    assert t0["alpha_BO"] == pytest.approx(0.375, rel=1e-12)
    assert t0["alpha_SR"] == pytest.approx(0.422175, rel=2e-6)
    assert np.isnan(t0["alpha_inter"])


def test_theory_batch_min_nuclear_norm_reference():
    """lam = 0 (the lam -> 0+ limit, tau = 0 branch compiled only for such groups) reproduces
    THEORY.md section 2: kappa* = 0.5, Delta = 0: E = 2.126, r = 0.260 (alpha 0.1) and
    E = 0.322, r = 0.542 (alpha 0.3)."""
    from qnr.experiments.curve import solve_theory_batch

    floats = {
        "alpha": np.array([0.1, 0.3]),
        "kappa_star": np.full(2, 0.5),
        "kappa": np.ones(2),
        "lam": np.zeros(2),
        "delta": np.zeros(2),
    }
    out = solve_theory_batch({"teacher": "mp"}, floats)
    assert (out["result"] == 0).all()
    np.testing.assert_allclose(out["E"], [2.126, 0.322], rtol=1e-3)
    np.testing.assert_allclose(out["rank"], [0.260, 0.542], atol=1e-3)


def test_inverse_d_extrapolation_matches_numpy():
    """Weighted 1/d fit: exact on E(d) = 2 + 3/d; estimate and standard error equal numpy's
    weighted polyfit with the unscaled covariance (an independent implementation)."""
    from qnr.experiments.curve import extrapolate_inverse_d

    d = np.array([40.0, 60.0, 100.0, 140.0])
    E_inf, se, b = extrapolate_inverse_d(1 / d, 2 + 3 / d, np.full(4, 0.01))
    assert E_inf == pytest.approx(2.0, rel=1e-12) and b == pytest.approx(3.0, rel=1e-10)
    rng = np.random.default_rng(1)
    sem = np.array([0.05, 0.04, 0.03, 0.02])
    means = 2 + 3 / d + sem * rng.standard_normal(4)
    E_inf, se, b = extrapolate_inverse_d(1 / d, means, sem)
    coef, cov = np.polyfit(1 / d, means, 1, w=1 / sem, cov="unscaled")
    assert E_inf == pytest.approx(coef[1], rel=1e-10)
    assert b == pytest.approx(coef[0], rel=1e-10)
    assert se == pytest.approx(np.sqrt(cov[1, 1]), rel=1e-10)
    assert np.isnan(extrapolate_inverse_d([0.1], [1.0], [0.1])[0])


def test_qnr_curve_extrapolate_tiny(tmp_path, capsys):
    """--extrapolate: simulations at every d, the per-alpha 1/d fit in the CSV/JSON equal
    extrapolate_inverse_d of the per-d means, and the figure is written."""
    from qnr.experiments.curve import extrapolate_inverse_d

    out = tmp_path / "ex"
    args = ["curve", "--extrapolate", "8,12", "--seeds", "3", "--alphas", "2"]
    # alpha = 0.1 at d = 8, 12 (n = 6, 14): most minimisers are not unique
    args += ["--alpha-min", "0.1", "--alpha-max", "0.6", "--theory-points", "4"]
    args += ["--no-bayes", "--out", str(out), "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    _png_is_a_figure(out / "curve.png")
    full = json.loads((out / "curve.json").read_text())
    assert full["params"]["extrapolate_d"] == [8, 12]
    ex = pacsv.read_csv(out / "curve_extrapolated.csv").to_pydict()
    ex = {k: np.asarray(v, dtype=float) for k, v in ex.items()}  # empty cells (NaN) -> nan
    sims = pacsv.read_csv(out / "curve_simulation.csv").to_pydict()
    d, a, E, deg = (np.asarray(sims[k]) for k in ("d", "alpha", "E", "degenerate"))
    assert set(d) == {8, 12} and len(E) == 2 * 2 * 3
    for i, alpha in enumerate(ex["alpha"]):
        # the fit uses the seeds with a unique minimiser only
        m = [E[(d == dd) & (a == alpha) & (deg == 0)] for dd in (8, 12)]
        means = [v.mean() if v.size else np.nan for v in m]
        sems = [v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else np.nan for v in m]
        fit = extrapolate_inverse_d([1 / 8, 1 / 12], means, sems)
        np.testing.assert_allclose(ex["E"][i], fit[0], rtol=1e-9)
        np.testing.assert_allclose(ex["E_sem"][i], fit[1], rtol=1e-9)
        np.testing.assert_allclose(ex["e_test"][i], (fit[0] + 0.05) / 2, rtol=1e-9)
    assert deg.any(), "the test should exercise the exclusion of degenerate runs"
    assert "all_e_test_agree" in summary and "degenerate_runs" in summary
    assert main(["curve", "--extrapolate", "8", "--out", str(tmp_path / "x")]) == 2


def test_learning_curve_figure_marks_degenerate_and_applicable_thresholds():
    """Points with non-unique minimisers get a labelled ring; with Delta > 0 only
    alpha_inter is drawn (the noiseless thresholds are NaN and skipped)."""
    from qnr.plot import plot_learning_curve

    theory = {"alpha": np.array([0.1, 0.5]), "e_test": np.array([1.0, 0.1])}
    theory.update(e_train=np.array([1e-3, 1e-3]), rank=np.array([0.3, 0.6]))
    sim = {k: np.asarray(v) for k, v in theory.items()}
    sim["n_degenerate"] = np.array([2, 0])
    sim["n_ok"] = np.array([4, 4])
    thr = {"alpha_BO": np.nan, "alpha_SR": np.nan, "alpha_inter": 0.3597}
    fig = plot_learning_curve(theory, sim, thresholds=thr)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("non-unique minimiser" in t and "2/4" in t for t in labels)
    assert any("inter" in t for t in labels)
    assert not any("BO" in t or "SR" in t for t in labels)
    sim["n_degenerate"] = np.array([0, 0])
    fig = plot_learning_curve(theory, sim, thresholds=thr)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert not any("non-unique" in t for t in labels)
