"""Foundation: teachers, data, sensing operators, exact metrics, validation, CLI, README."""

import json
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qnr
from qnr.sim import adjoint_sensing, apply_sensing, network_output

ROOT = Path(__file__).resolve().parents[1]


def dense_Z(X):
    d = X.shape[1]
    return (jnp.einsum("ni,nj->nij", X, X) - jnp.eye(d)) / jnp.sqrt(d)


def test_sensing_matches_dense_reference(key):
    d, n = 6, 40
    k1, k2, k3 = jax.random.split(key, 3)
    X = jax.random.normal(k1, (n, d))
    A = jax.random.normal(k2, (d, d))
    S = A + A.T
    r = jax.random.normal(k3, (n,))
    Z = dense_Z(X)
    np.testing.assert_allclose(apply_sensing(X, S), jnp.einsum("nij,ij->n", Z, S), rtol=1e-12)
    np.testing.assert_allclose(adjoint_sensing(X, r), jnp.einsum("n,nij->ij", r, Z), rtol=1e-12)
    # adjoint identity <A(S), r> = <S, A*(r)>
    np.testing.assert_allclose(
        jnp.dot(apply_sensing(X, S), r), jnp.sum(S * adjoint_sensing(X, r)), rtol=1e-12
    )
    W = jax.random.normal(k2, (d, 3))
    np.testing.assert_allclose(network_output(X, W), apply_sensing(X, W @ W.T), rtol=1e-12)


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_label_statistics(key, noise):
    d, n = 60, 20000
    data = qnr.make_dataset(key, qnr.MarchenkoPastur(0.5), d=d, n=n, Delta=noise)
    y = np.asarray(data.y)
    q_finite = float(jnp.sum(data.S_star**2) / d)
    # mean 0 within 5 standard errors
    assert abs(y.mean()) < 5 * y.std() / np.sqrt(n)
    # variance 2 Tr S*^2/d + Delta within 5 standard errors of the sample variance
    target = 2 * q_finite + noise
    se = np.std((y - y.mean()) ** 2) / np.sqrt(n)
    assert abs(y.var() - target) < 5 * se
    # the finite-d Tr S*^2/d fluctuates around Q0 + 1/m* = 3 + 1/30 with std ~0.21 at d = 60
    # (measured over 200 teacher seeds): the asymptotic label variance 2 Q0 + Delta holds
    # within that teacher-to-teacher fluctuation
    assert abs(q_finite - (3.0 + 1 / 30)) < 4 * 0.22


def test_haar_orthogonal_moments(key):
    d, reps = 4, 4000
    keys = jax.random.split(key, reps)
    O = jax.vmap(lambda k: qnr.teachers.haar_orthogonal(k, d))(keys)
    np.testing.assert_allclose(O[0] @ O[0].T, np.eye(d), atol=1e-12)
    u = np.asarray(O[:, 0, 0])
    # uniform on the sphere: E u^2 = 1/d, E u^4 = 3/(d(d+2)); also the sign is symmetric
    assert abs(np.mean(u**2) - 1 / d) < 5 * np.std(u**2) / np.sqrt(reps)
    assert abs(np.mean(u**4) - 3 / (d * (d + 2))) < 5 * np.std(u**4) / np.sqrt(reps)
    assert abs(np.mean(u)) < 5 * np.std(u) / np.sqrt(reps)


def test_mp_teacher_spectrum(key):
    d, kappa_star = 200, 0.5
    t = qnr.MarchenkoPastur(kappa_star)
    m_star = t.width(d)
    keys = jax.random.split(key, 8)
    q = np.mean([float(jnp.sum(t.sample(k, d) ** 2) / d) for k in keys])
    # exact finite-size mean: E Tr S^2/d = 1 + 1/kappa* + 1/m*  (Wishart second moment)
    assert abs(q - (1 + d / m_star + 1 / m_star)) < 0.02
    eig = np.asarray(t.eigenvalues(d, keys[0]))
    assert np.all(np.diff(eig) <= 1e-12)
    assert np.sum(eig > 1e-8) == m_star  # atom at zero of mass 1 - kappa*
    np.testing.assert_allclose(float(t.Q0), 3.0)
    np.testing.assert_allclose(float(t.moment(2)), 3.0)
    np.testing.assert_allclose(float(t.moment(3)), 1 + 3 / 0.5 + 1 / 0.25)


def test_power_law_teacher(key):
    d = 50
    t = qnr.PowerLaw(gamma=1.5, kappa_star=0.4)
    w = np.asarray(t.eigenvalues(d))
    assert t.rank(d) == 20
    np.testing.assert_allclose(np.sum(w**2), d)
    np.testing.assert_allclose(w[:20] / w[0], np.arange(1, 21) ** -1.5, rtol=1e-12)
    assert np.all(w[20:] == 0)
    S = t.sample(key, d)
    np.testing.assert_allclose(np.linalg.eigvalsh(np.asarray(S))[::-1], w, atol=1e-10)
    np.testing.assert_allclose(float(jnp.sum(S**2) / d), 1.0, rtol=1e-10)


def test_user_spectrum_and_density(key):
    vals = np.array([3.0, 1.0, 0.5, 0.0])
    t = qnr.Spectrum(vals)
    S = t.sample(key, 4)
    np.testing.assert_allclose(np.linalg.eigvalsh(np.asarray(S))[::-1], vals, atol=1e-12)
    np.testing.assert_allclose(float(t.Q0), np.mean(vals**2))
    uni = qnr.Spectrum.from_density(lambda x: np.ones_like(x), (0.0, 2.0), 1000)
    np.testing.assert_allclose(float(uni.moment(1)), 1.0, atol=1e-3)
    np.testing.assert_allclose(float(uni.moment(2)), 4 / 3, atol=1e-3)


def test_population_metric_identity(key):
    """Monte-Carlo E[(y - yhat)^2]/4 equals (E + Delta/2)/2 within 2%."""
    d, n, noise = 30, 200000, 0.3
    k1, k2, k3 = jax.random.split(key, 3)
    data = qnr.make_dataset(k1, qnr.MarchenkoPastur(1.0), d=d, n=n, Delta=noise)
    W = jax.random.normal(k2, (d, 10)) / jnp.sqrt(10.0)
    S = W @ W.T
    mc = float(jnp.mean((data.y - apply_sensing(data.X, S)) ** 2) / 4)
    exact = float(qnr.e_test_from_error(qnr.matrix_error(S, data.S_star), noise))
    assert abs(mc / exact - 1) < 0.02


def test_conversions():
    assert qnr.lambda_tilde_from_lam(0.05, 0.3) == pytest.approx(0.06)
    assert qnr.lam_from_lambda_tilde(0.06, 0.3) == pytest.approx(0.05)
    assert qnr.mmse_from_error(0.5, 0.5) == pytest.approx(0.25)
    assert qnr.error_from_mmse(0.25, 0.5) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda k: qnr.make_dataset(k, qnr.MarchenkoPastur(0.5), d=0, n=10), "d"),
        (lambda k: qnr.make_dataset(k, qnr.MarchenkoPastur(0.5), d=-3, n=10), "d"),
        (lambda k: qnr.make_dataset(k, qnr.MarchenkoPastur(0.5), d=5, n=0), "n"),
        (lambda k: qnr.make_dataset(k, qnr.MarchenkoPastur(0.5), d=5, n=10, Delta=-1), "Delta"),
        (lambda k: qnr.MarchenkoPastur(0.0), "kappa_star"),
        (lambda k: qnr.MarchenkoPastur(-0.5), "kappa_star"),
        (lambda k: qnr.PowerLaw(-1.0), "gamma"),
        (lambda k: qnr.Spectrum([1.0, -0.1]), "values"),
        (lambda k: qnr.Spectrum(np.ones((2, 2))), "values"),
        (lambda k: qnr.make_dataset_from_matrix(k, -np.eye(3), n=5), "S_star"),
        (lambda k: qnr.make_dataset_from_matrix(k, np.ones((3, 2)), n=5), "S_star"),
        (
            lambda k: qnr.make_dataset_from_matrix(k, np.array([[1.0, 2.0], [0.0, 1.0]]), 5),
            "S_star",
        ),
        (lambda k: qnr.sim.n_samples(0.0, 10), "alpha"),
        (lambda k: qnr.lambda_tilde_from_lam(-0.1, 1.0), "lam"),
        (lambda k: qnr.e_test_from_error(1.0, -0.1), "Delta"),
        (lambda k: qnr.make_dataset(0, qnr.MarchenkoPastur(0.5), d=5, n=10), "key"),
        (lambda k: qnr.make_dataset_from_matrix(7, np.eye(3), n=5), "key"),
        (lambda k: qnr.theory.solve_erm("x"), "problem"),
        (
            lambda k: qnr.sim.simulate(qnr.MarchenkoPastur(0.5), 0.3, kappa=np.inf, solver="gd"),
            "kappa",
        ),
    ],
)
def test_bad_input_raises_naming_parameter(key, call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call(key)


def _readme_python_block():
    text = (ROOT / "README.md").read_text()
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def test_readme_example_prints_zero_predictor_error():
    out = subprocess.run(
        [sys.executable, "-c", _readme_python_block()],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    values = [float(v) for v in re.findall(r":\s*([0-9.]+)\s*$", out, re.M)]
    assert len(values) == 2
    finite, limit = values
    assert limit == pytest.approx((3.0 + 0.05) / 2)
    # finite-d value: Tr S*^2/d = 1 + 1/kappa* + O(1/d) fluctuations
    assert abs(finite - limit) < 0.05 * limit


def test_cli_version_and_json():
    run = [sys.executable, "-m", "qnr.cli"]
    out = subprocess.run(run + ["--version"], capture_output=True, text=True, check=True)
    assert qnr.__version__ in out.stdout
    out = subprocess.run(
        run + ["info", "--json", "--delta", "0.2"], capture_output=True, text=True, check=True
    )
    info = json.loads(out.stdout)
    assert info["Q0"] == pytest.approx(3.0)
    assert info["e_test_zero_predictor"] == pytest.approx((3.0 + 0.1) / 2)
    bad = subprocess.run(run + ["info", "--kappa-star", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "kappa_star" in bad.stderr


@pytest.mark.parametrize(
    "build",
    [
        lambda **kw: qnr.theory.ERMProblem(alpha=0.3, lam=0.1, **kw),
        lambda **kw: qnr.theory.BayesOptimal(alpha=0.3, **kw),
        lambda **kw: qnr.theory.erm_problem_grid(alpha=[0.3], lam=0.1, **kw),
        lambda **kw: qnr.theory.interpolation_threshold(Delta=0.1, **kw),
        lambda **kw: qnr.theory.optimal_lam(alpha=0.3, Delta=0.1, **kw),
    ],
)
def test_teacher_or_kappa_star_exactly_one(build):
    """Every theory entry point takes exactly one of ``teacher`` and ``kappa_star``, through
    the one check of qnr.teachers (same messages everywhere)."""
    with pytest.raises(ValueError, match="give a teacher or kappa_star"):
        build()
    with pytest.raises(ValueError, match="not both"):
        build(teacher=qnr.teachers.MarchenkoPastur(0.5), kappa_star=0.5)
    assert qnr.teachers.resolve_teacher(None, 0.5) == qnr.teachers.MarchenkoPastur(0.5)
