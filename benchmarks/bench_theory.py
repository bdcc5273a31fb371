"""Benchmark: the ERM asymptotics of qnr (one vmapped, jitted program) vs the numpy/scipy
reference a user would write today (benchmarks/_scipy_reference.py), at the same accuracy
target, with the accuracy of both measured against a high-precision reference.

Workloads (MP teacher, THEORY.md section 2):

* learning curve: 256 values of alpha in [0.05, 1], kappa* = 0.5, lam = 0.05, Delta = 0.1;
* phase diagram: 32 x 32 grid of (alpha in [0.05, 1]) x (kappa* in [0.1, 0.9]), same lam,
  Delta.

qnr is timed after a warm-up call (compilation reported separately), median of repeats,
``block_until_ready``. scipy is run point by point (nested brentq + quad) on an evenly spaced
subset of each workload; its total is the measured median per-point time times the number of
points (stated as such in the table). Accuracy: max relative error of ``E`` and ``xi`` on that
subset against scipy at tight tolerances (quad 1e-13, brentq 1e-14). FLOP/s against a matmul
peak is not reported: the workload is root finding over small quadrature rules, not a dense
linear-algebra kernel.

    python benchmarks/bench_theory.py [--quick]

writes benchmarks/results/bench_theory.md.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import time

import equinox as eqx
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _scipy_reference as sref  # noqa: E402

from qnr.theory.erm import ERMSolver, erm_problem_grid, solve_erm, solve_erm_grid  # noqa: E402

LAM, DELTA = 0.05, 0.1
TARGET = 1e-8  # common accuracy target (relative)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores visible, Python {platform.python_version()}, "
        f"jax {jax.__version__} ({jax.default_backend()}, {jax.devices()[0]}), float64"
    )


@eqx.filter_jit
def one_call(problems, solver):
    """One vmapped, jitted solve of the whole batch."""
    return eqx.filter_vmap(lambda p: solve_erm(p, solver))(problems)


def time_qnr(problems, solver, repeats, fn):
    t0 = time.perf_counter()
    sol = fn(problems, solver)
    jax.block_until_ready(sol.xi)
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sol = fn(problems, solver)
        jax.block_until_ready(sol.xi)
        times.append(time.perf_counter() - t0)
    return sol, first, statistics.median(times)


def scipy_points(points, epsabs, epsrel, xtol):
    out, times = [], []
    for alpha, k in points:
        r = sref.Reference(k, epsabs=epsabs, epsrel=epsrel, xtol=xtol)
        t0 = time.perf_counter()
        s = r.solve(alpha, LAM, DELTA)
        times.append(time.perf_counter() - t0)
        out.append(s)
    return out, times


def rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a) / np.asarray(b) - 1)))


def run_workload(name, alphas, kstars, idx, solvers, repeats, lines):
    """alphas, kstars: flat arrays (one entry per point); idx: subset checked with scipy."""
    n = len(alphas)
    problems, _ = erm_problem_grid(
        jnp.asarray(alphas), kappa_star=jnp.asarray(kstars), lam=LAM, Delta=DELTA
    )
    pts = [(float(alphas[i]), float(kstars[i])) for i in idx]
    hi, _ = scipy_points(pts, 1e-13, 1e-12, 1e-14)
    lo, t_sc = scipy_points(pts, TARGET / 10, TARGET / 10, TARGET / 100)
    sc_pp = statistics.median(t_sc)
    hi_E = np.array([s["E"] for s in hi])
    hi_xi = np.array([s["xi"] for s in hi])
    err_sc = max(rel_err([s["E"] for s in lo], hi_E), rel_err([s["xi"] for s in lo], hi_xi))
    rows = []
    for label, solver, fn in solvers:
        try:
            sol, first, med = time_qnr(problems, solver, repeats, fn)
        except Exception as err:  # report, do not hide, a failing entry point
            print(f"[{name}] qnr {label}: FAILED: {type(err).__name__}: {err}", flush=True)
            lines.append(f"qnr `{label}` failed: {type(err).__name__}: {str(err)[:200]}")
            continue
        conv = int(np.sum(np.asarray(sol.converged)))
        E = np.asarray(sol.E)[idx]
        xi = np.asarray(sol.xi)[idx]
        err = max(rel_err(E, hi_E), rel_err(xi, hi_xi))
        rows.append((label, first, med, conv, err))
        print(
            f"[{name}] qnr {label}: compile+run {first:.1f}s, run {med:.3f}s, "
            f"{conv}/{n} converged, max rel err {err:.1e}",
            flush=True,
        )
    print(
        f"[{name}] scipy: {sc_pp:.3f}s/point on {len(idx)} points, max rel err {err_sc:.1e}",
        flush=True,
    )
    lines += [
        f"### {name} ({n} points)",
        "",
        "| implementation | total time | per point | speed-up vs scipy | converged "
        "| max rel. error (E, xi) |",
        "|---|---|---|---|---|---|",
        f"| scipy reference (quad {TARGET / 10:.0e}, brentq {TARGET / 100:.0e}) | "
        f"{sc_pp * n:.1f} s (= {n} x median of {len(idx)} measured points) "
        f"| {sc_pp * 1e3:.0f} ms | 1x "
        f"| {len(idx)}/{len(idx)} | {err_sc:.1e} |",
    ]
    for label, first, med, conv, err in rows:
        lines.append(
            f"| qnr `{label}` (compile + first run {first:.1f} s) | {med:.3f} s | "
            f"{med / n * 1e3:.2f} ms | {sc_pp * n / med:.0f}x | {conv}/{n} | {err:.1e} |"
        )
    lines.append("")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (fewer repeats/checks)")
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    n_check = 4 if args.quick else 10
    solvers = [
        ("vmap(solve_erm), ERMSolver(fallback=False)", ERMSolver(fallback=False), one_call),
        ("solve_erm_grid, ERMSolver()", ERMSolver(), solve_erm_grid),
    ]
    lines = [
        "# bench_theory: ERM asymptotics, qnr vs numpy/scipy",
        "",
        f"Machine: {machine()}.",
        f"Mode: {'--quick' if args.quick else 'full'}; qnr medians of {repeats} runs after "
        "warm-up; "
        f"accuracy target {TARGET:.0e} (relative) for both; errors against scipy at quad 1e-13 / "
        "brentq 1e-14 on an evenly spaced subset. MP teacher, lam = 0.05, Delta = 0.1. "
        "The 2 cores are shared with other processes: absolute times are noisy, ratios less so.",
        "",
    ]
    out = pathlib.Path(__file__).resolve().parent / "results" / "bench_theory.md"
    out.parent.mkdir(exist_ok=True)
    alphas = np.linspace(0.05, 1.0, 256)
    idx = np.linspace(0, 255, n_check).round().astype(int)
    run_workload(
        "learning curve, kappa* = 0.5",
        alphas,
        np.full_like(alphas, 0.5),
        idx,
        solvers,
        repeats,
        lines,
    )
    out.write_text("\n".join(lines) + "\n")  # partial results survive an interrupted run
    a, k = np.meshgrid(np.linspace(0.05, 1.0, 32), np.linspace(0.1, 0.9, 32), indexing="ij")
    idx2 = np.linspace(0, 1023, max(2, n_check // 2)).round().astype(int)
    run_workload(
        "phase diagram 32 x 32 (alpha, kappa*)",
        a.ravel(),
        k.ravel(),
        idx2,
        solvers[:1],
        repeats,
        lines,
    )
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
