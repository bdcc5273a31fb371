"""Helpers shared by the subcommands: the ``--json`` flag, float64 switch, output."""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--json`` (one JSON object on stdout) and ``--float32`` (default is float64)."""
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--float32", action="store_true", help="compute in float32 (default: float64)"
    )


def setup_precision(args) -> None:
    """Enable float64 unless ``--float32`` was given (call before creating arrays)."""
    import jax

    jax.config.update("jax_enable_x64", not getattr(args, "float32", False))


def to_jsonable(value):
    """Convert numpy/JAX scalars and arrays to plain Python for ``json.dumps``."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        arr = np.asarray(value)
        return to_jsonable(arr.tolist()) if arr.ndim else to_jsonable(arr.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value
    return value


def emit(result: dict, args) -> int:
    """Print ``result``; returns the process exit code."""
    result = to_jsonable(result)
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        width = max((len(k) for k in result), default=0)
        for key, value in result.items():
            if isinstance(value, float):
                value = f"{value:.6g}"
            print(f"{key:<{width}}  {value}")
    return 0
