"""``qnr sweep --distributed`` as two local processes (jax.distributed, coordinator on
127.0.0.1, CPU, gloo collectives): the merged results equal a one-process run, a rerun skips
every chunk on all processes, and a refusal on process 0 stops both processes (no hang).

This is the template of a cluster run (README, "Several processes or hosts"): the same
command on every process, ``--coordinator HOST:PORT --num-processes N --process-id I``, one
shared ``--out``.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from qnr.sweep import load

TASK = textwrap.dedent(
    """
    import jax
    import jax.numpy as jnp

    from qnr.sweep import Task


    def build(static, options, floats):
        d = static["d"]

        def fn(params, keys):
            a, delta = params["alpha"], params["delta"]

            def one(k):
                return a * jnp.mean(jax.random.normal(k, (d,), dtype=a.dtype) ** 2) + delta

            return {
                "closed": a + delta,
                "mc": jax.vmap(one)(keys),
                "result": jnp.zeros((), jnp.int32),
            }

        return fn


    TOY = Task(
        name="toy-dist", float_axes={"alpha": None, "delta": 0.0}, static_axes={"d": 4},
        build=build,
    )
    """
)

CONFIG = textwrap.dedent(
    """
    kind = "custom"
    task = "toy_dist_task:TOY"
    name = "toy-dist"
    chunk_size = 3
    [grid]
    alpha = {{ linspace = [0.1, 1.0, {n_alpha}] }}
    delta = [0.0, 0.5]
    d = [4, 8]
    seeds = 3
    """
)


@pytest.fixture
def setup(tmp_path):
    (tmp_path / "toy_dist_task.py").write_text(TASK)
    cfg = tmp_path / "toy.toml"
    cfg.write_text(CONFIG.format(n_alpha=5))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(var, None)
    return tmp_path, cfg, env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(cfg, out, env, timeout=240):
    """Run ``qnr sweep --distributed`` as processes 0 and 1; returns their results."""
    port = _free_port()
    cmd = [sys.executable, "-m", "qnr.cli", "sweep", str(cfg), "--out", str(out), "--json"]
    cmd += ["--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    procs = [
        subprocess.Popen(
            [*cmd, "--process-id", str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=timeout)
            results.append((p.returncode, stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


def test_two_processes_equal_one_process(setup):
    tmp_path, cfg, env = setup
    one = tmp_path / "one"
    res = subprocess.run(
        [sys.executable, "-m", "qnr.cli", "sweep", str(cfg), "--out", str(one), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["process_count"] == 1

    two = tmp_path / "two"
    results = _two_processes(cfg, two, env)
    for i, (rc, stdout, stderr) in enumerate(results):
        assert rc == 0, f"process {i}: {stderr}"
        summary = json.loads(stdout)  # stdout holds exactly the JSON (gloo's chatter: stderr)
        assert summary["process_count"] == 2 and summary["device_count"] == 2
        assert summary["process_index"] == i
        assert summary["chunks_computed"] == summary["n_chunks"] == 8
    merged, single = load(two), load(one)
    assert merged.attrs["complete"] and len(merged) == 20 * 3
    pd.testing.assert_frame_equal(merged, single, check_exact=False, rtol=1e-12)

    # a rerun with two processes: every process learns that all chunks are done
    for rc, stdout, stderr in _two_processes(cfg, two, env):
        assert rc == 0, stderr
        summary = json.loads(stdout)
        assert summary["chunks_skipped"] == 8 and summary["chunks_computed"] == 0


def test_refusal_on_process_zero_stops_both(setup):
    """A different config in --out is refused on process 0; process 1 must not wait forever
    for it in a collective."""
    tmp_path, cfg, env = setup
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "qnr.cli", "sweep", str(cfg), "--out", str(out), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert res.returncode == 0, res.stderr
    other = tmp_path / "other.toml"
    other.write_text(CONFIG.format(n_alpha=4))
    results = _two_processes(other, out, env, timeout=180)
    assert [rc for rc, _, _ in results] == [2, 2], results
    assert "different sweep" in results[0][2]
    assert "process 0 refused" in results[1][2]
