"""``qnr sweep CONFIG.toml``: run or resume a sharded, chunked parameter sweep."""

from __future__ import annotations

import os

from qnr.cli._args import integer
from qnr.cli._common import add_common_flags, setup_precision

HELP = "run or resume a grid sweep described by a TOML file (results: Parquet chunks)"
DESCRIPTION = (
    "Run (or resume) the sweep described by CONFIG (TOML; see qnr.sweep and "
    "examples/sweep_*.toml). Results go to one Parquet file per chunk under --out; "
    "rerunning the same command verifies the chunks on disk (checksum, config hash), "
    "skips the good ones and recomputes bad ones (moved to corrupt/). Load them with "
    "qnr.sweep.load(PATH). Several processes (hosts): --distributed, see README."
)


def register(sub) -> None:
    p = sub.add_parser("sweep", help=HELP, description=DESCRIPTION)
    add_common_flags(p, progress=True)
    p.add_argument("config", help="sweep description (TOML)")
    p.add_argument(
        "--out",
        default=None,
        help="results directory (default: qnr-out/sweeps/<name>-<config hash[:8]>)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace results of a DIFFERENT config found in --out (default: refuse)",
    )
    p.add_argument(
        "--max-chunks",
        type=integer("max_chunks", ge=0),
        default=None,
        help="stop after computing this many chunks (resume later with the same command)",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first (several processes or hosts)",
    )
    p.add_argument(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="with --distributed: address of process 0 (default: $JAX_COORDINATOR_ADDRESS, "
        "else auto-detected on SLURM / TPU pods)",
    )
    p.add_argument(
        "--num-processes",
        type=integer("num_processes", ge=1, le=100_000),
        default=None,
        help="with --distributed: number of processes (default: $JAX_NUM_PROCESSES or auto)",
    )
    p.add_argument(
        "--process-id",
        type=integer("process_id", ge=0, le=100_000),
        default=None,
        help="with --distributed: index of this process (default: $JAX_PROCESS_ID or auto)",
    )
    p.set_defaults(func=run, check=check)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name} must be an integer, got {value!r}") from None


def check(args) -> None:
    """Read and validate the config (no JAX yet), the distributed flags and --out."""
    from pathlib import Path

    from qnr.sweep._config import check_memory_budget, load_config
    from qnr.sweep._store import ResultsDir

    dist_flags = [args.coordinator, args.num_processes, args.process_id]
    if not args.distributed and any(v is not None for v in dist_flags):
        raise ValueError("--coordinator/--num-processes/--process-id need --distributed")
    if args.distributed:
        if args.coordinator is None:
            args.coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS") or None
        if args.num_processes is None:
            args.num_processes = _env_int("JAX_NUM_PROCESSES")
        if args.process_id is None:
            args.process_id = _env_int("JAX_PROCESS_ID")
        if args.coordinator is not None:
            host, _, port = args.coordinator.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"--coordinator must be HOST:PORT, got {args.coordinator!r}")
        n, i = args.num_processes, args.process_id
        if n is not None and i is not None and not 0 <= i < n:
            raise ValueError(f"--process-id must be in [0, {n - 1}], got {i}")
    config = load_config(args.config)
    check_memory_budget(config)
    out = args.out
    if out is None:
        out = Path("qnr-out") / "sweeps" / f"{config.name}-{config.config_hash()[:8]}"
    args.out = str(out)
    args.loaded_config = config
    ResultsDir(out).check_writable()


class _StdoutToStderr:
    """Send file descriptor 1 to stderr for the duration (the collectives' C++ libraries,
    e.g. gloo, print connection messages on stdout, which must hold only the JSON)."""

    def __enter__(self):
        import sys

        sys.stdout.flush()
        self._saved = os.dup(1)
        os.dup2(2, 1)
        return self

    def __exit__(self, *exc):
        import sys

        sys.stdout.flush()
        os.dup2(self._saved, 1)
        os.close(self._saved)
        return False


def run(args) -> dict:
    if not args.distributed:
        return _run(args)
    with _StdoutToStderr():
        return _run(args)


def _run(args) -> dict:
    setup_precision(args)
    import jax

    if args.distributed:
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    from qnr.sweep import run_sweep

    config = args.loaded_config
    quiet = args.quiet or args.json
    report = run_sweep(
        config, args.out, quiet=quiet, overwrite=args.overwrite, max_chunks=args.max_chunks
    )
    out = {**report.to_dict(), "config_hash": config.config_hash()}
    if args.distributed:
        out["process_index"] = jax.process_index()
    return out
