"""Resumable, sharded parameter sweeps.

A sweep (``qnr sweep CONFIG.toml`` or :func:`run_sweep`) is a grid over swept floats (vmapped,
one compilation per group), static axes (groups), and seeds. The grid's batch axis is
sharded over all devices with ``jax.sharding`` (1-d ``Auto`` mesh named ``"batch"``), each
device vmaps its shard, and results are written chunk by chunk to Parquet so an interrupted
sweep resumes where it stopped. :func:`load` returns a ``pandas.DataFrame`` with one row per
(grid point, seed).

Many hosts: call ``jax.distributed.initialize()`` on every process before the sweep (the
``qnr sweep --distributed`` flag does it, with ``--coordinator HOST:PORT --num-processes N
--process-id I``, defaulting to ``$JAX_COORDINATOR_ADDRESS`` / ``$JAX_NUM_PROCESSES`` /
``$JAX_PROCESS_ID``; on a TPU pod slice and under SLURM JAX detects them). Every process runs
the same command on the same config; the mesh spans all processes' devices; process 0 verifies
and writes the results (use a shared filesystem for ``--out`` so reruns see the finished
chunks) and tells the others which chunks are done -- or that it refused the directory, so
no process waits forever. ``tests/test_distributed.py`` runs two processes on 127.0.0.1 (CPU,
gloo) and compares with one process; under SLURM::

    srun --ntasks=4 --gpus-per-task=8 qnr sweep big.toml --distributed --out /shared/run1

Results are verified on resume and on :func:`load` (config hash and content checksum in each
chunk; see :mod:`qnr.sweep._store`).
"""

from typing import TYPE_CHECKING

# Public name -> defining module, imported on first access (PEP 562): reading and checking a
# sweep config (``qnr.sweep._config``) must not wait for JAX to import.
_LAZY = {
    "SweepConfig": "_config",
    "load_config": "_config",
    "parse_axis_values": "_config",
    "ShardedMap": "_engine",
    "batch_mesh": "_engine",
    "padded_size": "_engine",
    "Chunk": "_grid",
    "Group": "_grid",
    "expand_grid": "_grid",
    "make_chunks": "_grid",
    "SweepReport": "_run",
    "resolve_task": "_run",
    "run_sweep": "_run",
    "seed_keys": "_run",
    "load": "_store",
    "load_metadata": "_store",
    "PointFn": "_task",
    "Task": "_task",
    "BOTH": "_tasks",
    "SIMULATION": "_tasks",
    "THEORY": "_tasks",
    "builtin_task": "_tasks",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"qnr.sweep.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qnr.sweep' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:
    from qnr.sweep._config import SweepConfig, load_config, parse_axis_values  # noqa: F401
    from qnr.sweep._engine import ShardedMap, batch_mesh, padded_size  # noqa: F401
    from qnr.sweep._grid import Chunk, Group, expand_grid, make_chunks  # noqa: F401
    from qnr.sweep._run import SweepReport, resolve_task, run_sweep, seed_keys  # noqa: F401
    from qnr.sweep._store import load, load_metadata  # noqa: F401
    from qnr.sweep._task import PointFn, Task  # noqa: F401
    from qnr.sweep._tasks import BOTH, SIMULATION, THEORY, builtin_task  # noqa: F401

__all__ = [
    "SweepConfig",
    "load_config",
    "parse_axis_values",
    "Task",
    "PointFn",
    "ShardedMap",
    "batch_mesh",
    "padded_size",
    "Group",
    "Chunk",
    "expand_grid",
    "make_chunks",
    "SweepReport",
    "run_sweep",
    "resolve_task",
    "seed_keys",
    "load",
    "load_metadata",
    "THEORY",
    "SIMULATION",
    "BOTH",
    "builtin_task",
]
