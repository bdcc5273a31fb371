"""``qnr dynamics``: population risk over time from the Riccati ODE, online SGD or full-batch GD.

Time is the rescaled ODE time of THEORY.md s. 5 (``t = 2 eta k / d`` after ``k`` steps of size
``eta = c/d``). With a power-law teacher the risk-vs-time exponent is fitted on the window
``3/lambda_1 <= t <= 0.3/lambda_r`` (log-log least squares, standard error of the slope) and
printed beside the heuristic ``(2a - 1)/a``.

JSON keys: ``kind``, ``d``, ``width``, ``times``, ``risk``, ``exponent``, ``exponent_err``,
``heuristic_exponent``, ``fit_window``, ``result``; SGD adds ``eta``, ``batch``, ``seeds``,
``steps``, ``risk_std``; GD adds ``eta``, ``n``, ``steps``, ``train_loss``.
"""

from __future__ import annotations

import math
import sys

from qnr.cli._args import add_delta_flag, integer, real
from qnr.cli._common import add_common_flags, setup_precision


def register(sub) -> None:
    p = sub.add_parser(
        "dynamics", help="risk vs time: Riccati ODE, online SGD or full-batch GD (THEORY.md s. 5)"
    )
    add_common_flags(p, progress=True)
    p.add_argument("--kind", choices=["ode", "sgd", "gd"], default="ode")
    p.add_argument("--teacher", default="power-law", choices=["mp", "power-law"])
    p.add_argument(
        "--kappa-star", type=real("kappa_star", gt=0), default=1.0, help="teacher rank fraction r/d"
    )
    p.add_argument("--gamma", type=real("gamma", ge=0), default=1.5, help="power-law exponent a")
    p.add_argument("--d", type=integer("d", ge=2, le=20_000), default=100, help="dimension")
    p.add_argument(
        "--width", type=integer("width", ge=1), default=None, help="student width m (default d)"
    )
    p.add_argument("--init", choices=["gaussian", "identity"], default="gaussian")
    p.add_argument("--init-scale", type=real("init_scale", gt=0), default=1e-2)
    p.add_argument("--t-max", type=real("t_max", gt=0), default=10.0, help="final ODE time")
    p.add_argument(
        "--num-times", type=integer("num_times", ge=3, le=100_000), default=40, help="output times"
    )
    p.add_argument("--c", type=real("c", gt=0), default=0.5, help="step size eta = c/d")
    p.add_argument(
        "--batch", type=integer("batch", ge=1, le=10**7), default=10, help="SGD batch size"
    )
    p.add_argument(
        "--seeds", type=integer("seeds", ge=1, le=10_000), default=2, help="SGD seeds (averaged)"
    )
    p.add_argument(
        "--alpha", type=real("alpha", gt=0), default=2.0, help="GD sample ratio n = alpha d^2"
    )
    add_delta_flag(p)
    p.add_argument("--seed", type=integer("seed", ge=0), default=0, help="PRNG seed")
    p.set_defaults(func=run, check=check)


def _num_steps(args) -> int:
    """SGD/GD steps to reach ``--t-max``: ``t = 2 eta k / d`` with ``eta = c / d``."""
    eta = args.c / args.d
    return max(1, math.ceil(args.t_max * args.d / (2 * eta)))


def check(args) -> None:
    """Flag combinations, memory and step budgets (before any import of the numerics)."""
    from qnr.cli._args import INT32_MAX, check_memory, check_steps, sim_bytes

    d = args.d
    width = d if args.width is None else args.width
    if args.init == "identity" and width != d:
        raise ValueError("--init identity needs --width equal to --d")
    mats = 12.0 * 8 * (d * d + d * width)  # S*, W0, eigenvectors, solver state
    what = f"--kind {args.kind} at --d {d}"
    advice = "lower --d or --width"
    if args.kind == "ode":
        check_memory(mats + 8.0 * args.num_times * d, what, advice)
        return
    steps = _num_steps(args)
    check_steps(
        steps,
        f"--kind {args.kind} to --t-max {args.t_max:g} at --d {d}, --c {args.c:g}",
        "lower --t-max or --d, or raise --c",
    )
    if args.kind == "sgd":
        per_seed = 8.0 * (args.batch * (d + width) + 2 * d * width)
        check_memory(mats + args.seeds * per_seed, what + f" with --seeds {args.seeds}", advice)
    else:
        n = max(1, round(args.alpha * d * d))
        if n > INT32_MAX:
            raise ValueError(f"--alpha {args.alpha:g} at --d {d} gives n = {n} > {INT32_MAX}")
        check_memory(
            mats + sim_bytes(d, n, 1, width=width),
            what + f" --alpha {args.alpha:g}",
            "lower --d or --alpha",
        )


def _fit(times, risk, eigenvalues):
    import numpy as np

    from qnr.theory.dynamics import fit_power_law

    lam = np.sort(np.asarray(eigenvalues))[::-1]
    lam = lam[lam > 1e-12 * lam[0]]
    lo, hi = 3.0 / lam[0], 0.3 / lam[-1]
    try:
        fit = fit_power_law(times, risk, lo, hi)
    except ValueError:
        return None, None, [lo, hi]
    return float(fit.exponent), float(fit.stderr), [lo, hi]


def _result_text(result) -> str:
    """``"successful"``, or how many runs failed with a non-finite state."""
    import numpy as np
    import optimistix as optx

    good = np.asarray(result == optx.RESULTS.successful).ravel()
    if good.all():
        return "successful"
    return f"nonfinite ({int((~good).sum())} of {good.size} runs)"


def run(args) -> dict:
    setup_precision(args)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from qnr._validate import check_nonnegative, check_positive, check_size
    from qnr.cli._common import Stages, progress_enabled
    from qnr.sim.data import make_dataset_from_matrix, n_samples
    from qnr.sim.online import OnlineProblem, full_batch_gd, log_steps, online_sgd_sweep
    from qnr.teachers import teacher_from_name
    from qnr.theory.dynamics import RiccatiFlow, heuristic_time_exponent, log_times, solve_riccati

    d = check_size("d", args.d)
    width = d if args.width is None else check_size("width", args.width)
    for name in ("init_scale", "t_max", "c", "alpha"):
        check_positive(name.replace("_", "-"), getattr(args, name))
    check_nonnegative("delta", args.delta)
    num = check_size("num-times", args.num_times, minimum=3)
    teacher = teacher_from_name(args.teacher, kappa_star=args.kappa_star, gamma=args.gamma)
    key = jax.random.key(args.seed)
    k_t, k_w, k_run = jax.random.split(key, 3)
    S_star = teacher.sample(k_t, d)
    if args.init == "identity":
        if width != d:
            raise ValueError("the identity initialisation needs width == d")
        W0 = args.init_scale * jnp.eye(d, dtype=S_star.dtype)
    else:
        g = jax.random.normal(k_w, (d, width), dtype=S_star.dtype)
        W0 = args.init_scale * g / math.sqrt(width)
    eigenvalues = np.linalg.eigvalsh(np.asarray(S_star))
    out = {"kind": args.kind, "d": d, "width": width}
    eta = args.c / d
    with Stages(args, [f"{args.kind} to t = {args.t_max:g}"], "qnr dynamics"):
        if args.kind == "ode":
            times = log_times(min(1e-2, args.t_max / 100), args.t_max, num, dtype=S_star.dtype)
            sol = solve_riccati(RiccatiFlow.from_matrices(S_star, W0), times)
            t, risk, ok = np.asarray(sol.times), np.asarray(sol.risk), sol.result
        elif args.kind == "sgd":
            batch = check_size("batch", args.batch)
            seeds = check_size("seeds", args.seeds)
            steps = log_steps(max(1, math.ceil(args.t_max * d / (2 * eta))), num)
            if progress_enabled(args):
                print(f"qnr dynamics: {steps[-1]} SGD steps x {seeds} seeds", file=sys.stderr)
            prob = OnlineProblem.from_matrix(S_star, W0, args.delta)
            tr = online_sgd_sweep(
                prob,
                jnp.asarray([eta]),
                jax.random.split(k_run, seeds),
                batch_size=batch,
                steps=steps,
            )
            t = np.asarray(tr.times[0, 0])
            risk = np.asarray(jnp.mean(tr.risk[0], axis=0))
            ok = tr.result
            out.update(
                eta=eta,
                batch=batch,
                seeds=seeds,
                steps=list(steps),
                risk_std=np.asarray(jnp.std(tr.risk[0], axis=0)),
            )
        else:
            n = n_samples(args.alpha, d)
            data = make_dataset_from_matrix(k_run, S_star, n, args.delta)
            steps = log_steps(max(1, math.ceil(args.t_max * d / (2 * eta))), num)
            tr = full_batch_gd(data, W0, eta, steps=steps)
            t, risk, ok = np.asarray(tr.times), np.asarray(tr.risk), tr.result
            out.update(eta=eta, n=n, steps=list(steps), train_loss=np.asarray(tr.train_loss))

    exponent = err = window = heur = None
    if args.teacher == "power-law":
        exponent, err, window = _fit(t, risk, eigenvalues)
        if args.gamma > 0.5:
            heur = float(heuristic_time_exponent(args.gamma))
    out.update(
        times=t,
        risk=risk,
        exponent=exponent,
        exponent_err=err,
        heuristic_exponent=heur,
        fit_window=window,
        result=_result_text(ok),
    )
    return out
