"""Benchmark: the Bayes-optimal baseline (qnr.theory.bayes, qnr.sim.gamp).

1. State evolution: ``E_BO`` on a grid of ``P`` sample ratios (MP teacher, ``kappa* = 0.5``):
   baseline = a Python loop of the jitted single solve (one compilation, ``P`` dispatches) vs
   one vmapped call (:func:`qnr.theory.bayes.bayes_optimal_error`).
2. GAMP-RIE at dimension ``d``, ``S`` seeds, exactly ``T`` iterations (``rtol`` tiny so that
   no run stops early): baseline = a loop of single :func:`qnr.sim.gamp.gamp_rie` calls vs
   one vmapped :func:`qnr.sim.gamp.simulate_gamp`-style batch. Per-iteration breakdown: the two
   matrix-free sensing products (``4 n d^2`` flops) and the ``d x d`` ``eigh`` of the RIE,
   with the sensing FLOP/s against the measured float64 matmul peak.

Compilation is excluded (warm-up first); timings are medians of ``--repeats`` runs with
``block_until_ready``. ``OPENBLAS_NUM_THREADS`` defaults to 1: jax's CPU ``eigh`` calls
LAPACK from scipy's OpenBLAS, whose threads spin under CPU oversubscription (measured on the
shared 2-core machine at load ~15: a 80 x 80 ``eigh`` took 196 ms with default threading and
0.4-0.5 ms single-threaded). Writes ``benchmarks/results/bench_bayes.md``.

    python benchmarks/bench_bayes.py [--quick]
"""

from __future__ import annotations

import argparse
import os

from _common import cpu_model, median_time, write_result  # noqa: E402 (benchmarks/ is on sys.path)

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before scipy/jax load OpenBLAS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from qnr.sim import make_dataset, n_samples
    from qnr.sim.gamp import GAMPRIE, _gamp_batch, gamp_rie
    from qnr.sim.sensing import adjoint_sensing, apply_sensing
    from qnr.teachers import MarchenkoPastur
    from qnr.theory.bayes import BayesOptimal, bayes_optimal_error, solve_bayes_optimal

    quick = args.quick
    repeats = args.repeats or (3 if quick else 5)
    P = 8 if quick else 32
    d, S, T = (30, 4, 10) if quick else (80, 8, 20)
    alpha = 0.3
    teacher = MarchenkoPastur(0.5)
    rows = []

    # ---- 1. state evolution over a grid of alpha -------------------------------------------
    alphas = jnp.linspace(0.05, 0.35, P)

    def se_loop():
        return [solve_bayes_optimal(BayesOptimal(a, teacher)).E for a in alphas]

    t_loop = median_time(se_loop, repeats)
    t_vmap = median_time(lambda: bayes_optimal_error(alphas, 0.5), repeats)
    rows.append(("E_BO, loop of jitted solves", f"P = {P}", t_loop, 1.0))
    rows.append(("E_BO, one vmapped call", f"P = {P}", t_vmap, t_loop / t_vmap))

    # ---- 2. GAMP-RIE ------------------------------------------------------------------------
    n = n_samples(alpha, d)
    keys = jax.random.split(jax.random.key(0), S)
    data = jax.vmap(lambda k: make_dataset(k, teacher, d, n, 0.1))(keys)
    singles = [make_dataset(k, teacher, d, n, 0.1) for k in keys]
    solver = GAMPRIE(rtol=1e-300, max_steps=T)  # never converges: exactly T iterations

    def gamp_loop():
        return [gamp_rie(ds, solver).error_trace for ds in singles]

    def gamp_batch():
        return _gamp_batch(data.X, data.y, data.S_star, data.Delta, solver, None).error_trace

    t_gl = median_time(gamp_loop, repeats)
    t_gb = median_time(gamp_batch, repeats)
    label = f"d = {d}, n = {n}, S = {S}, T = {T}"
    rows.append(("GAMP-RIE (empirical RIE), loop over seeds", label, t_gl, 1.0))
    rows.append(("GAMP-RIE (empirical RIE), vmapped seeds", label, t_gb, t_gl / t_gb))
    per_iter = t_gb / (S * T)

    X, S_star = singles[0].X, singles[0].S_star
    sens = jax.jit(lambda X, M: adjoint_sensing(X, apply_sensing(X, M)))
    t_sens = median_time(lambda: sens(X, S_star), repeats)
    t_eigh = median_time(lambda: jax.jit(jnp.linalg.eigh)(S_star), repeats)
    flops_sens = 4.0 * n * d * d
    m = 1024
    A = jax.random.normal(jax.random.key(1), (m, m))
    t_mm = median_time(lambda: jax.jit(jnp.matmul)(A, A), repeats)
    peak = 2.0 * m**3 / t_mm
    rows.append(("sensing A^*(A(S)) (one pair)", f"{flops_sens:.2e} flop", t_sens, None))
    rows.append((f"eigh {d} x {d}", "", t_eigh, None))
    rows.append((f"float64 matmul {m}^3 (peak reference)", f"{peak / 1e9:.1f} GFLOP/s", t_mm, None))

    lines = [
        "# bench_bayes: Bayes-optimal state evolution and GAMP-RIE",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores (shared), jax {jax.__version__}, "
        f"backend {jax.default_backend()}, float64, OPENBLAS_NUM_THREADS="
        f"{os.environ.get('OPENBLAS_NUM_THREADS')}. Medians of {repeats} runs after warm-up"
        + (" (--quick)." if quick else "."),
        "",
        "| workload | size | median time [s] | speed-up vs baseline |",
        "|---|---|---|---|",
    ]
    for name, size, t, ratio in rows:
        r = "" if ratio is None else f"{ratio:.2f}x"
        lines.append(f"| {name} | {size} | {t:.4g} | {r} |")
    lines += [
        "",
        f"GAMP-RIE cost per (seed, iteration), batched: {per_iter * 1e3:.3f} ms; of which one "
        f"sensing pair {t_sens * 1e3:.3f} ms ({flops_sens / t_sens / 1e9:.2f} GFLOP/s = "
        f"{100 * flops_sens / t_sens / peak:.1f}% of the measured matmul peak) and one eigh "
        f"{t_eigh * 1e3:.3f} ms.",
        "",
    ]
    write_result("bench_bayes", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
