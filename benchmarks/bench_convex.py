"""Benchmark: qnr's convex nuclear-norm solver vs CVXPY (SCS) on the same instances.

Problem (THEORY.md section 1): ``min_{S psd} (1/(4n)) sum_mu (y_mu - Tr(Z_mu S))^2 +
(lam/d) Tr S`` with ``Z_mu = (x_mu x_mu^T - I)/sqrt(d)``, MP teacher ``kappa* = 0.5``,
``alpha = 0.5`` (``n = d^2/2``), ``lam = 0.05``, ``Delta = 0.1``, float64.

* qnr: :func:`qnr.sim.solve_convex` (FISTA + PSD soft-thresholding prox, backtracking,
  restart; fixed-point residual ``rtol = 1e-10``), matrix-free; timed after compilation
  (the one-off compile time is reported separately);
* CVXPY: the objective formulated directly (``n x d^2`` sensing matrix,
  ``cp.Variable((d, d), PSD=True)``), solved by SCS (``eps_abs = eps_rel``); the
  time is the whole ``problem.solve`` call (canonicalisation + SCS); SCS's own solve time is
  also listed.

Both objective values are evaluated by the same float64 function; the table gives their
relative difference (target <= 1e-5) and the wall-time ratio (target >= 30x) for two
tolerance pairs: "tight" (qnr ``rtol = 1e-10``, SCS ``eps = 1e-9``) and "matched" (both
``1e-6``, each comfortably inside the 1e-5 objective target). Writes
``benchmarks/results/bench_convex.md``.

    python benchmarks/bench_convex.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _common import cpu_model, write_result  # noqa: E402 (benchmarks/ is on sys.path)


def instance(d: int, seed: int = 0):
    import jax

    from qnr.sim import ERMProblem, make_dataset, n_samples
    from qnr.teachers import MarchenkoPastur

    data = make_dataset(jax.random.key(seed), MarchenkoPastur(0.5), d, n_samples(0.5, d), 0.1)
    return data, ERMProblem.from_dataset(data, 0.05)


def solve_cvxpy(data, lam: float, eps: float):
    import cvxpy as cp
    import numpy as np

    X = np.asarray(data.X)
    y = np.asarray(data.y)
    n, d = X.shape
    A = ((X[:, :, None] * X[:, None, :]) - np.eye(d)[None]).reshape(n, d * d) / np.sqrt(d)
    S = cp.Variable((d, d), PSD=True)
    objective = cp.sum_squares(y - A @ cp.vec(S, order="C")) / (4 * n) + lam / d * cp.trace(S)
    problem = cp.Problem(cp.Minimize(objective))
    t0 = time.perf_counter()
    problem.solve(solver=cp.SCS, eps_abs=eps, eps_rel=eps, max_iters=200_000)
    wall = time.perf_counter() - t0
    return np.asarray(S.value), wall, problem.solver_stats.solve_time, problem.status


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    args = parser.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    import cvxpy as cp
    import jax.numpy as jnp
    import numpy as np

    from qnr.sim import ProximalGradient, solve_convex

    ds = [12, 20] if args.quick else [20, 30, 40]
    repeats = 3 if args.quick else 5
    configs = [("tight", 1e-10, 1e-9), ("matched", 1e-6, 1e-6)]  # (name, qnr rtol, SCS eps)
    rows = []
    for d in ds:
        data, prob = instance(d)
        for name, rtol, eps in configs:
            solver = ProximalGradient(rtol=rtol)
            t0 = time.perf_counter()
            sol = solve_convex(prob, solver)
            sol.Shat.block_until_ready()
            cold = time.perf_counter() - t0
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                sol = solve_convex(prob, solver)
                sol.Shat.block_until_ready()
                times.append(time.perf_counter() - t0)
            t_qnr = statistics.median(times)
            S_cvx, t_cvx, t_scs, status = solve_cvxpy(data, 0.05, eps)
            S_cvx = (S_cvx + S_cvx.T) / 2
            w, V = np.linalg.eigh(S_cvx)
            S_cvx = (V * np.maximum(w, 0)) @ V.T  # SCS iterates are PSD up to its tolerance
            f_qnr = float(prob.objective(sol.Shat))
            f_cvx = float(prob.objective(jnp.asarray(S_cvx)))
            rel = (f_cvx - f_qnr) / abs(f_qnr)
            dist = float(jnp.sqrt(jnp.sum((sol.Shat - S_cvx) ** 2) / d))
            rows.append(
                (
                    d,
                    prob.X.shape[0],
                    name,
                    rtol,
                    eps,
                    t_qnr,
                    cold,
                    int(sol.iterations),
                    t_cvx,
                    t_scs,
                    status,
                    rel,
                    dist,
                )
            )
            print(
                f"d={d} {name}: qnr {t_qnr:.3f}s ({int(sol.iterations)} it), cvxpy {t_cvx:.2f}s "
                f"[{status}], rel obj diff {rel:.2e}",
                flush=True,
            )

    lines = [
        "# bench_convex: nuclear-norm ERM, qnr FISTA vs CVXPY/SCS (float64)",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores; jax {jax.__version__} "
        f"({jax.default_backend()}), cvxpy {cp.__version__}.",
        "Instances: MP teacher kappa* = 0.5, alpha = 0.5, lam = 0.05, Delta = 0.1. qnr time: "
        f"median of {repeats} compiled runs (compile-inclusive first call listed); CVXPY time: "
        "one `problem.solve`.",
        "",
        "| d | n | tolerances | qnr s | qnr first call s | qnr iters | CVXPY s | SCS solve s "
        "| status | CVXPY/qnr time | SCS-only/qnr | (F_cvx - F_qnr)/F_qnr | rms(S_qnr - S_cvx) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d, n, name, rtol, eps, tq, cold, it, tc, ts, st, rel, dist in rows:
        lines.append(
            f"| {d} | {n} | {name}: qnr rtol {rtol:.0e}, SCS eps {eps:.0e} | {tq:.4f} | "
            f"{cold:.2f} | {it} | {tc:.2f} | {ts:.2f} | {st} | {tc / tq:.0f}x | {ts / tq:.0f}x | "
            f"{rel:.2e} | {dist:.1e} |"
        )
    lines += [
        "",
        "A positive objective difference means qnr found the lower objective.",
        "The machine is shared with other jobs: treat ratios, not absolute values, as the result.",
    ]
    text = "\n".join(lines) + "\n"
    if not args.quick:
        write_result("bench_convex", text)
    print(text)


if __name__ == "__main__":
    main()
