"""``qnr simulate``: finite-``d`` ERM simulations (THEORY.md section 1), averaged over seeds.

Example::

    qnr simulate --alpha 0.3 --kappa-star 0.5 --lam 0.05 --d 40 --seeds 8 --solver convex --json

Solvers are dispatched through :data:`SOLVERS` (name -> runner). A runner takes the parsed
arguments and the teacher and returns per-seed arrays ``E``, ``e_test``, ``e_train``, ``rank``
(rank fraction) and ``converged`` (bool), plus optional extra scalar entries; the command
prints their seed statistics. Adding a solver (e.g. ``gamp``) is one entry in the table.
"""

from __future__ import annotations

from qnr.cli._args import add_delta_flag, add_student_kappa_flag, integer, real
from qnr.cli._bayes import run_gamp_simulation
from qnr.cli._common import add_common_flags, setup_precision


def _run_erm(args, teacher) -> dict:
    """ERM solvers of :func:`qnr.sim.simulate` (convex nuclear norm or an optax network)."""
    import warnings

    import numpy as np

    from qnr.sim import simulate

    kwargs = dict(max_steps=args.max_steps)
    if args.init_scale is not None:
        kwargs["init_scale"] = args.init_scale
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
            **kwargs,
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
        "iterations_max": int(np.max(res.iterations)),
        # convex: seeds whose minimiser is not unique (qnr.sim.dual_certificate) and the
        # largest certified relative duality gap
        "degenerate_count": int(np.sum(np.asarray(res.degenerate) & np.asarray(res.converged))),
        "duality_gap_max": (
            float(np.nanmax(res.duality_gap)) if np.any(np.isfinite(res.duality_gap)) else None
        ),
    }


def _key(seed: int):
    import jax

    return jax.random.key(seed)


SOLVERS = {
    "convex": _run_erm,
    "fista": _run_erm,  # qnr.sim.ProximalGradient alone (the convex default adds L-BFGS on W W^T)
    "gd": _run_erm,
    "momentum": _run_erm,
    "adam": _run_erm,
    "lbfgs": _run_erm,
    "gamp": run_gamp_simulation,  # Bayes-optimal GAMP-RIE (qnr.cli._bayes)
}
"""Solver name -> runner ``(args, teacher) -> dict`` (see the module docstring)."""


HELP = "finite-d ERM simulation (convex nuclear norm or trained network), seed averages"
DESCRIPTION = (
    "Sample teacher-student data (n = alpha d^2, label noise Delta), solve the ERM "
    "problem (1/(4n)) sum (y - Tr(Z S))^2 + (lam/d) Tr S (convex) or train the width "
    "kappa d network, and print seed statistics of E = ||Shat - S*||_F^2/d, e_test, "
    "e_train and the rank fraction. Non-converged seeds are excluded from the means. "
    "lam = 0 here is unregularised least squares, NOT the lam -> 0+ limit that "
    "'qnr erm-theory --lam 0' describes: it must be confirmed with --least-squares "
    "(use a small --lam > 0 to approach the lam -> 0+ limit)."
)


def register(sub) -> None:
    p = sub.add_parser("simulate", help=HELP, description=DESCRIPTION)
    add_common_flags(p, progress=True)
    p.add_argument(
        "--alpha", type=real("alpha", gt=0), required=True, help="sample ratio n/d^2 > 0"
    )
    p.add_argument(
        "--kappa-star", type=real("kappa_star", gt=0), default=0.5, help="teacher width ratio"
    )
    add_student_kappa_flag(
        p,
        le=1e4,
        help="student width ratio m/d, 0 < kappa <= 1e4 (convex: rank bound); "
        "default: m = d (no constraint)",
    )
    p.add_argument(
        "--lam",
        type=real("lam", ge=0),
        default=None,
        help="regularisation lam > 0 (required for the ERM solvers); lam = 0 is unregularised "
        "least squares and needs --least-squares",
    )
    p.add_argument(
        "--least-squares",
        action="store_true",
        help="confirm --lam 0: unregularised least squares (not the lam -> 0+ limit)",
    )
    add_delta_flag(p)
    p.add_argument("--d", type=integer("d", ge=2, le=100_000), default=30, help="dimension")
    p.add_argument(
        "--seeds", type=integer("seeds", ge=1, le=100_000), default=4, help="number of seeds"
    )
    p.add_argument("--seed", type=integer("seed", ge=0), default=0, help="base random seed")
    p.add_argument("--solver", default="convex", choices=sorted(SOLVERS))
    p.add_argument("--teacher", default="mp", choices=["mp", "power-law"])
    p.add_argument("--gamma", type=real("gamma", ge=0), default=1.0, help="power-law exponent")
    p.add_argument(
        "--lr", type=real("lr", gt=0), default=None, help="learning rate (gd/momentum/adam)"
    )
    p.add_argument(
        "--init-scale",
        type=real("init_scale", gt=0),
        default=None,
        help="network solvers: init W0 W0^T ~ s^2 I (default 0.5)",
    )
    p.add_argument(
        "--max-steps", type=integer("max_steps", ge=1), default=None, help="iteration bound"
    )
    p.set_defaults(func=run, check=check)


_NETWORK = ("gd", "momentum", "adam", "lbfgs")


def check(args) -> None:
    """Flags that do not apply to the solver, the meaning of lam = 0, budgets (before work)."""
    from qnr.cli._args import INT32_MAX, check_memory, check_steps, sim_bytes

    s = args.solver
    if args.lr is not None and s not in ("gd", "momentum", "adam"):
        raise ValueError(f"--lr applies to --solver gd, momentum or adam, not {s}")
    if args.init_scale is not None and s not in _NETWORK:
        raise ValueError(f"--init-scale applies to the network solvers {_NETWORK}, not {s}")
    if s == "gamp":
        for flag, value in (("--lam", args.lam), ("--kappa", args.kappa)):
            if value is not None:
                raise ValueError(f"{flag} does not apply to --solver gamp (Bayes-optimal)")
        if args.least_squares:
            raise ValueError("--least-squares does not apply to --solver gamp")
    elif args.lam is None or (args.lam == 0 and not args.least_squares):
        raise ValueError(
            f"--solver {s} needs --lam: a ridge lam > 0, or --lam 0 --least-squares for "
            "unregularised least squares (lam = 0 of 'qnr erm-theory' is the lam -> 0+ limit, "
            "approached here with a small lam > 0)"
        )
    elif args.least_squares and args.lam != 0:
        raise ValueError(f"--least-squares means --lam 0, got --lam {args.lam:g}")
    n = max(1, round(args.alpha * args.d**2))
    if n > INT32_MAX:
        raise ValueError(f"--alpha {args.alpha:g} at --d {args.d} gives n = {n} > {INT32_MAX}")
    width = round((1.0 if args.kappa is None else args.kappa) * args.d) if s in _NETWORK else 0
    check_memory(
        sim_bytes(args.d, n, args.seeds, width=width),
        f"--d {args.d} at --alpha {args.alpha:g} with --seeds {args.seeds}"
        + (f" and width m = {width}" if width else ""),
        "lower --d, --alpha or --seeds",
    )
    if args.max_steps is not None:
        check_steps(args.max_steps, "--max-steps", "lower --max-steps")


def _stats(values, converged) -> tuple[float, float]:
    import numpy as np

    v = np.asarray(values, np.float64)[np.asarray(converged, bool)]
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def run(args) -> dict:
    setup_precision(args)
    import numpy as np

    from qnr.cli._common import Stages
    from qnr.teachers import teacher_from_name

    teacher = teacher_from_name(args.teacher, kappa_star=args.kappa_star, gamma=args.gamma)
    with Stages(args, [f"{args.solver}, {args.seeds} seeds"], "qnr simulate"):
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
