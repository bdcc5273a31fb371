"""JSON helpers (base layer): numpy/JAX values to plain Python, strict JSON.

Nothing here imports JAX or numpy at module level (the ``qnr`` command line imports this
module before its handlers run).
"""

from __future__ import annotations

import json
import math


def to_jsonable(value, _path: str = "", _nonfinite: dict | None = None):
    """Convert numpy/JAX scalars and arrays to plain Python for ``json.dumps``.

    Non-finite floats (NaN, +-inf) become ``None`` -- JSON has no such numbers; if
    ``_nonfinite`` is a dict, the path of each replaced value is recorded there."""
    if isinstance(value, dict):
        return {
            str(k): to_jsonable(v, f"{_path}.{k}" if _path else str(k), _nonfinite)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [to_jsonable(v, f"{_path}[]", _nonfinite) for v in value]
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        import numpy as np

        arr = np.asarray(value)
        plain = arr.tolist() if arr.ndim else arr.item()
        return to_jsonable(plain, _path, _nonfinite)
    if isinstance(value, float) and not math.isfinite(value):
        if _nonfinite is not None:
            text = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
            if _path.endswith("[]"):
                counts = _nonfinite.setdefault(_path, {})
                counts[text] = counts.get(text, 0) + 1
            else:
                _nonfinite[_path] = text
        return None
    return value


def dumps(value) -> str:
    """Strict JSON (``allow_nan=False``): never emits ``NaN`` / ``Infinity`` tokens."""
    return json.dumps(to_jsonable(value), allow_nan=False)


def to_jsonable_keep_nonfinite(value):
    """A numpy/JAX array or scalar as plain Python, NaN and inf kept (for text output)."""
    import numpy as np

    arr = np.asarray(value)
    return arr.tolist() if arr.ndim else arr.item()
