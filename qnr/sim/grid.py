"""Batched ERM experiments: seeds x (alpha, kappa, lam, Delta, learning rate, init scale).

One compiled program covers a whole grid. Samples are allocated for the largest
``n = round(alpha d^2)`` and neurons for the largest ``m = round(kappa d)``; each grid point
masks the rest (masked samples contribute nothing and the loss is normalised by the true
``n``; masked neurons are zero and stay zero; for the convex solver ``m`` is the rank bound).
Seeds are ``vmap``-ed; points go through ``lax.map`` (``point_batch_size`` of them
vmapped at a time, or all at once); swept values are JAX arrays, so a new grid with the same
largest ``n``/``m`` reuses the compiled program. The code is the
same on CPU and GPU.

Random numbers are common across grid points and prefix-consistent: for seed ``s``
(``k = fold_in(key, s)``) the teacher ``S*``, the inputs ``x_mu``, the label noise ``xi_mu``
and the initial neurons ``w_j`` are drawn from sub-keys of ``k`` and ``fold_in(., mu)`` /
``fold_in(., j)``, so a point run alone (with its own ``n``, ``m``) sees exactly the data it
sees inside a grid.

Entry points: :func:`simulate` (one point, arrays over seeds) and :func:`simulate_grid`
(arrays over ``(point, seed)``). Both return a :class:`SimulationResult`; its
:meth:`~SimulationResult.summary` gives per-point means over the converged seeds.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from qnr._validate import check_nonnegative, check_positive, check_size
from qnr.sim.convex import ProximalGradient, _solve_convex
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
]

SOLVER_NAMES = ("convex",) + OPTIMIZERS
"""Names accepted by :func:`make_solver` (``"convex"`` and the optax optimizers)."""


def default_learning_rate(optimizer: str, d: int) -> float:
    """Default step of the first-order optimizers.

    The Hessian of ``L(W)`` scales like ``4 ||S||_op / d`` (``grad_S f`` has curvature ``1/d``
    in Frobenius units and ``grad_W = 2 grad_S f W``), so stable GD steps scale like ``d``:
    ``gd``: ``d/40``; ``momentum`` (heavy ball 0.9): ``d/200``; ``adam``: ``0.01``;
    ``lbfgs``: unused (line search). Small ``alpha`` (few samples) may need smaller steps."""
    d = check_size("d", d)
    return {"gd": d / 40, "momentum": d / 200, "adam": 0.01, "lbfgs": 1.0}[optimizer]


def make_solver(name: str, d: int, dtype=None, *, max_steps: int | None = None):
    """A solver with tolerances suited to ``dtype`` and method.

    float64: convex and L-BFGS use the tight defaults of :class:`ProximalGradient` /
    :class:`NetworkSolver` (``gtol = 1e-8``); first-order optimizers stop at ``gtol = 1e-6``,
    ``rtol = 1e-10`` (50 000 steps at most). float32: ``rtol = 1e-6``, ``gtol = 1e-4``
    (convex: ``rtol = 1e-5``)."""
    if name not in SOLVER_NAMES:
        raise ValueError(f"solver must be one of {SOLVER_NAMES}, got {name!r}")
    single = jnp.dtype(dtype or jnp.zeros(()).dtype) == jnp.float32
    if name == "convex":
        kw = dict(rtol=1e-5, atol=1e-7) if single else {}
        if max_steps is not None:
            kw["max_steps"] = max_steps
        return ProximalGradient(**kw)
    if single:
        kw = dict(rtol=1e-6, atol=1e-9, gtol=1e-4)
    elif name == "lbfgs":
        kw = {}
    else:
        kw = dict(rtol=1e-10, gtol=1e-6)
    steps = max_steps or (5_000 if name == "lbfgs" else 50_000)
    return NetworkSolver(name, default_learning_rate(name, d), max_steps=steps, **kw)


class SimulationResult(eqx.Module):
    """Per-point, per-seed results of :func:`simulate_grid` (axes ``(point, seed)``; a single
    point from :func:`simulate` drops the point axis).

    Coordinates (one per point): ``alpha, kappa, lam, Delta, learning_rate, init_scale`` and
    the integer sizes ``n``, ``m``. Metrics: ``E``, ``e_test``, ``e_train``, ``loss``,
    ``rank_fraction``, ``trace``, ``iterations``, ``result`` (``optimistix.RESULTS`` integer
    codes), ``converged`` and ``eigenvalues`` (last axis ``d``, decreasing). With
    ``mask_failures`` (default) the float metrics of non-converged runs are NaN.
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
        ``converged_fraction`` and ``n_seeds``."""
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
        out["n_seeds"] = conv.shape[-1]
        return out


def _seed_data(key, S_star, n_max, d, dtype):
    """Inputs, label noise and init key of one seed (prefix-consistent in ``n``)."""
    k_x, k_xi, k_init = jax.random.split(key, 3)
    rows = jnp.arange(n_max)
    X = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(k_x, i), (d,), dtype))(rows)
    xi = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(k_xi, i), (), dtype))(rows)
    return X, apply_sensing(X, S_star), xi, k_init


def _grid_impl(
    keys,
    S_stars,
    points,
    solver,
    n_max: int,
    m_max: int,
    rank_rtol: float,
    point_batch_size: int | None = None,
):
    """``keys``/``S_stars``: one per seed; ``points``: dict of ``(P,)`` arrays. Returns the
    per-(point, seed) metrics as a dict of ``(P, S, ...)`` arrays.

    Seeds are always vmapped. Points go through ``lax.map`` with ``batch_size =
    point_batch_size`` (``None``: all points in one ``vmap``); either way it is one program."""
    d = S_stars.shape[-1]
    dtype = S_stars.dtype
    X, clean, xi, k_init = jax.vmap(lambda k, S: _seed_data(k, S, n_max, d, dtype))(keys, S_stars)

    def one_run(X, clean, xi, k_init, S_star, n, m, lam, noise, lr, init_scale):
        mask = (jnp.arange(n_max) < n).astype(dtype)
        y = clean + jnp.sqrt(noise) * xi
        problem = ERMProblem(X, y, lam, mask)
        if isinstance(solver, ProximalGradient):
            S0 = jnp.zeros((d, d), dtype)
            sol = _solve_convex(problem, solver, jnp.minimum(m, d), S0, S_star, noise, rank_rtol)
        else:
            W0 = init_weights(k_init, d, m, init_scale, m_max=m_max, dtype=dtype)
            neuron_mask = (jnp.arange(m_max) < m).astype(dtype)
            slv = eqx.tree_at(lambda s: s.learning_rate, solver, lr.astype(dtype))
            sol = _train_network(problem, W0, slv, neuron_mask, S_star, noise, rank_rtol)
        return dict(
            E=sol.E,
            e_test=sol.e_test,
            e_train=sol.e_train,
            loss=sol.loss,
            rank_fraction=sol.rank_fraction.astype(dtype),
            trace=sol.trace,
            iterations=sol.iterations.astype(jnp.int32),
            result=sol.result._value.astype(jnp.int32),
            eigenvalues=sol.eigenvalues,
        )

    seeds_axes = (0, 0, 0, 0, 0) + (None,) * 6
    all_seeds = jax.vmap(one_run, in_axes=seeds_axes)

    def one_point(p):
        return all_seeds(X, clean, xi, k_init, S_stars, *p)

    names = ("n", "m", "lam", "Delta", "learning_rate", "init_scale")
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
    solver: str | ProximalGradient | NetworkSolver = "convex",
    *,
    learning_rate=None,
    init_scale=0.5,
    key: PRNGKeyArray | None = None,
    dtype=None,
    max_steps: int | None = None,
    mask_failures: bool = True,
    rank_rtol: float | None = None,
    point_batch_size: int | None = 1,
) -> SimulationResult:
    """Run the ERM simulation at every grid point and seed in ONE compiled call.

    ``alpha`` (``n = round(alpha d^2)``), ``kappa`` (width ``m = round(kappa d)``: the network
    width, or the rank bound of the convex problem; ``None`` means ``m = d``, i.e. no
    constraint), ``lam``, ``Delta`` (label-noise variance), ``learning_rate`` (first-order
    optimizers; default :func:`default_learning_rate`) and ``init_scale`` (network:
    ``W0 W0^T ~ init_scale^2 I``) are scalars or 1-d arrays broadcast to ``P`` grid points
    (build products with ``np.meshgrid``). ``seeds``: a count (seeds ``0..seeds-1``) or explicit
    integers; seed ``s`` uses ``fold_in(key, s)`` (``key`` defaults to ``jax.random.key(0)``),
    the same at every grid point. ``solver``: ``"convex"``, ``"gd"``, ``"momentum"``,
    ``"adam"``, ``"lbfgs"`` (see :func:`make_solver`) or a configured solver object.

    ``rank_rtol``: eigenvalue tolerance of the rank fraction (default
    :data:`qnr.sim.RANK_RTOL` = 1e-6 in float64, 1e-3 in float32, where first-order network
    runs stop at ``gtol = 1e-4`` and leave ``O(gtol^2)`` eigenvalues on the null space).

    ``point_batch_size``: how many grid points are vmapped together inside the single
    compiled program (``lax.map`` with this ``batch_size``; ``None``: all points in one
    ``vmap``). Seeds are always vmapped. A vmapped ``while_loop`` runs every lane until the
    slowest one stops, so with heterogeneous points (rank-constrained points can need 10x more
    iterations) the default ``1`` (points in sequence, seeds in parallel) is fastest on CPU;
    full vmapping pays off on accelerators with homogeneous points.

    Returns a :class:`SimulationResult` with ``(P, S)`` metric arrays. Runs that did not
    converge are counted in a warning and (``mask_failures``) their metrics are NaN.

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
    elif not isinstance(solver, ProximalGradient | NetworkSolver):
        raise ValueError(f"solver must be a name in {SOLVER_NAMES} or a solver object")
    is_network = isinstance(solver, NetworkSolver)
    check_positive("alpha", alpha)
    if kappa is not None:
        check_positive("kappa", kappa)
    check_nonnegative("lam", lam)
    check_nonnegative("Delta", Delta)
    if learning_rate is None:
        learning_rate = float(solver.learning_rate) if is_network else 1.0
    check_positive("learning_rate", learning_rate)
    check_positive("init_scale", init_scale)
    if rank_rtol is None:
        rank_rtol = RANK_RTOL if dtype == jnp.float64 else 1e-3
    check_positive("rank_rtol", rank_rtol)
    if point_batch_size is not None:
        point_batch_size = check_size("point_batch_size", point_batch_size)
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
    elif not (
        isinstance(key, jax.Array)
        and key.ndim == 0
        and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    ):
        raise ValueError(f"key must be a typed jax.random.key, got {key!r}")
    seed_keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.asarray(seeds))
    k_teacher, k_rest = jax.vmap(jax.random.split, out_axes=1)(seed_keys)
    S_stars = jax.vmap(lambda k: teacher.sample(k, d, dtype))(k_teacher)
    points = dict(
        n=jnp.asarray(n),
        m=jnp.asarray(m),
        **{k: jnp.asarray(pts[k], dtype) for k in ("lam", "Delta", "learning_rate", "init_scale")},
    )
    out = _compiled_grid(k_rest, S_stars, points, solver, n_max, m_max, rank_rtol, point_batch_size)
    out = jax.device_get(out)
    converged = out["result"] == int(RESULTS.successful._value)
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
    if mask_failures:
        for k in ("E", "e_test", "e_train", "loss", "rank_fraction", "trace"):
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
