"""The ``(alpha, kappa*)`` phase diagram: ERM test error as a heat map with the thresholds.

The replica fixed point (THEORY.md section 2) is evaluated on the whole grid in one sharded,
vmapped call (MP teacher); the threshold curves (section 3) are ``alpha_BO(kappa*)``,
``alpha_SR(kappa*, kappa)`` (noiseless strong recovery) and, for ``Delta > 0``,
``alpha_inter(kappa*, Delta)``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qnr._validate import check_nonnegative, check_positive
from qnr._version import __version__

__all__ = ["PhaseDiagram", "phase_diagram", "write_phase_diagram"]


@dataclass(frozen=True)
class PhaseDiagram:
    """``e_test``, ``E``, ``rank`` have shape ``(len(kappa_star), len(alpha))`` (NaN where
    the fixed point failed); ``thresholds[name]`` has shape ``(len(kappa_star),)``."""

    alpha: np.ndarray
    kappa_star: np.ndarray
    e_test: np.ndarray
    E: np.ndarray
    rank: np.ndarray
    thresholds: dict[str, np.ndarray]
    params: dict[str, Any]
    n_failed: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def _threshold_curves(kappa_star, kappa, delta) -> dict[str, np.ndarray]:
    import jax.numpy as jnp

    from qnr import theory

    ks = jnp.asarray(kappa_star)
    out = {"alpha_BO": np.asarray(theory.alpha_bo(ks))}
    kap = None if kappa >= 1 else jnp.full_like(ks, kappa)
    out["alpha_SR"] = np.asarray(theory.alpha_sr(ks, kap))
    inter = getattr(theory, "alpha_inter", None)
    if inter is not None and delta > 0:
        out["alpha_inter"] = np.asarray(inter(jnp.full_like(ks, delta), ks, kap))
    return out


def phase_diagram(
    alphas=None,
    kappa_stars=None,
    *,
    lam: float = 1e-3,
    delta: float = 0.0,
    kappa: float = 1.0,
    theory_options: dict | None = None,
) -> PhaseDiagram:
    """ERM theory on the grid ``kappa_stars x alphas`` (defaults: 40 x 60 points in
    ``[0.05, 0.95] x [0.02, 0.8]``) at fixed ``lam``, ``Delta``, ``kappa``."""
    from qnr.experiments.curve import solve_theory_batch, warn_theory_failures

    alphas = np.linspace(0.02, 0.8, 60) if alphas is None else np.asarray(alphas, float)
    kappa_stars = (
        np.linspace(0.05, 0.95, 40) if kappa_stars is None else np.asarray(kappa_stars, float)
    )
    check_positive("alpha", alphas)
    check_positive("kappa_star", kappa_stars)
    check_nonnegative("lam", lam)
    check_nonnegative("Delta", delta)
    check_positive("kappa", kappa)
    K, A = kappa_stars.size, alphas.size
    kk, aa = np.meshgrid(kappa_stars, alphas, indexing="ij")
    floats = {
        "alpha": aa.ravel(),
        "kappa_star": kk.ravel(),
        "kappa": np.full(K * A, kappa),
        "lam": np.full(K * A, lam),
        "delta": np.full(K * A, delta),
    }
    t0 = time.perf_counter()
    out = solve_theory_batch({"teacher": "mp", "gamma": 1.0}, floats, theory_options)
    timings = {"theory_s": time.perf_counter() - t0}
    warn_theory_failures(out["result"], "phase diagram")
    t0 = time.perf_counter()
    curves = _threshold_curves(kappa_stars, kappa, delta)
    timings["thresholds_s"] = time.perf_counter() - t0
    shape = (K, A)
    return PhaseDiagram(
        alpha=alphas,
        kappa_star=kappa_stars,
        e_test=np.asarray(out["e_test"]).reshape(shape),
        E=np.asarray(out["E"]).reshape(shape),
        rank=np.asarray(out["rank"]).reshape(shape),
        thresholds=curves,
        params=dict(lam=lam, delta=delta, kappa=kappa, teacher="mp"),
        n_failed=int(np.count_nonzero(out["result"])),
        timings=timings,
    )


def write_phase_diagram(pd: PhaseDiagram, out: str | Path, *, stem: str = "phase_diagram"):
    """Write ``<stem>.png``/``.pdf``, ``<stem>.csv`` (long format: one row per grid point)
    and ``<stem>.json`` (parameters, threshold curves, paths). Returns the JSON summary."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from qnr.plot import plot_phase_diagram, save_figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    p = pd.params
    title = (
        rf"ERM, MP teacher, $\lambda$={p['lam']:g}, $\Delta$={p['delta']:g}, "
        rf"$\kappa$={p['kappa']:g}"
    )
    fig = plot_phase_diagram(pd.alpha, pd.kappa_star, pd.e_test, curves=pd.thresholds, title=title)
    png, pdf = save_figure(fig, out / stem)
    kk, aa = np.meshgrid(pd.kappa_star, pd.alpha, indexing="ij")
    table = pa.table(
        {
            "kappa_star": kk.ravel(),
            "alpha": aa.ravel(),
            "e_test": pd.e_test.ravel(),
            "E": pd.E.ravel(),
            "rank": pd.rank.ravel(),
        }
    )
    csv = out / f"{stem}.csv"
    pacsv.write_csv(table, csv)
    summary = {
        "qnr_version": __version__,
        "params": p,
        "kappa_star": pd.kappa_star.tolist(),
        "thresholds": {k: np.asarray(v).tolist() for k, v in pd.thresholds.items()},
        "n_failed": pd.n_failed,
        "timings": pd.timings,
        "paths": {
            "png": str(png),
            "pdf": str(pdf),
            "csv": str(csv),
            "json": str(out / f"{stem}.json"),
        },
    }
    from qnr._json import to_jsonable

    Path(summary["paths"]["json"]).write_text(json.dumps(to_jsonable(summary), indent=2))
    return summary
