"""``qnr thresholds``: sample-complexity thresholds of THEORY.md section 3 (MP teacher)."""

from __future__ import annotations

from qnr.cli._args import add_delta_flag, add_student_kappa_flag, real
from qnr.cli._common import add_common_flags, setup_precision

HELP = "alpha_BO, alpha_SR, kappa_min and alpha_inter for the MP teacher"
DESCRIPTION = (
    "Thresholds of THEORY.md section 3 for the Marchenko-Pastur teacher of width "
    "kappa* d: Bayes-optimal perfect recovery alpha_BO, ERM strong recovery alpha_SR "
    "(lam -> 0+, student width kappa d) and the rank kappa_min of the solution at "
    "threshold, and the interpolation threshold alpha_inter (label noise Delta)."
)


def register(sub) -> None:
    p = sub.add_parser("thresholds", help=HELP, description=DESCRIPTION)
    add_common_flags(p)
    p.add_argument(
        "--kappa-star",
        type=real("kappa_star", gt=0),
        default=None,
        help="teacher width ratio kappa* > 0 (one point; or --points FILE)",
    )
    p.add_argument(
        "--points",
        default=None,
        metavar="FILE",
        help=(
            "CSV with columns kappa_star, kappa (empty: unconstrained), delta: every row at once; "
            "prints a CSV, or with --json {points: [...], timings: {...}}"
        ),
    )
    add_student_kappa_flag(
        p, help="student width ratio kappa > 0 (default: unconstrained, i.e. kappa >= 1)"
    )
    add_delta_flag(
        p, help="label-noise variance Delta >= 0 for alpha_inter (0: the Delta -> 0+ limit)"
    )
    p.set_defaults(func=run, check=check)


def check(args) -> None:
    from qnr.cli._points import check_point_or_points, read_threshold_points

    if check_point_or_points(args, "--kappa-star", read_threshold_points):
        return
    if args.delta == 0 and args.kappa is not None and args.kappa < min(args.kappa_star, 1.0):
        raise ValueError(
            f"--kappa {args.kappa:g} < min(kappa_star, 1) = {min(args.kappa_star, 1.0):g}: the "
            "noiseless alpha_inter needs kappa >= min(kappa_star, 1) (or give --delta > 0)"
        )


def run(args) -> dict:
    setup_precision(args)
    if args.points is not None:
        from qnr.cli._points import solve_threshold_points

        return solve_threshold_points(args.point_rows, text_csv=not args.json)
    import optimistix as optx

    from qnr._validate import check_nonnegative, check_positive
    from qnr.theory import thresholds as th

    k = check_positive("kappa_star", args.kappa_star)
    kappa = None if args.kappa is None else check_positive("kappa", args.kappa)
    delta = check_nonnegative("delta", args.delta)

    sr = th.strong_recovery(k, kappa)
    out = {
        "kappa_star": k,
        "kappa": kappa,
        "Delta": delta,
        "alpha_BO": float(th.alpha_bo(k)),
        "alpha_SR": float(sr.alpha_SR),
        "kappa_min": float(sr.kappa_min),
        "s_star": float(sr.s_star),
    }
    if delta > 0:
        inter = th.interpolation_threshold(delta, k, kappa)
        out["alpha_inter"] = float(inter.alpha_inter)
        out["xi_bar"] = float(inter.xi_bar)
        out["alpha_inter_note"] = f"Delta = {delta:g}"
        ok = bool(inter.result == optx.RESULTS.successful)
    else:
        out["alpha_inter"] = float(th.alpha_inter_noiseless(k, kappa))
        out["xi_bar"] = 0.0
        out["alpha_inter_note"] = "Delta = 0: the Delta -> 0+ limit (xi_bar -> 0)"
        ok = True
    ok = ok and bool(sr.result == optx.RESULTS.successful)
    out["result"] = "successful" if ok else "failed"
    return out
