"""``qnr erm-theory``: the ERM replica fixed point at one point, or at every row of a CSV
file (``--points``, one compiled program per static group; THEORY.md section 2)."""

from __future__ import annotations

from qnr.cli._args import (
    add_delta_flag,
    add_student_kappa_flag,
    add_teacher_flags,
    check_teacher_flags,
    real,
)
from qnr.cli._common import add_common_flags, setup_precision

HELP = "replica prediction for ERM (xi, tau, E, e_test, e_train, rank)"
DESCRIPTION = (
    "Solve the ERM fixed point 2 alpha xi = E + Delta/2, tau (1 - D/alpha) = lam "
    "(THEORY.md section 2). lam = 0 means the lam -> 0+ limit (the minimum nuclear "
    "norm interpolator) -- NOT unregularised least squares, which is what "
    "'qnr simulate --lam 0 --least-squares' runs."
)


def register(sub) -> None:
    p = sub.add_parser("erm-theory", help=HELP, description=DESCRIPTION)
    add_common_flags(p)
    p.add_argument("--alpha", type=real("alpha", gt=0), default=None, help="sample ratio n/d^2 > 0")
    p.add_argument(
        "--points",
        default=None,
        metavar="FILE",
        help=(
            "CSV with columns alpha, kappa_star, kappa, lam, delta (optional: teacher, gamma, "
            "d; empty kappa = unconstrained): solve every row in one compiled program per "
            "static group; prints a CSV, or with --json {points: [...], timings: {...}}"
        ),
    )
    p.add_argument(
        "--kappa-star",
        type=real("kappa_star", gt=0),
        default=None,
        help="teacher width ratio m*/d (default: 0.5 for mp, 1 for power-law, as in the API)",
    )
    add_student_kappa_flag(
        p, help="student width ratio m/d > 0 (default: unconstrained, i.e. kappa >= 1)"
    )
    p.add_argument(
        "--lam",
        type=real("lam", ge=0),
        default=0.0,
        help="ridge on ||W||_F^2, >= 0 (default 0: the lam -> 0+ limit, min nuclear norm)",
    )
    add_delta_flag(p)
    add_teacher_flags(p)
    p.set_defaults(func=run, check=check)


def check(args) -> None:
    from qnr.cli._points import check_point_or_points, read_points

    if not check_point_or_points(args, "--alpha", read_points):
        check_teacher_flags(args)


def run(args) -> dict:
    setup_precision(args)
    if args.points is not None:
        from qnr.cli._points import solve_points

        return solve_points(args.point_rows, text_csv=not args.json)
    from qnr._results import result_names
    from qnr.teachers import teacher_from_name
    from qnr.theory.erm import BRANCH_NAMES, ERMProblem, solve_erm

    kappa_star = args.kappa_star
    if kappa_star is None and args.teacher == "mp":
        kappa_star = 0.5  # the CLI's documented default for mp; power-law: the API's default 1
    teacher = teacher_from_name(args.teacher, kappa_star=kappa_star, gamma=args.gamma)
    d = args.d
    problem = ERMProblem(args.alpha, teacher, lam=args.lam, Delta=args.delta, kappa=args.kappa, d=d)
    import equinox as eqx

    sol = eqx.filter_jit(solve_erm)(problem)  # one program: cached across processes
    return {
        "xi": sol.xi,
        "tau": sol.tau,
        "E": sol.E,
        "e_test": sol.e_test,
        "e_train": sol.e_train,
        "rank": sol.rank,
        "converged": bool(sol.converged),
        "branch": BRANCH_NAMES[int(sol.branch)],
        "result": result_names(sol.result)[0],
        "steps": int(sol.stats["num_steps"]),
    }
