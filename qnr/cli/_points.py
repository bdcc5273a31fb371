"""Batches of theory points from a CSV file (``qnr erm-theory --points FILE``,
``qnr thresholds --points FILE``).

Reading and validation are pure Python (a bad file is refused before JAX is imported). Rows
are grouped by what is static for the compiled program (teacher kind, and for the power law
its exponent, rank and size); each group is one vmapped program
(:func:`qnr.theory.solve_erm_grid`), so a 1024-row file compiles once.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

__all__ = [
    "read_points",
    "solve_points",
    "read_threshold_points",
    "solve_threshold_points",
    "check_point_or_points",
]

_REQUIRED = ("alpha", "kappa_star", "kappa", "lam", "delta")
_OPTIONAL = ("teacher", "gamma", "d")
_MAX_ROWS = 1_000_000


def _number(text: str, name: str, line: int, *, gt=None, ge=None, allow_empty=False):
    text = (text or "").strip()
    if text == "":
        if allow_empty:
            return None
        raise ValueError(f"--points line {line}: column {name} is empty")
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"--points line {line}: {name} = {text!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"--points line {line}: {name} = {text} must be finite")
    if gt is not None and not v > gt:
        raise ValueError(f"--points line {line}: {name} = {text} must be > {gt}")
    if ge is not None and not v >= ge:
        raise ValueError(f"--points line {line}: {name} = {text} must be >= {ge}")
    return v


def _read_rows(path, required: tuple, optional: tuple = ()):
    """``(line, row)`` pairs of the CSV ``path`` (keys stripped), after checking that it is a
    file with every ``required`` column and no column outside ``required + optional``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"--points {str(path)!r} is not a readable file")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in cols]
        if missing:
            raise ValueError(f"--points: missing column(s) {', '.join(missing)} (have {cols})")
        unknown = [c for c in cols if c not in required + optional]
        if unknown:
            raise ValueError(f"--points: unknown column(s) {', '.join(unknown)}")
        rows = []
        for line, raw in enumerate(reader, start=2):
            rows.append((line, {(k or "").strip(): v for k, v in raw.items()}))
            if len(rows) > _MAX_ROWS:
                raise ValueError(f"--points: more than {_MAX_ROWS} rows")
    if not rows:
        raise ValueError("--points: the file has no data rows")
    return rows


def _csv_text(results: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(results[0].keys()), lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def read_points(path) -> list[dict]:
    """Rows of the CSV ``path`` as dicts with ``alpha, kappa_star, kappa (None: unconstrained),
    lam, delta, teacher ('mp' | 'power-law'), gamma, d``; raises ``ValueError`` naming the
    line and column for anything malformed."""
    rows = []
    for line, raw in _read_rows(path, _REQUIRED, _OPTIONAL):
        teacher = (raw.get("teacher") or "mp").strip().replace("_", "-").lower()
        if teacher not in ("mp", "power-law"):
            raise ValueError(f"--points line {line}: teacher must be mp or power-law")
        row = dict(
            alpha=_number(raw["alpha"], "alpha", line, gt=0),
            kappa_star=_number(raw["kappa_star"], "kappa_star", line, gt=0, allow_empty=True),
            kappa=_number(raw["kappa"], "kappa", line, gt=0, allow_empty=True),
            lam=_number(raw["lam"], "lam", line, ge=0),
            delta=_number(raw["delta"], "delta", line, ge=0),
            teacher=teacher,
            gamma=_number(raw.get("gamma"), "gamma", line, ge=0, allow_empty=True),
            d=_number(raw.get("d"), "d", line, ge=1, allow_empty=True),
        )
        if row["kappa_star"] is None:
            if teacher == "mp":
                raise ValueError(f"--points line {line}: kappa_star is required for mp")
            row["kappa_star"] = 1.0  # the Python API's default for PowerLaw
        if teacher == "power-law":
            if row["d"] is None or row["d"] != int(row["d"]) or row["d"] > 100_000:
                raise ValueError(
                    f"--points line {line}: d must be an integer in [1, 100000] for "
                    "the power-law teacher"
                )
            row["d"] = int(row["d"])
            row["gamma"] = 1.0 if row["gamma"] is None else row["gamma"]
        elif row["d"] is not None:
            raise ValueError(f"--points line {line}: d applies to the power-law teacher only")
        rows.append(row)
    return rows


_OUT = ("xi", "tau", "E", "e_test", "e_train", "rank")


def solve_points(rows: list[dict], *, text_csv: bool) -> dict:
    """Solve every row; one compiled program per static group. Returns the ``--json`` object
    ``{"points": [...], "timings": {"compile_s", "solve_s"}, "converged_fraction"}`` (and the
    CSV text under ``"_text"`` for text output)."""
    import jax
    import numpy as np

    from qnr._results import result_names
    from qnr.teachers import PowerLaw
    from qnr.theory.erm import BRANCH_NAMES, ERMSolver, _solve_batch, erm_problem_grid

    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        key = (
            ("mp",) if r["teacher"] == "mp" else ("power-law", r["gamma"], r["kappa_star"], r["d"])
        )
        groups.setdefault(key, []).append(i)
    solver = ERMSolver()
    results: list[dict] = [None] * len(rows)  # type: ignore[list-item]
    compile_s = solve_s = 0.0
    for key, idx in groups.items():
        sel = [rows[i] for i in idx]
        col = {k: np.asarray([r[k] for r in sel], dtype=float) for k in ("alpha", "lam", "delta")}
        kappa = np.asarray([np.inf if r["kappa"] is None else r["kappa"] for r in sel])
        if key[0] == "mp":
            ks = np.asarray([r["kappa_star"] for r in sel])
            probs, _ = erm_problem_grid(
                col["alpha"], kappa_star=ks, lam=col["lam"], Delta=col["delta"], kappa=kappa
            )
        else:
            teacher = PowerLaw(key[1], key[2])
            probs, _ = erm_problem_grid(
                col["alpha"], teacher, lam=col["lam"], Delta=col["delta"], kappa=kappa, d=key[3]
            )
        init = jax.numpy.broadcast_to(
            jax.numpy.asarray([solver.xi0, solver.tau0], probs.alpha.dtype), (len(idx), 2)
        )
        t0 = time.perf_counter()
        compiled = _solve_batch.lower(probs, solver, init).compile()
        t1 = time.perf_counter()
        sol = jax.block_until_ready(compiled(probs, solver, init))
        t2 = time.perf_counter()
        compile_s += t1 - t0
        solve_s += t2 - t1
        vals = {k: np.asarray(getattr(sol, k)) for k in _OUT}
        ok = np.asarray(sol.converged)
        branch = np.asarray(sol.branch)
        names = result_names(sol.result)
        for j, i in enumerate(idx):
            out = dict(rows[i])
            out.update({k: float(vals[k][j]) for k in _OUT})
            out["branch"] = BRANCH_NAMES[int(branch[j])]
            out["converged"] = bool(ok[j])
            out["result"] = names[j]
            results[i] = out
    n_ok = sum(r["converged"] for r in results)
    report = {
        "points": results,
        "timings": {"compile_s": compile_s, "solve_s": solve_s, "groups": len(groups)},
        "converged_fraction": n_ok / len(results),
    }
    if text_csv:
        report["_text"] = _csv_text(results)
    return report


_THRESHOLD_COLUMNS = ("kappa_star", "kappa", "delta")


def read_threshold_points(path) -> list[dict]:
    """Rows of a thresholds CSV (``kappa_star, kappa`` (empty: unconstrained), ``delta``)."""
    return [
        dict(
            kappa_star=_number(raw["kappa_star"], "kappa_star", line, gt=0),
            kappa=_number(raw["kappa"], "kappa", line, gt=0, allow_empty=True),
            delta=_number(raw["delta"], "delta", line, ge=0),
        )
        for line, raw in _read_rows(path, _THRESHOLD_COLUMNS)
    ]


def solve_threshold_points(rows: list[dict], *, text_csv: bool) -> dict:
    """``alpha_BO, alpha_SR, kappa_min, alpha_inter, xi_bar`` for every row, vectorised (one
    program per threshold kind); ``alpha_inter`` at ``delta = 0`` is the ``Delta -> 0+`` limit."""
    import numpy as np

    from qnr._results import result_code, result_names
    from qnr.theory import thresholds as th

    t0 = time.perf_counter()
    ks = np.asarray([r["kappa_star"] for r in rows])
    kap = np.asarray([np.inf if r["kappa"] is None else r["kappa"] for r in rows])
    delta = np.asarray([r["delta"] for r in rows])
    sr = th.strong_recovery(ks, kap)
    a_bo = np.asarray(th.alpha_bo(ks))
    a_inter = np.full(len(rows), np.nan)
    xi_bar = np.zeros(len(rows))
    ok_inter = np.ones(len(rows), bool)
    noisy = delta > 0
    if noisy.any():
        inter = th.interpolation_threshold(delta[noisy], ks[noisy], kap[noisy])
        a_inter[noisy] = np.asarray(inter.alpha_inter)
        xi_bar[noisy] = np.asarray(inter.xi_bar)
        ok_inter[noisy] = np.asarray(result_code(inter.result)) == 0
    if (~noisy).any():
        a_inter[~noisy] = np.asarray(th.alpha_inter_noiseless(ks[~noisy], kap[~noisy]))
    names = result_names(sr.result)
    results = []
    for i, r in enumerate(rows):
        ok = names[i] == "successful" and bool(ok_inter[i])
        results.append(
            dict(
                r,
                alpha_BO=float(a_bo[i]),
                alpha_SR=float(np.asarray(sr.alpha_SR)[i]),
                kappa_min=float(np.asarray(sr.kappa_min)[i]),
                alpha_inter=float(a_inter[i]),
                xi_bar=float(xi_bar[i]),
                converged=ok,
                result="successful" if ok else (names[i] if names[i] != "successful" else "failed"),
            )
        )
    report = {
        "points": results,
        "timings": {"total_s": time.perf_counter() - t0},
        "converged_fraction": sum(r["converged"] for r in results) / len(results),
    }
    if text_csv:
        report["_text"] = _csv_text(results)
    return report


def check_point_or_points(args, flag: str, read) -> bool:
    """Exactly one of ``flag`` (one point) and ``--points FILE`` (a batch) must be given; with
    ``--points`` the file is read and validated now by ``read`` (into ``args.point_rows``),
    before anything is computed. Returns whether a batch was given."""
    if (getattr(args, flag.lstrip("-").replace("-", "_")) is None) == (args.points is None):
        raise ValueError(f"give exactly one of {flag} (one point) or --points FILE (a batch)")
    if args.points is None:
        return False
    args.point_rows = read(args.points)
    return True
