"""``qnr erm-theory``: the ERM replica fixed point at one point (THEORY.md section 2)."""

from __future__ import annotations

from qnr.cli._common import add_common_flags, setup_precision


def register(sub) -> None:
    p = sub.add_parser(
        "erm-theory",
        help="replica prediction for ERM (xi, tau, E, e_test, e_train, rank)",
        description=(
            "Solve the ERM fixed point 2 alpha xi = E + Delta/2, tau (1 - D/alpha) = lam "
            "(THEORY.md section 2). lam = 0 is the lam -> 0+ (minimum nuclear norm) limit."
        ),
    )
    add_common_flags(p)
    p.add_argument("--alpha", type=float, required=True, help="sample ratio n/d^2")
    p.add_argument("--kappa-star", type=float, default=0.5, help="teacher width ratio m*/d")
    p.add_argument(
        "--kappa", type=float, default=None, help="student width ratio m/d (default: >= 1)"
    )
    p.add_argument("--lam", type=float, default=0.0, help="ridge on ||W||_F^2 (>= 0)")
    p.add_argument("--delta", type=float, default=0.0, help="label-noise variance Delta")
    p.add_argument("--teacher", default="mp", choices=["mp", "power-law"])
    p.add_argument("--gamma", type=float, default=1.0, help="power-law exponent")
    p.add_argument("--d", type=int, default=None, help="dimension (power-law teacher's atoms)")
    p.set_defaults(func=run)


def run(args) -> dict:
    setup_precision(args)
    from qnr.teachers import teacher_from_name
    from qnr.theory.erm import BRANCH_TAU_ZERO, ERMProblem, solve_erm

    teacher = teacher_from_name(args.teacher, kappa_star=args.kappa_star, gamma=args.gamma)
    d = args.d
    if args.teacher == "mp" and d is not None:
        raise ValueError("--d applies to the power-law teacher only (mp uses the d -> inf law)")
    if args.teacher == "power-law" and d is None:
        raise ValueError("--d is required for the power-law teacher")
    problem = ERMProblem(args.alpha, teacher, lam=args.lam, Delta=args.delta, kappa=args.kappa, d=d)
    sol = solve_erm(problem)
    return {
        "xi": sol.xi,
        "tau": sol.tau,
        "E": sol.E,
        "e_test": sol.e_test,
        "e_train": sol.e_train,
        "rank": sol.rank,
        "converged": bool(sol.converged),
        "branch": "tau=0" if int(sol.branch) == BRANCH_TAU_ZERO else "general",
        "steps": int(sol.stats["num_steps"]),
    }
