"""Small, vmappable root finders used by the spectral laws.

All loops have a fixed number of iterations (``lax.fori_loop``), so they vectorise under
``vmap`` and run on accelerators without host round trips. Roots are computed on
``stop_gradient`` inputs and then *re-attached* to the computational graph by one or two
Newton steps taken with gradients flowing (:func:`newton_polish`): at an exact root ``r`` of
``f(r, theta) = 0`` one step ``r - f/f_r`` has derivative ``-f_theta / f_r``, which is the
implicit-function-theorem derivative; a second step makes second derivatives exact too.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["safe_newton", "newton_polish", "cubic_roots", "polynomial_roots"]


def _safe_div(num, den):
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1), 0)


def safe_newton(
    fn: Callable,
    args,
    lo,
    hi,
    x0=None,
    *,
    increasing: bool = True,
    iters: int = 80,
    rtol: float = 1e-14,
) -> jax.Array:
    """Bracketed Newton iteration for a monotone scalar function, elementwise.

    ``fn(x, args) -> (f, f')`` must be a pure function (no closed-over traced values: pass
    them through ``args``). The root must lie in ``[lo, hi]``; ``increasing`` gives the sign
    convention (``f < 0`` left of the root). Newton steps that leave the current bracket or
    are not finite are replaced by bisection, so the iteration never diverges; it stops when
    every element has converged (``|step| <= rtol (1 + |x|)``) or after ``iters`` iterations.
    No gradient is taken through the loop (``args`` and brackets are ``stop_gradient``-ed);
    use :func:`newton_polish` on the result.
    """
    args = lax.stop_gradient(args)
    lo = lax.stop_gradient(jnp.asarray(lo))
    hi = lax.stop_gradient(jnp.asarray(hi))
    lo, hi = jnp.broadcast_arrays(lo, hi)
    x = (lo + hi) / 2 if x0 is None else jnp.broadcast_to(lax.stop_gradient(x0), lo.shape)
    sgn = 1.0 if increasing else -1.0

    def cond(carry):
        i, _, _, _, done = carry
        return (i < iters) & ~jnp.all(done)

    def body(carry):
        i, x, lo, hi, done = carry
        f, df = fn(x, args)
        f = sgn * f
        df = sgn * df
        right = f > 0  # the root is left of x
        hi = jnp.where(right, x, hi)
        lo = jnp.where(right, lo, x)
        step = x - _safe_div(f, df)
        good = jnp.isfinite(step) & (step >= lo) & (step <= hi) & (df > 0)
        x_new = jnp.where(good, step, (lo + hi) / 2)
        x_new = jnp.where((f == 0) | done, x, x_new)
        tol = rtol * (1 + jnp.abs(x))
        done = done | (jnp.abs(x_new - x) <= tol) | (hi - lo <= tol)
        return i + 1, x_new, lo, hi, done

    init = (jnp.asarray(0), x, lo, hi, jnp.zeros(x.shape, bool))
    _, x, _, _, _ = lax.while_loop(cond, body, init)
    return x


def newton_polish(fn: Callable, args, root, steps: int = 2):
    """Re-attach gradients to a root of ``fn(x, args) -> (f, f')`` by ``steps`` Newton steps
    from the ``stop_gradient``-ed root, with gradients flowing through ``args`` (see module
    docstring). Steps whose derivative vanishes are skipped."""
    x = lax.stop_gradient(root)
    for _ in range(steps):
        f, df = fn(x, args)
        x = x - _safe_div(f, df)
    return x


def cubic_roots(a, b, c, d):
    """The three complex roots of ``a x^3 + b x^2 + c x + d`` (``a != 0``), elementwise.

    Cardano's formula in complex arithmetic with the cancellation-free choice of the square
    root sign, followed by two Newton polishing steps on the original polynomial. Inputs may
    be real or complex; the output is complex with shape ``broadcast(...) + (3,)``.
    """
    with jax.numpy_dtype_promotion("standard"):  # only names the common dtype; cast below
        cdt = jnp.result_type(a, b, c, d, jnp.complex64)
    if jnp.dtype(cdt) == jnp.complex64 and jnp.zeros(()).dtype == jnp.float64:
        cdt = jnp.complex128
    a, b, c, d = (jnp.asarray(v).astype(cdt) for v in (a, b, c, d))
    B, C, D = b / a, c / a, d / a
    p = C - B * B / 3
    q = 2 * B**3 / 27 - B * C / 3 + D
    disc = jnp.sqrt(q * q / 4 + p**3 / 27)
    s1 = -q / 2 + disc
    s2 = -q / 2 - disc
    s = jnp.where(jnp.abs(s1) >= jnp.abs(s2), s1, s2)
    u = jnp.where(s == 0, 0, s ** (1.0 / 3.0))
    u_safe = jnp.where(u == 0, 1, u)
    v = jnp.where(u == 0, 0, -p / (3 * u_safe))
    w = jnp.asarray(complex(-0.5, 3**0.5 / 2), dtype=cdt)
    ys = jnp.stack([u + v, w * u + jnp.conj(w) * v, jnp.conj(w) * u + w * v], axis=-1)
    x = lax.stop_gradient(ys - (B / 3)[..., None])

    A, Bb, Cc, Dd = (v_[..., None] for v_ in (a, b, c, d))
    for _ in range(2):
        f = ((A * x + Bb) * x + Cc) * x + Dd
        df = (3 * A * x + 2 * Bb) * x + Cc
        ok = df != 0
        x = x - jnp.where(ok, f / jnp.where(ok, df, 1), 0)
    return x


def polynomial_roots(coeffs, iters: int = 100):
    """All complex roots of ``sum_k coeffs[k] x^(n-k)`` (highest degree first), by the
    Aberth-Ehrlich simultaneous iteration (fixed ``iters``; cubic convergence for simple
    roots). ``coeffs``: shape ``(n+1,)``, ``coeffs[0] != 0``. Returns shape ``(n,)`` complex.
    """
    coeffs = jnp.asarray(coeffs)
    cdt = jnp.complex128 if coeffs.dtype == jnp.float64 else jnp.complex64
    c = coeffs.astype(cdt) / coeffs[0].astype(cdt)
    n = c.shape[0] - 1
    dc = c[:-1] * jnp.arange(n, 0, -1).astype(cdt)
    radius = 1 + jnp.max(jnp.abs(c[1:]))
    angles = 2 * jnp.pi * (jnp.arange(n, dtype=radius.dtype) + 0.25) / n + 0.4
    z0 = (0.5 * radius).astype(cdt) * jnp.exp(1j * angles.astype(cdt))

    def body(_, z):
        f = jnp.polyval(c, z)
        df = jnp.polyval(dc, z)
        ratio = jnp.where(df != 0, f / jnp.where(df != 0, df, 1), 0)
        diff = z[:, None] - z[None, :]
        eye = jnp.eye(n, dtype=bool)
        inv = jnp.where(eye, 0, 1 / jnp.where(eye, 1, diff))
        s = jnp.sum(inv, axis=1)
        den = 1 - ratio * s
        step = jnp.where(den != 0, ratio / jnp.where(den != 0, den, 1), ratio)
        return jnp.where(f == 0, z, z - step)

    return lax.fori_loop(0, iters, body, z0)
