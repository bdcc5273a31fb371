"""Benchmark: one sharded, vmapped sweep call vs a Python loop of jitted per-point calls.

Workload: the built-in ``simulation`` task (convex nuclear-norm ERM, FISTA on the PSD cone)
on an ``alpha x seed`` grid at fixed ``lam``, ``Delta``, MP teacher ``kappa* = 0.5``.

* baseline: ``jax.jit`` of the single-(point, seed) function, called in a Python loop
  (swept values passed as JAX scalars: one compilation, ``P * S`` dispatches);
* ``ShardedMap`` over 1 device: the whole grid in one call (``vmap`` over points and seeds);
* ``ShardedMap`` over ``k`` host devices (``--xla_force_host_platform_device_count=k``, run
  in a subprocess), the batch sharded on a 1-d ``Auto`` mesh.

Compilation is excluded (a warm-up call first); every timing is the median of ``--repeats``
runs with ``block_until_ready``. Note: a vmapped ``while_loop`` runs until its slowest member
converges, so batching trades wasted iterations against dispatch and parallelism; the table
reports the iteration spread. FLOP/s are not reported: the work is dominated by small
``eigh`` calls, not matmuls. Writes ``benchmarks/results/bench_sweep.md``.

    python benchmarks/bench_sweep.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _common import cpu_model, write_result  # noqa: E402 (benchmarks/ is on sys.path)


def _grid(quick):
    import numpy as np

    if quick:
        return dict(d=12, alphas=np.linspace(0.2, 0.8, 4), seeds=2, repeats=3)
    return dict(d=16, alphas=np.linspace(0.2, 0.8, 6), seeds=3, repeats=3)


def measure(mode: str, quick: bool) -> dict:
    """Run one mode in this process and return its timings (JSON-able)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    from qnr.sweep import ShardedMap, seed_keys
    from qnr.sweep._tasks import SIMULATION

    g = _grid(quick)
    alphas = g["alphas"]
    seeds = g["seeds"]
    static = dict(d=g["d"], teacher="mp", kappa_star=0.5, gamma=1.0, solver="convex")
    floats = {
        "alpha": alphas,
        "lam": np.full_like(alphas, 0.01),
        "delta": np.full_like(alphas, 0.1),
        "kappa": np.full_like(alphas, 1.0),
    }
    fn = SIMULATION.build(static, dict(SIMULATION.options), floats)
    keys = seed_keys(0, range(seeds))
    times = []
    if mode == "loop":
        single = jax.jit(lambda p, k: fn(p, k[None]))
        points = [
            ({k: jnp.asarray(v[i]) for k, v in floats.items()}, keys[s])
            for i in range(alphas.size)
            for s in range(seeds)
        ]

        def run():
            outs = [single(p, k) for p, k in points]
            jax.block_until_ready(outs)
            return np.array([int(o["iterations"][0]) for o in outs])

    else:
        smap = ShardedMap(fn, alphas.size)

        def run():
            out = smap(floats, keys)
            return np.asarray(out["iterations"]).ravel()

    iters = run()  # warm-up: compile
    for _ in range(g["repeats"]):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return {
        "mode": mode,
        "devices": len(jax.devices()),
        "median_s": statistics.median(times),
        "iterations_min": int(iters.min()),
        "iterations_max": int(iters.max()),
        "problems": int(alphas.size * seeds),
        "d": g["d"],
        "jax": jax.__version__,
        "backend": jax.default_backend(),
    }


def _subprocess(mode, quick, devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = env.get("JAX_PLATFORMS", "cpu")
    cmd = [sys.executable, __file__, "--_measure", mode] + (["--quick"] if quick else [])
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid (CI smoke run)")
    parser.add_argument("--devices", type=int, nargs="*", default=[2])
    parser.add_argument("--_measure", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        print(json.dumps(measure(args._measure, args.quick)))
        return
    rows = [_subprocess("loop", args.quick, 1), _subprocess("sharded", args.quick, 1)]
    rows += [_subprocess("sharded", args.quick, k) for k in args.devices]
    base = rows[0]["median_s"]
    r0 = rows[0]
    lines = [
        "# bench_sweep: sharded vmapped sweep vs Python loop of jitted calls",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, jax {r0['jax']}, backend "
        f"{r0['backend']} (host devices forced with XLA_FLAGS). Workload: built-in simulation "
        f"task, convex ERM, d = {r0['d']}, {r0['problems']} problems (alpha x seed). "
        f"Iterations per problem: {r0['iterations_min']}..{r0['iterations_max']} (a vmapped "
        "while_loop runs to the max).",
        "",
        "| mode | devices | median time (s) | speed-up vs loop |",
        "|---|---|---|---|",
    ]
    for r in rows:
        name = "Python loop of jitted calls" if r["mode"] == "loop" else "ShardedMap (one call)"
        lines.append(
            f"| {name} | {r['devices']} | {r['median_s']:.3f} | {base / r['median_s']:.2f}x |"
        )
    text = "\n".join(lines) + "\n"
    write_result("bench_sweep", text)
    print(text)


if __name__ == "__main__":
    main()
