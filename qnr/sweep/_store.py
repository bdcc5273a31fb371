"""Resumable on-disk results: one Parquet file per chunk plus a metadata JSON.

Layout of a results directory::

    metadata.json          config (canonical form), its SHA-256, qnr/jax versions, grid size
    chunks/g000-c00000.parquet   rows of one chunk (written atomically: temp file + rename)
    log.jsonl              one line per computed chunk (name, seconds, devices, time)
    corrupt/               chunks that failed verification, moved aside (kept as evidence)

Every chunk is self-describing: its Parquet key-value metadata holds the sweep's config hash,
the chunk name, the row count and a SHA-256 of its decoded contents (column names, dtypes
and values), and its data pages carry Parquet CRC checksums. A chunk is *verified* -- read in
full, its checksums and config hash checked -- before a resumed sweep skips it and before
:func:`load` returns its rows. A truncated, corrupt or foreign chunk (another sweep's, or one
without a checksum) is never adopted: a resumed sweep reports it, moves it to ``corrupt/``
and recomputes it; :func:`load` skips it and names it (a ``RuntimeWarning`` and
``df.attrs["bad_chunks"]``). A directory whose ``metadata.json`` was lost is re-adopted only
if every chunk carries the same config hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ResultsDir", "load", "load_metadata", "verify_chunk_file"]

METADATA = "metadata.json"
CHUNKS = "chunks"
CORRUPT = "corrupt"
LOG = "log.jsonl"
FORMAT = "2"  # chunk format: 2 = config hash + content checksum in the Parquet metadata

_KEY_FORMAT = b"qnr.format"
_KEY_HASH = b"qnr.config_hash"
_KEY_CHUNK = b"qnr.chunk"
_KEY_ROWS = b"qnr.rows"
_KEY_SUM = b"qnr.sha256"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def table_digest(table) -> str:
    """SHA-256 of a table's decoded contents: every column (sorted by name) as its name, its
    numpy dtype and its values (raw bytes; strings joined). The same on the table written
    and on the table read back, whatever the Parquet encoding."""
    h = hashlib.sha256()
    for name in sorted(table.column_names):
        arr = table.column(name).to_numpy(zero_copy_only=False)
        h.update(name.encode() + b"\0" + str(arr.dtype).encode() + b"\0")
        if arr.dtype == object:
            h.update("\x1f".join(map(str, arr.tolist())).encode())
        else:
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(b"\x1e")
    return h.hexdigest()


def verify_chunk_file(path: Path, config_hash: str, name: str | None = None):
    """Read and verify one chunk file: ``(table, None)`` if it is intact and belongs to the
    sweep ``config_hash``, else ``(None, reason)``."""
    import pyarrow.parquet as pq

    name = path.name.removesuffix(".parquet") if name is None else name
    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except Exception as err:  # truncated, not Parquet, bad CRC, unreadable
        text = " ".join(str(err).split())[:120]
        return None, f"unreadable (truncated or corrupt: {type(err).__name__}: {text})"
    meta = table.schema.metadata or {}
    if _KEY_SUM not in meta or _KEY_HASH not in meta:
        return None, "no qnr checksum (written by an older qnr or by another program)"
    stored_hash = meta[_KEY_HASH].decode()
    if stored_hash != config_hash:
        return None, f"belongs to another sweep (config hash {stored_hash[:12]})"
    if meta.get(_KEY_CHUNK, b"").decode() != name:
        return None, f"holds chunk {meta.get(_KEY_CHUNK, b'?').decode()!r}, not {name!r}"
    if meta.get(_KEY_ROWS, b"").decode() != str(table.num_rows):
        return None, "row count does not match its metadata (truncated)"
    if table_digest(table) != meta[_KEY_SUM].decode():
        return None, "checksum mismatch (the contents were altered)"
    return table.replace_schema_metadata(None), None


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

    def chunk_files(self) -> list[Path]:
        return sorted(self.chunk_dir.glob("*.parquet")) if self.chunk_dir.is_dir() else []

    def read_metadata(self) -> dict[str, Any] | None:
        meta = self.path / METADATA
        if not meta.is_file():
            return None
        try:
            data = json.loads(meta.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{str(meta)!r} is unreadable or not JSON ({err})") from None
        if not isinstance(data, dict) or "config_hash" not in data:
            raise ValueError(f"{str(meta)!r} is not qnr sweep metadata (no config_hash)")
        return data

    def check_writable(self) -> None:
        """Refuse a path that is a file, or a directory that cannot be written (before work)."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise ValueError(f"results path {str(p)!r} exists and is not a directory")
        q = p
        while not q.exists() and q.parent != q:
            q = q.parent
        if not q.is_dir():
            raise ValueError(f"results path {str(p)!r}: {str(q)!r} is not a directory")
        if not os.access(q, os.W_OK | os.X_OK):
            raise ValueError(f"results path {str(p)!r} is not writable ({str(q)!r})")

    def prepare(self, metadata: dict[str, Any], *, overwrite: bool = False) -> None:
        """Create the directory, or check that it belongs to the same config hash. Without
        ``metadata.json``, existing chunks are adopted only if every one carries the same
        config hash (else: a different sweep, refused unless ``overwrite``)."""
        self.check_writable()
        new_hash = metadata["config_hash"]
        existing = self.read_metadata()
        foreign = None
        if existing is not None and existing.get("config_hash") != new_hash:
            foreign = f"config hash {str(existing.get('config_hash', '?'))[:12]}"
        elif existing is None and self.chunk_files():
            # unreadable chunks (hash None) are bad, not foreign: verify() moves them aside
            hashes = {_chunk_config_hash(f) for f in self.chunk_files()} - {None}
            if hashes - {new_hash}:
                others = sorted(str(h)[:12] for h in hashes - {new_hash})
                foreign = f"no {METADATA}, chunks of config hash {', '.join(others)}"
        if foreign is not None:
            if not overwrite:
                raise ValueError(
                    f"results directory {str(self.path)!r} holds a different sweep ({foreign} "
                    f"!= {new_hash[:12]}); choose another --out or pass --overwrite"
                )
            for f in self.chunk_files():
                f.unlink()
            (self.path / LOG).unlink(missing_ok=True)
        try:
            self.chunk_dir.mkdir(parents=True, exist_ok=True)
            if existing is None or foreign is not None:
                blob = json.dumps(metadata, indent=2).encode()
                _atomic_write_bytes(self.path / METADATA, blob)
        except OSError as err:
            raise ValueError(
                f"results directory {str(self.path)!r} cannot be written: {err.strerror or err}"
            ) from None

    def verify(self, names: list[str], config_hash: str) -> dict[str, str]:
        """Verify the chunks ``names`` found on disk; returns ``{name: reason}`` of the bad
        ones (absent chunks are not listed)."""
        bad = {}
        for name in names:
            path = self.chunk_path(name)
            if path.is_file():
                _, reason = verify_chunk_file(path, config_hash, name)
                if reason is not None:
                    bad[name] = reason
        return bad

    def quarantine(self, name: str) -> Path:
        """Move a bad chunk to ``corrupt/<name>-<time>.parquet`` (so it is recomputed)."""
        dest_dir = self.path / CORRUPT
        dest_dir.mkdir(exist_ok=True)
        dest = dest_dir / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.parquet"
        os.replace(self.chunk_path(name), dest)
        return dest

    def write_chunk(
        self,
        name: str,
        columns: dict[str, np.ndarray],
        seconds: float,
        *,
        config_hash: str,
        **log,
    ):
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({k: np.asarray(v) for k, v in columns.items()})
        table = table.replace_schema_metadata(
            {
                _KEY_FORMAT: FORMAT.encode(),
                _KEY_HASH: config_hash.encode(),
                _KEY_CHUNK: name.encode(),
                _KEY_ROWS: str(table.num_rows).encode(),
                _KEY_SUM: table_digest(table).encode(),
            }
        )
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, write_page_checksum=True)
        _atomic_write_bytes(self.chunk_path(name), sink.getvalue().to_pybytes())
        entry = {"chunk": name, "seconds": round(seconds, 4), "time": time.time(), **log}
        with (self.path / LOG).open("a") as fh:
            fh.write(json.dumps(entry) + "\n")


def _chunk_config_hash(path: Path) -> str | None:
    """The config hash stored in a chunk's Parquet footer (``None``: none or unreadable)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:
        return None
    value = meta.get(_KEY_HASH)
    return None if value is None else value.decode()


def load_metadata(path: str | Path) -> dict[str, Any]:
    """The ``metadata.json`` of a results directory."""
    meta = ResultsDir(path).read_metadata()
    if meta is None:
        raise ValueError(f"{str(path)!r} is not a qnr sweep results directory (no {METADATA})")
    return meta


def load(path: str | Path):
    """All verified rows of a sweep as a ``pandas.DataFrame``.

    One row per (grid point, seed) -- one per grid point with ``seed = -1`` for seed-free
    tasks such as ``kind = "theory"`` -- sorted by ``(group, point, seed)``, with every input
    axis and every output as columns. Each chunk is verified (see the module docstring); bad
    chunks -- unreadable, truncated, altered, from another sweep or without a checksum -- are
    skipped and named in a ``RuntimeWarning``. ``df.attrs`` holds the metadata plus
    ``complete`` (every chunk of the grid is on disk and verified), ``n_chunks_loaded`` and
    ``bad_chunks`` (``{name: reason}``).
    """
    import pandas as pd

    results = ResultsDir(path)
    meta = load_metadata(path)
    frames, bad = [], {}
    for f in results.chunk_files():
        name = f.name.removesuffix(".parquet")
        table, reason = verify_chunk_file(f, meta["config_hash"], name)
        if reason is None:
            frames.append(table.to_pandas())
        else:
            bad[name] = reason
    if bad:
        listing = "; ".join(f"{k}: {v}" for k, v in sorted(bad.items()))
        warnings.warn(
            f"qnr.sweep.load({str(path)!r}) skipped {len(bad)} bad chunk(s) -- {listing}; rerun "
            "the sweep to recompute them",
            RuntimeWarning,
            stacklevel=2,
        )
    if frames:
        df = pd.concat(frames, ignore_index=True)
        df = df.sort_values(["group", "point", "seed"], kind="stable").reset_index(drop=True)
    else:
        df = pd.DataFrame()
    df.attrs.update(meta)
    df.attrs["n_chunks_loaded"] = len(frames)
    df.attrs["bad_chunks"] = bad
    df.attrs["complete"] = not bad and len(frames) == meta.get("n_chunks")
    return df
