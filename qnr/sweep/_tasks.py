"""Built-in tasks: ``simulation`` (ERM solvers on sampled data), ``theory`` (the replica
fixed point of THEORY.md section 2) and ``both`` (the two side by side, joined per point).

Axes (THEORY.md section 1 names): ``alpha = n/d^2``, ``kappa_star`` (teacher width/rank
ratio), ``kappa`` (student width ratio; ``kappa >= 1`` = no rank constraint), ``lam``
(ridge on ``||W||_F^2``, i.e. nuclear norm), ``delta`` (label-noise variance ``Delta``),
``gamma`` (power-law exponent), ``teacher`` (``mp`` | ``power-law``), ``d``, ``solver``
(``convex`` | ``network``).

Simulation outputs per seed (prefixed ``sim_`` in ``both``): ``E``, ``e_test``, ``e_train``,
``rank`` (rank fraction), ``duality_gap`` (convex: certified relative gap), ``iterations``,
``result`` (``optimistix.RESULTS`` code; metrics of failed runs are NaN) and ``degenerate``
(1: the convex minimiser is not unique, see :func:`qnr.sim.dual_certificate`). Each
(grid point, seed) has a fresh teacher and data (:func:`qnr.sim.run_key`: the seed key with
the point's ``alpha, kappa, lam, Delta`` folded in); ``options.common_data = true`` reuses
one teacher and data set per seed along the grid (common random numbers).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from qnr._results import result_code
from qnr._validate import check_nonnegative, check_positive, check_size
from qnr.sweep._task import Task

__all__ = [
    "builtin_task",
    "SIMULATION",
    "THEORY",
    "BOTH",
    "simulation_point_fn",
    "theory_point_fn",
    "both_point_fn",
]

_SIM_OPTIONS = {
    # None: the library default of qnr.sim.make_solver / qnr.sim.SIM_DEFAULTS (the same as
    # qnr simulate and qnr curve)
    "max_steps": None,  # solver iteration cap
    "rtol": None,  # convex: FISTA residual tolerance; network: loss change
    "gap_tol": None,  # convex: certified relative duality gap
    "optimizer": "lbfgs",  # network solver: gd | momentum | adam | lbfgs
    "learning_rate": None,  # network solver (gd/momentum/adam)
    "init_scale": None,  # network solver: W0 W0^T ~ init_scale^2 I
    "gtol": None,  # network solver: gradient-norm tolerance
    "common_data": False,  # True: the same teacher and data at every point of a seed
}


def _check_grid(grid):
    for name in ("alpha", "kappa_star", "kappa"):
        if name in grid:
            check_positive(name, np.asarray(grid[name]))
    for name in ("lam", "delta", "gamma"):
        if name in grid:
            check_nonnegative(name, np.asarray(grid[name]))
    for t in grid.get("teacher", ()):
        if str(t).replace("_", "-") not in ("mp", "power-law"):
            raise ValueError(f"teacher must be 'mp' or 'power-law', got {t!r}")
    for s in grid.get("solver", ()):
        if s not in ("convex", "network"):
            raise ValueError(f"solver must be 'convex' or 'network', got {s!r}")
    for d in grid.get("d", ()):
        check_size("d", d, minimum=2)


def _teacher(static):
    from qnr.teachers import teacher_from_name

    return teacher_from_name(
        static["teacher"], kappa_star=static["kappa_star"], gamma=static.get("gamma", 1.0)
    )


def _opt(options, name):
    v = options.get(name)
    return None if v is None else v


def simulation_point_fn(static, options, floats):
    """The per-point function of the ``simulation`` task: :func:`qnr.sim.simulation_kernel`
    (the engine of :func:`qnr.sim.simulate_grid` and ``qnr simulate``) vmapped over the seed
    keys, with the solver of :func:`qnr.sim.make_solver` (``solver = "convex"``, or the
    network's ``options["optimizer"]``) -- so a sweep row equals ``simulate`` at the same
    point and seed.

    ``static``: ``d``, ``teacher``, ``kappa_star``, ``gamma``, ``solver``; ``floats`` gives
    the largest ``alpha`` (samples are allocated for it) and ``kappa`` (network width)."""
    from qnr.sim import RANK_RTOL, SIM_DEFAULTS, make_solver, simulation_kernel
    from qnr.sim.grid import default_seed_batch_size, map_seeds

    d = int(static["d"])
    teacher = _teacher(static)
    n_max = max(1, int(round(float(np.max(floats["alpha"])) * d * d)))
    m_max = max(1, int(round(float(np.max(floats.get("kappa", [1.0]))) * d)))
    name = "convex" if static["solver"] == "convex" else str(options["optimizer"])
    dtype = jnp.zeros(()).dtype
    solver = make_solver(
        name,
        d,
        dtype,
        max_steps=None if options.get("max_steps") is None else int(options["max_steps"]),
        rtol=_opt(options, "rtol"),
        gtol=_opt(options, "gtol"),
        gap_tol=_opt(options, "gap_tol"),
    )
    network = name != "convex"
    lr = options.get("learning_rate")
    lr = float(solver.learning_rate) if (lr is None and network) else (lr or 1.0)
    init_scale = options.get("init_scale") or SIM_DEFAULTS["init_scale"]
    rank_rtol = RANK_RTOL if dtype == jnp.float64 else 1e-3
    kernel = simulation_kernel(
        teacher,
        d,
        solver,
        n_max,
        m_max if network else 1,
        rank_rtol,
        common_data=bool(options.get("common_data", False)),
        dtype=dtype,
    )

    def fn(params, keys):
        alpha, lam, delta, kappa = (params[k] for k in ("alpha", "lam", "delta", "kappa"))
        dt = alpha.dtype

        def one(key):
            o = kernel(
                key, alpha, kappa, lam, delta, jnp.asarray(lr, dt), jnp.asarray(init_scale, dt)
            )
            ok = o["result"] == 0
            nan = jnp.asarray(jnp.nan, dt)
            out = {
                "E": o["E"],
                "e_test": o["e_test"],
                "e_train": o["e_train"],
                "rank": o["rank_fraction"],
                "duality_gap": o["duality_gap"],
            }
            out = {k: jnp.where(ok, v, nan) for k, v in out.items()}
            out["iterations"] = o["iterations"]
            out["result"] = o["result"]
            out["degenerate"] = o["degenerate"].astype(jnp.int32)
            return out

        return map_seeds(one, keys, default_seed_batch_size())

    return fn


SIMULATION = Task(
    name="simulation",
    float_axes={"alpha": None, "lam": 0.01, "delta": 0.0, "kappa": 1.0},
    static_axes={
        "d": 30,
        "teacher": "mp",
        "kappa_star": 0.5,
        "gamma": 1.0,
        "solver": "convex",
    },
    build=simulation_point_fn,
    per_seed=True,
    validate=_check_grid,
    options=_SIM_OPTIONS,
)


_THEORY_OPTIONS = {
    "rtol": 1e-13,  # step tolerances of the globalised Newton (qnr.theory.DampedNewton)
    "atol": 1e-13,
    "max_steps": 64,
    "xi0": 1.0,  # initial guess
    "tau0": 1.0,
    "n_nodes": 0,  # quadrature nodes per support interval (discrete teachers; 0: default)
}

THEORY_OUTPUTS = ("xi", "tau", "E", "e_test", "e_train", "rank", "D", "b")


def theory_point_fn(static, options, floats):
    """The per-point function of the ``theory`` task: :func:`qnr.theory.erm.solve_erm` at
    ``(alpha, kappa_star, kappa, lam, delta)``; ``kappa >= 1`` is the unconstrained student.

    ``static``: ``teacher`` (``mp``: the ``d -> inf`` Marchenko-Pastur law, ``kappa_star``
    swept; ``power-law``: ``d`` atoms of the teacher with exponent ``gamma``, ``kappa_star``
    then read from ``floats`` must be a single value). Outputs (per point): ``xi``, ``tau``,
    ``E``, ``e_test``, ``e_train``, ``rank``, ``D``, ``b``, ``branch``, ``steps``,
    ``result`` (NaN outputs where ``result != 0``)."""
    from qnr.teachers import PowerLaw
    from qnr.theory._newton import DampedNewton
    from qnr.theory.erm import ERMProblem, ERMSolver, solve_erm

    solver = ERMSolver(
        root_finder=DampedNewton(rtol=float(options["rtol"]), atol=float(options["atol"])),
        max_steps=int(options["max_steps"]),
        xi0=float(options["xi0"]),
        tau0=float(options["tau0"]),
    )
    n_nodes = int(options["n_nodes"]) or None
    teacher_name = str(static.get("teacher", "mp")).replace("_", "-")
    kappas = np.asarray(floats.get("kappa", [1.0]))
    constrained = bool(np.any(kappas < 1))
    # compile the lam -> 0+ (tau = 0) branch only when the group has lam == 0
    lam_zero = bool(np.any(np.asarray(floats.get("lam", [1.0])) == 0))
    fixed_teacher = None
    if teacher_name == "power-law":
        ks = np.unique(np.asarray(floats.get("kappa_star", [1.0])))
        if ks.size != 1:
            raise ValueError(
                "the power-law theory needs a single kappa_star per group (its rank is static)"
            )
        fixed_teacher = PowerLaw(static.get("gamma", 1.0), float(ks[0]))
        d_atoms = int(static.get("d", 200))

    def fn(params, keys):
        del keys
        alpha = params["alpha"]
        kappa = jnp.where(params["kappa"] >= 1, jnp.inf, params["kappa"])
        common = dict(
            lam=params["lam"],
            Delta=params["delta"],
            kappa=kappa,
            rank_constrained=constrained,
            lam_zero=lam_zero,
            n_nodes=n_nodes,
        )
        if fixed_teacher is None:
            problem = ERMProblem(alpha, kappa_star=params["kappa_star"], **common)
        else:
            problem = ERMProblem(alpha, fixed_teacher, d=d_atoms, **common)
        sol = solve_erm(problem, solver)
        out = {k: getattr(sol, k) for k in THEORY_OUTPUTS}
        out["branch"] = sol.branch.astype(jnp.int32)
        out["steps"] = sol.stats["num_steps"].astype(jnp.int32)
        out["result"] = result_code(sol.result)
        return out

    return fn


THEORY = Task(
    name="theory",
    float_axes={"alpha": None, "kappa_star": 0.5, "kappa": 1.0, "lam": 0.01, "delta": 0.0},
    static_axes={"teacher": "mp", "gamma": 1.0, "d": 200},
    build=theory_point_fn,
    per_seed=False,
    validate=_check_grid,
    options=_THEORY_OPTIONS,
)


def both_point_fn(static, options, floats):
    """Theory (per point, columns ``theory_*``) and simulation (per seed, ``sim_*``) at the
    same grid point; ``options`` are the simulation's plus ``theory_<option>``."""
    sim_opts = {k: v for k, v in options.items() if not k.startswith("theory_")}
    th_opts = {k[len("theory_") :]: v for k, v in options.items() if k.startswith("theory_")}
    sim = simulation_point_fn(static, sim_opts, floats)
    ks = np.full_like(np.asarray(floats["alpha"], dtype=float), float(static["kappa_star"]))
    th = theory_point_fn(static, th_opts, {**floats, "kappa_star": ks})
    kappa_star = float(static["kappa_star"])

    def fn(params, keys):
        p = {**params, "kappa_star": jnp.asarray(kappa_star, params["alpha"].dtype)}
        t = th(p, keys)
        s = sim(params, keys)
        return {**{f"theory_{k}": v for k, v in t.items()}, **{f"sim_{k}": v for k, v in s.items()}}

    return fn


BOTH = Task(
    name="both",
    float_axes=dict(SIMULATION.float_axes),
    static_axes=dict(SIMULATION.static_axes),
    build=both_point_fn,
    per_seed=True,
    validate=_check_grid,
    options={**_SIM_OPTIONS, **{f"theory_{k}": v for k, v in _THEORY_OPTIONS.items()}},
)


def builtin_task(kind: str) -> Task:
    """The task of ``kind = "theory" | "simulation" | "both"``."""
    tasks = {"theory": THEORY, "simulation": SIMULATION, "both": BOTH}
    if kind not in tasks:
        raise ValueError(f"no built-in task {kind!r}; choose theory, simulation or both")
    return tasks[kind]
