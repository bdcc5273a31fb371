"""Sweep configuration: a TOML file describing a grid of runs.

A sweep is the Cartesian product of the values given for each axis. Axes are of two kinds:

* **swept floats** (``alpha``, ``kappa_star``, ``kappa``, ``lam``, ``delta``, ...): stored as
  JAX arrays and ``vmap``-ed, so one compiled program covers all their values;
* **static** axes (``d``, ``teacher``, ``solver``, ...): they change shapes or code paths, so
  they split the grid into *groups* (sub-sweeps), each compiled once.

Which axis is which is declared by the task (:class:`qnr.sweep.Task`). Seeds are a separate
axis: every grid point is run for every seed (``seeds = 4`` means seeds ``0..3``).

Example (``examples/sweep_curve.toml``)::

    kind = "both"              # "theory" | "simulation" | "both" | "custom"
    name = "mp-curve"
    seed = 0                   # base PRNG seed; seed s uses fold_in(key(seed), s)
    chunk_size = 8             # grid points per results file

    [grid]
    alpha = { linspace = [0.05, 0.6, 12] }   # or a list, or a scalar;
    kappa_star = [0.5]                        # also { geomspace = [a, b, n] }
    lam = 0.01
    delta = [0.0, 0.1]
    d = 30
    seeds = 4

    [options]                  # task options (solver tolerances, iteration caps, ...)
    max_steps = 2000

A custom task is named by ``kind = "custom"`` and ``task = "package.module:attribute"``, the
attribute being a :class:`qnr.sweep.Task`.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qnr._validate import check_size

__all__ = ["SweepConfig", "load_config", "parse_axis_values"]

_KINDS = ("theory", "simulation", "both", "custom")


def parse_axis_values(name: str, spec) -> tuple:
    """Values of one grid axis: a scalar, a list, ``{linspace = [a, b, n]}`` or
    ``{geomspace = [a, b, n]}`` (``n`` points from ``a`` to ``b`` inclusive)."""
    if isinstance(spec, Mapping):
        if len(spec) != 1 or next(iter(spec)) not in ("linspace", "geomspace"):
            raise ValueError(
                f"grid axis {name!r}: a table must be {{linspace = [a, b, n]}} or "
                f"{{geomspace = [a, b, n]}}, got {dict(spec)!r}"
            )
        ((how, args),) = spec.items()
        if not isinstance(args, list | tuple) or len(args) != 3:
            raise ValueError(f"grid axis {name!r}: {how} needs [start, stop, num], got {args!r}")
        a, b = float(args[0]), float(args[1])
        num = check_size(f"grid axis {name!r} num", args[2])
        if how == "geomspace" and (a <= 0 or b <= 0):
            raise ValueError(f"grid axis {name!r}: geomspace endpoints must be > 0")
        values = (np.linspace if how == "linspace" else np.geomspace)(a, b, num)
        return tuple(float(v) for v in values)
    if isinstance(spec, list | tuple):
        if len(spec) == 0:
            raise ValueError(f"grid axis {name!r} has no values")
        return tuple(_scalar(name, v) for v in spec)
    return (_scalar(name, spec),)


def _scalar(name, v):
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError(f"grid axis {name!r}: values must be numbers or strings, got {v!r}")
    if isinstance(v, float) and math.isnan(v):
        raise ValueError(f"grid axis {name!r}: NaN is not a valid value")
    return v


@dataclass(frozen=True)
class SweepConfig:
    """A parsed sweep description (see the module docstring for the TOML layout).

    ``grid`` maps axis names to tuples of values; ``seeds`` lists the seed indices;
    ``options`` is passed to the task's ``build``. :meth:`config_hash` identifies the sweep:
    a results directory only ever holds chunks of one hash.
    """

    kind: str
    grid: Mapping[str, tuple] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    seed: int = 0
    chunk_size: int = 16
    name: str = "sweep"
    options: Mapping[str, Any] = field(default_factory=dict)
    task: str | None = None

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}; got {self.kind!r}")
        if self.kind == "custom" and not self.task:
            raise ValueError('kind = "custom" needs task = "package.module:attribute"')
        check_size("chunk_size", self.chunk_size)
        if len(self.seeds) == 0 or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds
        ):
            raise ValueError(
                f"seeds must be a count >= 1 or a list of integers >= 0, got {self.seeds!r}"
            )
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SweepConfig:
        raw = dict(raw)
        known = {"kind", "grid", "seed", "chunk_size", "name", "options", "task"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(
                f"unknown sweep config keys: {sorted(unknown)} (known: {sorted(known)})"
            )
        if "kind" not in raw:
            raise ValueError(
                'the sweep config needs kind = "theory" | "simulation" | "both" | "custom"'
            )
        grid_raw = dict(raw.get("grid", {}))
        seeds_spec = grid_raw.pop("seeds", 1)
        if isinstance(seeds_spec, int) and not isinstance(seeds_spec, bool):
            seeds = tuple(range(check_size("seeds", seeds_spec)))
        elif isinstance(seeds_spec, list):
            seeds = tuple(seeds_spec)
        else:
            raise ValueError(f"seeds must be a count or a list of integers, got {seeds_spec!r}")
        grid = {name: parse_axis_values(name, spec) for name, spec in grid_raw.items()}
        return cls(
            kind=raw["kind"],
            grid=grid,
            seeds=seeds,
            seed=raw.get("seed", 0),
            chunk_size=raw.get("chunk_size", 16),
            name=str(raw.get("name", "sweep")),
            options=dict(raw.get("options", {})),
            task=raw.get("task"),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable, canonical form (what is hashed and stored in metadata)."""
        return {
            "kind": self.kind,
            "name": self.name,
            "task": self.task,
            "seed": self.seed,
            "seeds": list(self.seeds),
            "chunk_size": self.chunk_size,
            "grid": {k: list(v) for k, v in sorted(self.grid.items())},
            "options": {k: self.options[k] for k in sorted(self.options)},
        }

    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON form (the identity of a results directory)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def load_config(path: str | Path) -> SweepConfig:
    """Read a sweep TOML file (``tomllib``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    with path.open("rb") as fh:
        try:
            raw = tomllib.load(fh)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"config file {str(path)!r} is not valid TOML: {err}") from err
    return SweepConfig.from_dict(raw)
