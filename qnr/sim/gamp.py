"""GAMP-RIE: approximate message passing with a rotationally invariant matrix denoiser.

The Bayes-optimal algorithm of Maillard, Troiani, Martin, Krzakala, Zdeborova (NeurIPS 2024,
arXiv 2408.03733) for ``y_mu = Tr(Z_mu S*) + sqrt(Delta) xi_mu``, ``mu = 1..n = alpha d^2``,
with the centred sensing matrices ``Z_mu = (x_mu x_mu^T - I)/sqrt(d)`` of THEORY.md section 1.

Derivation (in our normalization)
---------------------------------
In an orthonormal basis of the ``N = d(d+1)/2`` symmetric matrices, ``Tr(Z_mu S) = <z_mu, s>``
with coordinates of variance ``2/d`` (``Var Tr(Z A) = 2||A||_F^2/d``), ``n/N -> 2 alpha``, and a
Gaussian output channel of variance ``Delta``. GAMP (Rangan 2011) with a *matrix* denoiser, a
scalar variance per side and the exact per-sample row norms
``||Z_mu||_F^2 = (||x_mu||^4 - 2||x_mu||^2 + d)/d`` reads, in matrix form with
``A(S)_mu = Tr(Z_mu S)`` and ``A^*(r) = sum_mu r_mu Z_mu`` (``qnr.sim.sensing``)::

    V_mu     = ||Z_mu||_F^2 vhat                                 (output variance)
    omega_mu = A(Shat)_mu - V_mu g_mu                            (Onsager-corrected output)
    g_mu     = (y_mu - omega_mu) / (Delta + V_mu)                (Gaussian channel)
    Sigma    = N / sum_mu ||Z_mu||_F^2 / (Delta + V_mu)          (input variance)
    Y        = Shat + Sigma A^*(g)                               (~ S* + sqrt(delta) GOE)
    delta    = Sigma d / 2                                       (semicircle variance)
    Shat, div = RIE(Y, delta);   vhat = Sigma div / N            (qnr.sim.rie)

``div`` is the divergence of the RIE over symmetric matrices (the identity has ``N``); for the
Bayes-optimal denoiser ``vhat = 2 mmse(delta)/d``, so that ``V_mu ~ 2 mmse`` and
``Sigma ~ (2 mmse + Delta)/(2 alpha d)``: the state evolution
``2 alpha delta_{t+1} = mmse(delta_t) + Delta/2``, ``E_t = mmse(delta_{t-1})``
(``qnr.theory.bayes``), whose fixed point is the Bayes-optimal error. Initialisation
``Shat = 0``, ``g = 0``, ``vhat = 2 Q0_hat/(d+1)`` with ``Q0_hat = (mean y^2 - Delta)/2``.

Finite-size behaviour (measured, MP teacher ``kappa* = 0.5``, ``d = 40..100``): the rank-one
``x x^T`` makes the row norms ``||Z_mu||_F^2`` fluctuate by ``~ 2 sqrt(2/d)`` relative (GOE
sensing matrices: ``O(1/d)``), the per-sample variances above are the exact GAMP for such
heterogeneous rows. Undamped, the iteration diverges on ``x x^T`` data at these sizes (with or
without per-sample variances; the same iteration on GOE sensing matrices converges undamped),
so the default damping is ``beta = 0.5``: ``Shat`` and ``vhat`` are mixed with their previous
values, ``new <- beta new + (1 - beta) old`` (Rangan et al. 2014). The iteration then settles
within ~50-150 steps on a neighbourhood of the fixed point (it keeps fluctuating by ~1-5% in
``Shat``) at an error a few percent above the state-evolution prediction, the excess shrinking
with ``d`` (``tests/test_gamp.py``). At the fixed point GAMP's ``delta`` matches the actual
effective noise of ``Y`` and its error matches the RIE error at that noise; the excess comes
from the finite-``d`` RIE error exceeding ``mmse(delta)`` by ~1-2%, amplified by the state
evolution by ``2 alpha / (2 alpha - mmse'(delta_eff))`` (2.6 at ``alpha = 0.2``, 5.9 at
``alpha = 0.3`` noiseless, 3.1 at ``alpha = 0.3, Delta = 0.1``): e.g. +5.5% at
``alpha = 0.3``, noiseless, ``d = 60..140``, decaying slowly. ``Delta`` is the dataset's
label-noise variance (the Bayes-optimal algorithm knows the channel).

The denoiser is either the oracle RIE (pass ``hilbert(l, delta)``, the asymptotic Hilbert
transform of ``rho_delta``, e.g. from ``qnr.spectra``: that is the paper's algorithm) or the
purely empirical RIE (``hilbert=None``; see ``qnr.sim.rie``), which needs no knowledge of the
teacher.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Float, Int, PRNGKeyArray

from qnr._validate import check_in_range, check_nonnegative, check_positive, check_size
from qnr.sim.data import Dataset, make_dataset
from qnr.sim.rie import HilbertFn, rie
from qnr.sim.sensing import adjoint_sensing, apply_sensing
from qnr.teachers import Teacher

__all__ = ["GAMPRIE", "GAMPSolution", "gamp_rie", "simulate_gamp"]


class GAMPRIE(eqx.Module):
    """Settings of GAMP-RIE (the solver object; it holds no data).

    ``damping`` -- ``beta`` in ``(0, 1]`` (1 = undamped; default 0.5); ``max_steps`` --
    iteration cap; ``eta_scale`` -- regularisation of the empirical Hilbert transform (ignored
    with an oracle). Convergence (``rtol``, ``window``): either an exact fixed point,
    ``||Shat^{t+1} - Shat^t||_F <= rtol ||Shat^{t+1}||_F``, or stationarity of the effective
    noise: the means of ``delta_t`` over the last two windows of ``window`` steps differ by at
    most ``rtol`` relative. At ``d <~ 200`` the iteration on Gaussian ``x x^T`` data does not
    settle on an exact fixed point: it keeps fluctuating by ~1-5% (relative, in ``Shat``)
    around the state-evolution error, which is what the second criterion detects.
    """

    damping: float = 0.5
    rtol: float = 1e-3
    max_steps: int = eqx.field(static=True, default=300)
    window: int = eqx.field(static=True, default=10)
    eta_scale: float = 1.0

    def __check_init__(self):
        check_in_range("damping", self.damping, 0.0, 1.0)
        if not isinstance(self.damping, jax.core.Tracer) and float(self.damping) == 0.0:
            raise ValueError("damping must be in (0, 1], got 0.0")
        check_positive("rtol", self.rtol)
        check_size("max_steps", self.max_steps)
        check_size("window", self.window)
        check_nonnegative("eta_scale", self.eta_scale)


class GAMPSolution(eqx.Module):
    """Result of :func:`gamp_rie`.

    ``value`` -- the estimate ``Shat``; ``delta`` -- the last effective-noise estimate;
    ``error`` -- ``E = ||Shat - S*||_F^2/d`` against the dataset's teacher;
    ``error_trace``/``delta_trace`` -- ``E_t`` and ``delta_t`` per iteration (``t = 1..``; NaN
    after the stop); ``result`` -- ``optimistix.RESULTS`` (``successful``,
    ``nonlinear_max_steps_reached`` or ``nonfinite``); ``stats`` -- ``num_steps``,
    ``residual`` (last relative step in ``Shat``), ``stationarity`` (last relative change of
    the windowed mean of ``delta_t``), ``e_train`` (``(1/(4n)) sum (y - Tr(Z Shat))^2``).
    Under :func:`simulate_gamp` failed runs have ``value``/``error`` masked to NaN.
    """

    value: Float[Array, "d d"]
    delta: Float[Array, ""]
    error: Float[Array, ""]
    error_trace: Float[Array, " max_steps"]
    delta_trace: Float[Array, " max_steps"]
    result: optx.RESULTS
    stats: dict[str, Array]


class _State(eqx.Module):
    step: Int[Array, ""]
    S: Float[Array, "d d"]
    vhat: Float[Array, ""]
    g: Float[Array, " n"]
    residual: Float[Array, ""]
    stationarity: Float[Array, ""]
    delta: Float[Array, ""]
    err_trace: Float[Array, " T"]
    delta_trace: Float[Array, " T"]


def _gamp_impl(X, y, S_star, Delta, solver: GAMPRIE, hilbert: HilbertFn | None) -> GAMPSolution:
    n, d = X.shape
    dtype = X.dtype
    N = d * (d + 1) / 2
    beta = jnp.asarray(solver.damping, dtype)
    rtol = jnp.asarray(solver.rtol, dtype)
    Delta = jnp.asarray(Delta, dtype)
    T = solver.max_steps
    W = solver.window
    pad = jnp.zeros((2 * W,), dtype)
    tiny = jnp.asarray(jnp.finfo(dtype).tiny, dtype)
    sq = jnp.sum(X**2, axis=1)
    z2 = (sq**2 - 2 * sq + d) / d  # ||Z_mu||_F^2

    def body(s: _State) -> _State:
        V = z2 * s.vhat
        omega = apply_sensing(X, s.S) - V * s.g
        g = (y - omega) / (Delta + V)
        Sigma = N / jnp.sum(z2 / (Delta + V))
        delta = Sigma * d / 2
        Y = s.S + Sigma * adjoint_sensing(X, g)
        est = rie(Y, delta, hilbert, eta_scale=solver.eta_scale)
        S_new = beta * est.value + (1 - beta) * s.S
        vhat = beta * Sigma * est.divergence / N + (1 - beta) * s.vhat
        diff = jnp.sqrt(jnp.sum((S_new - s.S) ** 2))
        residual = diff / jnp.maximum(jnp.sqrt(jnp.sum(S_new**2)), tiny)
        err = jnp.sum((S_new - S_star) ** 2) / d
        delta_trace = s.delta_trace.at[s.step].set(delta)
        # stationarity: relative change between the means of the last two windows of delta_t
        start = jnp.maximum(s.step + 1 - 2 * W, 0)
        last = jax.lax.dynamic_slice(jnp.concatenate([delta_trace, pad]), (start,), (2 * W,))
        m_old, m_new = jnp.mean(last[:W]), jnp.mean(last[W:])
        stationarity = jnp.where(
            s.step + 1 >= 2 * W, jnp.abs(m_new - m_old) / jnp.maximum(m_new, tiny), jnp.inf
        )
        return _State(
            step=s.step + 1,
            S=S_new,
            vhat=vhat,
            g=g,
            residual=residual,
            stationarity=stationarity,
            delta=delta,
            err_trace=s.err_trace.at[s.step].set(err),
            delta_trace=delta_trace,
        )

    def converged(s: _State):
        return (s.residual <= rtol) | (s.stationarity <= rtol)

    def cond(s: _State):
        return (s.step < T) & ~converged(s) & ~jnp.isnan(s.residual)

    nan_trace = jnp.full((T,), jnp.nan, dtype)
    q0_hat = jnp.maximum((jnp.mean(y**2) - Delta) / 2, jnp.mean(y**2) / 20)
    init = _State(
        step=jnp.asarray(0),
        S=jnp.zeros((d, d), dtype),
        vhat=2 * q0_hat / (d + 1),
        g=jnp.zeros((n,), dtype),
        residual=jnp.asarray(jnp.inf, dtype),
        stationarity=jnp.asarray(jnp.inf, dtype),
        delta=jnp.asarray(jnp.nan, dtype),
        err_trace=nan_trace,
        delta_trace=nan_trace,
    )
    final = jax.lax.while_loop(cond, body, init)
    finite = jnp.isfinite(final.residual) & jnp.all(jnp.isfinite(final.S))
    result = optx.RESULTS.where(
        converged(final) & finite,
        optx.RESULTS.successful,
        optx.RESULTS.where(
            finite, optx.RESULTS.nonlinear_max_steps_reached, optx.RESULTS.nonfinite
        ),
    )
    return GAMPSolution(
        value=final.S,
        delta=final.delta,
        error=jnp.sum((final.S - S_star) ** 2) / d,
        error_trace=final.err_trace,
        delta_trace=final.delta_trace,
        result=result,
        stats={
            "num_steps": final.step,
            "residual": final.residual,
            "stationarity": final.stationarity,
            "e_train": jnp.sum((y - apply_sensing(X, final.S)) ** 2) / (4 * n),
        },
    )


def gamp_rie(
    data: Dataset, solver: GAMPRIE | None = None, hilbert: HilbertFn | None = None
) -> GAMPSolution:
    """Run GAMP-RIE (module docstring) on one dataset from :func:`qnr.sim.make_dataset`.

    ``hilbert(l, delta)`` is the oracle Hilbert transform of ``rho_delta`` (e.g. from
    ``qnr.spectra``); ``None`` uses the empirical RIE. Jitted; vmappable over datasets.
    """
    solver = GAMPRIE() if solver is None else solver
    if not isinstance(data, Dataset):
        raise ValueError(f"data must be a qnr Dataset, got {type(data).__name__}")
    if not isinstance(solver, GAMPRIE):
        raise ValueError(f"solver must be a GAMPRIE, got {type(solver).__name__}")
    return _gamp_jit(data.X, data.y, data.S_star, data.Delta, solver, hilbert)


_gamp_jit = eqx.filter_jit(_gamp_impl)


def simulate_gamp(
    key: PRNGKeyArray,
    teacher: Teacher,
    d: int,
    alpha,
    Delta=0.0,
    *,
    num_seeds: int = 1,
    solver: GAMPRIE | None = None,
    hilbert: HilbertFn | None = None,
    dtype=None,
) -> GAMPSolution:
    """GAMP-RIE on ``num_seeds`` independent datasets (``n = round(alpha d^2)``), one compiled
    program ``vmap``-ped over seeds (compiled once per ``(d, n, num_seeds, solver, hilbert)``;
    the datasets are sampled eagerly). Runs that did not converge have ``value`` and ``error``
    masked to NaN (their ``result`` says why; the traces are kept)."""
    from qnr.sim.data import n_samples

    solver = GAMPRIE() if solver is None else solver
    if not isinstance(solver, GAMPRIE):
        raise ValueError(f"solver must be a GAMPRIE, got {type(solver).__name__}")
    d = check_size("d", d)
    num_seeds = check_size("num_seeds", num_seeds)
    n = n_samples(alpha, d)
    check_nonnegative("Delta", Delta)
    if not isinstance(teacher, Teacher):
        raise ValueError(f"teacher must be a qnr Teacher, got {type(teacher).__name__}")
    keys = jax.random.split(key, num_seeds)
    data = jax.vmap(lambda k: make_dataset(k, teacher, d, n, Delta, dtype))(keys)
    return _gamp_batch(data.X, data.y, data.S_star, data.Delta, solver, hilbert)


@eqx.filter_jit
def _gamp_batch(X, y, S_star, Delta, solver: GAMPRIE, hilbert: HilbertFn | None) -> GAMPSolution:
    """``vmap`` of the GAMP-RIE iteration over a batch of datasets; failed runs masked."""

    def one(X, y, S_star, Delta):
        sol = _gamp_impl(X, y, S_star, Delta, solver, hilbert)
        ok = sol.result == optx.RESULTS.successful
        return eqx.tree_at(
            lambda s: (s.value, s.error),
            sol,
            (jnp.where(ok, sol.value, jnp.nan), jnp.where(ok, sol.error, jnp.nan)),
        )

    return jax.vmap(one)(X, y, S_star, Delta)
