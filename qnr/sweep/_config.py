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

Validation (pure Python, before JAX is imported or anything is computed): every value must be
a finite number or a string (``inf``/``nan`` are refused: ``kappa = 1`` is the unconstrained
student); sizes are bounded (``chunk_size <= 10^6``, ``seeds <= 10^6``, at most ``10^7``
grid points); ``name`` is a plain file name (it names the default results directory); and
for the built-in kinds the axes of THEORY.md section 1 (``alpha``, ``kappa_star``, ``kappa``
``> 0``; ``lam``, ``delta``, ``gamma`` ``>= 0``; integer ``d >= 2``; ``teacher``, ``solver``)
and the common ``[options]`` (iteration caps, tolerances, step sizes) are range-checked.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SweepConfig", "load_config", "parse_axis_values", "check_memory_budget"]

_KINDS = ("theory", "simulation", "both", "custom")

MAX_CHUNK_SIZE = 10**6
MAX_SEEDS = 10**6
MAX_POINTS = 10**7
MAX_SEED = 2**31 - 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# Built-in axes (THEORY.md section 1) and options: accepted values.
_POSITIVE_AXES = ("alpha", "kappa_star", "kappa")
_NONNEGATIVE_AXES = ("lam", "delta", "gamma")
_CHOICES = {"teacher": ("mp", "power-law", "power_law"), "solver": ("convex", "network")}
_OPTION_CHOICES = {"optimizer": ("gd", "momentum", "adam", "lbfgs")}
_POSITIVE_OPTIONS = ("rtol", "atol", "gtol", "learning_rate", "init_scale", "xi0", "tau0")


def check_int(name: str, value, *, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer (not a bool; ``3.0`` is accepted as 3) in ``[minimum, maximum]``."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    rng = f">= {minimum}" + ("" if maximum is None else f" and <= {maximum}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer {rng}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an integer {rng}, got {value}")
    return value


def _check_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(
            f"{name} must be finite, got {value!r} (inf/nan are not values; "
            "kappa = 1 is the unconstrained student)"
        )
    return float(value)


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
        a = _check_number(f"grid axis {name!r} {how} start", args[0])
        b = _check_number(f"grid axis {name!r} {how} stop", args[1])
        num = check_int(f"grid axis {name!r} {how} num", args[2], maximum=MAX_POINTS)
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
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(
            f"grid axis {name!r}: {v!r} is not a valid value (values must be finite; "
            "kappa = 1 is the unconstrained student)"
        )
    return v


def _check_builtin_grid(grid: Mapping[str, tuple]) -> None:
    """Ranges of the built-in axes (a fast, JAX-free copy of the tasks' own checks)."""
    for name, values in grid.items():
        if name in _POSITIVE_AXES + _NONNEGATIVE_AXES:
            for v in values:
                if isinstance(v, str):
                    raise ValueError(f"grid axis {name!r} takes numbers, got {v!r}")
                if name in _POSITIVE_AXES and not v > 0:
                    raise ValueError(f"grid axis {name!r} must be > 0, got {v!r}")
                if name in _NONNEGATIVE_AXES and not v >= 0:
                    raise ValueError(f"grid axis {name!r} must be >= 0, got {v!r}")
        elif name == "d":
            for v in values:
                check_int("grid axis 'd'", v, minimum=2, maximum=100_000)
        elif name in _CHOICES:
            for v in values:
                if v not in _CHOICES[name]:
                    raise ValueError(
                        f"grid axis {name!r} must be one of {_CHOICES[name][:2]}, got {v!r}"
                    )


def _check_options(options: Mapping[str, Any], builtin: bool) -> None:
    for key, value in options.items():
        if not isinstance(value, bool | int | float | str):
            raise ValueError(f"option {key!r} must be a number, a string or a bool, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"option {key!r} must be finite, got {value!r}")
        if not builtin:
            continue
        base = key.removeprefix("theory_")
        if base == "max_steps":
            check_int(f"option {key!r}", value, maximum=10**8)
        elif base == "n_nodes":
            check_int(f"option {key!r}", value, minimum=0, maximum=10**6)
        elif base in _OPTION_CHOICES and value not in _OPTION_CHOICES[base]:
            raise ValueError(
                f"option {key!r} must be one of {_OPTION_CHOICES[base]}, got {value!r}"
            )
        elif base in _POSITIVE_OPTIONS and (isinstance(value, bool | str) or not value > 0):
            raise ValueError(f"option {key!r} must be a finite number > 0, got {value!r}")


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
        if self.kind == "custom" and not isinstance(self.task, str):
            raise ValueError(f'task must be a string "package.module:attribute", got {self.task!r}')
        check_int("chunk_size", self.chunk_size, maximum=MAX_CHUNK_SIZE)
        if not 1 <= len(self.seeds) <= MAX_SEEDS or any(
            isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED
            for s in self.seeds
        ):
            raise ValueError(
                f"seeds must be a count in [1, {MAX_SEEDS}] or a list of integers in "
                f"[0, {MAX_SEED}], got {_short(self.seeds)}"
            )
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {_short(self.seeds)}")
        check_int("seed", self.seed, minimum=0, maximum=MAX_SEED)
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(
                "name must be 1-64 letters, digits, '.', '_' or '-' (it names the results "
                f"directory), got {self.name!r}"
            )
        if not isinstance(self.grid, Mapping) or not isinstance(self.options, Mapping):
            raise ValueError("grid and options must be tables")
        size = 1
        for values in self.grid.values():
            size *= len(values)
        if size > MAX_POINTS:
            raise ValueError(f"the grid has {size} points, over the limit of {MAX_POINTS}")
        if self.kind != "custom":
            _check_builtin_grid(self.grid)
        _check_options(self.options, builtin=self.kind != "custom")

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
        for key in ("grid", "options"):
            if key in raw and not isinstance(raw[key], Mapping):
                raise ValueError(
                    f"{key} must be a table ([{key}] section, or {key} = {{...}}), got "
                    f"{_short(raw[key])}"
                )
        if "kind" in raw and not isinstance(raw["kind"], str):
            raise ValueError(f"kind must be a string, got {raw['kind']!r}")
        if "name" in raw and not isinstance(raw["name"], str):
            raise ValueError(f"name must be a string, got {raw['name']!r}")
        grid_raw = dict(raw.get("grid", {}))
        seeds_spec = grid_raw.pop("seeds", 1)
        if isinstance(seeds_spec, int) and not isinstance(seeds_spec, bool):
            seeds = tuple(range(check_int("seeds", seeds_spec, maximum=MAX_SEEDS)))
        elif isinstance(seeds_spec, list):
            seeds = tuple(seeds_spec)
        else:
            raise ValueError(
                f"seeds must be a count or a list of integers, got {_short(seeds_spec)}"
            )
        grid = {name: parse_axis_values(name, spec) for name, spec in grid_raw.items()}
        return cls(
            kind=raw["kind"],
            grid=grid,
            seeds=seeds,
            seed=raw.get("seed", 0),
            chunk_size=raw.get("chunk_size", 16),
            name=raw.get("name", "sweep"),
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


_SIM_FLOAT_AXES = ("alpha", "lam", "delta", "kappa")  # vmapped together in one chunk


def check_memory_budget(config: SweepConfig) -> None:
    """Refuse a built-in simulation sweep (``kind = "simulation" | "both"``) whose chunk --
    ``min(chunk_size, points per group)`` points x all seeds, vmapped together -- would not
    fit in ``QNR_MEMORY_LIMIT`` (see :mod:`qnr._budget`). Pure Python, before any work."""
    if config.kind not in ("simulation", "both"):
        return
    from qnr._budget import check_memory, sim_bytes

    grid = config.grid
    points = 1
    for axis in _SIM_FLOAT_AXES:
        points *= len(grid.get(axis, (0,)))
    batch = min(config.chunk_size, points)
    alpha = max(float(a) for a in grid.get("alpha", (1.0,)))
    kappa = max(float(k) for k in grid.get("kappa", (1.0,)))
    network = "network" in grid.get("solver", ())
    for d in grid.get("d", (30,)):
        d = int(d)
        n = max(1, round(alpha * d * d))
        width = max(1, round(kappa * d)) if network else 0
        check_memory(
            sim_bytes(d, n, len(config.seeds), points=batch, width=width),
            f"a chunk of {batch} points x {len(config.seeds)} seeds at d = {d}, n = {n}",
            "lower chunk_size, the number of seeds, d or alpha",
        )


def load_config(path: str | Path) -> SweepConfig:
    """Read a sweep TOML file (``tomllib``)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"config file {str(path)!r} does not exist")
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} is not a file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"config file {str(path)!r} cannot be read: {err.strerror}") from None
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"config file {str(path)!r} is not UTF-8 text (TOML)") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {err}") from None
    try:
        return SweepConfig.from_dict(raw)
    except ValueError as err:
        raise ValueError(f"config file {str(path)!r}: {err}") from None


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
