"""``qnr bayes-optimal``: the Bayes-optimal error from the state evolution (THEORY.md
section 4), and the GAMP-RIE runner behind ``qnr simulate --solver gamp``.

Example::

    qnr bayes-optimal --alpha 0.2 --kappa-star 0.5 --json
    # {"E": 0.7844, "mmse_kappa": 0.3922, "delta_eff": 1.961, "converged": true, ...}

    qnr simulate --solver gamp --alpha 0.3 --kappa-star 0.5 --d 60 --seeds 8 --json
"""

from __future__ import annotations

from qnr.cli._args import add_delta_flag, add_teacher_flags, check_teacher_flags, real
from qnr.cli._common import add_common_flags, setup_precision

HELP = "Bayes-optimal error E_BO (state evolution of GAMP-RIE)"
DESCRIPTION = (
    "Solve 2 alpha delta = mmse(delta) + Delta/2 with mmse(delta) = delta - "
    "(4 pi^2/3) delta^2 int rho_delta^3 (THEORY.md section 4; Maillard et al. 2024) and "
    "print E_BO = mmse(delta_eff), its kappa*-normalised form MMSE = kappa* E_BO and "
    "the perfect-recovery threshold alpha_BO."
)


def register(sub) -> None:
    p = sub.add_parser("bayes-optimal", help=HELP, description=DESCRIPTION)
    add_common_flags(p)
    p.add_argument(
        "--alpha", type=real("alpha", gt=0), required=True, help="sample ratio n/d^2 > 0"
    )
    p.add_argument(
        "--kappa-star", type=real("kappa_star", gt=0), default=0.5, help="teacher width ratio m*/d"
    )
    add_delta_flag(p)
    add_teacher_flags(p)
    p.set_defaults(func=run, check=check)


def check(args) -> None:
    check_teacher_flags(args)


def _teacher_and_d(args):
    from qnr.teachers import teacher_from_name

    teacher = teacher_from_name(args.teacher, kappa_star=args.kappa_star, gamma=args.gamma)
    d = getattr(args, "d", None)
    return teacher, d


def run(args) -> dict:
    setup_precision(args)
    import optimistix as optx

    from qnr.theory.bayes import BayesOptimal, alpha_perfect_recovery, solve_bayes_optimal

    teacher, d = _teacher_and_d(args)
    if args.teacher == "mp" and d is not None:
        raise ValueError("--d applies to the power-law teacher only (mp uses the d -> inf law)")
    if args.teacher == "power-law" and d is None:
        raise ValueError("--d is required for the power-law teacher")
    sol = solve_bayes_optimal(BayesOptimal(args.alpha, teacher, Delta=args.delta, d=d))
    return {
        "E": sol.E,
        "mmse_kappa": sol.mmse_kappa,
        "delta_eff": sol.delta,
        "e_test": sol.e_test,
        "converged": bool(sol.result == optx.RESULTS.successful),
        "perfect_recovery": bool(sol.perfect_recovery),
        "alpha_BO": alpha_perfect_recovery(teacher, d),
        "teacher": args.teacher,
        "alpha": args.alpha,
        "kappa_star": args.kappa_star,
        "Delta": args.delta,
    }


def run_gamp_simulation(args, teacher) -> dict:
    """Runner for ``qnr simulate --solver gamp`` (``qnr.cli._simulate.SOLVERS``): GAMP-RIE with
    the oracle RIE (the Hilbert transform of ``rho_delta`` from ``qnr.spectra``; for the
    power-law teacher, the law of its ``d`` atoms) on ``--seeds`` datasets of dimension
    ``--d``. ``--lam``/``--kappa`` do not apply. Returns the per-seed arrays the simulate
    command summarises; ``rank`` is the numerical rank fraction of the (generally full-rank)
    posterior-mean estimate."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optimistix as optx

    from qnr.model import e_test_from_error
    from qnr.sim import RANK_RTOL, numerical_rank
    from qnr.sim.gamp import GAMPRIE, simulate_gamp
    from qnr.teachers import MarchenkoPastur
    from qnr.theory.bayes import oracle_hilbert

    d_atoms = None if isinstance(teacher, MarchenkoPastur) else args.d
    solver = GAMPRIE() if args.max_steps is None else GAMPRIE(max_steps=args.max_steps)
    sol = simulate_gamp(
        jax.random.key(args.seed),
        teacher,
        args.d,
        args.alpha,
        args.delta,
        num_seeds=args.seeds,
        solver=solver,
        hilbert=oracle_hilbert(teacher, d_atoms),
    )
    converged = np.asarray(sol.result == optx.RESULTS.successful)
    eig = jnp.linalg.eigvalsh(jnp.nan_to_num(sol.value))
    return {
        "E": sol.error,
        "e_test": e_test_from_error(sol.error, args.delta),
        "e_train": sol.stats["e_train"],
        "rank": numerical_rank(eig, RANK_RTOL) / args.d,
        "converged": converged,
        "iterations_mean": float(np.mean(np.asarray(sol.stats["num_steps"]))),
        "delta_eff_mean": float(np.nanmean(np.asarray(sol.delta))),
    }
