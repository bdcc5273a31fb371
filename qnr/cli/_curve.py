"""``qnr curve``: the main job -- a theory-vs-simulation learning curve, as a figure and data.

Defaults (MP teacher ``kappa* = 0.5``, ``lam = 0.01``, ``Delta = 0.1``, convex solver at
``d = 100`` with 6 seeds, a fresh teacher per alpha and seed) put the simulations within a few
percent of the replica theory (at d = 40 non-unique minimisers and O(1/d) corrections make
them disagree); ``--extrapolate`` adds simulations at several ``d`` and the ``1/d -> 0``
extrapolation. Noiseless thresholds (alpha_BO, alpha_SR) are drawn only at ``Delta = 0``;
with ``Delta > 0`` the figure shows alpha_inter.
"""

from __future__ import annotations

from qnr.cli._args import integer, real
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
    add_common_flags(p, progress=True)
    p.add_argument(
        "--kappa-star", type=real("kappa_star", gt=0), default=0.5, help="teacher width ratio m*/d"
    )
    p.add_argument(
        "--kappa",
        type=real("kappa", gt=0, le=1e6),
        default=1.0,
        help="student width ratio m/d (>= 1: no rank constraint)",
    )
    p.add_argument("--lam", type=real("lam", ge=0), default=0.01, help="regularisation lam >= 0")
    p.add_argument(
        "--delta", type=real("delta", ge=0), default=0.1, help="label-noise variance Delta"
    )
    p.add_argument(
        "--d", type=integer("d", ge=2, le=20_000), default=100, help="simulation dimension"
    )
    p.add_argument(
        "--seeds",
        type=integer("seeds", ge=1, le=10_000),
        default=6,
        help="simulation seeds per alpha (each a fresh teacher and data set)",
    )
    p.add_argument(
        "--extrapolate",
        nargs="?",
        const="70,85,100",
        default=None,
        metavar="D1,D2,...",
        help="also simulate at these dimensions (default 70,85,100; below d ~ 70 most "
        "minimisers at alpha = 0.1 are not unique) and draw the weighted 1/d -> 0 "
        "extrapolation (seeds with a unique minimiser) of every simulated point with its "
        "standard error",
    )
    p.add_argument(
        "--alphas",
        type=integer("alphas", ge=1, le=10_000),
        default=8,
        help="number of simulated alpha values",
    )
    p.add_argument(
        "--alpha-min", type=real("alpha_min", gt=0), default=0.1, help="smallest simulated alpha"
    )
    p.add_argument(
        "--alpha-max", type=real("alpha_max", gt=0), default=0.9, help="largest simulated alpha"
    )
    p.add_argument(
        "--theory-points",
        type=integer("theory_points", ge=2, le=100_000),
        default=60,
        help="alpha values of the theory",
    )
    p.add_argument("--solver", default="convex", choices=["convex", "network"])
    p.add_argument(
        "--max-steps",
        type=integer("max_steps", ge=1),
        default=None,
        help="solver iteration cap (default: the solver's, qnr.sim.make_solver)",
    )
    p.add_argument("--no-bayes", action="store_true", help="skip the Bayes-optimal curve")
    p.add_argument("--seed", type=integer("seed", ge=0), default=0, help="base PRNG seed")
    p.add_argument("--out", default="qnr-out", help="output directory (default ./qnr-out)")
    p.set_defaults(func=run, check=check)


def check(args) -> None:
    """Flag combinations, memory and step budgets, and the output directory (before work)."""
    from qnr.cli._args import check_memory, check_steps, sim_bytes
    from qnr.cli._common import prepare_out_dir

    if not args.alpha_max > args.alpha_min:
        raise ValueError(f"--alpha-max must be > --alpha-min, got {args.alpha_max}")
    dims = extrapolation_dims(args.extrapolate)
    d_big = max([args.d] + (dims or []))
    n_max = max(1, round(args.alpha_max * d_big**2))
    width = round(args.kappa * d_big) if args.solver == "network" else 0
    check_memory(
        sim_bytes(d_big, n_max, args.seeds, points=1, width=width),
        f"simulating d = {d_big} at --alpha-max {args.alpha_max:g} with --seeds {args.seeds}",
        "lower --d, --extrapolate dimensions or --seeds",
    )
    if args.max_steps is not None:
        check_steps(args.max_steps, "--max-steps", "lower --max-steps")
    prepare_out_dir(args.out)


def extrapolation_dims(value) -> list[int] | None:
    """``"50,70,100"`` -> ``[50, 70, 100]`` (at least two distinct dimensions >= 2)."""
    if value is None:
        return None
    try:
        dims = sorted({int(x) for x in str(value).split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"--extrapolate takes dimensions like 50,70,100, got {value!r}") from None
    if len(dims) < 2 or dims[0] < 2:
        raise ValueError(f"--extrapolate needs at least two dimensions >= 2, got {value!r}")
    return dims


def run(args) -> dict:
    setup_precision(args)
    import numpy as np

    from qnr._validate import check_positive, check_size
    from qnr.experiments import learning_curve, write_curve

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
    from qnr.cli._common import Stages

    stages = ["theory", "simulation", "thresholds and Bayes-optimal", "writing"]
    with Stages(args, stages, "qnr curve") as progress:
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
            progress=progress,
            extrapolate_d=extrapolation_dims(args.extrapolate),
        )
        progress("writing")
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
        "all_e_test_agree": summary["all_e_test_agree"],
        "all_rank_agree": summary["all_rank_agree"],
        "degenerate_runs": summary["degenerate_runs"],
        "seconds": sum(summary["timings"].values()),
    }
