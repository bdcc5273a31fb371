"""A persistent JAX compilation cache for the command line (opt out: ``QNR_COMPILATION_CACHE=0``).

A fresh ``qnr`` process otherwise recompiles every program it runs (seconds each on CPU). With
the cache, a repeated call loads the compiled executables from disk. The directory is
``$QNR_COMPILATION_CACHE_DIR`` or ``~/.cache/qnr/jax``; set ``QNR_COMPILATION_CACHE=0`` to
disable it. Library users can call :func:`enable_compilation_cache` themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["enable_compilation_cache", "default_cache_dir"]


def default_cache_dir() -> Path:
    env = os.environ.get("QNR_COMPILATION_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qnr" / "jax"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Point JAX's persistent compilation cache at ``path`` (default :func:`default_cache_dir`)
    and cache every program that takes more than 0.2 s to compile. Returns the directory, or
    None when disabled by ``QNR_COMPILATION_CACHE=0`` or when the directory is not writable."""
    if os.environ.get("QNR_COMPILATION_CACHE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    import jax

    cache = Path(path).expanduser() if path is not None else default_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(cache, os.W_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return cache
