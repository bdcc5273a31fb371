"""``qnr phase-diagram``: the (alpha, kappa*) plane -- ERM test error heat map and the
alpha_BO / alpha_SR / alpha_inter threshold curves."""

from __future__ import annotations

from qnr.cli._args import add_delta_flag, integer, real
from qnr.cli._common import add_common_flags, setup_precision

HELP = "(alpha, kappa*) phase diagram: predicted ERM test error and thresholds"
DESCRIPTION = (
    "Evaluate the ERM replica prediction on an (alpha, kappa*) grid (MP teacher) and "
    "draw it as a heat map with the thresholds alpha_BO, alpha_SR and (Delta > 0) "
    "alpha_inter. Writes phase_diagram.png/.pdf/.csv/.json under --out."
)


def register(sub) -> None:
    p = sub.add_parser("phase-diagram", help=HELP, description=DESCRIPTION)
    add_common_flags(p, progress=True)
    p.add_argument(
        "--lam", type=real("lam", ge=0), default=1e-3, help="regularisation lam >= 0 (0: lam -> 0+)"
    )
    add_delta_flag(p)
    p.add_argument(
        "--kappa",
        type=real("kappa", gt=0),
        default=1.0,
        help="student width ratio m/d (>= 1: no constraint)",
    )
    p.add_argument(
        "--alphas", type=integer("alphas", ge=2, le=2000), default=32, help="number of alpha values"
    )
    p.add_argument("--alpha-max", type=real("alpha_max", gt=0), default=0.8, help="largest alpha")
    p.add_argument(
        "--kappa-stars",
        type=integer("kappa_stars", ge=2, le=2000),
        default=20,
        help="number of kappa* values",
    )
    p.add_argument("--kappa-star-min", type=real("kappa_star_min", gt=0), default=0.1)
    p.add_argument("--kappa-star-max", type=real("kappa_star_max", gt=0), default=0.95)
    p.add_argument("--out", default="qnr-out", help="output directory (default ./qnr-out)")
    p.set_defaults(func=run, check=check)


def check(args) -> None:
    from qnr.cli._common import prepare_out_dir

    if not args.kappa_star_max > args.kappa_star_min:
        raise ValueError(f"--kappa-star-max must be > --kappa-star-min, got {args.kappa_star_max}")
    if args.alphas * args.kappa_stars > 200_000:
        raise ValueError(
            f"--alphas x --kappa-stars = {args.alphas * args.kappa_stars} fixed points, over the "
            "limit of 200000"
        )
    prepare_out_dir(args.out)


def run(args) -> dict:
    setup_precision(args)
    import numpy as np

    from qnr.cli._common import Stages
    from qnr.experiments import phase_diagram, write_phase_diagram

    with Stages(args, ["theory and thresholds", "writing"], "qnr phase-diagram") as progress:
        pd = phase_diagram(
            np.linspace(min(0.02, args.alpha_max / 2), args.alpha_max, args.alphas),
            np.linspace(args.kappa_star_min, args.kappa_star_max, args.kappa_stars),
            lam=args.lam,
            delta=args.delta,
            kappa=args.kappa,
        )
        progress("writing")
        summary = write_phase_diagram(pd, args.out)
    return {
        "png": summary["paths"]["png"],
        "csv": summary["paths"]["csv"],
        "json": summary["paths"]["json"],
        "n_failed": summary["n_failed"],
        "seconds": sum(summary["timings"].values()),
    }
