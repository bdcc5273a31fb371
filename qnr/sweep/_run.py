"""Running a sweep: groups -> chunks -> sharded vmapped batches -> Parquet files."""

from __future__ import annotations

import importlib
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from qnr._version import __version__
from qnr.sweep._config import SweepConfig, check_memory_budget
from qnr.sweep._engine import ShardedMap, batch_mesh
from qnr.sweep._grid import Chunk, Group, expand_grid, make_chunks
from qnr.sweep._store import ResultsDir
from qnr.sweep._task import Task

__all__ = ["SweepReport", "run_sweep", "resolve_task", "seed_keys"]


@dataclass(frozen=True)
class SweepReport:
    """Summary of one ``run_sweep`` call."""

    path: Path
    n_points: int
    n_rows: int
    n_chunks: int
    chunks_computed: int
    chunks_skipped: int
    n_failed: int
    seconds: float
    device_count: int
    process_count: int
    chunks_recomputed: int = 0
    bad_chunks: dict | None = None

    def to_dict(self) -> dict:
        return {**self.__dict__, "path": str(self.path), "bad_chunks": dict(self.bad_chunks or {})}


def resolve_task(config: SweepConfig) -> Task:
    """The built-in task of ``config.kind``, or the custom ``package.module:attribute``."""
    if config.kind == "custom":
        module_name, _, attr = config.task.partition(":")
        if not module_name or not attr:
            raise ValueError(f'task must look like "package.module:attribute", got {config.task!r}')
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"cannot import task {config.task!r}: {err}") from err
        if not isinstance(obj, Task):
            raise ValueError(f"{config.task!r} is not a qnr.sweep.Task (got {type(obj).__name__})")
        return obj
    from qnr.sweep._tasks import builtin_task

    return builtin_task(config.kind)


def seed_keys(base_seed: int, seeds) -> jax.Array:
    """Key of seed ``s``: ``fold_in(key(base_seed), s)``; the same for every grid point
    (common random numbers along a curve), independent of chunking and devices."""
    base = jax.random.key(base_seed)
    return jax.vmap(lambda s: jax.random.fold_in(base, s))(np.asarray(seeds, dtype=np.uint32))


def _resolved_options(config: SweepConfig, task: Task) -> dict:
    unknown = set(config.options) - set(task.options)
    if unknown:
        raise ValueError(
            f"task {task.name!r} has no option {sorted(unknown)}; "
            f"its options are {sorted(task.options)}"
        )
    return {**task.options, **config.options}


def _chunk_columns(group: Group, chunk: Chunk, outputs: dict, seeds, per_seed: bool) -> dict:
    sl = slice(chunk.start, chunk.stop)
    p = chunk.stop - chunk.start
    s = len(seeds) if per_seed else 1
    cols = {
        "group": np.full(p * s, group.index, dtype=np.int64),
        "point": np.repeat(group.point_ids[sl], s),
        "seed": np.tile(np.asarray(seeds if per_seed else [-1], dtype=np.int64), p),
    }
    for name, value in group.static.items():
        cols[name] = np.full(p * s, value, dtype=object if isinstance(value, str) else None)
    for name, values in group.floats.items():
        cols[name] = np.repeat(values[sl], s)
    for name, value in outputs.items():
        value = np.asarray(value)
        if value.shape == (p,):
            cols[name] = np.repeat(value, s)
        elif per_seed and value.shape == (p, s):
            cols[name] = value.reshape(p * s)
        else:
            raise ValueError(
                f"task output {name!r} has per-point shape {value.shape[1:]}; expected () or "
                f"(n_seeds,) = ({len(seeds)},)"
            )
    return cols


def _prepare_results(results: ResultsDir, metadata: dict, chunks, overwrite: bool):
    """Writer side of a (re)start: prepare the directory, verify the chunks on disk, move
    bad ones aside. Returns ``(done mask, {bad chunk: reason})``."""
    results.prepare(metadata, overwrite=overwrite)
    bad = results.verify([c.name for c in chunks], metadata["config_hash"])
    for name, reason in bad.items():
        dest = results.quarantine(name)
        warnings.warn(
            f"chunk {name} is bad ({reason}): moved to {dest.parent.name}/{dest.name}, "
            "recomputing it",
            RuntimeWarning,
            stacklevel=3,
        )
    done = np.array([results.has_chunk(c.name) for c in chunks], dtype=bool)
    return done, bad


def _count_failures(outputs: dict) -> int:
    codes = [np.asarray(v) for k, v in outputs.items() if k == "result" or k.endswith("_result")]
    return int(sum(np.count_nonzero(c) for c in codes))


def run_sweep(
    config: SweepConfig,
    out: str | Path,
    *,
    task: Task | None = None,
    quiet: bool = False,
    overwrite: bool = False,
    devices=None,
    max_chunks: int | None = None,
) -> SweepReport:
    """Run (or resume) a sweep, writing one Parquet file per chunk under ``out``.

    Chunks already on disk are verified (checksum and config hash, see
    :mod:`qnr.sweep._store`) and skipped, so rerunning after an interruption continues where
    it stopped; a bad chunk (truncated, altered, another sweep's) is reported, moved to
    ``corrupt/`` and recomputed. Memory of the built-in simulation tasks is checked against
    ``QNR_MEMORY_LIMIT`` before any work. Every process computes (the grid batch is sharded
    over the global mesh of ``devices``, default ``jax.devices()``); only process 0 writes.
    ``max_chunks`` stops after computing that many chunks (for tests and incremental runs).

    Failure codes: outputs named ``result`` or ``*_result`` are result codes (0 = success);
    the number of non-zero entries is reported and warned about. Tasks are expected to set
    the corresponding values to NaN.
    """
    t0 = time.perf_counter()
    task = resolve_task(config) if task is None else task
    options = _resolved_options(config, task)
    groups = expand_grid(config, task)
    chunks = make_chunks(groups, config.chunk_size)
    mesh = batch_mesh(devices)
    is_writer = jax.process_index() == 0
    results = ResultsDir(out)
    n_points = sum(g.size for g in groups)
    per_seed = task.per_seed
    metadata = {
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "qnr_version": __version__,
        "jax_version": jax.__version__,
        "task": task.name,
        "per_seed": per_seed,
        "n_groups": len(groups),
        "n_points": n_points,
        "n_chunks": len(chunks),
        "float_axes": list(task.float_axes),
        "static_axes": list(task.static_axes),
    }
    batch = min(config.chunk_size, max(g.size for g in groups))
    check_memory_budget(config)
    # build every group's point function first: a task refusing its options or axes must
    # fail before anything is written (building is cheap: nothing is traced or compiled)
    fns = {g.index: task.build(dict(g.static), dict(options), dict(g.floats)) for g in groups}
    error, bad = None, {}
    done = np.zeros(len(chunks), dtype=bool)
    if is_writer:
        try:
            done, bad = _prepare_results(results, metadata, chunks, overwrite)
        except ValueError as err:
            if jax.process_count() == 1:
                raise
            error = err
    if jax.process_count() > 1:
        # every process must learn of a refusal on process 0, or the others would wait for
        # it forever in the first collective
        from jax.experimental import multihost_utils

        status = np.concatenate([[error is not None], done]).astype(np.int32)
        status = np.asarray(multihost_utils.broadcast_one_to_all(status))
        if error is not None:
            raise error
        if status[0]:
            raise ValueError("process 0 refused the results directory (see its error)")
        done = status[1:].astype(bool)
    keys = seed_keys(config.seed, config.seeds)
    n_failed = 0
    computed = 0
    todo = [c for c, d in zip(chunks, done) if not d]
    if max_chunks is not None:
        todo = todo[:max_chunks]
    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(chunks),
        initial=int(done.sum()),
        desc=f"sweep {config.name}",
        unit="chunk",
        file=sys.stderr,
        disable=quiet or not is_writer,
    )
    maps: dict[int, ShardedMap] = {}
    for chunk in todo:
        group = groups[chunk.group]
        if chunk.group not in maps:
            maps[chunk.group] = ShardedMap(fns[chunk.group], batch, mesh=mesh)
        tc = time.perf_counter()
        sl = slice(chunk.start, chunk.stop)
        outputs = maps[chunk.group]({k: v[sl] for k, v in group.floats.items()}, keys)
        failures = _count_failures(outputs)
        n_failed += failures
        cols = _chunk_columns(group, chunk, outputs, config.seeds, per_seed)
        if is_writer:
            results.write_chunk(
                chunk.name,
                cols,
                time.perf_counter() - tc,
                config_hash=metadata["config_hash"],
                devices=mesh.size,
                failed=failures,
            )
        computed += 1
        bar.update(1)
    bar.close()
    if n_failed:
        warnings.warn(
            f"sweep {config.name}: {n_failed} entries reported a failure result code "
            "(their outputs are NaN)",
            RuntimeWarning,
            stacklevel=2,
        )
    n_rows = n_points * (len(config.seeds) if per_seed else 1)
    return SweepReport(
        path=Path(out),
        n_points=n_points,
        n_rows=n_rows,
        n_chunks=len(chunks),
        chunks_computed=computed,
        chunks_skipped=int(done.sum()),
        n_failed=n_failed,
        seconds=time.perf_counter() - t0,
        device_count=mesh.size,
        process_count=jax.process_count(),
        chunks_recomputed=len(bad),
        bad_chunks=bad,
    )
