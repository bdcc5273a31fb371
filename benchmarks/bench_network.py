"""Benchmark: quadratic-network training-step throughput, qnr (JAX) vs PyTorch (CPU).

Workload (THEORY.md section 1): ``n = 2 d^2`` samples, width ``m = d``, float32,
loss ``(1/(4n)) sum (y - (||W^T x||^2 - ||W||_F^2)/sqrt(d))^2 + (lam/d)||W||_F^2``, plain
gradient descent. One step = loss + gradient + update; its matmul work is ``X @ W``
(``2 n d m`` FLOP) and ``X^T (r * H)`` (``2 n d m``): ``4 n d m`` FLOP per step.

* qnr: :func:`qnr.sim.train_network` with ``NetworkSolver("gd", max_steps=K)`` and the
  stopping rule disabled (``rtol = atol = gtol = 0``), so exactly ``K`` steps run inside the
  library's ``lax.while_loop`` (stopping test, gradient norm and optax update included);
* PyTorch: the same loop written by hand (autograd ``backward`` + in-place SGD update + the
  same gradient norm), ``torch.set_num_threads(cores)``;
* peak: a large float32 matmul in JAX (``2 N^3`` FLOP).

Compilation/warm-up excluded; medians of ``--repeats``. Writes
``benchmarks/results/bench_network.md``.

    python benchmarks/bench_network.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _common import cpu_model, matmul_peak, write_result  # noqa: E402 (benchmarks/ is on sys.path)


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def qnr_step_time(d: int, steps: int, repeats: int) -> float:
    import jax
    import jax.numpy as jnp

    from qnr.sim import ERMProblem, NetworkSolver, init_weights, make_dataset, train_network
    from qnr.teachers import MarchenkoPastur

    n, m = 2 * d * d, d
    data = make_dataset(jax.random.key(0), MarchenkoPastur(0.5), d, n, 0.0, dtype=jnp.float32)
    prob = ERMProblem.from_dataset(data, 0.01)
    W0 = init_weights(jax.random.key(1), d, m, 0.5, dtype=jnp.float32)
    solver = NetworkSolver("gd", d / 40, max_steps=steps, rtol=0.0, atol=0.0, gtol=0.0)

    def run():
        sol = train_network(prob, W0, solver)
        sol.W.block_until_ready()
        assert int(sol.iterations) == steps

    run()  # compile
    return _median_time(run, repeats) / steps


def torch_step_time(d: int, steps: int, repeats: int) -> float:
    import numpy as np
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    n, m = 2 * d * d, d
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.standard_normal((n, d)).astype(np.float32))
    Wt = torch.from_numpy(rng.standard_normal((d, m)).astype(np.float32)) / float(np.sqrt(m))
    S = Wt @ Wt.T
    y = ((X @ S) * X).sum(1) / float(np.sqrt(d)) - torch.trace(S) / float(np.sqrt(d))
    W0 = torch.from_numpy(0.5 * rng.standard_normal((d, m)).astype(np.float32) / float(np.sqrt(m)))
    lr, lam, sqd = d / 40, 0.01, float(np.sqrt(d))

    def run():
        W = W0.clone().requires_grad_(True)
        for _ in range(steps):
            H = X @ W
            yhat = ((H * H).sum(1) - (W * W).sum()) / sqd
            loss = ((y - yhat) ** 2).sum() / (4 * n) + lam / d * (W * W).sum()
            (g,) = torch.autograd.grad(loss, W)
            with torch.no_grad():
                W -= lr * g
                gnorm = torch.linalg.vector_norm(g)  # the same stopping quantities as qnr
        return loss.detach(), gnorm

    run()
    return _median_time(run, repeats) / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    args = parser.parse_args(argv)
    import jax
    import torch

    ds = [24, 50] if args.quick else [50, 100, 200]
    repeats = 3 if args.quick else 5
    peak = matmul_peak(1024 if args.quick else 3072, "float32", repeats)
    rows = []
    for d in ds:
        n = 2 * d * d
        steps = max(3, int(2e9 / (4 * n * d * d)))  # ~2 GFLOP per timed call
        steps = min(steps, 200)
        t_q = qnr_step_time(d, steps, repeats)
        t_t = torch_step_time(d, steps, repeats)
        flop = 4 * n * d * d
        rows.append((d, n, steps, t_q, t_t, flop / t_q, flop / t_t))
        print(f"d={d}: qnr {t_q * 1e3:.3f} ms/step, torch {t_t * 1e3:.3f} ms/step", flush=True)

    lines = [
        "# bench_network: quadratic-network GD step, qnr (JAX) vs PyTorch, float32",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores; jax {jax.__version__} "
        f"({jax.default_backend()}), torch {torch.__version__}.",
        f"Measured float32 matmul peak (JAX, {'1024' if args.quick else '3072'}^2): "
        f"{peak / 1e9:.1f} GFLOP/s. Step FLOP = 4 n d m (n = 2 d^2, m = d). "
        f"Medians of {repeats} runs of K steps, compile excluded.",
        "",
        "| d | n | K | qnr ms/step | torch ms/step | torch/qnr time | qnr GFLOP/s (% peak) "
        "| torch GFLOP/s (% peak) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d, n, k, tq, tt, fq, ft in rows:
        lines.append(
            f"| {d} | {n} | {k} | {tq * 1e3:.3f} | {tt * 1e3:.3f} | {tt / tq:.2f} | "
            f"{fq / 1e9:.1f} ({100 * fq / peak:.0f}%) | {ft / 1e9:.1f} ({100 * ft / peak:.0f}%) |"
        )
    lines += [
        "",
        "qnr steps run inside the library's `lax.while_loop` (stopping test disabled), i.e.",
        "the code path of `train_network`; the PyTorch loop is eager Python.",
        "The machine is shared with other jobs: treat ratios, not absolute values, as the result.",
    ]
    text = "\n".join(lines) + "\n"
    if not args.quick:
        write_result("bench_network", text)
    print(text)


if __name__ == "__main__":
    main()
