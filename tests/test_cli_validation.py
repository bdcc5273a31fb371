"""The command line refuses every bad input before any work: one line on stderr naming the
flag (or config key) and the accepted range, exit status 2, no traceback, no JAX import,
nothing left on disk. Also: strict JSON, exit status 3 for non-convergence, 1 for bugs,
``--debug``, and the lazy imports behind a fast ``--help``."""

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from qnr.cli import main

# (argv, a substring the error line must contain). {tmp} is a scratch directory holding
# the files named below; {file} is an existing regular file.
CLI_CASES = [
    # top level
    (["no-such-command"], "invalid choice"),
    (["erm-theory", "--alpha", "0.3", "--no-such-flag"], "unrecognized arguments"),
    # erm-theory / thresholds / bayes-optimal / info
    (["erm-theory"], "--alpha"),
    (["erm-theory", "--alpha", "inf"], "alpha must be a finite number > 0"),
    (["erm-theory", "--alpha", "nan"], "alpha must be a finite number > 0"),
    (["erm-theory", "--alpha", "-1"], "alpha must be a finite number > 0"),
    (["erm-theory", "--alpha", "abc"], "alpha must be a finite number > 0, got 'abc'"),
    (["erm-theory", "--alpha", "1e400"], "alpha must be a finite number"),
    (["erm-theory", "--alpha", "0.3", "--kappa", "0"], "kappa must be a finite number > 0"),
    (["erm-theory", "--alpha", "0.3", "--kappa", "inf"], "omit --kappa"),
    (["erm-theory", "--alpha", "0.3", "--lam", "-0.1"], "lam must be a finite number >= 0"),
    (["erm-theory", "--alpha", "0.3", "--delta", "inf"], "delta must be a finite number >= 0"),
    (["erm-theory", "--alpha", "0.3", "--teacher", "foo"], "invalid choice: 'foo'"),
    (["erm-theory", "--alpha", "0.3", "--d", "10"], "--d applies to the power-law teacher"),
    (["erm-theory", "--alpha", "0.3", "--teacher", "power-law"], "--d is required"),
    (
        ["erm-theory", "--alpha", "0.3", "--teacher", "power-law", "--d", "2.5"],
        "d must be an integer",
    ),
    (["erm-theory", "--alpha", "0.3", "--gamma", "-1"], "gamma must be a finite number >= 0"),
    (["thresholds", "--kappa-star", "-1"], "kappa_star must be a finite number > 0"),
    (["thresholds", "--kappa-star", "0.5", "--kappa", "inf"], "kappa must be a finite number"),
    (["thresholds", "--kappa-star", "0.5", "--delta", "nan"], "delta must be a finite number"),
    (["thresholds", "--kappa-star", "0.8", "--kappa", "0.3"], "min(kappa_star, 1)"),
    (["bayes-optimal", "--alpha", "0"], "alpha must be a finite number > 0"),
    (
        ["bayes-optimal", "--alpha", "0.2", "--teacher", "power-law", "--d", "0"],
        "d must be an integer >= 1",
    ),
    (["info", "--kappa-star", "0"], "kappa_star must be a finite number > 0"),
    # simulate
    (
        ["simulate", "--alpha", "0.3", "--d", "10", "--seeds", "2", "--kappa", "inf"],
        "kappa must be a finite number",
    ),
    (["simulate", "--alpha", "0.3", "--d", "10", "--seeds", "2", "--kappa", "1e12"], "<= 10000"),
    (
        ["simulate", "--alpha", "0.3", "--lam", "0.1", "--kappa", "-1"],
        "kappa must be a finite number > 0",
    ),
    (["simulate", "--alpha", "0.3"], "needs --lam"),
    (["simulate", "--alpha", "0.3", "--lam", "0"], "--least-squares"),
    (
        ["simulate", "--alpha", "0.3", "--lam", "0.1", "--least-squares"],
        "--least-squares means --lam 0",
    ),
    (
        ["simulate", "--alpha", "0.3", "--lam", "0.1", "--solver", "gd", "--lr", "-1"],
        "lr must be a finite number > 0",
    ),
    (["simulate", "--alpha", "0.3", "--lam", "0.1", "--lr", "0.1"], "--lr applies to --solver gd"),
    (
        ["simulate", "--alpha", "0.3", "--lam", "0.1", "--solver", "gd", "--init-scale", "nan"],
        "init_scale must be a finite number > 0",
    ),
    (
        ["simulate", "--alpha", "0.3", "--lam", "0.1", "--init-scale", "0.3"],
        "--init-scale applies to the network solvers",
    ),
    (
        ["simulate", "--alpha", "0.3", "--lam", "0.1", "--max-steps", "-5"],
        "max_steps must be an integer >= 1",
    ),
    (
        ["simulate", "--alpha", "0.3", "--lam", "0.1", "--max-steps", "1e12"],
        "max_steps must be an integer",
    ),
    (["simulate", "--alpha", "0.3", "--lam", "0.1", "--max-steps", "1e9"], "budget"),
    (["simulate", "--alpha", "0.3", "--lam", "0.1", "--d", "5000"], "of memory, over the limit"),
    (["simulate", "--alpha", "1e9", "--lam", "0.1", "--d", "100000"], "n = "),
    (["simulate", "--alpha", "0.3", "--lam", "0.1", "--d", "1"], "d must be an integer >= 2"),
    (["simulate", "--alpha", "0.3", "--lam", "0.1", "--d", "abc"], "d must be an integer >= 2"),
    (
        ["simulate", "--alpha", "0.3", "--lam", "0.1", "--seeds", "0"],
        "seeds must be an integer >= 1",
    ),
    (
        ["simulate", "--alpha", "0.3", "--lam", "0.1", "--seed", "-1"],
        "seed must be an integer >= 0",
    ),
    (["simulate", "--alpha", "0.3", "--lam", "0.1", "--solver", "sgd"], "invalid choice: 'sgd'"),
    (["simulate", "--alpha", "0.3", "--solver", "gamp", "--lam", "0.1"], "--lam does not apply"),
    (
        ["simulate", "--alpha", "0.3", "--solver", "gamp", "--kappa", "0.5"],
        "--kappa does not apply",
    ),
    # dynamics
    (["dynamics", "--d", "100000"], "d must be an integer >= 2 and <= 20000"),
    (["dynamics", "--kind", "sgd", "--d", "10", "--t-max", "1e12"], "steps, over the budget"),
    (["dynamics", "--kind", "gd", "--d", "10", "--t-max", "1e12"], "steps, over the budget"),
    (["dynamics", "--t-max", "inf"], "t_max must be a finite number > 0"),
    (["dynamics", "--c", "0"], "c must be a finite number > 0"),
    (["dynamics", "--num-times", "2"], "num_times must be an integer >= 3"),
    (["dynamics", "--width", "0"], "width must be an integer >= 1"),
    (["dynamics", "--init", "identity", "--width", "5"], "--init identity needs --width"),
    (["dynamics", "--kind", "sgd", "--batch", "0"], "batch must be an integer >= 1"),
    (["dynamics", "--kind", "gd", "--d", "2000"], "of memory, over the limit"),
    # curve / phase-diagram
    (["curve", "--out", "{file}"], "exists and is not a directory"),
    (["curve", "--out", "{file}/sub"], "is not a directory"),
    (["curve", "--d", "1"], "d must be an integer >= 2"),
    (["curve", "--alpha-min", "0.5", "--alpha-max", "0.2"], "--alpha-max must be > --alpha-min"),
    (["curve", "--lam", "-1"], "lam must be a finite number >= 0"),
    (["curve", "--kappa", "inf"], "kappa must be a finite number"),
    (["curve", "--seeds", "0"], "seeds must be an integer >= 1"),
    (["curve", "--alphas", "0"], "alphas must be an integer >= 1"),
    (["curve", "--theory-points", "1"], "theory_points must be an integer >= 2"),
    (["curve", "--max-steps", "0"], "max_steps must be an integer >= 1"),
    (["curve", "--d", "20000", "--alpha-max", "1"], "of memory, over the limit"),
    (["phase-diagram", "--out", "{file}"], "exists and is not a directory"),
    (["phase-diagram", "--alphas", "1"], "alphas must be an integer >= 2"),
    (["phase-diagram", "--kappa-star-max", "0.05"], "--kappa-star-max must be > --kappa-star-min"),
    (["phase-diagram", "--lam", "nan"], "lam must be a finite number >= 0"),
    (["phase-diagram", "--alphas", "2000", "--kappa-stars", "2000"], "over the limit of 200000"),
    # sweep
    (["sweep", "{tmp}/missing.toml"], "does not exist"),
    (["sweep", "{tmp}"], "is not a file"),
    (["sweep", "{tmp}/bad_toml.toml"], "is not valid TOML"),
    (["sweep", "{tmp}/binary.toml"], "is not UTF-8"),
    (["sweep", "{tmp}/grid_scalar.toml"], "grid must be a table"),
    (["sweep", "{tmp}/options_scalar.toml"], "options must be a table"),
    (["sweep", "{tmp}/no_kind.toml"], "needs kind"),
    (["sweep", "{tmp}/huge_chunk.toml"], "chunk_size must be an integer >= 1 and <= 1000000"),
    (["sweep", "{tmp}/zero_seeds.toml"], "seeds must be an integer >= 1"),
    (["sweep", "{tmp}/inf_alpha.toml"], "'alpha': inf is not a valid value"),
    (["sweep", "{tmp}/neg_alpha.toml"], "grid axis 'alpha' must be > 0"),
    (["sweep", "{tmp}/bad_d.toml"], "grid axis 'd' must be an integer"),
    (["sweep", "{tmp}/bad_teacher.toml"], "grid axis 'teacher' must be one of"),
    (["sweep", "{tmp}/str_linspace.toml"], "linspace start must be a number"),
    (["sweep", "{tmp}/traversal.toml"], "name must be"),
    (["sweep", "{tmp}/unknown_key.toml"], "unknown sweep config keys"),
    (["sweep", "{tmp}/bad_max_steps.toml"], "option 'max_steps' must be an integer >= 1"),
    (["sweep", "{tmp}/nan_rtol.toml"], "option 'rtol' must be finite"),
    (["sweep", "{tmp}/bad_optimizer.toml"], "option 'optimizer' must be one of"),
    (["sweep", "{tmp}/huge_grid.toml"], "over the limit of 10000000"),
    (["sweep", "{tmp}/memory.toml"], "of memory, over the limit"),
    (["sweep", "{tmp}/ok.toml", "--out", "{file}"], "exists and is not a directory"),
    (["sweep", "{tmp}/ok.toml", "--max-chunks", "-1"], "max_chunks must be an integer >= 0"),
    (["sweep", "{tmp}/ok.toml", "--num-processes", "2"], "need --distributed"),
    (["sweep", "{tmp}/ok.toml", "--distributed", "--coordinator", "nohost"], "HOST:PORT"),
    (
        ["sweep", "{tmp}/ok.toml", "--distributed", "--num-processes", "2", "--process-id", "5"],
        "--process-id must be in [0, 1]",
    ),
]

CONFIGS = {
    "bad_toml.toml": 'kind = "theory"\n[grid\nalpha = 1\n',
    "grid_scalar.toml": 'kind = "theory"\ngrid = 3\n',
    "options_scalar.toml": 'kind = "theory"\noptions = "fast"\n[grid]\nalpha = 0.3\n',
    "no_kind.toml": "[grid]\nalpha = 0.3\n",
    "huge_chunk.toml": 'kind = "theory"\nchunk_size = 9999999999\n[grid]\nalpha = 0.3\n',
    "zero_seeds.toml": 'kind = "simulation"\n[grid]\nalpha = 0.3\nseeds = 0\n',
    "inf_alpha.toml": 'kind = "theory"\n[grid]\nalpha = [0.3, inf]\n',
    "neg_alpha.toml": 'kind = "theory"\n[grid]\nalpha = [-0.3]\n',
    "bad_d.toml": 'kind = "simulation"\n[grid]\nalpha = 0.3\nd = 2.5\n',
    "bad_teacher.toml": 'kind = "theory"\n[grid]\nalpha = 0.3\nteacher = "wishart"\n',
    "str_linspace.toml": 'kind = "theory"\n[grid]\nalpha = { linspace = ["a", 1, 3] }\n',
    "traversal.toml": 'kind = "theory"\nname = "../../etc"\n[grid]\nalpha = 0.3\n',
    "unknown_key.toml": 'kind = "theory"\ncolour = "red"\n[grid]\nalpha = 0.3\n',
    "bad_max_steps.toml": 'kind = "simulation"\n[grid]\nalpha = 0.3\n[options]\nmax_steps = -5\n',
    "nan_rtol.toml": 'kind = "simulation"\n[grid]\nalpha = 0.3\n[options]\nrtol = nan\n',
    "bad_optimizer.toml": (
        'kind = "simulation"\n[grid]\nalpha = 0.3\nsolver = "network"\n[options]\n'
        'optimizer = "foo"\n'
    ),
    "huge_grid.toml": (
        'kind = "theory"\n[grid]\nalpha = { linspace = [0.1, 1, 10000] }\n'
        "lam = { linspace = [0.1, 1, 10000] }\n"
    ),
    "memory.toml": (
        'kind = "simulation"\nchunk_size = 100000\n[grid]\n'
        "alpha = { linspace = [0.1, 0.9, 100000] }\nd = 200\nseeds = 8\n"
    ),
    "ok.toml": 'kind = "theory"\n[grid]\nalpha = [0.3]\n',
}

# Run every case in ONE fresh interpreter: time each error, and check that JAX was never
# imported (the parser and every pre-work check are pure Python).
RUNNER = textwrap.dedent(
    """
    import contextlib, io, json, sys, time
    from qnr.cli import main

    out = []
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
        out.append({"rc": rc, "err": err.getvalue(), "s": time.perf_counter() - t0,
                    "jax": "jax" in sys.modules})
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_bad")
    for name, text in CONFIGS.items():
        (tmp / name).write_text(text)
    (tmp / "binary.toml").write_bytes(b"\xff\xfe\x00kind")
    (tmp / "afile").write_text("precious")
    return tmp


def _argv(argv, tmp):
    return [a.format(tmp=tmp, file=tmp / "afile") for a in argv]


@pytest.fixture(scope="module")
def outcomes(scratch):
    argvs = [_argv(argv, scratch) for argv, _ in CLI_CASES]
    env = dict(os.environ, QNR_MEMORY_LIMIT="8G", JAX_PLATFORMS="cpu")
    env.pop("QNR_MAX_STEPS", None)
    res = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(argvs)],
        capture_output=True,
        text=True,
        cwd=scratch,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.parametrize("i", range(len(CLI_CASES)), ids=[" ".join(c[0])[:60] for c in CLI_CASES])
def test_bad_input_is_one_line_exit_2_before_work(outcomes, scratch, i):
    argv, expected = CLI_CASES[i]
    got = outcomes[i]
    lines = got["err"].strip().splitlines()
    assert got["rc"] == 2, got
    assert len(lines) == 1, got["err"]
    assert lines[0].startswith("qnr") and "error:" in lines[0]
    assert expected in lines[0], lines[0]
    assert "Traceback" not in got["err"]
    assert not got["jax"], "JAX was imported before the input was refused"


def test_errors_are_fast_and_leave_nothing_behind(outcomes, scratch):
    times = sorted(o["s"] for o in outcomes)
    assert times[len(times) // 2] < 0.5, f"median time to the error {times[len(times) // 2]}"
    assert (scratch / "afile").read_text() == "precious"
    assert not (scratch / "qnr-out").exists()  # no default output directory was created
    assert sorted(p.name for p in scratch.iterdir()) == sorted([*CONFIGS, "binary.toml", "afile"])


def test_kappa_inf_is_refused_by_simulate(capsys):
    """The issue's case: --kappa inf (or 1e12) used to overflow m to -2147483648."""
    for value in ("inf", "+inf", "1e12"):
        rc = main(["simulate", "--alpha", "0.3", "--d", "10", "--seeds", "2", "--kappa", value])
        err = capsys.readouterr().err
        assert rc == 2 and "kappa" in err and "unconstrained" in err


def test_rejected_run_removes_the_directories_it_created(tmp_path, capsys):
    out = tmp_path / "a" / "b"
    assert main(["curve", "--out", str(out), "--alpha-min", "0.5", "--alpha-max", "0.2"]) == 2
    assert not (tmp_path / "a").exists()


def test_unwritable_out_is_refused_before_work(tmp_path, capsys):
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # root writes anywhere: use /proc
        if not os.path.isdir("/proc/self"):
            pytest.skip("running as root without /proc")
        locked = Path("/proc/self")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
    try:
        for cmd in (["curve"], ["phase-diagram"]):
            assert main([*cmd, "--out", str(locked / "new")]) == 2
            assert "cannot be created" in capsys.readouterr().err
        assert main(["curve", "--out", str(locked)]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        if locked.parent == tmp_path:
            locked.chmod(0o700)


# ---------------------------------------------------------------- exit status, JSON, --debug


def _fake_module(monkeypatch):
    """A subcommand ``fake`` whose handler misbehaves on demand."""
    from qnr.cli import _common

    def run(args):
        if args.mode == "nonfinite":
            return {
                "x": float("nan"),
                "alpha_SR": float("inf"),
                "nested": {"y": -float("inf")},
                "arr": np.array([1.0, np.nan, np.inf]),
                "converged": False,
            }
        if args.mode == "ok":
            return {"x": 1.5, "converged": True, "n_failed": 0}
        if args.mode == "partial":
            return {"converged_fraction": 0.5}
        if args.mode == "bad-late":  # a bad input found after the output dir was made
            _common.prepare_out_dir(args.out)
            raise ValueError("late refusal")
        if args.mode == "crash":
            raise RuntimeError("boom")
        if args.mode == "oserror":
            raise OSError(28, "No space left on device")
        raise KeyboardInterrupt

    def register(sub):
        p = sub.add_parser("fake")
        _common.add_common_flags(p)
        p.add_argument("mode")
        p.add_argument("--out", default="fake-out")
        p.set_defaults(func=run)

    mod = types.ModuleType("qnr_fake_cmd")
    mod.register = register
    monkeypatch.setitem(sys.modules, "qnr_fake_cmd", mod)
    import qnr.cli

    monkeypatch.setattr(
        qnr.cli, "SUBCOMMAND_MODULES", [*qnr.cli.SUBCOMMAND_MODULES, "qnr_fake_cmd"]
    )


def _strict_loads(text):
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_json_is_strict_and_nonconvergence_exits_3(monkeypatch, capsys):
    _fake_module(monkeypatch)
    assert main(["fake", "nonfinite", "--json"]) == 3
    cap = capsys.readouterr()
    out = _strict_loads(cap.out)
    assert out["x"] is None and out["alpha_SR"] is None and out["nested"]["y"] is None
    assert out["arr"] == [1.0, None, None]
    assert out["non_finite"] == {
        "x": "nan",
        "alpha_SR": "inf",
        "nested.y": "-inf",
        "arr[]": "1 nan, 1 inf",
    }
    assert "not converged" in cap.err and len(cap.err.strip().splitlines()) == 1
    assert main(["fake", "nonfinite"]) == 3  # text mode prints nan/inf as such
    assert "inf" in capsys.readouterr().out
    assert main(["fake", "partial", "--json"]) == 3
    assert "converged fraction 0.5" in capsys.readouterr().err
    assert main(["fake", "ok", "--json"]) == 0
    assert _strict_loads(capsys.readouterr().out)["x"] == 1.5


def test_internal_errors_exit_1_one_line_and_debug_shows_traceback(monkeypatch, capsys):
    _fake_module(monkeypatch)
    assert main(["fake", "crash"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: RuntimeError: boom" in err
    assert "--debug" in err
    with pytest.raises(RuntimeError, match="boom"):
        main(["fake", "crash", "--debug"])
    with pytest.raises(RuntimeError, match="boom"):
        main(["--debug", "fake", "crash"])
    assert main(["fake", "oserror"]) == 4
    assert "No space left" in capsys.readouterr().err
    assert main(["fake", "interrupt"]) == 130


def test_late_refusal_removes_created_output_dir(monkeypatch, tmp_path, capsys):
    _fake_module(monkeypatch)
    out = tmp_path / "x" / "y"
    assert main(["fake", "bad-late", "--out", str(out)]) == 2
    assert "late refusal" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    (tmp_path / "keep").mkdir()
    assert main(["fake", "bad-late", "--out", str(tmp_path / "keep")]) == 2
    assert (tmp_path / "keep").is_dir()  # existing directories are never removed


# ---------------------------------------------------------------- lazy imports


def test_help_and_version_import_no_numerics():
    code = textwrap.dedent(
        """
        import contextlib, io, sys
        from qnr.cli import SUBCOMMAND_MODULES, build_parser, main
        names = [m.removeprefix("qnr.cli._").replace("_", "-") for m in SUBCOMMAND_MODULES]
        names = [{"erm-theory": "erm-theory", "bayes": "bayes-optimal"}.get(n, n) for n in names]
        with contextlib.redirect_stdout(io.StringIO()) as out:
            codes = [main(["--help"]), main(["--version"])]
            codes += [main([n, "--help"]) for n in names]
        heavy = sorted(m for m in ("jax", "numpy", "optax", "equinox", "qnr.sim", "qnr.theory",
                                   "pyarrow", "matplotlib") if m in sys.modules)
        print(codes, heavy, "qnr " in out.getvalue())
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"{[0] * 11} [] True", res.stdout


def test_import_qnr_is_lazy_but_complete():
    code = (
        "import sys, qnr; assert 'jax' not in sys.modules; "
        "missing = [n for n in qnr.__all__ if not hasattr(qnr, n)]; "
        "assert not missing, missing; print(qnr.sweep.load.__module__)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "qnr.sweep._store"


# ---------------------------------------------------------------- flags reach the work; progress


def test_simulate_flags_reach_the_solver(capsys):
    """--max-steps used to be accepted and ignored: 3 iterations cannot converge, so every
    seed fails, the means are null in JSON (listed as non-finite) and the exit status is 3."""
    argv = ["simulate", "--alpha", "0.3", "--lam", "0.05", "--d", "8", "--seeds", "2"]
    assert main([*argv, "--max-steps", "3", "--json"]) == 3
    cap = capsys.readouterr()
    out = _strict_loads(cap.out)
    assert out["converged_fraction"] == 0.0 and out["E_mean"] is None
    assert out["non_finite"]["E_mean"] == "nan"
    assert "not converged" in cap.err


def test_stage_progress_on_stderr_and_silent_with_json(capsys):
    import argparse

    from qnr.cli._common import Stages

    for flags, shown in (({}, True), ({"json": True}, False), ({"quiet": True}, False)):
        args = argparse.Namespace(**flags)
        with Stages(args, ["theory", "simulation"], "qnr test") as progress:
            progress("simulation")
        cap = capsys.readouterr()
        assert cap.out == ""
        assert ("qnr test" in cap.err and "simulation" in cap.err and "2/2" in cap.err) == shown
        assert (cap.err == "") == (not shown)
