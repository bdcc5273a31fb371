"""Compile and warm time of ``solve_erm`` for a discrete teacher (power law, d = 400): issue 10.

Each case runs in a fresh process (no persistent compilation cache), reporting the trace +
lowering time, the XLA compile time, the first run, the median warm call and the size of the
lowered StableHLO text. Run ``python benchmarks/bench_compile_atomic.py [case ...]``
(cases: ``pl`` unconstrained, ``rank`` kappa = 0.3, ``lam0`` lam = Delta = 0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

CASES = {
    # power law gamma 1.5, d = 400, kappa* 1, Delta 0.5, lam 1.2e-3, xi ~ 1e-7
    "pl": dict(alpha=1.25e6, lam=1.2e-3, Delta=0.5),
    "rank": dict(alpha=1.25e6, lam=1.2e-3, Delta=0.5, kappa=0.3),
    "lam0": dict(alpha=0.3, lam=0.0, Delta=0.0),
}


def _one(case: str) -> dict:
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    import jax

    jax.config.update("jax_enable_x64", True)
    import qnr

    kw = CASES[case]
    problem = qnr.theory.ERMProblem(teacher=qnr.teachers.PowerLaw(gamma=1.5), d=400, **kw)
    f = jax.jit(qnr.theory.solve_erm)
    t0, c0 = time.perf_counter(), time.process_time()
    lowered = f.lower(problem)
    t1, c1 = time.perf_counter(), time.process_time()
    compiled = lowered.compile()
    t2, c2 = time.perf_counter(), time.process_time()
    sol = jax.block_until_ready(compiled(problem))
    t3 = time.perf_counter()
    warm = []
    for _ in range(7):
        s = time.perf_counter()
        jax.block_until_ready(compiled(problem))
        warm.append(time.perf_counter() - s)
    warm.sort()
    return dict(
        case=case,
        lower_s=t1 - t0,
        compile_s=t2 - t1,
        lower_cpu_s=c1 - c0,
        compile_cpu_s=c2 - c1,
        first_run_s=t3 - t2,
        warm_ms=1e3 * warm[len(warm) // 2],
        hlo_chars=len(lowered.as_text()),
        E=repr(float(sol.E)),
        xi=repr(float(sol.xi)),
        tau=repr(float(sol.tau)),
        rank=repr(float(sol.rank)),
        D=repr(float(sol.D)),
        b=repr(float(sol.b)),
        steps=int(sol.stats["num_steps"]),
        converged=bool(sol.converged),
    )


def main(argv):
    if len(argv) >= 2 and argv[0] == "--one":
        print(json.dumps(_one(argv[1])))
        return
    for case in argv or list(CASES):
        out = subprocess.run(
            [sys.executable, __file__, "--one", case], capture_output=True, text=True, check=True
        )
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
