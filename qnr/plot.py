"""Figures: learning curves (theory vs simulation), phase diagrams, spectra.

Matplotlib only through the object API (``matplotlib.figure.Figure``, no ``pyplot`` state),
so every function is safe under the ``Agg`` backend, in threads and in notebooks. Each function
returns the ``Figure``; :func:`save_figure` writes PNG/PDF. Quantities follow THEORY.md
section 1: ``e_test = (E + Delta/2)/2``, ``e_train = (1/(4n)) sum (y - yhat)^2``, rank fraction
``r = rank(Shat)/d``, ``n = alpha d^2``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "THRESHOLD_STYLE",
    "new_figure",
    "plot_learning_curve",
    "plot_phase_diagram",
    "plot_spectrum",
    "save_figure",
]

# name -> (label, colour, line style) of the threshold markers.
THRESHOLD_STYLE = {
    "alpha_BO": (r"$\alpha_{\rm BO}$ ($\Delta=0$)", "tab:green", ":"),
    "alpha_SR": (r"$\alpha_{\rm SR}$ ($\Delta=0$)", "tab:red", "--"),
    "alpha_inter": (
        r"$\alpha_{\rm inter}$ ($\Delta>0$: $\lambda\to0^+$ interpolation)",
        "tab:purple",
        "-.",
    ),
}
# alpha_BO / alpha_SR are perfect-recovery thresholds of the noiseless problem; with label
# noise (Delta > 0) only alpha_inter applies. Callers pass NaN for the ones that do not.


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 4.2, height: float = 3.4):
    """A ``Figure`` with a grid of axes (no pyplot)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _thresholds(ax, thresholds: Mapping[str, float] | None, *, label: bool):
    for name, value in (thresholds or {}).items():
        if value is None or not np.isfinite(value):
            continue
        text, colour, style = THRESHOLD_STYLE.get(name, (name, "0.4", ":"))
        ax.axvline(value, color=colour, ls=style, lw=1.2, label=text if label else None)


def _errorbars(ax, sim, column, colour, label, *, fmt="o", ms=4, alpha_=1.0, mark=True):
    if sim is None or column not in sim:
        return
    alpha = np.asarray(sim["alpha"])
    mean = np.asarray(sim[column])
    err = np.asarray(sim.get(f"{column}_sem", np.zeros_like(mean)))
    ax.errorbar(
        alpha, mean, yerr=err, fmt=fmt, ms=ms, capsize=2, color=colour, label=label, alpha=alpha_
    )
    deg = np.asarray(sim.get("n_degenerate", np.zeros(alpha.shape)))
    if mark and np.any(deg > 0):
        n = int(np.max(np.asarray(sim.get("n_ok", deg))))
        hit = deg > 0
        ax.plot(
            alpha[hit],
            mean[hit],
            "o",
            ms=11,
            mfc="none",
            mec="tab:red",
            mew=1.5,
            label=f"non-unique minimiser ({int(deg.sum())} runs, up to {int(deg.max())}/{n})",
        )


def plot_learning_curve(
    theory: Mapping[str, Sequence[float]],
    simulation: Mapping[str, Sequence[float]] | None = None,
    *,
    thresholds: Mapping[str, float] | None = None,
    bayes: Mapping[str, Sequence[float]] | None = None,
    title: str | None = None,
    sim_label: str = "simulation",
    log_error: bool = True,
    extrapolated: Mapping[str, Sequence[float]] | None = None,
    extrapolated_label: str = r"$1/d \to 0$ extrapolation",
    finite_d: Mapping[int, Mapping[str, Sequence[float]]] | None = None,
):
    """Three panels against ``alpha``: test error, training error, rank fraction.

    Args:
        theory: columns ``alpha``, ``e_test``, ``e_train``, ``rank`` (lines).
        simulation: columns ``alpha`` and any of ``e_test``, ``e_train``, ``rank``, each
            optionally with ``<column>_sem`` (error bars: standard error over seeds).
        thresholds: ``{"alpha_BO": ..., "alpha_SR": ..., "alpha_inter": ...}`` (vertical
            lines; NaN/None entries are skipped).
        bayes: columns ``alpha``, ``e_test`` of the Bayes-optimal test error (dashed line).
        extrapolated: columns ``alpha``, ``e_test``, ``rank`` (+ ``_sem``) of the ``1/d``
            extrapolation (squares with error bars).
        finite_d: ``{d: columns}`` of further (smaller) dimensions, drawn faintly.

    Simulated points whose runs include non-unique convex minimisers (``n_degenerate > 0``)
    get a red ring: their ``E`` and rank depend on the solver path, not on the theory.
    """
    fig, axes = new_figure(3, 1, width=4.0, height=3.3)
    ax_test, ax_train, ax_rank = axes[0]
    a = np.asarray(theory["alpha"])
    ax_test.plot(a, theory["e_test"], color="tab:blue", lw=2, label="ERM theory")
    if bayes is not None:
        ax_test.plot(
            bayes["alpha"], bayes["e_test"], color="k", ls="--", lw=1.5, label="Bayes-optimal"
        )
    for i, (dd, cols) in enumerate(sorted((finite_d or {}).items())):
        for ax, col in ((ax_test, "e_test"), (ax_train, "e_train"), (ax_rank, "rank")):
            _errorbars(
                ax,
                cols,
                col,
                "0.55",
                f"d={dd}" if ax is ax_test else None,
                fmt="v^<>dp"[i % 6],
                ms=3,
                alpha_=0.7,
                mark=False,
            )
    _errorbars(ax_test, simulation, "e_test", "tab:orange", sim_label)
    ax_train.plot(a, theory["e_train"], color="tab:blue", lw=2, label="ERM theory")
    _errorbars(ax_train, simulation, "e_train", "tab:orange", sim_label, mark=False)
    ax_rank.plot(a, theory["rank"], color="tab:blue", lw=2, label="ERM theory")
    _errorbars(ax_rank, simulation, "rank", "tab:orange", sim_label, mark=False)
    if extrapolated is not None:
        ex = {k: np.asarray(v) for k, v in extrapolated.items()}
        _errorbars(ax_test, ex, "e_test", "k", extrapolated_label, fmt="s", ms=5, mark=False)
        _errorbars(ax_rank, ex, "rank", "k", extrapolated_label, fmt="s", ms=5, mark=False)
    for i, ax in enumerate((ax_test, ax_train, ax_rank)):
        _thresholds(ax, thresholds, label=i == 0)
        ax.set_xlabel(r"$\alpha = n/d^2$")
        ax.grid(alpha=0.3)
    if log_error:
        ax_test.set_yscale("log")
    ax_test.set_ylabel(r"test error $e_{\rm test} = (E + \Delta/2)/2$")
    ax_train.set_ylabel(r"training loss $e_{\rm train}$")
    ax_rank.set_ylabel(r"rank fraction $\mathrm{rank}(\hat S)/d$")
    ax_rank.set_ylim(0, 1.05)
    ax_test.legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title)
    return fig


def plot_phase_diagram(
    alpha: Sequence[float],
    kappa_star: Sequence[float],
    e_test: np.ndarray,
    *,
    curves: Mapping[str, Sequence[float]] | None = None,
    title: str | None = None,
    log_color: bool = True,
    colorbar_label: str = r"ERM test error $e_{\rm test}$",
):
    """Heat map of ``e_test[i_kappa_star, i_alpha]`` in the ``(alpha, kappa*)`` plane, with
    threshold curves ``curves[name][i_kappa_star]`` (alpha values; NaN = absent) on top."""
    from matplotlib.colors import LogNorm

    alpha = np.asarray(alpha)
    ks = np.asarray(kappa_star)
    z = np.asarray(e_test, dtype=float)
    if z.shape != (ks.size, alpha.size):
        raise ValueError(f"e_test must have shape (len(kappa_star), len(alpha)), got {z.shape}")
    fig, axes = new_figure(1, 1, width=6.0, height=4.6)
    ax = axes[0, 0]
    finite = z[np.isfinite(z) & (z > 0)]
    norm = None
    if log_color and finite.size:
        norm = LogNorm(vmin=finite.min(), vmax=finite.max())
    mesh = ax.pcolormesh(
        alpha, ks, np.ma.masked_invalid(z), shading="nearest", norm=norm, cmap="viridis"
    )
    fig.colorbar(mesh, ax=ax, label=colorbar_label)
    if not np.all(np.isfinite(z)):
        ax.set_facecolor("0.8")
        ax.text(
            0.98,
            0.02,
            "grey: no converged fixed point",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=8,
            color="0.25",
        )
    for name, values in (curves or {}).items():
        text, colour, style = THRESHOLD_STYLE.get(name, (name, "w", "-"))
        ax.plot(np.asarray(values), ks, color=colour, ls=style, lw=2.2, label=text)
    ax.set_xlim(alpha.min(), alpha.max())
    ax.set_ylim(ks.min(), ks.max())
    ax.set_xlabel(r"$\alpha = n/d^2$")
    ax.set_ylabel(r"$\kappa^* = m^*/d$")
    if curves:
        ax.legend(loc="upper left", fontsize=9, framealpha=0.85)
    if title:
        ax.set_title(title)
    return fig


def plot_spectrum(
    eigenvalues: Sequence[float] | None = None,
    *,
    density: tuple[Sequence[float], Sequence[float]] | None = None,
    atom: float | None = None,
    bins: int = 40,
    ax=None,
    label: str = "simulation",
    title: str | None = None,
):
    """Histogram of (non-zero) eigenvalues against a theory density ``(x, rho(x))``; ``atom``
    (mass at zero) is written in the legend."""
    fig = None
    if ax is None:
        fig, axes = new_figure(1, 1)
        ax = axes[0, 0]
    if eigenvalues is not None:
        ev = np.asarray(eigenvalues).ravel()
        ax.hist(ev, bins=bins, density=True, alpha=0.5, color="tab:orange", label=label)
    if density is not None:
        x, rho = density
        text = "theory" if atom is None else f"theory (+ atom {atom:.3f} at 0)"
        ax.plot(x, rho, color="tab:blue", lw=2, label=text)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig if fig is not None else ax.figure


def save_figure(fig, stem: str | Path, formats: Sequence[str] = ("png", "pdf"), dpi: int = 150):
    """Write ``fig`` to ``<stem>.<fmt>`` for each format; returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=dpi)
        paths.append(path)
    return paths
