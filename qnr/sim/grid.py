"""Batched ERM experiments: seeds x (alpha, kappa, lam, Delta, learning rate, init scale).

One compiled program covers a whole grid. Samples are allocated for the largest
``n = round(alpha d^2)`` and neurons for the largest ``m = round(kappa d)``; each grid point
masks the rest (masked samples contribute nothing and the loss is normalised by the true
``n``; masked neurons are zero and stay zero; for the convex solver ``m`` is the rank bound).
Seeds go through :func:`map_seeds` (``seed_batch_size`` of them vmapped at a time: by default
one at a time on CPU, where a vmapped solver loop would run every seed as long as the slowest,
and all at once on accelerators); points go through ``lax.map`` (``point_batch_size`` of them
vmapped at a time, or all at once); swept values are JAX arrays, so a new grid with the same
largest ``n``/``m`` reuses the compiled program. The code is the
same on CPU and GPU.

Random numbers: a fresh teacher and fresh data for every (grid point, seed). The key of a
run is :func:`run_key`: ``k = fold_in(key, s)`` for seed ``s``, then the float32 bit patterns
of the point's ``(alpha, kappa, lam, Delta)`` folded in one by one -- so the same point and
seed give the same data wherever they appear (alone, in any grid, in a sweep chunk, in
``qnr curve``), and different points never share a teacher. From ``k`` the teacher ``S*``,
the inputs ``x_mu``, the label noise ``xi_mu`` and the initial neurons ``w_j`` are drawn
from sub-keys and ``fold_in(., mu)`` / ``fold_in(., j)`` (prefix-consistent in ``n`` and
``m``). ``common_data=True`` restores common random numbers (the same teacher and data,
first ``n`` samples, at every point of a seed), which reduces the variance of differences
along a curve but biases a whole curve by its few teachers' ``Tr S*^2/d``.

One engine: :func:`simulation_kernel` is the per-(point, seed) function behind
:func:`simulate_grid`, the sweep's ``simulation`` task and ``qnr curve``; with
:func:`make_solver` (the single table of solver defaults) they give identical numbers for
the same point and seed.

Entry points: :func:`simulate` (one point, arrays over seeds) and :func:`simulate_grid`
(arrays over ``(point, seed)``). Both return a :class:`SimulationResult`; its
:meth:`~SimulationResult.summary` gives per-point means over the converged seeds and the
number of non-unique (degenerate) minimisers.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from qnr._results import result_code
from qnr._validate import (
    check_in_range,
    check_key,
    check_nonnegative,
    check_positive,
    check_size,
)
from qnr.sim.convex import Factorized, ProximalGradient, _solve_convex
from qnr.sim.erm import RANK_RTOL, RESULTS, ERMProblem
from qnr.sim.network import OPTIMIZERS, NetworkSolver, _train_network, init_weights
from qnr.sim.sensing import apply_sensing
from qnr.teachers import Teacher

__all__ = [
    "SimulationResult",
    "simulate",
    "simulate_grid",
    "default_learning_rate",
    "make_solver",
    "SOLVER_NAMES",
    "SIM_DEFAULTS",
    "run_key",
    "simulation_kernel",
]

SOLVER_NAMES = ("convex", "fista") + OPTIMIZERS
"""Names accepted by :func:`make_solver`: ``"convex"`` (:class:`qnr.sim.Factorized`, the
default convex solver), ``"fista"`` (:class:`qnr.sim.ProximalGradient` alone) and the optax
optimizers of the network."""

SIM_DEFAULTS = {"init_scale": 0.5, "gap_tol": 1e-5}
"""Defaults shared by every simulation entry point: the network's ``init_scale``
(``W0 W0^T ~ init_scale^2 I``) and the convex solvers' certified relative duality gap
``gap_tol`` (float64). Measured at d = 100 (alpha 0.1, lam 0.01, 4 seeds): ``E`` at gap
``1e-5`` and at ``1e-6`` agree to 5e-6 relative, for 25% fewer steps."""


def default_learning_rate(optimizer: str, d: int) -> float:
    """Default step of the first-order optimizers.

    The Hessian of ``L(W)`` scales like ``4 ||S||_op / d`` (``grad_S f`` has curvature ``1/d``
    in Frobenius units and ``grad_W = 2 grad_S f W``), so stable GD steps scale like ``d``:
    ``gd``: ``d/40``; ``momentum`` (heavy ball 0.9): ``d/200``; ``adam``: ``0.01``;
    ``lbfgs``: unused (line search). Small ``alpha`` (few samples) may need smaller steps."""
    d = check_size("d", d)
    return {"gd": d / 40, "momentum": d / 200, "adam": 0.01, "lbfgs": 1.0}[optimizer]


def make_solver(
    name: str,
    d: int,
    dtype=None,
    *,
    max_steps: int | None = None,
    rtol: float | None = None,
    gtol: float | None = None,
    gap_tol: float | None = None,
):
    """A solver with tolerances suited to ``dtype`` and method (the one table of defaults).

    ``"convex"``: :class:`Factorized` (L-BFGS on ``W W^T``, then FISTA polish) stopping at the
    certified relative duality gap ``gap_tol`` (default :data:`SIM_DEFAULTS`, float64) or the
    FISTA residual ``rtol`` (default 1e-10); ``"fista"``: :class:`ProximalGradient` with the
    same stopping rule. ``max_steps`` bounds the FISTA iterations (and the factorised phase).
    Network (float64): L-BFGS uses the tight :class:`NetworkSolver` defaults (``gtol = 1e-8``);
    first-order optimizers stop at ``gtol = 1e-6``, ``rtol = 1e-10`` (50 000 steps at most).
    float32: ``rtol = 1e-6``, ``gtol = 1e-4`` (convex: ``rtol = 1e-5``, no gap test)."""
    if name not in SOLVER_NAMES:
        raise ValueError(f"solver must be one of {SOLVER_NAMES}, got {name!r}")
    single = jnp.dtype(dtype or jnp.zeros(()).dtype) == jnp.float32
    if name in ("convex", "fista"):
        kw = dict(rtol=1e-5, atol=1e-7, gap_tol=0.0) if single else {}
        if not single:
            kw["gap_tol"] = SIM_DEFAULTS["gap_tol"] if gap_tol is None else gap_tol
        if rtol is not None:
            kw["rtol"] = rtol
        if max_steps is not None:
            kw["max_steps"] = max_steps
        if name == "fista":
            return ProximalGradient(**kw)
        gap = kw.pop("gap_tol")
        fact = dict(gap_tol=gap, polish=ProximalGradient(power_iterations=3, **kw))
        if max_steps is not None:
            fact["max_steps"] = max_steps
        return Factorized(**fact)
    if single:
        kw = dict(rtol=1e-6, atol=1e-9, gtol=1e-4)
    elif name == "lbfgs":
        kw = {}
    else:
        kw = dict(rtol=1e-10, gtol=1e-6)
    if rtol is not None:
        kw["rtol"] = rtol
    if gtol is not None:
        kw["gtol"] = gtol
    steps = max_steps or (5_000 if name == "lbfgs" else 50_000)
    return NetworkSolver(name, default_learning_rate(name, d), max_steps=steps, **kw)


class SimulationResult(eqx.Module):
    """Per-point, per-seed results of :func:`simulate_grid` (axes ``(point, seed)``; a single
    point from :func:`simulate` drops the point axis).

    Coordinates (one per point): ``alpha, kappa, lam, Delta, learning_rate, init_scale`` and
    the integer sizes ``n``, ``m``. Metrics: ``E``, ``e_test``, ``e_train``, ``loss``,
    ``rank_fraction``, ``trace``, ``iterations``, ``result`` (``optimistix.RESULTS`` integer
    codes), ``converged``, ``degenerate`` (convex: the minimiser is not unique, see
    :func:`qnr.sim.dual_certificate`), ``duality_gap`` (convex: certified relative gap) and
    ``eigenvalues`` (last axis ``d``, decreasing). With ``mask_failures`` (default) the float
    metrics of non-converged runs are NaN.
    """

    alpha: Float[Array, "*p"]
    kappa: Float[Array, "*p"]
    lam: Float[Array, "*p"]
    Delta: Float[Array, "*p"]
    learning_rate: Float[Array, "*p"]
    init_scale: Float[Array, "*p"]
    n: Int[Array, "*p"]
    m: Int[Array, "*p"]
    seeds: Int[Array, " s"]
    E: Float[Array, "*p s"]
    e_test: Float[Array, "*p s"]
    e_train: Float[Array, "*p s"]
    loss: Float[Array, "*p s"]
    rank_fraction: Float[Array, "*p s"]
    trace: Float[Array, "*p s"]
    iterations: Int[Array, "*p s"]
    result: Int[Array, "*p s"]
    converged: Array
    degenerate: Array
    duality_gap: Float[Array, "*p s"]
    eigenvalues: Float[Array, "*p s d"]
    solver: str = eqx.field(static=True)
    d: int = eqx.field(static=True)

    def point(self, i: int) -> SimulationResult:
        """The ``i``-th grid point (seed axis only)."""
        sliced = eqx.tree_at(lambda r: r.seeds, self, None)
        sliced = jax.tree_util.tree_map(lambda x: x[i], sliced)
        return eqx.tree_at(lambda r: r.seeds, sliced, self.seeds, is_leaf=lambda x: x is None)

    def summary(self) -> dict[str, np.ndarray]:
        """Per point (or scalar for a single point): means and standard deviations over the
        converged seeds (``E_mean``, ``E_std``, ``e_test_mean``, ``e_test_std``,
        ``e_train_mean``, ``e_train_std``, ``rank_mean``, ``rank_std``, ``iterations_mean``),
        ``converged_fraction``, ``n_degenerate`` (converged runs with a non-unique minimiser;
        they are included in the means) and ``n_seeds``."""
        conv = np.asarray(self.converged)
        out = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN points give NaN
            for name, key in [
                ("E", self.E),
                ("e_test", self.e_test),
                ("e_train", self.e_train),
                ("rank", self.rank_fraction),
            ]:
                v = np.where(conv, np.asarray(key, np.float64), np.nan)
                out[f"{name}_mean"] = np.nanmean(v, axis=-1)
                out[f"{name}_std"] = (
                    np.nanstd(v, axis=-1, ddof=1) if v.shape[-1] > 1 else 0 * v[..., 0]
                )
            out["iterations_mean"] = np.mean(np.asarray(self.iterations), axis=-1)
        out["converged_fraction"] = np.mean(conv, axis=-1)
        out["n_degenerate"] = np.sum(conv & np.asarray(self.degenerate, bool), axis=-1)
        out["n_seeds"] = conv.shape[-1]
        return out


def _seed_data(key, S_star, n_max, d, dtype):
    """Inputs, label noise and init key of one run (prefix-consistent in ``n``)."""
    k_x, k_xi, k_init = jax.random.split(key, 3)
    rows = jnp.arange(n_max)
    X = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(k_x, i), (d,), dtype))(rows)
    xi = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(k_xi, i), (), dtype))(rows)
    return X, apply_sensing(X, S_star), xi, k_init


def run_key(seed_key: PRNGKeyArray, alpha, kappa, lam, Delta) -> PRNGKeyArray:
    """The key of one (point, seed) run: ``seed_key = fold_in(key, seed)`` with the float32
    bit patterns of ``alpha``, ``kappa`` (``1.0`` for no rank bound), ``lam`` and ``Delta``
    folded in. Traceable (values may be traced scalars of any float dtype)."""
    k = seed_key
    for v in (alpha, kappa, lam, Delta):
        bits = jax.lax.bitcast_convert_type(jnp.asarray(v).astype(jnp.float32), jnp.uint32)
        k = jax.random.fold_in(k, bits)
    return k


def run_data(key, teacher: Teacher, d: int, n_max: int, dtype):
    """``(S*, X, clean labels, xi, init key)`` of the run whose key is ``key`` (the output of
    :func:`run_key`, or a seed key under ``common_data``)."""
    k_teacher, k_rest = jax.random.split(key)
    S_star = teacher.sample(k_teacher, d, dtype)
    X, clean, xi, k_init = _seed_data(k_rest, S_star, n_max, d, dtype)
    return S_star, X, clean, xi, k_init


def simulation_kernel(
    teacher: Teacher,
    d: int,
    solver,
    n_max: int,
    m_max: int,
    rank_rtol: float,
    *,
    common_data: bool = False,
    dtype=None,
):
    """The per-(point, seed) simulation function shared by every entry point.

    Returns ``fn(seed_key, alpha, kappa, lam, Delta, learning_rate, init_scale) -> dict`` of
    scalar metrics (``E``, ``e_test``, ``e_train``, ``loss``, ``rank_fraction``, ``trace``,
    ``iterations``, ``result``, ``degenerate``, ``duality_gap``, ``eigenvalues``), traceable
    and vmappable. ``n = max(1, round(alpha d^2)) <= n_max`` samples are used (the rest
    masked), the width/rank bound is ``m = max(1, round(kappa d))`` (``kappa >= 1`` with the
    convex solver: no constraint); the key is :func:`run_key` of the seed key and the point
    (``common_data``: the seed key itself)."""
    dtype = jnp.dtype(dtype or jnp.zeros(()).dtype)
    convex = isinstance(solver, ProximalGradient | Factorized)

    def fn(seed_key, alpha, kappa, lam, Delta, learning_rate, init_scale):
        alpha, kappa, lam, Delta = (jnp.asarray(v, dtype) for v in (alpha, kappa, lam, Delta))
        key = seed_key if common_data else run_key(seed_key, alpha, kappa, lam, Delta)
        S_star, X, clean, xi, k_init = run_data(key, teacher, d, n_max, dtype)
        n = jnp.maximum(1.0, jnp.round(alpha * d * d))
        m = jnp.maximum(1, jnp.round(kappa * d)).astype(jnp.int32)
        mask = (jnp.arange(n_max, dtype=dtype) < n).astype(dtype)
        y = clean + jnp.sqrt(Delta) * xi
        problem = ERMProblem(X, y, lam, mask)
        if convex:
            S0 = jnp.zeros((d, d), dtype)
            sol = _solve_convex(problem, solver, jnp.minimum(m, d), S0, S_star, Delta, rank_rtol)
            gap = sol.stats["duality_gap"]
        else:
            mm = jnp.minimum(m, m_max)
            W0 = init_weights(k_init, d, mm, init_scale, m_max=m_max, dtype=dtype)
            neuron_mask = (jnp.arange(m_max, dtype=mm.dtype) < mm).astype(dtype)
            slv = eqx.tree_at(lambda s: s.learning_rate, solver, jnp.asarray(learning_rate, dtype))
            sol = _train_network(problem, W0, slv, neuron_mask, S_star, Delta, rank_rtol)
            gap = jnp.asarray(jnp.nan, dtype)
        return dict(
            E=sol.E,
            e_test=sol.e_test,
            e_train=sol.e_train,
            loss=sol.loss,
            rank_fraction=sol.rank_fraction.astype(dtype),
            trace=sol.trace,
            iterations=sol.iterations.astype(jnp.int32),
            result=result_code(sol.result),
            degenerate=jnp.asarray(sol.degenerate, bool),
            duality_gap=jnp.asarray(gap, dtype),
            eigenvalues=sol.eigenvalues,
        )

    return fn


class _StaticTeacher:
    """A teacher as a hashable static argument of the jitted grid (its samplers need
    concrete parameters, e.g. the network teacher's width ``round(kappa* d)``)."""

    def __init__(self, teacher: Teacher):
        self.teacher = teacher
        leaves, treedef = jax.tree_util.tree_flatten(teacher)
        self._key = (treedef, tuple(np.asarray(x).tobytes() for x in leaves))

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _StaticTeacher) and self._key == other._key


def default_seed_batch_size() -> int | None:
    """``1`` on CPU, ``None`` (all seeds in one ``vmap``) on accelerators.

    A vmapped ``while_loop`` runs every lane until the slowest one stops; on CPU the solver's
    products are already large matrix products, so vmapping seeds buys no throughput and only
    pays for the slowest seed (measured: the default ``qnr curve``, whose seeds at d = 100
    need 1950-2221 FISTA steps at alpha = 0.1, ran in 4 min 39 s vmapped and 2 min 38 s in
    sequence -- together with a faster theory solve --, with the same numbers)."""
    return 1 if jax.default_backend() == "cpu" else None


def map_seeds(fn, keys, batch_size: int | None):
    """``fn(key)`` for every key of ``keys`` (leading axis): ``lax.map`` with ``batch_size``
    keys vmapped at a time (``None``: all keys in one ``vmap``)."""
    if batch_size is None:
        return jax.vmap(fn)(keys)
    return jax.lax.map(fn, keys, batch_size=batch_size)


def _grid_impl(
    seed_keys,
    points,
    teacher,
    solver,
    d: int,
    n_max: int,
    m_max: int,
    rank_rtol: float,
    point_batch_size: int | None = None,
    common_data: bool = False,
    seed_batch_size: int | None = None,
):
    """``seed_keys``: one per seed; ``points``: dict of ``(P,)`` arrays. Returns the
    per-(point, seed) metrics of :func:`simulation_kernel` as ``(P, S, ...)`` arrays.

    Seeds go through :func:`map_seeds` with ``seed_batch_size``, points through ``lax.map``
    with ``batch_size = point_batch_size`` (``None``: all in one ``vmap``); either way it is
    one program."""
    dtype = points["alpha"].dtype
    if isinstance(teacher, _StaticTeacher):
        teacher = teacher.teacher
    kernel = simulation_kernel(
        teacher, d, solver, n_max, m_max, rank_rtol, common_data=common_data, dtype=dtype
    )
    names = ("alpha", "kappa", "lam", "Delta", "learning_rate", "init_scale")

    def one_point(p):
        return map_seeds(lambda k: kernel(k, *p), seed_keys, seed_batch_size)

    pts = tuple(points[k] for k in names)
    if point_batch_size is None:
        return jax.vmap(one_point)(pts)  # (P, S, ...)
    return jax.lax.map(one_point, pts, batch_size=point_batch_size)


_compiled_grid = eqx.filter_jit(_grid_impl)


def _as_points(**values) -> dict[str, np.ndarray]:
    arrays = {k: np.atleast_1d(np.asarray(v, np.float64)) for k, v in values.items()}
    for k, v in arrays.items():
        if v.ndim != 1:
            raise ValueError(f"{k} must be a scalar or a 1-d array, got shape {v.shape}")
    try:
        shape = np.broadcast_shapes(*(v.shape for v in arrays.values()))
    except ValueError as err:
        sizes = {k: v.shape[0] for k, v in arrays.items()}
        raise ValueError(f"grid parameters must broadcast to one length, got {sizes}") from err
    return {k: np.broadcast_to(v, shape).copy() for k, v in arrays.items()}


def simulate_grid(
    teacher: Teacher,
    alpha,
    kappa=None,
    lam=0.0,
    Delta=0.0,
    d: int = 30,
    seeds: int | Sequence[int] = 4,
    solver: str | ProximalGradient | Factorized | NetworkSolver = "convex",
    *,
    learning_rate=None,
    init_scale=None,
    key: PRNGKeyArray | None = None,
    dtype=None,
    max_steps: int | None = None,
    mask_failures: bool = True,
    rank_rtol: float | None = None,
    point_batch_size: int | None = 1,
    seed_batch_size: int | None | str = "auto",
    common_data: bool = False,
) -> SimulationResult:
    """Run the ERM simulation at every grid point and seed in ONE compiled call.

    ``alpha`` (``n = round(alpha d^2)``), ``kappa`` (width ``m = round(kappa d)``: the network
    width, or the rank bound of the convex problem; ``None`` means ``m = d``, i.e. no
    constraint), ``lam``, ``Delta`` (label-noise variance), ``learning_rate`` (first-order
    optimizers; default :func:`default_learning_rate`) and ``init_scale`` (network:
    ``W0 W0^T ~ init_scale^2 I``, default :data:`SIM_DEFAULTS`) are scalars or 1-d arrays
    broadcast to ``P`` grid points (build products with ``np.meshgrid``). ``seeds``: a count
    (seeds ``0..seeds-1``) or explicit integers; run ``(point, seed)`` uses
    :func:`run_key` of ``fold_in(key, seed)`` (``key`` defaults to ``jax.random.key(0)``):
    a fresh teacher and data per point and seed (``common_data=True``: the same teacher and
    data at every point of a seed). ``solver``: ``"convex"``, ``"fista"``, ``"gd"``,
    ``"momentum"``, ``"adam"``, ``"lbfgs"`` (see :func:`make_solver`) or a configured solver
    object. ``learning_rate`` and ``init_scale`` apply to the network optimizers only.

    ``rank_rtol``: eigenvalue tolerance of the rank fraction (default
    :data:`qnr.sim.RANK_RTOL` = 1e-6 in float64, 1e-3 in float32, where first-order network
    runs stop at ``gtol = 1e-4`` and leave ``O(gtol^2)`` eigenvalues on the null space).

    ``point_batch_size``: how many grid points are vmapped together inside the single
    compiled program (``lax.map`` with this ``batch_size``; ``None``: all points in one
    ``vmap``); ``seed_batch_size``: the same for seeds (``"auto"``:
    :func:`default_seed_batch_size`, one seed at a time on CPU, all seeds vmapped on
    accelerators). A vmapped ``while_loop`` runs every lane until the slowest one stops, so
    on CPU points and seeds in sequence are fastest (seeds of one point differed by up to 1.7x
    in iterations at d = 100, rank-constrained points by 10x); full vmapping pays off on
    accelerators.

    Returns a :class:`SimulationResult` with ``(P, S)`` metric arrays. Runs that did not
    converge are counted in a warning and (``mask_failures``) their metrics are NaN. Convex
    runs whose minimiser is not unique (``degenerate``, see :func:`qnr.sim.dual_certificate`)
    are kept but counted in a warning and in :meth:`SimulationResult.summary`.

    Example (error bars for a theory curve)::

        res = simulate_grid(MarchenkoPastur(0.5), alpha=np.linspace(0.1, 0.5, 9), lam=0.05,
                            d=40, seeds=8)
        s = res.summary(); plt.errorbar(res.alpha, s["E_mean"], s["E_std"])
    """
    if not isinstance(teacher, Teacher):
        raise ValueError(f"teacher must be a qnr Teacher, got {type(teacher).__name__}")
    d = check_size("d", d, minimum=2)
    dtype = jnp.dtype(dtype or jnp.zeros(()).dtype)
    if isinstance(seeds, int | np.integer):
        seeds = np.arange(check_size("seeds", seeds))
    else:
        seeds = np.asarray(seeds)
        if seeds.ndim != 1 or seeds.size == 0 or not np.issubdtype(seeds.dtype, np.integer):
            raise ValueError(f"seeds must be a count or a non-empty list of integers, got {seeds}")
    if isinstance(solver, str):
        solver = make_solver(solver, d, dtype, max_steps=max_steps)
    elif not isinstance(solver, ProximalGradient | Factorized | NetworkSolver):
        raise ValueError(f"solver must be a name in {SOLVER_NAMES} or a solver object")
    is_network = isinstance(solver, NetworkSolver)
    check_positive("alpha", alpha)
    if kappa is not None:
        check_positive("kappa", kappa, allow_inf=not is_network)
        if is_network:
            check_in_range("kappa", kappa, 0, 1e6)  # width round(kappa d) neurons
        else:  # kappa >= 1 is no rank constraint (also kappa = inf)
            kappa = np.minimum(np.asarray(kappa, float), 1.0)
    check_nonnegative("lam", lam)
    check_nonnegative("Delta", Delta)
    if learning_rate is None:
        learning_rate = float(solver.learning_rate) if is_network else 1.0
    check_positive("learning_rate", learning_rate)
    if init_scale is None:
        init_scale = SIM_DEFAULTS["init_scale"]
    check_positive("init_scale", init_scale)
    if rank_rtol is None:
        rank_rtol = RANK_RTOL if dtype == jnp.float64 else 1e-3
    check_positive("rank_rtol", rank_rtol)
    if point_batch_size is not None:
        point_batch_size = check_size("point_batch_size", point_batch_size)
    if isinstance(seed_batch_size, str):
        if seed_batch_size != "auto":
            raise ValueError(
                f'seed_batch_size must be a count, None or "auto", got {seed_batch_size!r}'
            )
        seed_batch_size = default_seed_batch_size()
    elif seed_batch_size is not None:
        seed_batch_size = check_size("seed_batch_size", seed_batch_size)
    pts = _as_points(
        alpha=alpha,
        kappa=1.0 if kappa is None else kappa,
        lam=lam,
        Delta=Delta,
        learning_rate=learning_rate,
        init_scale=init_scale,
    )
    n = np.maximum(1, np.round(pts["alpha"] * d * d)).astype(np.int32)
    m = np.maximum(1, np.round(pts["kappa"] * d)).astype(np.int32)
    n_max = int(n.max())
    m_max = int(m.max()) if is_network else 1
    if key is None:
        key = jax.random.key(0)
    check_key("key", key)
    seed_keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.asarray(seeds))
    points = {
        k: jnp.asarray(pts[k], dtype)
        for k in ("alpha", "kappa", "lam", "Delta", "learning_rate", "init_scale")
    }
    out = _compiled_grid(
        seed_keys,
        points,
        _StaticTeacher(teacher),
        solver,
        d,
        n_max,
        m_max,
        rank_rtol,
        point_batch_size,
        bool(common_data),
        seed_batch_size,
    )
    out = jax.device_get(out)
    converged = out["result"] == int(result_code(RESULTS.successful))
    n_fail = int((~converged).sum())
    if n_fail:
        codes = sorted(set(np.asarray(out["result"])[~converged].tolist()))
        warnings.warn(
            f"simulate_grid: {n_fail} of {converged.size} runs did not converge "
            f"(result codes {codes}; see optimistix.RESULTS)"
            + ("; their metrics are NaN" if mask_failures else ""),
            RuntimeWarning,
            stacklevel=2,
        )
    n_deg = int(np.sum(out["degenerate"] & converged))
    if n_deg:
        warnings.warn(
            f"simulate_grid: {n_deg} of {converged.size} convex runs have a non-unique "
            "minimiser (degenerate: their E and rank depend on the solver path)",
            RuntimeWarning,
            stacklevel=2,
        )
    if mask_failures:
        for k in ("E", "e_test", "e_train", "loss", "rank_fraction", "trace", "duality_gap"):
            out[k] = np.where(converged, out[k], np.nan)
        out["eigenvalues"] = np.where(converged[..., None], out["eigenvalues"], np.nan)
    return SimulationResult(
        alpha=pts["alpha"],
        kappa=pts["kappa"],
        lam=pts["lam"],
        Delta=pts["Delta"],
        learning_rate=pts["learning_rate"],
        init_scale=pts["init_scale"],
        n=n,
        m=m,
        seeds=seeds,
        converged=converged,
        solver=solver.optimizer if is_network else "convex",
        d=d,
        **{k: np.asarray(v) for k, v in out.items()},
    )


def simulate(
    teacher: Teacher,
    alpha,
    kappa=None,
    lam=0.0,
    Delta=0.0,
    d: int = 30,
    seeds: int | Sequence[int] = 4,
    solver: str | ProximalGradient | NetworkSolver = "convex",
    **kwargs,
) -> SimulationResult:
    """One grid point of :func:`simulate_grid` (scalar parameters); metric arrays over seeds.

    Example::

        res = simulate(MarchenkoPastur(0.5), alpha=0.3, lam=0.05, d=40, seeds=8)
        res.summary()["E_mean"]
    """
    for name, v in [("alpha", alpha), ("kappa", kappa), ("lam", lam), ("Delta", Delta)]:
        if v is not None and np.ndim(v) != 0:
            raise ValueError(f"{name} must be a scalar for simulate (use simulate_grid)")
    return simulate_grid(teacher, alpha, kappa, lam, Delta, d, seeds, solver, **kwargs).point(0)
