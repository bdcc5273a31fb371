"""Benchmark: one compiled (alpha, kappa) x seeds grid vs a Python loop over points.

Workload: convex nuclear-norm ERM (:func:`qnr.sim.simulate_grid` with
``ProximalGradient(rtol=1e-6)``, the width ``kappa`` acting as the rank bound), MP teacher
``kappa* = 0.5``, ``lam = 0.05``, ``Delta = 0.1``, float64; a 4 x 4 grid
``alpha in {0.2, 0.3, 0.4, 0.5}``, ``kappa in {0.25, 0.5, 0.75, 1}`` at ``d = 40`` with 8
seeds (``--quick``: ``d = 16``, 2 seeds).

* grid: ``simulate_grid`` over the 16 points (one program: samples allocated for the largest
  ``n`` and masked; seeds vmapped, points in sequence by ``lax.map``; ``--vmap-points`` also
  times all points in one ``vmap``);
* loop: ``simulate`` called point by point (seeds still vmapped inside each call; each
  distinct ``n`` is a new program, so 4 compilations).

Both are timed cold (first call, compilation included) and warm (median of ``--repeats``
further runs). Results must agree (same random numbers by construction); the script checks
it. A vmapped ``while_loop`` runs until its slowest member stops, so the warm grid pays for
the longest-converging point on every lane; the iteration spread is reported.
Writes ``benchmarks/results/bench_grid.md``.

    python benchmarks/bench_grid.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _common import cpu_model, write_result  # noqa: E402 (benchmarks/ is on sys.path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--vmap-points",
        action="store_true",
        help="also time point_batch_size=None (all points in one vmap; slow on CPU)",
    )
    args = parser.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from qnr.sim import ProximalGradient, simulate, simulate_grid
    from qnr.teachers import MarchenkoPastur

    d, seeds = (16, 2) if args.quick else (40, 8)
    a, k = np.meshgrid([0.2, 0.3, 0.4, 0.5], [0.25, 0.5, 0.75, 1.0], indexing="ij")
    alpha, kappa = a.ravel(), k.ravel()
    teacher = MarchenkoPastur(0.5)
    solver = ProximalGradient(rtol=1e-6)  # E to ~1e-5; rank-bound points need ~1000 steps
    common = dict(lam=0.05, Delta=0.1, d=d, seeds=seeds, solver=solver)

    def grid(point_batch_size=1):
        return simulate_grid(teacher, alpha, kappa, point_batch_size=point_batch_size, **common)

    def loop():
        return [simulate(teacher, a_, k_, **common) for a_, k_ in zip(alpha, kappa)]

    t0 = time.perf_counter()
    res_grid = grid()
    cold_grid = time.perf_counter() - t0
    t0 = time.perf_counter()
    res_loop = loop()
    cold_loop = time.perf_counter() - t0
    for i, single in enumerate(res_loop):  # the two must be the same computation
        np.testing.assert_allclose(res_grid.E[i], single.E, rtol=1e-8)
    warm_grid, warm_loop = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        grid()
        warm_grid.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        loop()
        warm_loop.append(time.perf_counter() - t0)
    wg, wl = statistics.median(warm_grid), statistics.median(warm_loop)
    its = np.asarray(res_grid.iterations)
    print(f"grid cold {cold_grid:.2f}s warm {wg:.2f}s; loop cold {cold_loop:.2f}s warm {wl:.2f}s")
    rows = [
        ("grid, points in sequence, seeds vmapped (`simulate_grid`, default)", cold_grid, wg, 1),
        ("loop over points (`simulate`)", cold_loop, wl, len(set(res_grid.n.tolist()))),
    ]
    if args.vmap_points:
        t0 = time.perf_counter()
        res_v = grid(None)
        cold_v = time.perf_counter() - t0
        np.testing.assert_allclose(res_v.E, res_grid.E, rtol=1e-8)
        t0 = time.perf_counter()
        grid(None)
        rows.append(
            (
                "grid, all points vmapped (`point_batch_size=None`)",
                cold_v,
                time.perf_counter() - t0,
                1,
            )
        )

    lines = [
        "# bench_grid: one compiled (alpha, kappa) x seeds grid vs a loop over points",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores; jax {jax.__version__} "
        f"({jax.default_backend()}).",
        f"Convex ERM (FISTA, rtol 1e-6), MP kappa* = 0.5, lam = 0.05, Delta = 0.1, d = {d}, "
        f"{alpha.size} points x {seeds} seeds = {alpha.size * seeds} solves, float64. "
        f"Warm: median of {args.repeats}.",
        "",
        "| mode | cold s (incl. compile) | warm s | compiled programs | loop/mode cold | "
        "loop/mode warm |",
        "|---|---|---|---|---|---|",
    ]
    for name, c, w, progs in rows:
        lines.append(
            f"| {name} | {c:.2f} | {w:.2f} | {progs} | {cold_loop / c:.2f} | {wl / w:.2f} |"
        )
    lines += [
        "",
        f"Iterations per solve: min {its.min()}, median {int(np.median(its))}, max {its.max()}."
        " A vmapped while_loop runs every lane to its slowest lane's count, so vmapping all",
        "points wastes the iterations of the fast points (rank-constrained points need ~10x",
        "more); on CPU, batching does not make a lane cheaper. Hence the default runs points",
        "in sequence inside the single program (seeds vmapped).",
        "The machine is shared with other jobs: treat ratios, not absolute values, as the result.",
    ]
    text = "\n".join(lines) + "\n"
    if not args.quick:
        write_result("bench_grid", text)
    print(text)


if __name__ == "__main__":
    main()
