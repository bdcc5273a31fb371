"""The tests' one finite-difference helper: central differences of a scalar or vector function."""

import jax
import jax.numpy as jnp


def central_difference(f, x, h=1e-5, *, vectorize=False):
    """Central difference ``(f(x + h e_i) - f(x - h e_i)) / (2 h_i)``, an O(h^2) estimate of the
    derivative of ``f`` at ``x``.

    ``x`` a scalar: the derivative, shaped like ``f(x)``. ``x`` a vector of n entries: the
    Jacobian shaped as ``jax.jacfwd`` returns it (``f(x).shape + (n,)``); ``h`` a scalar or one
    step per entry. ``vectorize=True`` evaluates the 2n shifted points in one compiled program
    (``jax.jit(jax.vmap(f))``) instead of 2n calls.
    """
    x = jnp.asarray(x)
    if x.ndim == 0:
        return (f(x + h) - f(x - h)) / (2 * h)
    if x.ndim != 1:
        raise ValueError(f"x must be a scalar or a vector, got shape {x.shape}")
    h = jnp.broadcast_to(jnp.asarray(h, x.dtype), x.shape)
    points = jnp.concatenate([x + jnp.diag(h), x - jnp.diag(h)])
    if vectorize:
        values = jax.jit(jax.vmap(f))(points)
    else:
        values = jnp.stack([f(p) for p in points])
    n = x.shape[0]
    diff = (values[:n] - values[n:]) / (2 * h).reshape((n,) + (1,) * (values.ndim - 1))
    return jnp.moveaxis(diff, 0, -1)
