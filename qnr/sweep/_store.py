"""Resumable on-disk results: one Parquet file per chunk plus a metadata JSON.

Layout of a results directory::

    metadata.json          config (canonical form), its SHA-256, qnr/jax versions, grid size
    chunks/g000-c00000.parquet   rows of one chunk (written atomically: temp file + rename)
    log.jsonl              one line per computed chunk (name, seconds, devices, time)

A chunk file that exists is complete (it only appears by an atomic rename), so a killed sweep
loses at most the chunk in flight, and a rerun skips every chunk already on disk.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ResultsDir", "load", "load_metadata"]

METADATA = "metadata.json"
CHUNKS = "chunks"
LOG = "log.jsonl"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class ResultsDir:
    """A results directory bound to one config hash."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def chunk_dir(self) -> Path:
        return self.path / CHUNKS

    def chunk_path(self, name: str) -> Path:
        return self.chunk_dir / f"{name}.parquet"

    def has_chunk(self, name: str) -> bool:
        return self.chunk_path(name).is_file()

    def read_metadata(self) -> dict[str, Any] | None:
        meta = self.path / METADATA
        if not meta.is_file():
            return None
        return json.loads(meta.read_text())

    def prepare(self, metadata: dict[str, Any], *, overwrite: bool = False) -> None:
        """Create the directory, or check that it belongs to the same config hash."""
        existing = self.read_metadata()
        if existing is not None and existing.get("config_hash") != metadata["config_hash"]:
            if not overwrite:
                raise ValueError(
                    f"results directory {str(self.path)!r} holds a different sweep (config "
                    f"hash {existing.get('config_hash', '?')[:12]} != "
                    f"{metadata['config_hash'][:12]}); choose another --out or pass --overwrite"
                )
            for f in self.chunk_dir.glob("*.parquet"):
                f.unlink()
            (self.path / LOG).unlink(missing_ok=True)
        self.chunk_dir.mkdir(parents=True, exist_ok=True)
        if existing is None or existing.get("config_hash") != metadata["config_hash"]:
            _atomic_write_bytes(self.path / METADATA, json.dumps(metadata, indent=2).encode())

    def write_chunk(self, name: str, columns: dict[str, np.ndarray], seconds: float, **log):
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({k: np.asarray(v) for k, v in columns.items()})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        _atomic_write_bytes(self.chunk_path(name), sink.getvalue().to_pybytes())
        entry = {"chunk": name, "seconds": round(seconds, 4), "time": time.time(), **log}
        with (self.path / LOG).open("a") as fh:
            fh.write(json.dumps(entry) + "\n")


def load_metadata(path: str | Path) -> dict[str, Any]:
    """The ``metadata.json`` of a results directory."""
    meta = ResultsDir(path).read_metadata()
    if meta is None:
        raise ValueError(f"{str(path)!r} is not a qnr sweep results directory (no {METADATA})")
    return meta


def load(path: str | Path):
    """All finished rows of a sweep as a ``pandas.DataFrame``.

    One row per (grid point, seed) -- one per grid point with ``seed = -1`` for seed-free
    tasks such as ``kind = "theory"`` -- sorted by ``(group, point, seed)``, with every input
    axis and every output as columns. ``df.attrs`` holds the metadata plus ``complete``
    (whether every chunk of the grid is on disk).
    """
    try:
        import pandas as pd
        import pyarrow.parquet as pq
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "qnr.sweep.load needs pandas and pyarrow: pip install 'qnr[dev]' or pandas"
        ) from err
    results = ResultsDir(path)
    meta = load_metadata(path)
    files = sorted(results.chunk_dir.glob("*.parquet"))
    if files:
        df = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
        df = df.sort_values(["group", "point", "seed"], kind="stable").reset_index(drop=True)
    else:
        df = pd.DataFrame()
    df.attrs.update(meta)
    df.attrs["complete"] = len(files) == meta.get("n_chunks")
    return df
