"""``qnr simulate``: finite-``d`` ERM simulations (THEORY.md section 1), averaged over seeds.

Example::

    qnr simulate --alpha 0.3 --kappa-star 0.5 --lam 0.05 --d 40 --seeds 8 --solver convex --json

Solvers are dispatched through :data:`SOLVERS` (name -> runner). A runner takes the parsed
arguments and the teacher and returns per-seed arrays ``E``, ``e_test``, ``e_train``, ``rank``
(rank fraction) and ``converged`` (bool), plus optional extra scalar entries; the command
prints their seed statistics. Adding a solver (e.g. ``gamp``) is one entry in the table.
"""

from __future__ import annotations

import numpy as np

from qnr.cli._bayes import run_gamp_simulation
from qnr.cli._common import add_common_flags, setup_precision


def _run_erm(args, teacher) -> dict:
    """ERM solvers of :func:`qnr.sim.simulate` (convex nuclear norm or an optax network)."""
    import warnings

    from qnr.sim import simulate

    kwargs = dict(init_scale=args.init_scale, max_steps=args.max_steps)
    if args.lr is not None:
        kwargs["learning_rate"] = args.lr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # reported as converged_fraction
        res = simulate(
            teacher,
            args.alpha,
            args.kappa,
            args.lam,
            args.delta,
            d=args.d,
            seeds=args.seeds,
            solver=args.solver,
            key=_key(args.seed),
        )
    return {
        "E": res.E,
        "e_test": res.e_test,
        "e_train": res.e_train,
        "rank": res.rank_fraction,
        "converged": res.converged,
        "n": int(res.n),
        "m": int(res.m),
        "iterations_mean": float(np.mean(res.iterations)),
    }


def _key(seed: int):
    import jax

    return jax.random.key(seed)


SOLVERS = {
    "convex": _run_erm,
    "gd": _run_erm,
    "momentum": _run_erm,
    "adam": _run_erm,
    "lbfgs": _run_erm,
    "gamp": run_gamp_simulation,  # Bayes-optimal GAMP-RIE (qnr.cli._bayes)
}
"""Solver name -> runner ``(args, teacher) -> dict`` (see the module docstring)."""


def register(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="finite-d ERM simulation (convex nuclear norm or trained network), seed averages",
        description=(
            "Sample teacher-student data (n = alpha d^2, label noise Delta), solve the ERM "
            "problem (1/(4n)) sum (y - Tr(Z S))^2 + (lam/d) Tr S (convex) or train the width "
            "kappa d network, and print seed statistics of E = ||Shat - S*||_F^2/d, e_test, "
            "e_train and the rank fraction. Non-converged seeds are excluded from the means."
        ),
    )
    add_common_flags(p)
    p.add_argument("--alpha", type=float, required=True, help="sample ratio n/d^2")
    p.add_argument("--kappa-star", type=float, default=0.5, help="teacher width ratio")
    p.add_argument(
        "--kappa",
        type=float,
        default=None,
        help="student width ratio m/d (convex: rank bound); default: m = d (no constraint)",
    )
    p.add_argument("--lam", type=float, default=0.0, help="regularisation lam >= 0")
    p.add_argument("--delta", type=float, default=0.0, help="label-noise variance Delta")
    p.add_argument("--d", type=int, default=30, help="dimension")
    p.add_argument("--seeds", type=int, default=4, help="number of seeds")
    p.add_argument("--seed", type=int, default=0, help="base random seed")
    p.add_argument("--solver", default="convex", choices=sorted(SOLVERS))
    p.add_argument("--teacher", default="mp", choices=["mp", "power-law"])
    p.add_argument("--gamma", type=float, default=1.0, help="power-law exponent")
    p.add_argument("--lr", type=float, default=None, help="learning rate (gd/momentum/adam)")
    p.add_argument("--init-scale", type=float, default=0.5, help="network init W0 W0^T ~ s^2 I")
    p.add_argument("--max-steps", type=int, default=None, help="iteration bound")
    p.set_defaults(func=run)


def _stats(values, converged) -> tuple[float, float]:
    v = np.asarray(values, np.float64)[np.asarray(converged, bool)]
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def run(args) -> dict:
    setup_precision(args)
    from qnr.teachers import teacher_from_name

    teacher = teacher_from_name(args.teacher, kappa_star=args.kappa_star, gamma=args.gamma)
    out = SOLVERS[args.solver](args, teacher)
    conv = np.asarray(out.pop("converged"), bool)
    summary = {
        "solver": args.solver,
        "teacher": args.teacher,
        "alpha": args.alpha,
        "kappa_star": args.kappa_star,
        "kappa": args.kappa,
        "lam": args.lam,
        "Delta": args.delta,
        "d": args.d,
        "seeds": args.seeds,
    }
    for name in ("E", "e_test", "e_train", "rank"):
        mean, std = _stats(out.pop(name), conv)
        summary[f"{name}_mean"] = mean
        summary[f"{name}_std"] = std
    summary["converged_fraction"] = float(conv.mean())
    summary.update(out)
    return summary
