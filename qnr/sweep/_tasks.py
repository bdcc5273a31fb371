"""Built-in tasks: ``simulation`` (ERM solvers on sampled data), ``theory`` (the replica
fixed point of THEORY.md section 2) and ``both`` (the two side by side, joined per point).

Axes (THEORY.md section 1 names): ``alpha = n/d^2``, ``kappa_star`` (teacher width/rank
ratio), ``kappa`` (student width ratio; ``kappa >= 1`` = no rank constraint), ``lam``
(ridge on ``||W||_F^2``, i.e. nuclear norm), ``delta`` (label-noise variance ``Delta``),
``gamma`` (power-law exponent), ``teacher`` (``mp`` | ``power-law``), ``d``, ``solver``
(``convex`` | ``network``).

Simulation outputs per seed (prefixed ``sim_`` in ``both``): ``E``, ``e_test``, ``e_train``,
``rank`` (rank fraction), ``iterations``, ``result`` (``optimistix.RESULTS`` code; metrics of
failed runs are NaN). Data for seed ``s`` are the same at every grid point (the first
``n = round(alpha d^2)`` of ``n_max`` samples are used, by masking), so curves over ``alpha``
use common random numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

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
    "max_steps": 20_000,  # solver iteration cap
    "rtol": 1e-9,  # convex: fixed-point residual tolerance; network: loss change
    "optimizer": "lbfgs",  # network solver: gd | momentum | adam | lbfgs
    "learning_rate": 1.0,  # network solver (not used by lbfgs)
    "init_scale": 0.1,  # network solver: W0 W0^T ~ init_scale^2 I
    "gtol": 1e-8,  # network solver: gradient-norm tolerance
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


def simulation_point_fn(static, options, floats):
    """The per-point function of the ``simulation`` task (see the module docstring).

    ``static``: ``d``, ``teacher``, ``kappa_star``, ``gamma``, ``solver``; ``floats`` gives
    the largest ``alpha`` (samples are allocated for it) and ``kappa`` (network width)."""
    from qnr.sim import (
        RESULTS,
        ERMProblem,
        NetworkSolver,
        ProximalGradient,
        init_weights,
        make_dataset,
        solve_convex,
        train_network,
    )

    d = int(static["d"])
    teacher = _teacher(static)
    n_max = max(1, int(round(float(np.max(floats["alpha"])) * d * d)))
    m_max = max(1, int(round(float(np.max(floats.get("kappa", [1.0]))) * d)))
    solver_name = static["solver"]
    if solver_name == "convex":
        solver = ProximalGradient(max_steps=int(options["max_steps"]), rtol=options["rtol"])
    else:
        solver = NetworkSolver(
            options["optimizer"],
            options["learning_rate"],
            max_steps=int(options["max_steps"]),
            rtol=options["rtol"],
            gtol=options["gtol"],
        )

    def fn(params, keys):
        alpha, lam, delta, kappa = (params[k] for k in ("alpha", "lam", "delta", "kappa"))
        dtype = alpha.dtype
        n = jnp.maximum(1.0, jnp.round(alpha * d * d))
        sample_mask = (jnp.arange(n_max) < n).astype(dtype)
        m = jnp.clip(jnp.round(kappa * d), 1, None).astype(jnp.int32)

        def one(key):
            k_data, k_init = jax.random.split(key)
            data = make_dataset(k_data, teacher, d, n_max, noise=delta, dtype=dtype)
            problem = ERMProblem(data.X, data.y, lam, sample_mask=sample_mask)
            if solver_name == "convex":
                sol = solve_convex(
                    problem, solver, rank=jnp.minimum(m, d), S_star=data.S_star, noise=delta
                )
            else:
                mm = jnp.minimum(m, m_max)
                W0 = init_weights(k_init, d, mm, options["init_scale"], m_max=m_max, dtype=dtype)
                neuron_mask = (jnp.arange(m_max) < mm).astype(dtype)
                sol = train_network(
                    problem, W0, solver, neuron_mask=neuron_mask, S_star=data.S_star, noise=delta
                )
            ok = sol.result == RESULTS.successful
            nan = jnp.asarray(jnp.nan, dtype)
            out = {
                "E": sol.E,
                "e_test": sol.e_test,
                "e_train": sol.e_train,
                "rank": sol.rank_fraction.astype(dtype),
            }
            out = {k: jnp.where(ok, v, nan) for k, v in out.items()}
            out["iterations"] = sol.iterations.astype(jnp.int32)
            out["result"] = jnp.where(ok, 0, sol.result._value).astype(jnp.int32)
            return out

        return jax.vmap(one)(keys)

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
    "rtol": 1e-11,  # Newton tolerances on (log xi, log tau)
    "atol": 1e-11,
    "max_steps": 100,
    "xi0": 1.0,  # initial guess
    "tau0": 1.0,
    "n_nodes": 0,  # quadrature nodes per support interval (0: the solver's default)
    "method": "newton",  # "newton" | "lm" (Levenberg-Marquardt)
    # retry a failed Newton solve with Levenberg-Marquardt inside each point (a lax.cond: under
    # vmap BOTH solvers run for every point, so it is off by default; learning_curve and
    # phase_diagram instead re-solve only the failed points with method = "lm")
    "fallback": False,
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
    from qnr.theory.erm import ERMProblem, ERMSolver, solve_erm

    solver = ERMSolver(
        rtol=float(options["rtol"]),
        atol=float(options["atol"]),
        max_steps=int(options["max_steps"]),
        xi0=float(options["xi0"]),
        tau0=float(options["tau0"]),
        method=str(options["method"]),
        fallback=bool(options["fallback"]),
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
        out["result"] = sol.result._value.astype(jnp.int32)
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
