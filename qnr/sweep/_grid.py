"""Expansion of a sweep config into groups (static combinations) of float grid points,
and their division into chunks (one results file each)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from qnr.sweep._config import SweepConfig
from qnr.sweep._task import Task

__all__ = ["Group", "Chunk", "expand_grid", "make_chunks"]


@dataclass(frozen=True)
class Group:
    """One static combination and its float grid points (in row-major product order)."""

    index: int
    static: dict[str, Any]
    floats: dict[str, np.ndarray]  # axis -> (P,) float64
    point_ids: np.ndarray  # (P,) global point index

    @property
    def size(self) -> int:
        return int(self.point_ids.shape[0])


@dataclass(frozen=True)
class Chunk:
    """Points ``[start, stop)`` of a group; written to ``<name>.parquet``."""

    group: int
    index: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"g{self.group:03d}-c{self.index:05d}"


def resolved_grid(config: SweepConfig, task: Task) -> dict[str, tuple]:
    """Every axis of the task with its values: the config's, else the task's default."""
    axes = {**task.float_axes, **task.static_axes}
    unknown = set(config.grid) - set(axes)
    if unknown:
        raise ValueError(
            f"task {task.name!r} has no grid axis {sorted(unknown)}; "
            f"its axes are {sorted(axes)} (and seeds)"
        )
    grid = {}
    for name, default in axes.items():
        if name in config.grid:
            values = config.grid[name]
        elif default is None:
            raise ValueError(f"task {task.name!r} needs a value for grid axis {name!r}")
        else:
            values = (default,)
        if name in task.float_axes:
            bad = [v for v in values if isinstance(v, str)]
            if bad:
                raise ValueError(f"grid axis {name!r} takes numbers, got {bad[0]!r}")
            values = tuple(float(v) for v in values)
        grid[name] = tuple(values)
    if task.validate is not None:
        task.validate(grid)
    return grid


def expand_grid(config: SweepConfig, task: Task) -> list[Group]:
    """Groups in the product order of the static axes (task declaration order); inside a
    group, points in the product order of the float axes. Point ids run over all groups."""
    grid = resolved_grid(config, task)
    float_names = list(task.float_axes)
    static_names = list(task.static_axes)
    float_points = list(itertools.product(*(grid[n] for n in float_names)))
    floats = {
        n: np.asarray([p[i] for p in float_points], dtype=np.float64)
        for i, n in enumerate(float_names)
    }
    groups = []
    for g, combo in enumerate(itertools.product(*(grid[n] for n in static_names))):
        start = g * len(float_points)
        ids = np.arange(start, start + len(float_points), dtype=np.int64)
        groups.append(Group(g, dict(zip(static_names, combo)), floats, ids))
    return groups


def make_chunks(groups: list[Group], chunk_size: int) -> list[Chunk]:
    """Split each group into consecutive chunks of at most ``chunk_size`` points. The layout
    depends only on the config (not on the device count), so a sweep can resume on another
    machine."""
    chunks = []
    for group in groups:
        for c, start in enumerate(range(0, group.size, chunk_size)):
            chunks.append(Chunk(group.index, c, start, min(start + chunk_size, group.size)))
    return chunks
