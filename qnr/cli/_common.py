"""Helpers shared by the subcommands: common flags, output directories, JSON output, exit
status, progress.

Nothing here imports JAX or numpy at module level: the parser of every subcommand is built
from these helpers, and ``qnr --help`` must not wait for the numerical stack.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

from qnr._json import to_jsonable, to_jsonable_keep_nonfinite

# Exit status of the ``qnr`` command (documented in README.md and ``qnr --help``).
EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug: an unexpected exception (rerun with --debug for the traceback)
EXIT_USAGE = 2  # bad input: a flag, a config file, an output path; nothing was computed
EXIT_NOT_CONVERGED = 3  # the output was written, but some computation did not converge
EXIT_IO = 4  # the operating system refused a read or write during the run (disk full, ...)
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES_HELP = (
    "exit status: 0 success; 2 bad input (nothing computed, nothing written); "
    "3 some requested computation did not converge (results printed, failed values null); "
    "4 an I/O error during the run; 1 internal error (rerun with --debug); 130 interrupted"
)


def add_common_flags(parser: argparse.ArgumentParser, *, progress: bool = False) -> None:
    """``--json``, ``--float32``, ``--debug`` (and ``--quiet`` for commands with progress)."""
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout (strict JSON: non-finite values are null)",
    )
    parser.add_argument(
        "--float32", action="store_true", help="compute in float32 (default: float64)"
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on an error, show the Python traceback",
    )
    if progress:
        parser.add_argument(
            "--quiet", action="store_true", help="no progress bar on stderr (also with --json)"
        )


def setup_precision(args) -> None:
    """Enable float64 unless ``--float32`` was given (call before creating arrays), and the
    persistent compilation cache (:mod:`qnr._compilation_cache`; ``QNR_COMPILATION_CACHE=0``
    turns it off)."""
    import jax

    from qnr._compilation_cache import enable_compilation_cache

    jax.config.update("jax_enable_x64", not getattr(args, "float32", False))
    enable_compilation_cache()


# ---------------------------------------------------------------- output directories

# Directories created by :func:`prepare_out_dir` in this process; removed again (if still
# empty) when the command fails with bad input, so a rejected run leaves nothing behind.
CREATED_DIRS: list[Path] = []


def prepare_out_dir(path, flag: str = "--out") -> Path:
    """Create the output directory ``path`` (and parents) and check that it is writable,
    BEFORE any computation, so that results are never lost at the end of a long run.

    Raises ``ValueError`` (one line naming ``flag``) if ``path`` names an existing file, a
    parent is not a directory, or the directory cannot be written."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} exists and is not a directory")
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    if p.exists() and not p.is_dir():
        raise ValueError(f"{flag} {str(path)!r}: {str(p)!r} is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{flag} {str(path)!r} cannot be created: {err.strerror}") from None
    CREATED_DIRS.extend(reversed(missing))
    probe = path / f".qnr-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"{flag} {str(path)!r} is not writable: {err.strerror}") from None
    return path


def remove_created_dirs() -> None:
    """Remove the directories :func:`prepare_out_dir` created, innermost first, if empty."""
    while CREATED_DIRS:
        d = CREATED_DIRS.pop()
        try:
            d.rmdir()
        except OSError:
            pass


# ---------------------------------------------------------------- JSON and text output


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list) and len(value) > 8:
        head = ", ".join(_format(v) for v in value[:3])
        return f"[{head}, ... {len(value)} values]"
    return str(value)


def emit(result: dict, args) -> None:
    """Print ``result``: one strict-JSON object with ``--json`` (non-finite values as
    ``null``, listed under ``"non_finite"``), else aligned ``key  value`` lines (or, when the
    handler supplies it, its preformatted text under the key ``"_text"``, e.g. a CSV)."""
    text = result.pop("_text", None) if isinstance(result, dict) else None
    if getattr(args, "json", False):
        nonfinite: dict = {}
        plain = to_jsonable(result, "", nonfinite)
        if nonfinite:
            plain["non_finite"] = {
                k: (v if isinstance(v, str) else ", ".join(f"{n} {t}" for t, n in v.items()))
                for k, v in nonfinite.items()
            }
        sys.stdout.write(json.dumps(plain, allow_nan=False) + "\n")
    elif text is not None:
        sys.stdout.write(text)
    else:
        width = max((len(k) for k in result), default=0)
        for key, value in result.items():
            if hasattr(value, "shape") and hasattr(value, "dtype"):
                value = to_jsonable_keep_nonfinite(value)
            print(f"{key:<{width}}  {_format(value)}")
    sys.stdout.flush()


def failure_summary(result: dict) -> str | None:
    """A one-line description of what did not converge in a handler's ``result`` (``None``
    when everything converged). Recognised keys: ``converged`` (bool), ``result`` (a string,
    ``"successful"`` when fine), ``converged_fraction``, ``n_failed``, ``*_failures``."""
    problems = []
    if result.get("converged") is False:
        problems.append("the solver did not converge")
    res = result.get("result")
    if isinstance(res, str) and res != "successful":
        problems.append(f"result: {res}")
    frac = result.get("converged_fraction")
    if isinstance(frac, int | float) and not (frac >= 1):
        problems.append(f"converged fraction {frac:.3g}")
    for key, value in result.items():
        if (key == "n_failed" or key.endswith("_failures")) and isinstance(value, int) and value:
            problems.append(f"{key} = {value}")
    return "; ".join(problems) or None


# ---------------------------------------------------------------- progress


def progress_enabled(args) -> bool:
    return not (getattr(args, "json", False) or getattr(args, "quiet", False))


def progress_bar(args, **kwargs):
    """A tqdm bar on stderr, disabled with ``--json`` or ``--quiet``."""
    from tqdm.auto import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(disable=not progress_enabled(args), **kwargs)


class Stages:
    """Stage-level progress for a computation that cannot report finer steps: a tqdm bar
    over ``stages`` whose elapsed time keeps ticking (a daemon thread refreshes it), so a
    long compile or solve is visibly alive. Use as a context manager and call
    :meth:`advance` when a stage ends (or as the ``progress(stage_name)`` hook)."""

    def __init__(self, args, stages: list[str], desc: str):
        self.stages = list(stages)
        self.bar = progress_bar(
            args, total=len(self.stages), desc=desc, unit="stage", bar_format=None
        )
        self._stop = threading.Event()
        self._thread = None
        self._i = 0
        self._set(self.stages[0] if self.stages else "")

    def _set(self, name: str) -> None:
        if not self.bar.disable:
            self.bar.set_postfix_str(name, refresh=True)

    def __call__(self, stage: str | None = None) -> None:
        self.advance(stage)

    def advance(self, stage: str | None = None) -> None:
        """Mark the current stage done; ``stage`` names the next one (default: the list)."""
        self._i += 1
        self.bar.update(1)
        nxt = stage or (self.stages[self._i] if self._i < len(self.stages) else "done")
        self._set(nxt)

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.bar.refresh()
            except Exception:  # pragma: no cover - never let the ticker kill the run
                return

    def __enter__(self):
        if not self.bar.disable:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb):
        self._stop.set()
        if exc_type is None and self.bar.n < len(self.stages):
            self.bar.update(len(self.stages) - self.bar.n)
            self._set("done")
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.bar.close()
        return False
