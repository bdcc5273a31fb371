"""The main job: a theory-vs-simulation learning curve over ``alpha = n/d^2``.

:func:`learning_curve` evaluates, at fixed ``kappa*``, ``kappa``, ``lam``, ``Delta``,

* the ERM replica prediction (THEORY.md section 2) on a fine ``alpha`` grid -- test error
  ``e_test = alpha xi = (E + Delta/2)/2``, training loss ``e_train = alpha xi (lam/tau)^2``
  and rank fraction;
* ERM simulations at dimension ``d`` (the convex nuclear-norm solver, i.e. the nuclear route,
  or the network trained by optax) on a coarser grid, over several seeds: mean and standard
  error per ``alpha``;
* the thresholds ``alpha_BO``, ``alpha_SR`` (noiseless, THEORY.md section 3) and
  ``alpha_inter`` (when ``Delta > 0``), and optionally the Bayes-optimal test error
  (section 4).

Both batches run through :class:`qnr.sweep.ShardedMap` (vmapped, sharded over all devices,
compiled once). :func:`write_curve` saves the figure (PNG + PDF) and the data (CSV + JSON).
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
from qnr.sweep._engine import ShardedMap
from qnr.sweep._run import seed_keys

__all__ = ["LearningCurve", "learning_curve", "write_curve", "summarise_seeds"]

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
    ``alpha_inter`` (NaN where undefined). ``bayes``: ``alpha``, ``E``, ``e_test`` or None.
    """

    params: dict[str, Any]
    theory: dict[str, np.ndarray]
    simulation: dict[str, np.ndarray]
    summary: dict[str, np.ndarray]
    thresholds: dict[str, float]
    bayes: dict[str, np.ndarray] | None = None
    timings: dict[str, float] = field(default_factory=dict)

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


def solve_theory_batch(static, floats, options=None) -> dict[str, np.ndarray]:
    """The ``theory`` task on a batch of points (sharded, vmapped, one pass: the globalised
    Newton of :func:`qnr.theory.solve_erm` converges from its fixed start)."""
    from qnr.sweep._tasks import THEORY

    opts = {**THEORY.options, **(options or {})}
    size = int(np.asarray(next(iter(floats.values()))).size)
    keys = seed_keys(0, [0])
    fn = THEORY.build(static, opts, floats)
    return ShardedMap(fn, size)(floats, keys)


def _thresholds(kappa_star: float, kappa: float, delta: float, teacher: str) -> dict:
    import jax.numpy as jnp

    from qnr import theory

    out = {"alpha_BO": np.nan, "alpha_SR": np.nan, "alpha_inter": np.nan}
    if teacher != "mp":
        return out
    ks = jnp.asarray(kappa_star)
    out["alpha_BO"] = float(theory.alpha_bo(ks))
    kap = None if kappa >= 1 else jnp.asarray(kappa)
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
    d: int = 40,
    seeds: int = 4,
    solver: str = "convex",
    bayes: bool = True,
    seed: int = 0,
    sim_options: dict | None = None,
    theory_options: dict | None = None,
    progress=None,
) -> LearningCurve:
    """Theory and simulation learning curves at one ``(kappa*, kappa, lam, Delta)``.

    ``alphas_theory`` (default 60 points in ``[0.02, 1]``) and ``alphas_sim`` (default 8
    points in ``[0.1, 0.9]``) are the grids; simulations use ``seeds`` seeds at dimension
    ``d`` with ``solver`` ``"convex"`` (nuclear route) or ``"network"``. Theory needs
    ``qnr.theory.erm``; thresholds ``qnr.theory``; ``bayes=True`` adds the Bayes-optimal
    curve when ``qnr.theory.bayes`` is available. ``progress``: optional callable, called
    with the name of the next stage as each stage ends (``qnr curve`` draws its bar with it).
    """
    from qnr.sweep._tasks import SIMULATION

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
    static = dict(d=d, teacher=teacher, kappa_star=kappa_star, gamma=gamma, solver=solver)
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
    n_fail = int(np.count_nonzero(th_out["result"]))
    if n_fail:
        warnings.warn(
            f"theory: {n_fail} of {a_all.size} fixed points failed (NaN)",
            RuntimeWarning,
            stacklevel=2,
        )

    # simulations: alphas x seeds
    t0 = time.perf_counter()
    sim_floats = {
        "alpha": alphas_sim,
        "lam": np.full_like(alphas_sim, lam),
        "delta": np.full_like(alphas_sim, delta),
        "kappa": np.full_like(alphas_sim, kappa),
    }
    sim_fn = SIMULATION.build(static, {**SIMULATION.options, **(sim_options or {})}, sim_floats)
    sim_out = ShardedMap(sim_fn, alphas_sim.size)(sim_floats, seed_keys(seed, range(seeds)))
    timings["simulation_s"] = time.perf_counter() - t0
    if progress is not None:
        progress("thresholds and Bayes-optimal")
    n_fail = int(np.count_nonzero(sim_out["result"]))
    if n_fail:
        warnings.warn(
            f"simulation: {n_fail} of {sim_out['result'].size} runs failed (NaN)",
            RuntimeWarning,
            stacklevel=2,
        )
    simulation = {
        "alpha": np.repeat(alphas_sim, seeds),
        "seed": np.tile(np.arange(seeds), alphas_sim.size),
        **{k: np.asarray(v).reshape(-1) for k, v in sim_out.items()},
    }
    summary = summarise_seeds(alphas_sim, {k: sim_out[k] for k in _SIM_METRICS})
    for k in _THEORY_METRICS:
        summary[f"theory_{k}"] = at_sim[k]

    t0 = time.perf_counter()
    thresholds = _thresholds(kappa_star, kappa, delta, teacher)
    timings["thresholds_s"] = time.perf_counter() - t0
    bo = None
    if bayes and teacher == "mp":
        t0 = time.perf_counter()
        bo = _bayes_curve(kappa_star, delta, alphas_theory)
        timings["bayes_s"] = time.perf_counter() - t0
    return LearningCurve(params, theory, simulation, summary, thresholds, bo, timings)


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
    sim_label = f"{p['solver']} ERM, d={p['d']} ({p['seeds']} seeds)"
    title = (
        rf"{p['teacher']} teacher $\kappa^*$={p['kappa_star']:g}, $\kappa$={p['kappa']:g}, "
        rf"$\lambda$={p['lam']:g}, $\Delta$={p['delta']:g}"
    )
    fig = plot_learning_curve(
        curve.theory,
        curve.summary,
        thresholds=curve.thresholds,
        bayes=curve.bayes,
        title=title,
        sim_label=sim_label,
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
    paths["json"] = str(out / f"{stem}.json")
    summary = {
        "qnr_version": __version__,
        "params": p,
        "thresholds": curve.thresholds,
        "max_rel_dev_e_test": curve.max_relative_deviation("e_test"),
        "max_rel_dev_E": curve.max_relative_deviation("E"),
        "max_rel_dev_rank": curve.max_relative_deviation("rank"),
        "theory_failures": int(np.count_nonzero(curve.theory["result"])),
        "simulation_failures": int(np.count_nonzero(curve.simulation["result"])),
        "timings": curve.timings,
        "paths": paths,
    }
    from qnr.cli._common import to_jsonable

    Path(paths["json"]).write_text(json.dumps(to_jsonable(summary), indent=2))
    return summary
