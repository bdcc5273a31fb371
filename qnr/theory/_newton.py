"""A globalised Newton root finder for the small fixed-point systems of the replica theory.

:class:`DampedNewton` is an ``optimistix.AbstractRootFinder`` (settings only; run it with
``optx.root_find``, which supplies the driver loop, ``max_steps``, ``throw`` and implicit
differentiation through ``optx.ImplicitAdjoint``). One step, for ``F: R^n -> R^n`` with
``n`` small (1 or 2 here):

1. the Newton direction ``p = -J^{-1} F`` (dense ``J = dF/dy`` by forward mode); where ``J``
   is singular or the direction not finite, the steepest-descent direction ``-J^T F`` of
   ``phi = |F|^2/2``;
2. ``p`` clipped to Euclidean length ``max_step`` (in the log variables of the ERM fixed point
   a step of 1.5 changes ``xi`` or ``tau`` by at most a factor ``e^1.5``);
3. Armijo backtracking ``t = 1, 1/2, 1/4, ...`` (the first ``parallel_trials`` lengths may be
   evaluated at once; 1 measured fastest on CPU) until
   ``phi(y + t p) <= phi(y) + c t phi'(y; p)`` with a finite ``F`` (at most
   ``max_backtracks`` halvings; none found is ``optx.RESULTS.nonlinear_divergence``).

It terminates when ``max |F| <= f_tol``, when the accepted step is below
``atol + rtol |y|``, or when no step decreases ``phi`` while ``max |F| <= stall_tol`` (the
residual is at its rounding floor); the caller then checks the residual against its own
tolerance.
This is the globalisation of Dennis and Schnabel (Numerical Methods for Unconstrained
Optimization, section 6.3) applied to ``phi``; on the ERM grids it converges from one fixed
start where plain Newton diverges.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Bool, Float, Int

__all__ = ["DampedNewton"]


class _DampedNewtonState(eqx.Module):
    f: Float[Array, " n"]
    diff: Float[Array, " n"]
    result: optx.RESULTS
    num_backtracks: Int[Array, ""]
    stalled: Bool[Array, ""]


def _solve_small(a, b):
    """``a^{-1} b`` for the 1 x 1 and 2 x 2 systems of the replica theory in closed form
    (batched LAPACK calls on tiny matrices dominate the cost on CPU); LU otherwise. A singular
    ``a`` gives a non-finite result (the caller then falls back to steepest descent)."""
    n = b.shape[0]
    if n == 1:
        return b / a[0, 0]
    if n == 2:
        det = a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]
        x0 = (a[1, 1] * b[0] - a[0, 1] * b[1]) / det
        x1 = (a[0, 0] * b[1] - a[1, 0] * b[0]) / det
        return jnp.stack([x0, x1])
    return jnp.linalg.solve(a, b)


def _value(fn, y, args):
    out, _ = fn(y, args)
    return out


class DampedNewton(optx.AbstractRootFinder):
    """Newton's method with a clipped step and Armijo backtracking (module docstring).

    ``y`` must be a 1-d array. ``rtol``/``atol``: step-size termination; ``f_tol``: residual
    termination (``max |F|``); ``stall_tol``: a residual accepted when backtracking finds no
    decrease; ``max_step``: Euclidean clip of the Newton step;
    ``armijo``: sufficient-decrease constant ``c``; ``max_backtracks``: halvings per step.
    """

    rtol: float = 1e-13
    atol: float = 1e-13
    f_tol: float = 1e-13
    stall_tol: float = 1e-8
    max_step: float = 1.5
    armijo: float = 1e-4
    max_backtracks: int = 30
    parallel_trials: int = 1
    norm: Callable = optx.max_norm

    def init(self, fn, y, args, options, f_struct, aux_struct, tags) -> _DampedNewtonState:
        del fn, args, options, aux_struct, tags
        inf = jnp.full(f_struct.shape, jnp.inf, f_struct.dtype)
        return _DampedNewtonState(
            f=inf,
            diff=jnp.full_like(y, jnp.inf),
            result=optx.RESULTS.successful,
            num_backtracks=jnp.array(0),
            stalled=jnp.array(False),
        )

    def step(self, fn, y, args, options, state, tags) -> tuple[Array, _DampedNewtonState, Any]:
        del options, state, tags

        def value_and_aux(yy):
            out, aux = fn(yy, args)
            return out, (out, aux)

        jac, (f, aux) = jax.jacfwd(value_and_aux, has_aux=True)(y)
        phi0 = 0.5 * jnp.sum(f * f)
        newton = -_solve_small(jac, f)
        grad = jac.T @ f
        use_newton = jnp.all(jnp.isfinite(newton))
        p = jnp.where(use_newton, newton, -grad)
        p = jnp.where(jnp.all(jnp.isfinite(p)), p, jnp.zeros_like(p))
        length = jnp.sqrt(jnp.sum(p * p))
        p = p * jnp.minimum(1.0, self.max_step / jnp.where(length > 0, length, 1.0))
        slope = jnp.dot(grad, p)  # phi'(y; p) = F^T J p

        def trial(t):
            yt = y + t * p
            ft = _value(fn, yt, args)
            phit = 0.5 * jnp.sum(ft * ft)
            ok = jnp.isfinite(phit) & (phit <= phi0 + self.armijo * t * slope)
            return yt, ft, ok

        # the first `parallel_trials` step lengths 1, 1/2, 1/4, ... are tried at once and the
        # longest acceptable one is taken; shorter steps, rarely needed, are searched in turn
        # (under vmap that search costs every lane the longest search of the batch).
        ts = 0.5 ** jnp.arange(self.parallel_trials, dtype=y.dtype)
        ys, fs, oks = jax.vmap(trial)(ts)
        first = jnp.argmax(oks)
        found = jnp.any(oks)
        # at the rounding floor (or on a lane already at its root) a shorter step cannot help:
        # do not search (a vmapped search would make every lane pay for it)
        floor = self.norm(f) <= self.stall_tol

        def cond(carry):
            k, _, _, _, ok = carry
            return (~ok) & (~floor) & (k < self.max_backtracks)

        def body(carry):
            k, t, _, _, _ = carry
            t = 0.5 * t
            yt, ft, ok = trial(t)
            return k + 1, t, yt, ft, ok

        start = (
            jnp.array(self.parallel_trials - 1),
            ts[-1],
            ys[first],
            fs[first],
            found,
        )
        k, t, y_new, f_new, ok = jax.lax.while_loop(cond, body, start)
        # no acceptable step: the residual is at its rounding floor (success if it is below
        # stall_tol; the caller still checks its own residual tolerance) or the method failed
        at_root = self.norm(f) <= self.stall_tol
        y_new = jnp.where(ok, y_new, y)
        f_new = jnp.where(ok, f_new, f)
        result = optx.RESULTS.where(
            ok | at_root, optx.RESULTS.successful, optx.RESULTS.nonlinear_divergence
        )
        diff = y_new - y
        new_state = _DampedNewtonState(
            f=f_new,
            diff=diff,
            result=result,
            num_backtracks=k,
            stalled=~ok & at_root,
        )
        del t
        return y_new, new_state, aux

    def terminate(self, fn, y, args, options, state, tags) -> tuple[Array, optx.RESULTS]:
        del fn, args, options, tags
        small_f = self.norm(state.f) <= self.f_tol
        small_step = self.norm(state.diff / (self.atol + self.rtol * jnp.abs(y))) <= 1
        failed = state.result != optx.RESULTS.successful
        return small_f | small_step | failed | state.stalled, state.result

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        del fn, args, options, tags, result
        return y, aux, {"residual": self.norm(state.f)}
