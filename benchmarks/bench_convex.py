"""Benchmark: qnr's convex nuclear-norm solvers -- Factorized (L-BFGS on W W^T + FISTA polish,
the default) against the previous solver, FISTA alone (ProximalGradient), in the same run,
and CVXPY (SCS) where it is installed and the dense sensing matrix fits in memory.

Problem (THEORY.md section 1): ``min_{S psd} (1/(4n)) sum_mu (y_mu - Tr(Z_mu S))^2 +
(lam/d) Tr S`` with ``Z_mu = (x_mu x_mu^T - I)/sqrt(d)``, MP teacher ``kappa* = 0.5``,
``alpha = 0.5`` (``n = d^2/2``), ``lam = 0.05``, ``Delta = 0.1``, float64.

Every qnr solve stops at the same certificate: the relative duality gap of
:func:`qnr.sim.duality_gap` ``<= 1e-6`` (checked every 10 FISTA steps), so the two times
compare solutions of the same certified quality. Times are medians over ``--repeats``
compiled runs (the compile-inclusive first call is listed separately). At the largest ``d``
FISTA is run for a fixed number of steps only (``--fista-cap``) and its time to the
certificate is estimated as (seconds per step) x (steps it needed at the next smaller ``d``,
which grow slowly with ``d``): marked "est.". Writes ``benchmarks/results/bench_convex.md``.

    python benchmarks/bench_convex.py [--quick] [--dims 100 200 400]
"""

from __future__ import annotations

import argparse
import os
import time

from _common import cpu_model, median_time, write_result  # noqa: E402 (benchmarks/ on sys.path)

GAP = 1e-6


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
    return np.asarray(S.value), time.perf_counter() - t0, problem.status


def format_table(rows, *, repeats: int, cvxpy_version: str | None, note: str = "") -> str:
    """The markdown table of :func:`main`'s rows (dicts as printed while it runs)."""
    import jax

    lines = [
        "# bench_convex: nuclear-norm ERM, Factorized (L-BFGS on W W^T + FISTA polish) vs FISTA",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores (shared with other jobs while it ran); "
        f"jax {jax.__version__} ({jax.default_backend()}); OpenBLAS threads "
        f"{os.environ.get('OPENBLAS_NUM_THREADS')}; cvxpy "
        f"{cvxpy_version or 'not installed'}.",
        "Instances: MP teacher kappa* = 0.5, alpha = 0.5, lam = 0.05, Delta = 0.1 (float64). Both "
        f"solvers stop at the certified relative duality gap <= {GAP:g}. Times: median of "
        f"{repeats} compiled runs (1 at d >= 400); first call includes compilation.",
        "",
        "| d | n | Factorized s | first call s | steps (L-BFGS + polish) | gap | FISTA s "
        "| FISTA steps | FISTA gap | FISTA / Factorized | (F_fista - F_fact)/F | rank "
        "| CVXPY (SCS) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        est = " (est.)" if r["fista_est"] else ""
        rel = (r["F_fista"] - r["F_fact"]) / r["F_fact"]
        lines.append(
            f"| {r['d']} | {r['n']} | {r['t_fact']:.2f} | {r['first']:.1f} | {r['steps']} | "
            f"{r['gap_fact']:.1e} | {r['t_fista']:.2f}{est} | {r['fista_steps']} | "
            f"{r['gap_fista']:.1e} | {r['t_fista'] / r['t_fact']:.1f}x{est} | {rel:.1e} | "
            f"{r['rank']:.3f} | {r['cvxpy']} |"
        )
    lines += [
        "",
        "Both objectives are certified to the same gap; their difference is within it. CVXPY "
        "needs the dense n x d^2 sensing matrix (6.4 GB at d = 200), so it only runs at d <= 40.",
        "The machine is shared with other jobs: treat ratios, not absolute values, as the result.",
    ]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--dims", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fista-cap", type=int, default=40)
    args = parser.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    from qnr.sim import ProximalGradient, duality_gap, make_solver, solve_convex

    try:
        import cvxpy as cp
    except ImportError:
        cp = None
    dims = args.dims or ([30, 60] if args.quick else [100, 200, 400])
    rows = []
    fista_steps_prev = None
    for d in dims:
        data, prob = instance(d)
        fact = make_solver("convex", d, gap_tol=GAP)
        fista = ProximalGradient(gap_tol=GAP)
        t0 = time.perf_counter()
        sol = solve_convex(prob, fact)
        jax.block_until_ready(sol.Shat)
        first = time.perf_counter() - t0
        reps = 1 if d >= 400 else args.repeats
        t_fact = median_time(lambda p=prob, f=fact: solve_convex(p, f).Shat, reps)
        st = sol.stats
        gap_f = float(duality_gap(prob, sol.Shat))
        row = dict(
            d=d,
            n=int(prob.X.shape[0]),
            t_fact=t_fact,
            first=first,
            steps=f"{int(st['factorized_steps'])} + {int(st['polish_steps'])}",
            gap_fact=gap_f,
            F_fact=float(sol.loss),
            rank=float(sol.rank_fraction),
        )
        big = d >= 400 or (fista_steps_prev is not None and d == dims[-1] and len(dims) > 2)
        if big:
            capped = ProximalGradient(gap_tol=GAP, max_steps=args.fista_cap)
            t_cap = median_time(lambda p=prob, f=capped: solve_convex(p, f).Shat, 1)
            per_step = t_cap / args.fista_cap
            row.update(
                t_fista=per_step * fista_steps_prev,
                fista_est=True,
                fista_steps=f"{fista_steps_prev} (est.)",
                gap_fista=float("nan"),
                F_fista=float("nan"),
            )
        else:
            fsol = solve_convex(prob, fista)
            jax.block_until_ready(fsol.Shat)
            row.update(
                t_fista=median_time(lambda p=prob, f=fista: solve_convex(p, f).Shat, reps),
                fista_est=False,
                fista_steps=str(int(fsol.iterations)),
                gap_fista=float(duality_gap(prob, fsol.Shat)),
                F_fista=float(fsol.loss),
            )
            fista_steps_prev = int(fsol.iterations)
        row["cvxpy"] = "not installed" if cp is None else "-"
        if cp is not None and d <= 40:
            S_cvx, t_cvx, status = solve_cvxpy(data, 0.05, 1e-9)
            w, V = np.linalg.eigh((S_cvx + S_cvx.T) / 2)
            S_cvx = (V * np.maximum(w, 0)) @ V.T
            f_cvx = float(prob.objective(jnp.asarray(S_cvx)))
            row["cvxpy"] = (
                f"{t_cvx:.2f} s [{status}], F rel {(f_cvx - row['F_fact']) / row['F_fact']:.1e}"
            )
        rows.append(row)
        print(row, flush=True)

    text = format_table(
        rows, repeats=args.repeats, cvxpy_version=None if cp is None else cp.__version__
    )
    if not args.quick:
        write_result("bench_convex", text)
    print(text)


if __name__ == "__main__":
    main()
