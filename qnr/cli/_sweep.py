"""``qnr sweep CONFIG.toml``: run or resume a sharded, chunked parameter sweep."""

from __future__ import annotations

from qnr.cli._common import add_common_flags, setup_precision


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run or resume a grid sweep described by a TOML file (results: Parquet chunks)",
        description=(
            "Run (or resume) the sweep described by CONFIG (TOML; see qnr.sweep and "
            "examples/sweep_*.toml). Results go to one Parquet file per chunk under --out; "
            "rerunning the same command skips finished chunks. Load them with "
            "qnr.sweep.load(PATH)."
        ),
    )
    add_common_flags(p)
    p.add_argument("config", help="sweep description (TOML)")
    p.add_argument(
        "--out",
        default=None,
        help="results directory (default: qnr-out/sweeps/<name>-<config hash[:8]>)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace results of a DIFFERENT config found in --out (default: refuse)",
    )
    p.add_argument(
        "--max-chunks",
        type=int,
        default=None,
        help="stop after computing this many chunks (resume later with the same command)",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first (multi-host: TPU pods, SLURM)",
    )
    p.set_defaults(func=run)


def run(args) -> dict:
    setup_precision(args)
    import jax

    if args.distributed:
        jax.distributed.initialize()
    from pathlib import Path

    from qnr.sweep import load_config, run_sweep

    config = load_config(args.config)
    out = args.out or Path("qnr-out") / "sweeps" / f"{config.name}-{config.config_hash()[:8]}"
    if args.max_chunks is not None and args.max_chunks < 0:
        raise ValueError(f"--max-chunks must be >= 0, got {args.max_chunks}")
    report = run_sweep(
        config, out, quiet=args.quiet, overwrite=args.overwrite, max_chunks=args.max_chunks
    )
    return {**report.to_dict(), "config_hash": config.config_hash()}
