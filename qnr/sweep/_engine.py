"""Sharded, vmapped evaluation of a point function over a batch of grid points.

The batch axis of the grid is laid out over a 1-d device mesh (``jax.sharding.Mesh`` with an
``Auto`` axis named ``"batch"``; optimistix does not support Explicit meshes or
``shard_map``), and ``vmap`` runs the points of each device's shard. The batch is padded to a
fixed size (a multiple of the device count), so every chunk of a group reuses ONE compiled
program. Works unchanged on several hosts after ``jax.distributed.initialize()``: the mesh
spans ``jax.devices()`` (all processes' devices), every process builds the same global batch
from the (deterministic) grid, and the outputs are all-gathered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["batch_mesh", "padded_size", "ShardedMap"]

BATCH_AXIS = "batch"


def batch_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-d ``Auto`` mesh named ``"batch"`` over ``devices`` (default: all global devices)."""
    devices = list(jax.devices() if devices is None else devices)
    return jax.make_mesh(
        (len(devices),), (BATCH_AXIS,), axis_types=(AxisType.Auto,), devices=devices
    )


def padded_size(n: int, n_devices: int) -> int:
    """``n`` rounded up to a multiple of ``n_devices``."""
    return -(-n // n_devices) * n_devices


def _global_array(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    # Every process holds the full host array; each device takes its index.
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def _to_host(x: jax.Array) -> np.ndarray:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


class ShardedMap:
    """``vmap(fn)`` over a batch of points, sharded over a mesh's ``"batch"`` axis.

    ``fn(params: dict[str, scalar], keys) -> dict[str, Array]``; ``keys`` (typed PRNG keys,
    one per seed) are replicated on every device. Call with a dict of host arrays of equal
    length ``B <= batch_size``: the batch is padded (with copies of its last point) to
    ``padded_size(batch_size, n_devices)``, run, and trimmed back to ``B``. The jitted
    program is built once per instance, so all calls with the same ``batch_size`` share one
    compilation.
    """

    def __init__(
        self,
        fn: Callable,
        batch_size: int,
        *,
        mesh: jax.sharding.Mesh | None = None,
        dtype=None,
    ):
        self.mesh = batch_mesh() if mesh is None else mesh
        self.n_devices = int(np.prod(list(self.mesh.shape.values())))
        self.batch_size = padded_size(batch_size, self.n_devices)
        self.dtype = jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)
        self._batch_sharding = NamedSharding(self.mesh, P(BATCH_AXIS))
        self._replicated = NamedSharding(self.mesh, P())

        def run(params, key_data):
            keys = jax.random.wrap_key_data(key_data)
            return jax.vmap(fn, in_axes=(0, None))(params, keys)

        self._run = jax.jit(
            run,
            in_shardings=(self._batch_sharding, self._replicated),
            out_shardings=self._batch_sharding,
        )

    def __call__(self, params: Mapping[str, np.ndarray], keys) -> dict[str, np.ndarray]:
        sizes = {np.shape(v)[0] for v in params.values()}
        if len(sizes) != 1:
            raise ValueError(f"all parameter arrays must have the same length, got {sizes}")
        (n,) = sizes
        if not 1 <= n <= self.batch_size:
            raise ValueError(f"batch of {n} points does not fit batch_size {self.batch_size}")
        pad = self.batch_size - n
        host = {
            k: np.concatenate([np.asarray(v), np.repeat(np.asarray(v)[-1:], pad)]).astype(
                self.dtype
            )
            for k, v in params.items()
        }
        glob = {k: _global_array(v, self._batch_sharding) for k, v in host.items()}
        key_data = np.asarray(jax.random.key_data(keys))
        key_data = _global_array(key_data, self._replicated)
        out = self._run(glob, key_data)
        return {k: _to_host(v)[:n] for k, v in out.items()}
