"""Input validation shared by every public entry point.

Checks run on concrete (non-traced) values: at the API boundary, where users pass Python
numbers or arrays, a bad value raises ``ValueError`` naming the parameter and the accepted
range. Inside ``jit``/``vmap``/``grad`` the values are tracers and cannot be inspected; the
public functions are expected to be called with concrete inputs at least once (the CLI, sweeps
and tests do), and traced code reports failures through result codes instead.

Values must be finite: ``nan`` is never accepted, and ``+-inf`` only where it has a meaning,
i.e. with ``allow_inf=True`` -- by default only for ``kappa``, where ``kappa = inf`` is the
theory's unconstrained student (``kappa >= 1``); simulations, which allocate ``m = kappa d``
neurons, pass ``allow_inf=False``. Messages name the parameter, the accepted range and the
offending value.
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
    "check_key",
]

# Parameters for which +inf is a meaningful value unless the caller says otherwise.
INF_ALLOWED = frozenset({"kappa"})


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


def _allow_inf(name: str, allow_inf: bool | None) -> bool:
    return name.lstrip("-").replace("-", "_") in INF_ALLOWED if allow_inf is None else allow_inf


def _check_scalar(name, value, ok, description, allow_inf=False):
    if not is_concrete(value):
        return value
    try:
        arr = _as_numpy(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number {description}, got {value!r}") from None
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be a real number {description}, got {value!r}")
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} must be a real number {description}, got {value!r}")
    finite = np.isfinite(arr) | (np.isposinf(arr) if allow_inf else False)
    good = finite & ok(arr)
    if not np.all(good):
        bad = arr if arr.ndim == 0 else arr[~good].ravel()[0]
        what = description if allow_inf else f"finite and {description}"
        raise ValueError(f"{name} must be {what}, got {bad.item()!r}")
    return value


def check_positive(name: str, value, *, allow_inf: bool | None = None):
    """Real value(s) ``> 0`` (alpha, kappa*, kappa, gamma...); finite unless ``allow_inf``
    (default: only for ``kappa``, see the module docstring)."""
    return _check_scalar(
        name, value, lambda a: a > 0, "> 0 (strictly positive)", _allow_inf(name, allow_inf)
    )


def check_nonnegative(name: str, value, *, allow_inf: bool | None = None):
    """Real value(s) ``>= 0`` (lam, Delta, xi...); finite unless ``allow_inf``."""
    return _check_scalar(name, value, lambda a: a >= 0, ">= 0", _allow_inf(name, allow_inf))


def check_in_range(name: str, value, low, high, *, inclusive: bool = True):
    """Finite real value(s) in ``[low, high]`` (or the open interval)."""
    if inclusive:
        return _check_scalar(name, value, lambda a: (a >= low) & (a <= high), f"in [{low}, {high}]")
    return _check_scalar(name, value, lambda a: (a > low) & (a < high), f"in ({low}, {high})")


def check_key(name: str, key) -> None:
    """A typed PRNG key (``jax.random.key(seed)``), not a raw uint32 ``PRNGKey`` or an int."""
    ok = (
        isinstance(key, jax.Array)
        and key.ndim == 0
        and jax.numpy.issubdtype(key.dtype, jax.dtypes.prng_key)
    )
    if not ok:
        raise ValueError(f"{name} must be a typed key jax.random.key(seed), got {key!r:.60}")


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
