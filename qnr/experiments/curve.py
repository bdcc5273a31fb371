"""The main job: a theory-vs-simulation learning curve over ``alpha = n/d^2``.

:func:`learning_curve` evaluates, at fixed ``kappa*``, ``kappa``, ``lam``, ``Delta``,

* the ERM replica prediction (THEORY.md section 2) on a fine ``alpha`` grid -- test error
  ``e_test = alpha xi = (E + Delta/2)/2``, training loss ``e_train = alpha xi (lam/tau)^2``
  and rank fraction;
* ERM simulations at dimension ``d`` (the convex nuclear-norm solver, i.e. the nuclear route,
  or the network trained by optax) on a coarser grid, over several seeds, each (alpha, seed)
  with a fresh teacher and data (:func:`qnr.sim.run_key`): mean and standard error per
  ``alpha``, and the number of seeds whose convex minimiser is not unique (``n_degenerate``,
  :func:`qnr.sim.dual_certificate`; they stay in the means and are marked in the figure);
* optionally (``extrapolate_d``) the same simulations at several ``d`` and, per ``alpha``, the
  weighted least-squares fit ``E(d) = E_inf + b/d`` (weights ``1/SE^2``, over the seeds with
  a unique minimiser; a ``d`` with fewer than two such seeds is left out): the extrapolated
  ``E_inf``, ``e_test_inf = (E_inf + Delta/2)/2`` and ``rank_inf`` with their standard errors;
* the thresholds that apply: ``alpha_BO`` and ``alpha_SR`` are noiseless notions (drawn only at
  ``Delta = 0``), ``alpha_inter`` (the ``lam -> 0+`` interpolation threshold) only at
  ``Delta > 0`` (THEORY.md section 3); optionally the Bayes-optimal test error (section 4).

The theory batch runs through :class:`qnr.sweep.ShardedMap`; the simulations through
:func:`qnr.sim.simulate_grid`, one compiled program per ``(alpha, d)`` (a shared program would
pad every point to the largest ``n``) with the seeds one after another on CPU (a vmapped batch
runs every lane as long as the slowest; vmapped on accelerators). Both use
the engine of ``qnr simulate`` and ``qnr sweep``. :func:`write_curve` saves the figure (PNG +
PDF) and the data (CSV + JSON).
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qnr._validate import check_nonnegative, check_positive, check_size
from qnr._version import __version__
from qnr.sweep import ShardedMap, seed_keys

__all__ = [
    "LearningCurve",
    "learning_curve",
    "write_curve",
    "summarise_seeds",
    "extrapolate_inverse_d",
    "agreement",
]

_SIM_METRICS = ("E", "e_test", "e_train", "rank")
_THEORY_METRICS = ("xi", "tau", "E", "e_test", "e_train", "rank")


@dataclass(frozen=True)
class LearningCurve:
    """Result of :func:`learning_curve` (plain numpy columns, one dict per table).

    ``theory``: ``alpha`` and the replica outputs on the fine grid (NaN where the solver
    failed, ``result`` its code). ``simulation``: one entry per (alpha, seed): ``alpha``,
    ``seed`` and the simulation metrics. ``summary``: per simulated ``alpha``: mean and
    standard error (``<metric>_sem``) over the successful seeds, ``n_ok``, and the theory at
    the same ``alpha`` (``theory_<metric>``). ``thresholds``: ``alpha_BO``, ``alpha_SR``,
    ``alpha_inter`` (NaN where they do not apply). ``bayes``: ``alpha``, ``E``, ``e_test``
    or None. ``by_d`` (extrapolation mode): ``{d: summary}`` at every simulated ``d``;
    ``extrapolated``: per ``alpha`` the ``1/d`` fit (``E``, ``E_sem``, ``e_test``,
    ``e_test_sem``, ``rank``, ``rank_sem``, ``slope_E``) and the theory, or None.
    """

    params: dict[str, Any]
    theory: dict[str, np.ndarray]
    simulation: dict[str, np.ndarray]
    summary: dict[str, np.ndarray]
    thresholds: dict[str, float]
    bayes: dict[str, np.ndarray] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    by_d: dict[int, dict[str, np.ndarray]] | None = None
    extrapolated: dict[str, np.ndarray] | None = None

    def max_relative_deviation(self, metric: str = "e_test") -> float:
        """``max_alpha |sim mean - theory| / theory`` over the simulated ``alpha`` values."""
        sim = self.summary[metric]
        th = self.summary[f"theory_{metric}"]
        rel = np.abs(sim - th) / np.abs(th)
        rel = rel[np.isfinite(rel)]
        return float(rel.max()) if rel.size else float("nan")


def summarise_seeds(alpha, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Mean and standard error over seeds (axis 1) of each ``(P, S)`` metric, ignoring
    failed (NaN) seeds; ``n_ok`` counts the successful seeds per point."""
    out = {"alpha": np.asarray(alpha)}
    ok = None
    for name, v in values.items():
        if name == "degenerate":
            out["n_degenerate"] = np.sum(np.asarray(v) > 0, axis=1)
            continue
        v = np.asarray(v, dtype=float)
        good = np.isfinite(v)
        ok = good if ok is None else ok & good
        n = good.sum(axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(v, axis=1)
            sd = np.nanstd(v, axis=1, ddof=1) if v.shape[1] > 1 else np.zeros(v.shape[0])
        out[name] = mean
        out[f"{name}_sem"] = np.where(n > 1, sd / np.sqrt(np.maximum(n, 1)), np.nan)
    out["n_ok"] = ok.sum(axis=1) if ok is not None else np.zeros(len(out["alpha"]), int)
    return out


def extrapolate_inverse_d(inv_d, means, sems) -> tuple[float, float, float]:
    """Weighted least squares ``v(d) = v_inf + b/d`` (weights ``1/sem^2``; points with a
    non-finite mean or SE are dropped, SEs are floored at 1e-3 of the largest). Returns
    ``(v_inf, its standard error, b)``; NaN with fewer than two usable dimensions."""
    inv_d, means, sems = (np.asarray(x, float) for x in (inv_d, means, sems))
    ok = np.isfinite(means) & np.isfinite(sems)
    if ok.sum() < 2:
        return float("nan"), float("nan"), float("nan")
    x, m = inv_d[ok], means[ok]
    # a zero SE (all seeds equal, e.g. a rank at tiny d) gets a floor, not an infinite weight
    floor = 1e-3 * max(float(np.max(sems[ok])), 1e-9 * max(float(np.max(np.abs(m))), 1.0))
    s = np.maximum(sems[ok], floor)
    A = np.stack([np.ones_like(x), x], axis=1) / s[:, None]
    cov = np.linalg.pinv(A.T @ A)
    coef = cov @ (A.T @ (m / s))
    return float(coef[0]), float(np.sqrt(max(cov[0, 0], 0.0))), float(coef[1])


def agreement(sim, sem, theory, rel: float = 0.05, n_se: float = 2.0) -> np.ndarray:
    """Per point: ``|sim - theory| <= max(rel |theory|, n_se sem)`` (NaN where undefined)."""
    sim, sem, theory = (np.asarray(x, float) for x in (sim, sem, theory))
    tol = np.maximum(rel * np.abs(theory), n_se * np.nan_to_num(sem, nan=0.0))
    return np.where(np.isfinite(sim) & np.isfinite(theory), np.abs(sim - theory) <= tol, np.nan)


def _simulate_alphas(
    teacher_obj, alphas, *, d, seeds, seed, kappa, lam, delta, solver, sim_options
) -> dict[str, np.ndarray]:
    """``(P, S)`` arrays of the simulation metrics at every ``alpha`` (one program)."""
    import jax

    from qnr.sim import simulate_grid

    opts = dict(sim_options or {})
    name = "convex" if solver == "convex" else str(opts.pop("optimizer", "lbfgs"))
    kw = {}
    for k in ("max_steps", "learning_rate", "init_scale"):
        if opts.get(k) is not None:
            kw[k] = int(opts[k]) if k == "max_steps" else float(opts[k])
    if opts.get("common_data"):
        kw["common_data"] = True
    rows = []
    for a in np.asarray(alphas, float):
        # one program per alpha: a shared program would pad every point to the largest n
        # (9x the work at alpha = 0.1 on a [0.1, 0.9] curve, where the solver needs the most
        # steps); the compile (a few seconds) is cheaper
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # counted by the caller
            res = simulate_grid(
                teacher_obj,
                a,
                kappa,
                lam,
                delta,
                d=d,
                seeds=seeds,
                solver=name,
                key=jax.random.key(seed),
                **kw,
            )
        conv = np.asarray(res.converged)
        rows.append(
            {
                "E": res.E,
                "e_test": res.e_test,
                "e_train": res.e_train,
                "rank": res.rank_fraction,
                "duality_gap": res.duality_gap,
                "iterations": res.iterations,
                "result": np.where(conv, 0, res.result).astype(np.int32),
                "degenerate": (np.asarray(res.degenerate) & conv).astype(np.int32),
            }
        )
    return {k: np.concatenate([r[k] for r in rows], axis=0) for k in rows[0]}


def solve_theory_batch(static, floats, options=None) -> dict[str, np.ndarray]:
    """The ``theory`` task on a batch of points (sharded, vmapped, one pass: the globalised
    Newton of :func:`qnr.theory.solve_erm` converges from its fixed start)."""
    from qnr.sweep import THEORY

    opts = {**THEORY.options, **(options or {})}
    size = int(np.asarray(next(iter(floats.values()))).size)
    keys = seed_keys(0, [0])
    fn = THEORY.build(static, opts, floats)
    return ShardedMap(fn, size)(floats, keys)


def warn_theory_failures(result, what: str) -> None:
    """A ``RuntimeWarning`` (at the caller's caller) counting the failed fixed points of a
    :func:`solve_theory_batch` result (non-zero result codes; their values are NaN)."""
    n_fail = int(np.count_nonzero(result))
    if n_fail:
        warnings.warn(
            f"{what}: {n_fail} of {np.size(result)} fixed points failed (NaN)",
            RuntimeWarning,
            stacklevel=3,
        )


def _thresholds(kappa_star: float, kappa: float, delta: float, teacher: str) -> dict:
    import jax.numpy as jnp

    from qnr import theory

    out = {"alpha_BO": np.nan, "alpha_SR": np.nan, "alpha_inter": np.nan}
    if teacher != "mp":
        return out
    ks = jnp.asarray(kappa_star)
    kap = None if kappa >= 1 else jnp.asarray(kappa)
    if delta == 0:  # perfect recovery thresholds are noiseless notions (THEORY.md section 3)
        out["alpha_BO"] = float(theory.alpha_bo(ks))
        out["alpha_SR"] = float(theory.alpha_sr(ks, kap))
    inter = getattr(theory, "alpha_inter", None)  # signature alpha_inter(Delta, kappa*, kappa)
    if inter is not None and delta > 0:
        out["alpha_inter"] = float(inter(jnp.asarray(delta), ks, kap))
    return out


def learning_curve(
    *,
    kappa_star: float = 0.5,
    lam: float = 0.01,
    delta: float = 0.1,
    kappa: float = 1.0,
    teacher: str = "mp",
    gamma: float = 1.0,
    alphas_theory=None,
    alphas_sim=None,
    d: int = 100,
    seeds: int = 6,
    solver: str = "convex",
    bayes: bool = True,
    seed: int = 0,
    sim_options: dict | None = None,
    theory_options: dict | None = None,
    progress=None,
    extrapolate_d=None,
) -> LearningCurve:
    """Theory and simulation learning curves at one ``(kappa*, kappa, lam, Delta)``.

    ``alphas_theory`` (default 60 points in ``[0.02, 1]``) and ``alphas_sim`` (default 8
    points in ``[0.1, 0.9]``) are the grids; simulations use ``seeds`` seeds (fresh teacher
    and data each) at dimension ``d`` with ``solver`` ``"convex"`` (nuclear route) or
    ``"network"`` (``sim_options``: ``max_steps``, ``optimizer``, ``learning_rate``,
    ``init_scale``, ``common_data``). ``extrapolate_d``: a list of dimensions; the
    simulations then run at each, and ``extrapolated`` holds the per-``alpha`` ``1/d`` fit
    (``summary`` is the largest ``d``). Theory needs
    ``qnr.theory.erm``; thresholds ``qnr.theory``; ``bayes=True`` adds the Bayes-optimal
    curve when ``qnr.theory.bayes`` is available. ``progress``: optional callable, called
    with the name of the next stage as each stage ends (``qnr curve`` draws its bar with it).
    """
    check_positive("kappa_star", kappa_star)
    check_nonnegative("lam", lam)
    check_nonnegative("Delta", delta)
    check_positive("kappa", kappa)
    d = check_size("d", d, minimum=2)
    seeds = check_size("seeds", seeds)
    alphas_theory = np.linspace(0.02, 1.0, 60) if alphas_theory is None else alphas_theory
    alphas_sim = np.linspace(0.1, 0.9, 8) if alphas_sim is None else alphas_sim
    alphas_theory = np.asarray(alphas_theory, dtype=float)
    alphas_sim = np.asarray(alphas_sim, dtype=float)
    check_positive("alpha", alphas_theory)
    check_positive("alpha", alphas_sim)
    params = dict(
        kappa_star=kappa_star,
        lam=lam,
        delta=delta,
        kappa=kappa,
        teacher=teacher,
        gamma=gamma,
        d=d,
        seeds=seeds,
        solver=solver,
        seed=seed,
    )
    timings = {}

    # theory on the fine grid and at the simulated alphas (one batch, one compilation)
    t0 = time.perf_counter()
    a_all = np.concatenate([alphas_theory, alphas_sim])
    th_floats = {
        "alpha": a_all,
        "kappa_star": np.full_like(a_all, kappa_star),
        "kappa": np.full_like(a_all, kappa),
        "lam": np.full_like(a_all, lam),
        "delta": np.full_like(a_all, delta),
    }
    th_out = solve_theory_batch({"teacher": teacher, "gamma": gamma}, th_floats, theory_options)
    nt = alphas_theory.size
    theory = {"alpha": alphas_theory, **{k: np.asarray(v[:nt]) for k, v in th_out.items()}}
    at_sim = {k: np.asarray(v[nt:]) for k, v in th_out.items()}
    timings["theory_s"] = time.perf_counter() - t0
    if progress is not None:
        progress("simulation")
    warn_theory_failures(th_out["result"], "theory")

    # simulations: alphas x seeds (x several d in extrapolation mode)
    from qnr.teachers import teacher_from_name

    teacher_obj = teacher_from_name(teacher, kappa_star=kappa_star, gamma=gamma)
    dims = (
        [d]
        if extrapolate_d is None
        else sorted({check_size("d", x, minimum=2) for x in extrapolate_d})
    )
    if extrapolate_d is not None and len(dims) < 2:
        raise ValueError(f"extrapolate_d needs at least two dimensions, got {extrapolate_d}")
    t0 = time.perf_counter()
    by_d, raw, clean = {}, {}, {}
    for dd in dims:
        out = _simulate_alphas(
            teacher_obj,
            alphas_sim,
            d=dd,
            seeds=seeds,
            seed=seed,
            kappa=None if kappa >= 1 else kappa,
            lam=lam,
            delta=delta,
            solver=solver,
            sim_options=sim_options,
        )
        raw[dd] = out
        summ = summarise_seeds(alphas_sim, {k: out[k] for k in (*_SIM_METRICS, "degenerate")})
        for k in _THEORY_METRICS:
            summ[f"theory_{k}"] = at_sim[k]
        summ["e_test_ok"] = agreement(summ["e_test"], summ["e_test_sem"], at_sim["e_test"])
        summ["rank_ok"] = np.where(
            alphas_sim >= 0.2, np.abs(summ["rank"] - at_sim["rank"]) <= 0.03, np.nan
        )
        by_d[dd] = summ
        # the 1/d fit uses only seeds with a unique minimiser: a degenerate run's E is one
        # point of a face of minimisers, not the quantity the theory predicts (at small d and
        # alpha most seeds are degenerate, e.g. d = 50, alpha = 0.1: 6 of 6)
        if extrapolate_d is not None:
            unique = np.asarray(out["degenerate"]) == 0
            clean[dd] = summarise_seeds(
                alphas_sim, {k: np.where(unique, out[k], np.nan) for k in ("E", "rank")}
            )
    timings["simulation_s"] = time.perf_counter() - t0
    if progress is not None:
        progress("thresholds and Bayes-optimal")
    d_top = dims[-1]
    sim_out = raw[d_top]
    n_fail = int(sum(np.count_nonzero(o["result"]) for o in raw.values()))
    if n_fail:
        warnings.warn(
            f"simulation: {n_fail} runs failed (NaN)",
            RuntimeWarning,
            stacklevel=2,
        )
    simulation = {
        "d": np.concatenate([np.full(alphas_sim.size * seeds, dd) for dd in dims]),
        "alpha": np.tile(np.repeat(alphas_sim, seeds), len(dims)),
        "seed": np.tile(np.arange(seeds), alphas_sim.size * len(dims)),
        **{k: np.concatenate([np.asarray(raw[dd][k]).reshape(-1) for dd in dims]) for k in sim_out},
    }
    summary = by_d[d_top]
    extrapolated = None
    if extrapolate_d is not None:
        inv = np.array([1.0 / dd for dd in dims])
        extrapolated = {"alpha": alphas_sim}
        for name in ("E", "rank"):
            fits = [
                extrapolate_inverse_d(
                    inv,
                    [clean[dd][name][i] for dd in dims],
                    [clean[dd][f"{name}_sem"][i] for dd in dims],
                )
                for i in range(alphas_sim.size)
            ]
            extrapolated[name] = np.array([f[0] for f in fits])
            extrapolated[f"{name}_sem"] = np.array([f[1] for f in fits])
            extrapolated[f"slope_{name}"] = np.array([f[2] for f in fits])
        extrapolated["e_test"] = (extrapolated["E"] + delta / 2) / 2
        extrapolated["e_test_sem"] = extrapolated["E_sem"] / 2
        for k in ("E", "e_test", "rank"):
            extrapolated[f"theory_{k}"] = at_sim[k]
        extrapolated["E_ok"] = agreement(
            extrapolated["E"], extrapolated["E_sem"], at_sim["E"], rel=0.03
        )
        params["extrapolate_d"] = dims

    t0 = time.perf_counter()
    thresholds = _thresholds(kappa_star, kappa, delta, teacher)
    timings["thresholds_s"] = time.perf_counter() - t0
    bo = None
    if bayes and teacher == "mp":
        t0 = time.perf_counter()
        bo = _bayes_curve(kappa_star, delta, alphas_theory)
        timings["bayes_s"] = time.perf_counter() - t0
    return LearningCurve(
        params, theory, simulation, summary, thresholds, bo, timings, by_d, extrapolated
    )


def _bayes_curve(kappa_star, delta, alphas):
    """Bayes-optimal ``E_BO`` and ``e_test`` (THEORY.md section 4), or None if unavailable."""
    try:
        from qnr.theory import bayes_optimal_error
    except ImportError:
        return None
    import jax.numpy as jnp

    E = np.asarray(
        bayes_optimal_error(jnp.asarray(alphas), jnp.asarray(kappa_star), jnp.asarray(delta))
    )
    return {"alpha": np.asarray(alphas), "E": E, "e_test": (E + delta / 2) / 2}


def _write_table(path: Path, columns: dict[str, np.ndarray]) -> Path:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    pacsv.write_csv(pa.table({k: np.asarray(v) for k, v in columns.items()}), path)
    return path


def write_curve(curve: LearningCurve, out: str | Path, *, stem: str = "curve") -> dict[str, Any]:
    """Write ``<stem>.png``, ``<stem>.pdf``, ``<stem>_theory.csv``, ``<stem>_simulation.csv``
    (one row per alpha and seed), ``<stem>_summary.csv`` and ``<stem>.json`` (parameters,
    thresholds, deviations, timings, paths) under ``out``. Returns the JSON summary."""
    from qnr.plot import plot_learning_curve, save_figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    p = curve.params
    d_top = max(curve.by_d) if curve.by_d else p["d"]
    sim_label = f"{p['solver']} ERM, d={d_top} ({p['seeds']} seeds, mean $\\pm$ SE)"
    title = (
        rf"{p['teacher']} teacher $\kappa^*$={p['kappa_star']:g}, $\kappa$={p['kappa']:g}, "
        rf"$\lambda$={p['lam']:g}, $\Delta$={p['delta']:g}"
    )
    finite = None
    ex_label = r"$1/d \to 0$ extrapolation"
    if curve.extrapolated is not None:
        finite = {dd: v for dd, v in curve.by_d.items() if dd != d_top}
        ex_label += " (d=" + ",".join(str(dd) for dd in sorted(curve.by_d)) + ")"
    fig = plot_learning_curve(
        curve.theory,
        curve.summary,
        thresholds=curve.thresholds,
        bayes=curve.bayes,
        title=title,
        sim_label=sim_label,
        extrapolated=curve.extrapolated,
        extrapolated_label=ex_label,
        finite_d=finite,
    )
    figures = save_figure(fig, out / stem)
    paths = {
        "png": str(figures[0]),
        "pdf": str(figures[1]),
        "theory_csv": str(_write_table(out / f"{stem}_theory.csv", curve.theory)),
        "simulation_csv": str(_write_table(out / f"{stem}_simulation.csv", curve.simulation)),
        "summary_csv": str(_write_table(out / f"{stem}_summary.csv", curve.summary)),
    }
    if curve.bayes is not None:
        paths["bayes_csv"] = str(_write_table(out / f"{stem}_bayes.csv", curve.bayes))
    if curve.extrapolated is not None:
        paths["extrapolated_csv"] = str(
            _write_table(out / f"{stem}_extrapolated.csv", curve.extrapolated)
        )
    paths["json"] = str(out / f"{stem}.json")
    sm = curve.summary
    rel_dev = np.abs(sm["e_test"] - sm["theory_e_test"]) / np.abs(sm["theory_e_test"])
    checks = {
        "alpha": sm["alpha"],
        "e_test_rel_dev": rel_dev,
        "e_test_sem_rel": sm["e_test_sem"] / np.abs(sm["theory_e_test"]),
        "e_test_within_max_5pct_2se": sm["e_test_ok"],
        "rank_abs_dev": np.abs(sm["rank"] - sm["theory_rank"]),
        "rank_within_0.03_at_alpha_ge_0.2": sm["rank_ok"],
        "n_degenerate": sm["n_degenerate"],
    }
    if curve.extrapolated is not None:
        ex = curve.extrapolated
        checks["extrapolated_E_rel_dev"] = np.abs(ex["E"] - ex["theory_E"]) / ex["theory_E"]
        checks["extrapolated_E_sem_rel"] = ex["E_sem"] / ex["theory_E"]
        checks["extrapolated_E_within_max_3pct_2se"] = ex["E_ok"]
    summary = {
        "qnr_version": __version__,
        "params": p,
        "thresholds": curve.thresholds,
        "max_rel_dev_e_test": curve.max_relative_deviation("e_test"),
        "max_rel_dev_E": curve.max_relative_deviation("E"),
        "max_rel_dev_rank": curve.max_relative_deviation("rank"),
        "all_e_test_agree": bool(np.all(sm["e_test_ok"] == 1)),
        "all_rank_agree": bool(np.all(sm["rank_ok"][np.isfinite(sm["rank_ok"])] == 1)),
        "degenerate_runs": int(np.sum(sm["n_degenerate"])),
        "checks": checks,
        "theory_failures": int(np.count_nonzero(curve.theory["result"])),
        "simulation_failures": int(np.count_nonzero(curve.simulation["result"])),
        "timings": curve.timings,
        "paths": paths,
    }
    from qnr._json import to_jsonable

    Path(paths["json"]).write_text(json.dumps(to_jsonable(summary), indent=2))
    return summary
