"""What a sweep runs: a :class:`Task` maps one grid point (and a batch of seed keys) to
scalar outputs, and declares which axes are swept floats and which are static."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["Task", "PointFn"]


class PointFn(Protocol):
    """``fn(params, keys) -> outputs`` for ONE grid point.

    ``params`` maps every float axis to a scalar array; ``keys`` holds one PRNG key per seed
    (shape ``(S,)``). Each output is a scalar (a per-point quantity, e.g. a theory prediction)
    or has shape ``(S,)`` (one value per seed, e.g. a simulation). The sweep ``vmap``s ``fn``
    over the points of a chunk and shards that batch over devices, so ``fn`` must be
    traceable: no Python control flow on ``params``.
    """

    def __call__(
        self, params: Mapping[str, Float[Array, ""]], keys: PRNGKeyArray
    ) -> Mapping[str, Array]: ...


@dataclass(frozen=True)
class Task:
    """A sweepable computation.

    Attributes:
        name: short identifier (stored in the results metadata).
        float_axes: swept float axes and their defaults (``None``: the axis is required).
            Their values are passed to the point function as JAX scalars and ``vmap``-ed.
        static_axes: axes that change shapes or code paths (``d``, ``teacher``, ``solver``),
            with defaults (``None``: required). Each combination is a group, compiled once.
        build: ``build(static, options, floats) -> PointFn``; ``static`` maps every static
            axis to its value for one group, ``options`` is the config's ``[options]`` table
            (task defaults filled in), ``floats`` maps each float axis to the array of all
            its values in the group (e.g. to allocate for the largest ``n``).
        per_seed: whether the outputs depend on the seed. If not, the results hold one row
            per grid point (with ``seed = -1``) instead of one per (point, seed).
        validate: optional ``validate(grid)`` raising ``ValueError`` for bad axis values
            (``grid`` maps each axis to its tuple of values, defaults filled in).
        options: option names the task understands, with defaults (unknown options are an
            error).
    """

    name: str
    float_axes: Mapping[str, float | None]
    static_axes: Mapping[str, Any]
    build: Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], PointFn]
    per_seed: bool = True
    validate: Callable[[Mapping[str, tuple]], None] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        overlap = set(self.float_axes) & set(self.static_axes)
        if overlap:
            raise ValueError(f"axes {sorted(overlap)} are declared both float and static")
        reserved = {"group", "point", "seed", "seeds"} & (
            set(self.float_axes) | set(self.static_axes)
        )
        if reserved:
            raise ValueError(f"axis names {sorted(reserved)} are reserved")
