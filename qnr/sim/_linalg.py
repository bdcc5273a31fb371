"""Symmetric eigen-decompositions that stay unbatched under ``vmap``.

jaxlib's CPU ``eigh`` runs a batch through ``ParallelBatchMap`` on XLA's intra-op thread
pool and blocks a worker until its tasks finish. With two such calls in flight on a small pool
(2 cores) every worker can end up waiting: the process hangs with all threads in a futex
(observed with the convex solver vmapped over seeds; a ``qnr curve`` run stopped after ~3 CPU
minutes, twice). These wrappers turn a batched call into ``lax.map`` over the batch, so each
LAPACK call is a single matrix. Not differentiable (the solvers do not need it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["eigh", "eigvalsh"]


@jax.custom_batching.custom_vmap
def eigh(a):
    """``(w, v) = jnp.linalg.eigh(a)`` as a plain tuple (one matrix per LAPACK call, also
    under ``vmap``)."""
    w, v = jnp.linalg.eigh(a)
    return w, v


@eigh.def_vmap
def _eigh_vmap(axis_size, in_batched, a):
    (batched,) = in_batched
    if not batched:
        return eigh(a), (False, False)
    return jax.lax.map(eigh, a), (True, True)


@jax.custom_batching.custom_vmap
def eigvalsh(a):
    """``jnp.linalg.eigvalsh(a)`` (one matrix per LAPACK call, also under ``vmap``)."""
    return jnp.linalg.eigvalsh(a)


@eigvalsh.def_vmap
def _eigvalsh_vmap(axis_size, in_batched, a):
    (batched,) = in_batched
    if not batched:
        return eigvalsh(a), False
    return jax.lax.map(eigvalsh, a), True
