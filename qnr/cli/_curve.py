"""``qnr curve``: the main job -- a theory-vs-simulation learning curve, as a figure and data.

Defaults (MP teacher ``kappa* = 0.5``, ``lam = 0.01``, ``Delta = 0.1``, convex solver at
``d = 40`` with 4 seeds) show the ERM test error crossing the Bayes-optimal and interpolation
thresholds; the whole command takes well under three minutes on two CPU cores.
"""

from __future__ import annotations

from qnr.cli._common import add_common_flags, setup_precision


def register(sub) -> None:
    p = sub.add_parser(
        "curve",
        help="learning curve over alpha: ERM theory vs simulation, thresholds, Bayes-optimal",
        description=(
            "Compute the ERM replica learning curve (test error, training loss, rank) over "
            "alpha = n/d^2, run ERM simulations at dimension d over several seeds, mark the "
            "thresholds alpha_BO / alpha_SR / alpha_inter, add the Bayes-optimal test error, "
            "and write curve.png, curve.pdf, CSV tables and curve.json under --out."
        ),
    )
    add_common_flags(p)
    p.add_argument("--kappa-star", type=float, default=0.5, help="teacher width ratio m*/d")
    p.add_argument(
        "--kappa",
        type=float,
        default=1.0,
        help="student width ratio m/d (>= 1: no rank constraint)",
    )
    p.add_argument("--lam", type=float, default=0.01, help="regularisation lam")
    p.add_argument("--delta", type=float, default=0.1, help="label-noise variance Delta")
    p.add_argument("--d", type=int, default=40, help="simulation dimension")
    p.add_argument("--seeds", type=int, default=4, help="simulation seeds per alpha")
    p.add_argument("--alphas", type=int, default=8, help="number of simulated alpha values")
    p.add_argument("--alpha-min", type=float, default=0.1, help="smallest simulated alpha")
    p.add_argument("--alpha-max", type=float, default=0.9, help="largest simulated alpha")
    p.add_argument("--theory-points", type=int, default=60, help="alpha values of the theory")
    p.add_argument("--solver", default="convex", choices=["convex", "network"])
    p.add_argument("--max-steps", type=int, default=20_000, help="solver iteration cap")
    p.add_argument("--no-bayes", action="store_true", help="skip the Bayes-optimal curve")
    p.add_argument("--seed", type=int, default=0, help="base PRNG seed")
    p.add_argument("--out", default="qnr-out", help="output directory (default ./qnr-out)")
    p.set_defaults(func=run)


def run(args) -> dict:
    setup_precision(args)
    import numpy as np

    from qnr._validate import check_positive, check_size
    from qnr.sweep import learning_curve, write_curve

    check_size("--alphas", args.alphas)
    check_size("--theory-points", args.theory_points, minimum=2)
    check_positive("--alpha-min", args.alpha_min)
    if not args.alpha_max > args.alpha_min:
        raise ValueError(f"--alpha-max must be > --alpha-min, got {args.alpha_max}")
    lo = min(0.02, args.alpha_min)
    hi = max(1.0, args.alpha_max)
    alphas_sim = (
        np.linspace(args.alpha_min, args.alpha_max, args.alphas)
        if args.alphas > 1
        else np.array([args.alpha_min])
    )
    curve = learning_curve(
        kappa_star=args.kappa_star,
        lam=args.lam,
        delta=args.delta,
        kappa=args.kappa,
        alphas_theory=np.linspace(lo, hi, args.theory_points),
        alphas_sim=alphas_sim,
        d=args.d,
        seeds=args.seeds,
        solver=args.solver,
        bayes=not args.no_bayes,
        seed=args.seed,
        sim_options={"max_steps": args.max_steps},
    )
    summary = write_curve(curve, args.out)
    return {
        "png": summary["paths"]["png"],
        "pdf": summary["paths"]["pdf"],
        "json": summary["paths"]["json"],
        "theory_csv": summary["paths"]["theory_csv"],
        "simulation_csv": summary["paths"]["simulation_csv"],
        "max_rel_dev_e_test": summary["max_rel_dev_e_test"],
        "max_rel_dev_E": summary["max_rel_dev_E"],
        "thresholds": summary["thresholds"],
        "theory_failures": summary["theory_failures"],
        "simulation_failures": summary["simulation_failures"],
        "seconds": sum(summary["timings"].values()),
    }
