"""Input validation shared by every public entry point.

Checks run on concrete (non-traced) values: at the API boundary, where users pass Python
numbers or arrays, a bad value raises ``ValueError`` naming the parameter and the accepted
range. Inside ``jit``/``vmap``/``grad`` the values are tracers and cannot be inspected; the
public functions are expected to be called with concrete inputs at least once (the CLI, sweeps
and tests do), and traced code reports failures through result codes instead.
"""

from __future__ import annotations

import numbers

import jax
import numpy as np

__all__ = [
    "is_concrete",
    "check_size",
    "check_positive",
    "check_nonnegative",
    "check_in_range",
    "check_shape",
    "check_psd",
]


def is_concrete(value) -> bool:
    """True when ``value`` holds data (not a JAX tracer), so it can be checked eagerly."""
    leaves = jax.tree_util.tree_leaves(value)
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in leaves)


def _as_numpy(value):
    return np.asarray(jax.device_get(value))


def check_size(name: str, value, *, minimum: int = 1) -> int:
    """A static integer size (d, n, m, number of seeds...) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral | np.integer):
        if isinstance(value, float | np.floating) and float(value).is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def _check_scalar(name, value, ok, description):
    if not is_concrete(value):
        return value
    arr = _as_numpy(value)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be a real number {description}, got {value!r}")
    if np.any(np.isnan(arr)) or not np.all(ok(arr)):
        bad = arr if arr.ndim == 0 else arr[~ok(arr) | np.isnan(arr)].ravel()[0]
        raise ValueError(f"{name} must be {description}, got {bad.item()!r}")
    return value


def check_positive(name: str, value):
    """Real value(s) ``> 0`` (alpha, kappa*, kappa, gamma...)."""
    return _check_scalar(name, value, lambda a: a > 0, "> 0 (strictly positive)")


def check_nonnegative(name: str, value):
    """Real value(s) ``>= 0`` (lam, Delta, xi...)."""
    return _check_scalar(name, value, lambda a: a >= 0, ">= 0")


def check_in_range(name: str, value, low, high, *, inclusive: bool = True):
    """Real value(s) in ``[low, high]`` (or the open interval)."""
    if inclusive:
        return _check_scalar(name, value, lambda a: (a >= low) & (a <= high), f"in [{low}, {high}]")
    return _check_scalar(name, value, lambda a: (a > low) & (a < high), f"in ({low}, {high})")


def check_shape(name: str, value, shape: tuple) -> None:
    """``value.shape`` must equal ``shape``; ``None`` entries match any size."""
    actual = tuple(np.shape(value))
    if len(actual) != len(shape) or any(s is not None and s != a for s, a in zip(shape, actual)):
        expected = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {expected}, got {actual}")


def check_psd(name: str, matrix, *, rtol: float = 1e-6) -> None:
    """A symmetric positive semi-definite matrix (up to ``rtol`` of its largest eigenvalue)."""
    if not is_concrete(matrix):
        return
    arr = _as_numpy(matrix).astype(np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    scale = max(np.max(np.abs(arr)), 1e-300)
    if np.max(np.abs(arr - arr.T)) > rtol * scale * 10:
        raise ValueError(f"{name} must be symmetric")
    lo = np.linalg.eigvalsh((arr + arr.T) / 2)[0]
    if lo < -rtol * scale * arr.shape[0]:
        raise ValueError(f"{name} must be positive semi-definite (smallest eigenvalue {lo:.3g})")
