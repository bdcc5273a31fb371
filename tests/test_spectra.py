"""qnr.spectra: free convolution with a semicircle (THEORY.md section 2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qnr.spectra import (
    AtomicConvolution,
    MPConvolution,
    atomic_law,
    convolved_law,
    teacher_atoms,
)
from qnr.teachers import MarchenkoPastur, PowerLaw, Spectrum


@jax.jit
def _moments(law):
    return jnp.stack([law.moment(0), law.moment(1), law.moment(2)])


# ---------------------------------------------------------------- MP path (cubic)
@pytest.mark.parametrize(
    "kappa_star, xi", [(0.5, 0.6327), (0.5, 0.01), (0.2, 0.05), (2.0, 0.3), (1.0, 0.1)]
)
def test_mp_moments(kappa_star, xi):
    """mass 1, mean = mean(mu*) = 1, second moment = Q0 + xi (free convolution adds
    variances)."""
    law = convolved_law(MarchenkoPastur(kappa_star), xi)
    m = np.asarray(_moments(law))
    np.testing.assert_allclose(m, [1.0, 1.0, 1 + 1 / kappa_star + xi], rtol=1e-10, atol=1e-10)


def test_mp_support_structure():
    """kappa* < 1, small xi: the smoothed atom at 0 is a separate interval of mass
    1 - kappa*; large xi: one interval. An isolated atom of mass p broadens into a
    semicircle of radius 2 sqrt(xi p) to leading order."""
    law = convolved_law(MarchenkoPastur(0.5), 1e-3)
    sup = law.support().as_list()
    assert len(sup) == 2
    (a, b), (c, _) = sup
    assert a < 0 < b < c
    np.testing.assert_allclose([a, b], [-2 * np.sqrt(5e-4), 2 * np.sqrt(5e-4)], rtol=0.05)
    np.testing.assert_allclose(
        float(law.integrate(lambda x, r, h: r) - law.mass_above(c)), 0.5, rtol=1e-9
    )
    assert len(convolved_law(MarchenkoPastur(0.5), 1.0).support().as_list()) == 1
    assert len(convolved_law(MarchenkoPastur(3.0), 0.01).support().as_list()) == 1


def test_mp_density_vanishes_at_edges_and_matches_stieltjes():
    law = convolved_law(MarchenkoPastur(0.5), 0.3)
    ((a, b),) = law.support().as_list()
    x = jnp.asarray([a - 0.1, a + 1e-3, 0.5 * (a + b), b - 1e-3, b + 0.2])
    rho, h = law.boundary_values(x)
    assert rho[0] == 0 and rho[-1] == 0 and np.all(np.asarray(rho[1:-1]) > 0)
    # boundary values are the limits of g(x + i eta), eta -> 0 (compare eta = 1e-7: O(eta))
    g = law.stieltjes(x.astype(jnp.complex128) + 1e-7j)
    np.testing.assert_allclose(np.asarray(-g.imag / np.pi), np.asarray(rho), atol=1e-5)
    np.testing.assert_allclose(np.asarray(g.real), np.asarray(h), atol=1e-5)


def test_mp_stieltjes_against_quadrature():
    """g(z) from the cubic vs direct quadrature of rho(t)/(z - t) away from the axis."""
    law = convolved_law(MarchenkoPastur(0.3), 0.2)
    z = jnp.asarray([0.5 + 1.0j, 2.0 + 0.3j, -1.0 + 0.5j, 10.0 + 1e-3j])
    q = convolved_law(MarchenkoPastur(0.3), 0.2, n_nodes=1024).quadrature()
    ref = np.sum(np.asarray(q.weight * q.rho) / (np.asarray(z)[:, None] - np.asarray(q.x)), axis=-1)
    np.testing.assert_allclose(np.asarray(law.stieltjes(z)), np.asarray(ref), rtol=1e-9)
    # Hilbert transform off the support: real root selected correctly
    x_out = jnp.asarray([-5.0, 20.0])
    ref_h = jnp.sum(q.weight * q.rho / (x_out[:, None] - q.x), axis=-1)
    np.testing.assert_allclose(np.asarray(law.hilbert(x_out)), np.asarray(ref_h), rtol=1e-10)


def test_mp_quadrature_convergence():
    """Doubling the nodes changes D-like integrals by < 1e-10 (edge-aware rule)."""
    f = lambda x, r, h: (x - 0.5) * h * r  # noqa: E731
    for kappa_star, xi in [(0.5, 0.6327), (0.5, 0.05), (2.0, 0.3)]:
        vals = [
            float(
                MPConvolution(jnp.asarray(kappa_star), jnp.asarray(xi), n_nodes=n).integrate(f, 0.5)
            )
            for n in (128, 256)
        ]
        assert abs(vals[0] - vals[1]) < 1e-10 * max(1.0, abs(vals[1]))


def test_level_with_mass_above_roundtrip():
    law = convolved_law(MarchenkoPastur(0.5), 0.2)
    level = law.level_with_mass_above(0.3)
    np.testing.assert_allclose(float(law.mass_above(level)), 0.3, rtol=1e-12)
    # implicit derivative d level / d mass = -1/rho(level)
    dl = jax.grad(lambda m: law.level_with_mass_above(m))(0.3)
    np.testing.assert_allclose(float(dl), -1 / float(law.density(level)), rtol=1e-8)


def test_mp_gradient_in_xi_and_kappa_star():
    """d/dxi of the second moment is exactly 1; d/dkappa* of it is -1/kappa*^2."""

    def m2(xi, k):
        return MPConvolution(k, xi).moment(2)

    g_xi, g_k = jax.grad(m2, argnums=(0, 1))(jnp.asarray(0.4), jnp.asarray(0.7))
    np.testing.assert_allclose(float(g_xi), 1.0, rtol=1e-9)
    np.testing.assert_allclose(float(g_k), -1 / 0.7**2, rtol=1e-9)


# ---------------------------------------------------------------- atomic path (subordination)
def test_single_atom_is_semicircle():
    law = atomic_law(jnp.asarray([1.0]), 0.25)
    ((a, b),) = law.support().as_list()
    np.testing.assert_allclose([a, b], [0.0, 2.0], atol=1e-12)
    x = jnp.asarray([0.3, 1.0, 1.7])
    rho, h = law.boundary_values(x)
    y = np.asarray(x) - 1.0
    np.testing.assert_allclose(
        np.asarray(rho), np.sqrt(4 * 0.25 - y**2) / (2 * np.pi * 0.25), rtol=1e-10
    )
    np.testing.assert_allclose(np.asarray(h), y / (2 * 0.25), rtol=1e-10)


def test_two_atoms_moments_and_support():
    law = atomic_law(jnp.asarray([0.0, 3.0]), 0.1, weights=jnp.asarray([0.3, 0.7]))
    assert len(law.support().as_list()) == 2
    m = np.asarray(_moments(law))
    np.testing.assert_allclose(m, [1.0, 2.1, 0.7 * 9 + 0.1], rtol=1e-10)


def test_teacher_atoms():
    atoms, w = teacher_atoms(PowerLaw(1.0, 0.5), 10)
    assert atoms.shape == (6,) and float(atoms[0]) == 0.0
    np.testing.assert_allclose(float(w[0]), 0.5)
    np.testing.assert_allclose(float(jnp.sum(w * atoms**2)), 1.0, rtol=1e-12)
    atoms, w = teacher_atoms(Spectrum(jnp.asarray([1.0, 1.0, 2.0, 0.0])))
    np.testing.assert_allclose(np.asarray(atoms), [0.0, 1.0, 2.0])
    np.testing.assert_allclose(np.asarray(w), [0.25, 0.5, 0.25])
    with pytest.raises(ValueError, match="d is required"):
        teacher_atoms(PowerLaw(1.0))
    with pytest.raises(ValueError, match="random"):
        convolved_law(MarchenkoPastur(0.5), 0.1, d=100)
    with pytest.raises(ValueError, match="xi"):
        convolved_law(MarchenkoPastur(0.5), -0.1)


def test_atomic_power_law_moments():
    law = convolved_law(PowerLaw(1.0, 1.0), 0.5, d=100)
    assert isinstance(law, AtomicConvolution)
    m = np.asarray(_moments(law))
    mean = float(law.mean_teacher)
    np.testing.assert_allclose(m, [1.0, mean, 1.0 + 0.5], rtol=1e-7)


def test_mp_cubic_matches_subordination_on_discretised_mp():
    """The closed-form cubic path vs the subordination path on a quantile discretisation of
    the same MP law (kappa* = 2, no atom): agreement to the discretisation error, which
    shrinks as the number of atoms p grows."""
    k, xi = 2.0, 0.2
    lo, hi = (1 - 1 / np.sqrt(k)) ** 2, (1 + 1 / np.sqrt(k)) ** 2

    def dens(x):
        return k * np.sqrt(np.clip((hi - x) * (x - lo), 0, None)) / (2 * np.pi * x)

    exact = convolved_law(MarchenkoPastur(k), xi)
    xs = jnp.linspace(0.0, 2.5, 6)
    rho_m, h_m = exact.boundary_values(xs)

    def f(x, r, h):
        return (x - 0.5) * h * r

    d_m = float(exact.integrate(f, 0.5))
    errs = []
    for p in (100, 400):
        law = convolved_law(Spectrum.from_density(dens, (lo, hi), p), xi)
        rho_a, h_a = law.boundary_values(xs)
        errs.append(
            max(
                float(jnp.max(jnp.abs(rho_a - rho_m))),
                float(jnp.max(jnp.abs(h_a - h_m))),
                abs(float(law.integrate(f, 0.5)) - d_m),
            )
        )
    assert errs[1] < 1e-4 and errs[1] < errs[0]


@pytest.mark.slow
def test_finite_d_power_law_spectrum_matches_subordination(key):
    """Eigenvalues of S* + sqrt(xi) G at d = 2000 (power-law teacher; G a GOE normalised to
    the semicircle on [-2, 2]; Haar eigenvectors are irrelevant since G is orthogonally
    invariant) vs the subordination law with the same d atoms: empirical Stieltjes transform
    at Im z = 0.1 (fluctuations O(1/(d Im z)) = 0.005) and the histogram of the bulk."""
    d, xi = 2000, 0.3
    teacher = PowerLaw(1.0, 1.0)
    w = teacher.eigenvalues(d)
    a = jax.random.normal(key, (d, d))
    g = (a + a.T) / jnp.sqrt(2.0 * d)
    ev = np.asarray(jnp.linalg.eigvalsh(jnp.diag(w) + jnp.sqrt(xi) * g))
    law = convolved_law(teacher, xi, d=d)
    z = jnp.linspace(-1.0 + 0.1j, 4.0 + 0.1j, 26)  # complex endpoints: no float + complex mixing
    g_emp = np.mean(1 / (np.asarray(z)[:, None] - ev[None, :]), axis=1)
    np.testing.assert_allclose(np.asarray(law.stieltjes(z)), g_emp, atol=0.02)
    edges = jnp.linspace(-1.0, 1.5, 6)
    mass = np.asarray(jax.vmap(law.mass_above)(edges))
    p_bins = mass[:-1] - mass[1:]
    counts = np.histogram(ev, np.asarray(edges))[0] / d
    # eigenvalues are rigid: the deviation is far below the Poisson sqrt(p/d)
    np.testing.assert_allclose(counts, p_bins, atol=3 * np.sqrt(p_bins.max() / d))
