"""``qnr phase-diagram``: the (alpha, kappa*) plane -- ERM test error heat map and the
alpha_BO / alpha_SR / alpha_inter threshold curves."""

from __future__ import annotations

from qnr.cli._common import add_common_flags, setup_precision


def register(sub) -> None:
    p = sub.add_parser(
        "phase-diagram",
        help="(alpha, kappa*) phase diagram: predicted ERM test error and thresholds",
        description=(
            "Evaluate the ERM replica prediction on an (alpha, kappa*) grid (MP teacher) and "
            "draw it as a heat map with the thresholds alpha_BO, alpha_SR and (Delta > 0) "
            "alpha_inter. Writes phase_diagram.png/.pdf/.csv/.json under --out."
        ),
    )
    add_common_flags(p)
    p.add_argument("--lam", type=float, default=1e-3, help="regularisation lam")
    p.add_argument("--delta", type=float, default=0.0, help="label-noise variance Delta")
    p.add_argument("--kappa", type=float, default=1.0, help="student width ratio m/d")
    p.add_argument("--alphas", type=int, default=32, help="number of alpha values")
    p.add_argument("--alpha-max", type=float, default=0.8)
    p.add_argument("--kappa-stars", type=int, default=20, help="number of kappa* values")
    p.add_argument("--kappa-star-min", type=float, default=0.1)
    p.add_argument("--kappa-star-max", type=float, default=0.95)
    p.add_argument("--out", default="qnr-out", help="output directory (default ./qnr-out)")
    p.set_defaults(func=run)


def run(args) -> dict:
    setup_precision(args)
    import numpy as np

    from qnr._validate import check_positive, check_size
    from qnr.sweep import phase_diagram, write_phase_diagram

    check_size("--alphas", args.alphas, minimum=2)
    check_size("--kappa-stars", args.kappa_stars, minimum=2)
    check_positive("--alpha-max", args.alpha_max)
    check_positive("--kappa-star-min", args.kappa_star_min)
    if not args.kappa_star_max > args.kappa_star_min:
        raise ValueError(f"--kappa-star-max must be > --kappa-star-min, got {args.kappa_star_max}")
    pd = phase_diagram(
        np.linspace(min(0.02, args.alpha_max / 2), args.alpha_max, args.alphas),
        np.linspace(args.kappa_star_min, args.kappa_star_max, args.kappa_stars),
        lam=args.lam,
        delta=args.delta,
        kappa=args.kappa,
    )
    summary = write_phase_diagram(pd, args.out)
    return {
        "png": summary["paths"]["png"],
        "csv": summary["paths"]["csv"],
        "json": summary["paths"]["json"],
        "n_failed": summary["n_failed"],
        "seconds": sum(summary["timings"].values()),
    }
