"""Replica fixed point of empirical risk minimisation (THEORY.md section 2).

ERM objective (THEORY.md section 1, canonical normalization)
``L(W) = (1/(4n)) sum_mu (y_mu - yhat(x_mu))^2 + (lam/d) ||W||_F^2`` with ``n = alpha d^2``,
student width ``m = kappa d``. In the limit ``d -> inf`` (Erba, Troiani, Zdeborova, Krzakala,
"The Nuclear Route", arXiv 2505.17958) the minimiser is the effective denoiser
``Shat = (Y - tau I)_+`` of ``Y = S* + sqrt(xi) G`` (top-``kappa d`` eigenvalues when the rank
constraint binds), where ``(xi, tau)`` solve

1. ``2 alpha xi = E(tau, xi) + Delta/2``
2. ``tau (1 - D(tau, xi)/alpha) = lam``

with, for ``rho_xi = mu* boxplus semicircle(xi)`` (:mod:`qnr.spectra`), ``H`` its Hilbert
transform and ``b = max(tau, omega)`` (``rho_xi([omega, inf)) = kappa`` when ``kappa < 1``,
else ``omega = -inf``):

* ``D(tau, xi) = int_b^inf (x - tau) H(x) rho_xi(x) dx``
* ``E(tau, xi) = Q0 + int_b^inf (tau^2 - x^2) rho_xi(x) dx + 4 xi D(tau, xi)``
* rank fraction ``r = rho_xi([b, inf))``.

Outputs: ``E = ||Shat - S*||_F^2/d``, ``e_test = alpha xi = (E + Delta/2)/2``,
``e_train = alpha xi (lam/tau)^2 = xi (alpha - D)^2/alpha``, ``r``, and the learned spectrum
(atom ``1 - r`` at 0 plus ``rho_xi`` above ``b`` shifted left by ``tau``).

Evaluation (THEORY.md section 6): for the MP teacher every integral is exact
(:func:`qnr.spectra.mp_integrals`, no quadrature) and ``E`` is evaluated in its
cancellation-free form ``E = xi + tau^2 + int_{-inf}^b (x^2 - tau^2) rho
- 4 xi int_{-inf}^b (x - tau) H rho`` (relative accuracy ~1e-11 down to ``xi = 1e-12``); for
discrete teachers (power law, user spectra) the same integrals are exact too, in the
subordination variable (:func:`qnr.spectra.atomic_integrals`, relative accuracy of ``E``
~1e-11 down to ``xi = 1e-10``, any number of support intervals), with the same form of ``E``.

Branches (``branch`` of :class:`ERMSolution`):

* :data:`BRANCH_GENERAL`: ``tau > 0`` (``lam > 0``, or the interpolating ``lam -> 0+``
  branch ``D = alpha``).
* :data:`BRANCH_TAU_ZERO`: ``lam -> 0+`` with ``tau = 0`` and ``D(0, xi) < alpha``
  (non-interpolating; ``e_train = xi (alpha - D)^2/alpha``).
* :data:`BRANCH_PERFECT`: perfect recovery, ``lam = 0`` and ``Delta = 0`` at
  ``alpha >= alpha_SR(kappa*, kappa)`` (THEORY.md section 3): ``xi = tau = E = 0`` exactly,
  rank ``min(kappa*, 1)`` (the rank of ``S*``; the ``lam -> 0+`` limit of the rank is larger,
  since ``O(sqrt xi)`` eigenvalues vanish continuously). A solution, not a failure.

``lam = 0`` always means the ``lam -> 0+`` limit (the minimum-nuclear-norm interpolator).

Numerics: unknowns ``(log xi, log(tau/sqrt(xi)))`` (``log xi`` alone on the ``tau = 0``
branch),
residuals ``(E + Delta/2)/(2 alpha xi) - 1`` and ``1 - D/alpha - lam/tau``, solved from one
fixed start by :class:`qnr.theory.DampedNewton` (clipped steps, Armijo backtracking) through
``optimistix.root_find``; ``jax.grad``/``jax.jvp`` of every output with respect to
``alpha, lam, Delta, kappa`` and the teacher's parameters go through the implicit function
theorem (``optimistix.ImplicitAdjoint``, linear solves by ``lineax``). Every returned solution
satisfies ``E >= 0``, ``0 <= rank <= min(1, kappa)`` and ``max |residual| <= residual_tol``;
otherwise its ``result`` is a failure code and its outputs are NaN.
"""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jaxtyping import Array, Float, Int

from qnr._results import RESULTS
from qnr._validate import check_nonnegative, check_positive, is_concrete
from qnr.spectra import (
    AtomicConvolution,
    MPConvolution,
    SemicircleConvolution,
    atomic_integrals,
    atomic_level_with_mass_above,
    mp_integrals,
    mp_level_with_mass_above,
    teacher_atoms,
)
from qnr.spectra._roots import newton_polish, safe_newton
from qnr.teachers import MarchenkoPastur, Teacher, check_teacher_or_kappa_star, resolve_teacher
from qnr.theory._newton import DampedNewton
from qnr.theory.thresholds import strong_recovery

__all__ = [
    "ERMTerms",
    "erm_terms",
    "erm_D",
    "erm_E",
    "erm_rank",
    "ERMProblem",
    "ERMSolver",
    "ERMSolution",
    "LearnedSpectrum",
    "learned_spectrum",
    "solve_erm",
    "solve_erm_grid",
    "erm_problem_grid",
    "solve_erm_curve",
    "BRANCH_GENERAL",
    "BRANCH_TAU_ZERO",
    "BRANCH_PERFECT",
    "BRANCH_NAMES",
    "DampedNewton",
]

BRANCH_GENERAL = 0  #: ``tau > 0`` (``lam > 0``, or the interpolating ``lam -> 0+`` branch)
BRANCH_TAU_ZERO = 1  #: ``lam -> 0+`` with ``tau = 0`` (non-interpolating)
BRANCH_PERFECT = 2  #: perfect recovery (``lam = Delta = 0``, ``alpha >= alpha_SR``): ``E = 0``
BRANCH_NAMES = ("general", "tau=0", "perfect")  #: names of the branches, by code


# --------------------------------------------------------------------------- building blocks
class ERMTerms(eqx.Module):
    """The spectral functionals of THEORY.md section 2 at one ``(tau, xi)``."""

    D: Float[Array, ""]
    E: Float[Array, ""]
    rank: Float[Array, ""]
    b: Float[Array, ""]  #: lower limit ``max(tau, omega)``
    omega: Float[Array, ""]  #: rank-constraint level (``-inf`` when it does not apply)


def _omega(level_fn, kappa, dtype, constrained: bool):
    if not constrained:
        return jnp.asarray(-jnp.inf, dtype)
    kappa = jnp.asarray(kappa, dtype)
    binding = kappa < 1
    level = level_fn(jnp.where(binding, kappa, 0.5))
    return jnp.where(binding, level, -jnp.inf)


def _mp_terms(kappa_star, xi, tau, kappa, constrained: bool) -> ERMTerms:
    """Exact terms for the MP teacher (THEORY.md section 6; see the module docstring for the
    cancellation-free form of ``E``)."""
    dtype = xi.dtype
    tau = jnp.asarray(tau, dtype)
    omega = _omega(lambda m: mp_level_with_mass_above(kappa_star, xi, m), kappa, dtype, constrained)
    b = jnp.maximum(tau, omega)
    i = mp_integrals(kappa_star, xi, b)
    D = i.h1_up - tau * i.h0_up
    E = xi + tau**2 + i.m2_low - tau**2 * i.m0_low - 4 * xi * (i.h1_low - tau * i.h0_low)
    return ERMTerms(D=D, E=E, rank=i.m0_up, b=b, omega=omega)


def _atomic_terms(atoms, weights, xi, tau, kappa, constrained: bool) -> ERMTerms:
    """Exact terms for a discrete teacher ``sum_i p_i delta_{t_i}`` (THEORY.md section 6,
    :func:`qnr.spectra.atomic_integrals`), ``E`` in the same cancellation-free lower form as
    for the MP teacher (``tau^2 int_b rho`` is the integral above ``b``, computed directly)."""
    dtype = atoms.dtype
    xi = jnp.asarray(xi, dtype)
    tau = jnp.asarray(tau, dtype)
    omega = _omega(
        lambda m: atomic_level_with_mass_above(atoms, weights, xi, m), kappa, dtype, constrained
    )
    b = jnp.maximum(tau, omega)
    i = atomic_integrals(atoms, weights, xi, b)
    D = i.h1_up - tau * i.h0_up
    E = xi + tau**2 * i.m0_up + i.m2_low - 4 * xi * (i.h1_low - tau * i.h0_low)
    return ERMTerms(D=D, E=E, rank=i.m0_up, b=b, omega=omega)


def erm_terms(
    teacher: Teacher,
    xi,
    tau,
    kappa=None,
    *,
    d: int | None = None,
    n_nodes: int | None = None,
) -> ERMTerms:
    """``D(tau, xi)``, ``E(tau, xi)`` and the rank ``rho_xi([b, inf))`` (THEORY.md section 2).

    ``teacher``: ``MarchenkoPastur`` (``d -> inf`` law, exact; ``d`` None) or any teacher with
    its ``d`` atoms (``PowerLaw``, ``Spectrum``; exact, subordination variable). ``n_nodes`` is
    accepted for compatibility and unused (no quadrature). ``xi > 0``; ``tau >= 0``;
    ``kappa`` the student width ratio (None or ``>= 1``: no rank constraint). Differentiable in
    ``xi``, ``tau``, ``kappa`` and the teacher's parameters; jit/vmap-friendly.
    """
    check_positive("xi", xi)
    if kappa is not None:
        check_positive("kappa", kappa)
    constrained = kappa is not None
    if isinstance(teacher, MarchenkoPastur):
        if d is not None:
            teacher_atoms(teacher, d)  # raises the explanatory error
        xi = jnp.asarray(xi, jnp.result_type(teacher.kappa_star, float))
        return _mp_terms(teacher.kappa_star.astype(xi.dtype), xi, tau, kappa, constrained)
    atoms, weights = teacher_atoms(teacher, d)
    return _atomic_terms(atoms, weights, xi, tau, kappa, constrained)


def erm_D(teacher, xi, tau, kappa=None, *, d=None, n_nodes=None) -> Array:
    """``D(tau, xi) = int_b^inf (x - tau) H_xi(x) rho_xi(x) dx`` (see :func:`erm_terms`)."""
    return erm_terms(teacher, xi, tau, kappa, d=d, n_nodes=n_nodes).D


def erm_E(teacher, xi, tau, kappa=None, *, d=None, n_nodes=None) -> Array:
    """``E(tau, xi) = Q0 + int_b^inf (tau^2 - x^2) rho_xi dx + 4 xi D`` (see :func:`erm_terms`)."""
    return erm_terms(teacher, xi, tau, kappa, d=d, n_nodes=n_nodes).E


def erm_rank(teacher, xi, tau, kappa=None, *, d=None, n_nodes=None) -> Array:
    """Rank fraction ``rho_xi([b, inf))`` (see :func:`erm_terms`)."""
    return erm_terms(teacher, xi, tau, kappa, d=d, n_nodes=n_nodes).rank


# --------------------------------------------------------------------------- problem
class ERMProblem(eqx.Module):
    """An ERM learning problem in the ``d -> inf`` limit (THEORY.md sections 1-2).

    Swept hyperparameters are JAX scalars (vmappable, differentiable): ``alpha = n/d^2``,
    ``lam`` (``>= 0``; ``0`` means the ``lam -> 0+`` limit), ``Delta`` (label-noise
    variance), ``kappa`` (student width ratio; ``inf`` = unconstrained). Static: ``d`` (number
    of teacher atoms for non-MP teachers; ``None`` for the MP ``d -> inf`` law),
    ``rank_constrained`` (whether the ``kappa < 1`` path is compiled in; default: when a
    concrete ``kappa < 1`` or a traced one), ``lam_zero`` (whether the ``lam -> 0+`` branches
    are compiled in; default: when a concrete ``lam == 0`` or a traced one) and ``n_nodes``
    (quadrature nodes of :meth:`law`, used only by :func:`learned_spectrum`; the theory's
    spectral integrals are exact for every teacher).

    Build with ``ERMProblem(alpha, teacher, lam=..., Delta=..., kappa=..., d=...)`` or
    ``ERMProblem(alpha, kappa_star=0.5, ...)`` for the MP teacher.
    """

    alpha: Float[Array, ""]
    lam: Float[Array, ""]
    Delta: Float[Array, ""]
    kappa: Float[Array, ""]
    teacher: Teacher
    atoms: Float[Array, " p"] | None
    weights: Float[Array, " p"] | None
    d: int | None = eqx.field(static=True)
    rank_constrained: bool = eqx.field(static=True)
    lam_zero: bool = eqx.field(static=True)
    n_nodes: int | None = eqx.field(static=True)

    def __init__(
        self,
        alpha,
        teacher: Teacher | None = None,
        *,
        kappa_star=None,
        lam=0.0,
        Delta=0.0,
        kappa=None,
        d: int | None = None,
        rank_constrained: bool | None = None,
        lam_zero: bool | None = None,
        n_nodes: int | None = None,
    ):
        teacher = resolve_teacher(teacher, kappa_star)
        if isinstance(teacher, MarchenkoPastur):
            if d is not None:
                raise ValueError(
                    "d must be None for the MP teacher (the theory is its d -> inf law)"
                )
            self.atoms = self.weights = None
        else:
            # the atoms are computed here, eagerly (the power law's rank needs a concrete
            # kappa*); they stay differentiable in the teacher's other parameters
            self.atoms, self.weights = teacher_atoms(teacher, d)
            d = int(d) if d is not None else int(self.atoms.shape[0])
        fdt = jnp.zeros(()).dtype
        if fdt != jnp.float64:
            warnings.warn(
                "the ERM replica solver needs float64 (its residual tolerance is 1e-8): call "
                "jax.config.update('jax_enable_x64', True) first; in float32 most solves fail "
                "(result code, NaN outputs)",
                stacklevel=2,
            )
        self.alpha = jnp.asarray(check_positive("alpha", alpha), dtype=fdt)
        self.lam = jnp.asarray(check_nonnegative("lam", lam), dtype=fdt)
        self.Delta = jnp.asarray(check_nonnegative("Delta", Delta), dtype=fdt)
        if kappa is None:
            kappa = jnp.inf
        self.kappa = jnp.asarray(check_positive("kappa", kappa), dtype=fdt)
        if rank_constrained is None:
            rank_constrained = (not is_concrete(self.kappa)) or bool(
                np.any(np.asarray(self.kappa) < 1)
            )
        self.rank_constrained = bool(rank_constrained)
        if lam_zero is None:
            lam_zero = (not is_concrete(self.lam)) or bool(np.any(np.asarray(self.lam) == 0))
        self.lam_zero = bool(lam_zero)
        self.teacher = teacher
        self.d = d
        self.n_nodes = n_nodes

    def law(self, xi) -> SemicircleConvolution:
        """``rho_xi`` for this teacher (:mod:`qnr.spectra`)."""
        if self.atoms is None:
            k = self.teacher.kappa_star
            xi = jnp.asarray(xi, dtype=jnp.result_type(k, float))
            return MPConvolution(k.astype(xi.dtype), xi, n_nodes=self.n_nodes or 256)
        return AtomicConvolution(
            self.atoms, self.weights, jnp.asarray(xi, self.atoms.dtype), n_nodes=self.n_nodes or 16
        )

    def terms(self, xi, tau) -> ERMTerms:
        """:class:`ERMTerms` at ``(tau, xi)`` for this problem's teacher and ``kappa``."""
        if self.atoms is None:
            xi = jnp.asarray(xi, self.alpha.dtype)
            k = self.teacher.kappa_star.astype(xi.dtype)
            return _mp_terms(k, xi, tau, self.kappa, self.rank_constrained)
        return _atomic_terms(self.atoms, self.weights, xi, tau, self.kappa, self.rank_constrained)

    def rank_star(self) -> Array:
        """Rank fraction of the teacher, ``mu*((0, inf))`` (``min(kappa*, 1)`` for MP)."""
        if self.atoms is None:
            return jnp.minimum(self.teacher.kappa_star.astype(self.alpha.dtype), 1.0)
        return jnp.sum(jnp.where(self.atoms > 0, self.weights, 0.0))


class ERMSolver(eqx.Module):
    """Settings of the fixed-point solve on ``(log xi, log tau)``.

    ``root_finder``: any ``optimistix`` root finder (default :class:`DampedNewton`; e.g.
    ``optx.Newton(rtol, atol)`` or ``optx.LevenbergMarquardt(...)`` for comparison);
    ``max_steps``: iteration cap; ``xi0``/``tau0``: the fixed initial guess (overridden by
    ``init`` warm starts); ``residual_tol``: a solution whose residuals exceed it is a failure
    (:data:`qnr.RESULTS.invariant_violated`); ``nested_start``: start the Newton solve from the
    nested bracketed solution (:func:`_nested_solution`, robust but ~10x costlier; the batch
    drivers use it only to re-solve the lanes that failed).
    """

    root_finder: optx.AbstractRootFinder = DampedNewton()
    max_steps: int = eqx.field(static=True, default=64)
    xi0: float = 1.0
    tau0: float = 1.0
    residual_tol: float = 1e-8
    nested_start: bool = eqx.field(static=True, default=False)


_DEFAULT_SOLVER = ERMSolver()


class ERMSolution(eqx.Module):
    """Solution of the ERM fixed point. Failed solves (``result`` not successful) have all
    float fields NaN. ``branch``: :data:`BRANCH_GENERAL`, :data:`BRANCH_TAU_ZERO` or
    :data:`BRANCH_PERFECT`. ``stats``: ``num_steps``, ``residual`` (max abs residual),
    ``last_iterate`` (the unmasked ``(xi, tau)`` of the solver, useful as a warm start)."""

    xi: Float[Array, ""]
    tau: Float[Array, ""]
    E: Float[Array, ""]
    e_test: Float[Array, ""]
    e_train: Float[Array, ""]
    rank: Float[Array, ""]
    D: Float[Array, ""]
    b: Float[Array, ""]
    branch: Int[Array, ""]
    result: RESULTS
    stats: dict

    @property
    def value(self) -> Float[Array, "2"]:
        """The unknowns ``(xi, tau)``."""
        return jnp.stack([self.xi, self.tau])

    @property
    def converged(self) -> Array:
        return self.result == RESULTS.successful


class LearnedSpectrum(eqx.Module):
    """Eigenvalue law of the learned ``Shat = (Y - tau)_+`` restricted to ``x >= b``:
    an atom ``1 - r`` at 0 plus the density ``rho_xi(x + tau)`` for ``x >= b - tau``."""

    law: SemicircleConvolution
    tau: Float[Array, ""]
    b: Float[Array, ""]
    atom: Float[Array, ""]

    def density(self, x: Float[Array, "..."]) -> Float[Array, "..."]:
        """Continuous part of the density at ``x`` (zero below ``b - tau``)."""
        x = jnp.asarray(x, self.tau.dtype)
        return jnp.where(x + self.tau >= self.b, self.law.density(x + self.tau), 0.0)

    def moment(self, k: int) -> Array:
        """``int x^k dlaw`` (``k >= 1``): ``int_b^inf (x - tau)^k rho_xi(x) dx``."""
        tau = self.tau
        return self.law.integrate(lambda x, r, h: (x - tau) ** k * r, self.b)


def learned_spectrum(problem: ERMProblem, solution: ERMSolution) -> LearnedSpectrum:
    """Eigenvalue law of the learned matrix ``Shat`` at a solved fixed point (THEORY.md
    section 2): atom ``1 - r`` at 0 plus ``rho_xi`` above ``b`` shifted left by ``tau``.
    Needs ``xi > 0`` (not the perfect-recovery branch, where ``Shat = S*``)."""
    law = problem.law(solution.xi)
    return LearnedSpectrum(law, solution.tau, solution.b, 1 - solution.rank)


# --------------------------------------------------------------------------- residuals
def _from_y(y):
    """``(xi, tau)`` from the unknowns ``y = (log xi, log(tau / sqrt(xi)))``: the second
    variable is the threshold in units of the noise scale, which stays ``O(1)`` as
    ``xi -> 0`` (near perfect recovery ``tau ~ s sqrt(xi)``, THEORY.md section 6), so the
    Jacobian stays well conditioned there."""
    return jnp.exp(y[0]), jnp.exp(y[1] + y[0] / 2)


def _to_y(xi, tau):
    return jnp.stack([jnp.log(xi), jnp.log(tau) - jnp.log(xi) / 2])


def _residual_general(y, problem: ERMProblem):
    xi, tau = _from_y(y)
    t = problem.terms(xi, tau)
    r1 = (t.E + problem.Delta / 2) / (2 * problem.alpha * xi) - 1
    r2 = 1 - t.D / problem.alpha - problem.lam / tau
    return jnp.stack([r1, r2])


def _residual_tau_zero(y, problem: ERMProblem):
    xi = jnp.exp(y[0])
    t = problem.terms(xi, jnp.zeros_like(xi))
    return ((t.E + problem.Delta / 2) / (2 * problem.alpha * xi) - 1)[None]


def _tau_residual(log_tau, args):
    """Equation 2 at fixed ``xi`` as a function of ``log tau``: strictly increasing
    (``D`` decreases in ``tau``, ``dD/dtau = -int_tau H rho <= 0``), from ``-inf`` (or
    ``1 - D(0)/alpha`` at ``lam = 0``) to ``1``."""
    problem, xi = args

    def f(lt):
        t = problem.terms(xi, jnp.exp(lt))
        return 1 - t.D / problem.alpha - problem.lam * jnp.exp(-lt)

    return jax.jvp(f, (log_tau,), (jnp.ones_like(log_tau),))


def _tau_of_xi(problem, xi):
    """The unique root ``tau(xi)`` of equation 2 (bracketed Newton in ``log tau`` on
    ``[lam/2, 2 max(lam, upper edge)]``; at ``lam = 0`` the lower end is ``1e-12``)."""
    lo = jnp.where(problem.lam > 0, problem.lam / 2, 1e-12)
    edge = (1 + 1 / jnp.sqrt(jnp.minimum(problem.rank_star(), 1.0))) ** 2 * 4 + 4 * jnp.sqrt(xi)
    hi = 2 * jnp.maximum(jnp.maximum(problem.lam, edge), 2 * lo)
    lt = safe_newton(_tau_residual, (problem, xi), jnp.log(lo), jnp.log(hi), iters=100)
    return jnp.exp(newton_polish(_tau_residual, (problem, xi), lt, steps=1))


def _xi_residual(log_xi, problem):
    def f(lx):
        xi = jnp.exp(lx)
        t = problem.terms(xi, _tau_of_xi(problem, xi))
        return (t.E + problem.Delta / 2) / (2 * problem.alpha * xi) - 1

    return jax.jvp(f, (log_xi,), (jnp.ones_like(log_xi),))


def _nested_solution(problem: ERMProblem):
    """``(xi, tau)`` by nested one-dimensional bracketed solves: ``tau(xi)`` from equation 2
    (unique, monotone), then equation 1 in ``log xi`` on ``[1e-24, 1e8]``, where its residual
    goes from ``+inf`` (``xi -> 0``) to ``-1`` (``xi -> inf``). Immune to the fold of the
    two-dimensional system near perfect recovery (``xi -> 0`` at small ``lam``, where the
    first residual depends on ``tau/sqrt(xi)`` only and Newton on both unknowns stalls)."""
    lo = jnp.log(jnp.asarray(1e-24, problem.alpha.dtype))
    hi = jnp.log(jnp.asarray(1e8, problem.alpha.dtype))
    lx = safe_newton(_xi_residual, problem, lo, hi, increasing=False, iters=200, rtol=1e-13)
    xi = jax.lax.stop_gradient(jnp.exp(lx))
    return xi, jax.lax.stop_gradient(_tau_of_xi(problem, xi))


_ADJOINT = optx.ImplicitAdjoint(linear_solver=lx.LU())


def _root(fn, y0, problem, solver: ERMSolver):
    """``fn(y, problem) = 0`` by ``solver.root_finder`` through ``optimistix.root_find``
    (implicit differentiation). Returns the root (the start where the solve failed, so that a
    failed or unused branch injects no NaN into gradients), result code, steps, last iterate."""
    sol = optx.root_find(
        fn,
        solver.root_finder,
        jax.lax.stop_gradient(y0),
        problem,
        throw=False,
        max_steps=solver.max_steps,
        adjoint=_ADJOINT,
    )
    ok = (sol.result == optx.RESULTS.successful) & jnp.all(jnp.isfinite(sol.value))
    y = jnp.where(ok, sol.value, jax.lax.stop_gradient(y0))
    result = RESULTS.where(ok, RESULTS.successful, RESULTS.promote(sol.result))
    result = RESULTS.where(ok | (result != RESULTS.successful), result, RESULTS.nonfinite)
    return y, result, sol.stats["num_steps"], jax.lax.stop_gradient(sol.value)


def _perfect_recovery(problem: ERMProblem) -> Array:
    """Whether ``(problem)`` is on the perfect-recovery branch: ``lam = 0``, ``Delta = 0`` and
    ``alpha >= alpha_SR(kappa*, kappa)`` (THEORY.md section 3; ``alpha_SR`` depends on the
    teacher only through its rank fraction)."""
    k_star = jax.lax.stop_gradient(problem.rank_star())
    full = k_star >= 1
    sr = strong_recovery(jnp.where(full, 0.5, k_star), jax.lax.stop_gradient(problem.kappa))
    alpha_sr = jnp.where(full, 0.5, sr.alpha_SR)
    alpha_sr = jnp.where(full & (problem.kappa < 1), jnp.inf, alpha_sr)
    return (problem.lam == 0) & (problem.Delta == 0) & (problem.alpha >= alpha_sr)


def solve_erm(problem: ERMProblem, solver: ERMSolver | None = None, init=None) -> ERMSolution:
    """Solve the ERM fixed point of THEORY.md section 2 (see the module docstring).

    ``init``: optional warm start ``(xi, tau)`` (e.g. the previous point of a curve).
    jit/vmap/grad-compatible; failure is reported in ``result`` (outputs NaN), never raised.
    At ``lam == 0`` the ``lam -> 0+`` branches are solved and the valid one returned:
    perfect recovery where it holds, else ``tau = 0`` iff ``D(0, xi) < alpha``, else the
    interpolating branch.
    """
    if not isinstance(problem, ERMProblem):
        raise ValueError(f"problem must be a qnr.theory.ERMProblem, got {type(problem).__name__}")
    solver = _DEFAULT_SOLVER if solver is None else solver
    if not isinstance(solver, ERMSolver):
        raise ValueError(f"solver must be a qnr.theory.ERMSolver, got {type(solver).__name__}")
    dtype = problem.alpha.dtype
    if init is None:
        y0 = _to_y(*jnp.asarray([solver.xi0, solver.tau0], dtype=dtype))
    else:
        init = jnp.asarray(init, dtype=dtype)
        y0 = _to_y(*jnp.where(jnp.isfinite(init) & (init > 0), init, 1.0))
    if solver.nested_start:
        xi_n, tau_n = _nested_solution(problem)
        good = jnp.isfinite(xi_n) & jnp.isfinite(tau_n) & (xi_n > 0) & (tau_n > 0)
        y0 = jnp.where(good, _to_y(jnp.where(good, xi_n, 1.0), jnp.where(good, tau_n, 1.0)), y0)

    if problem.lam_zero:
        perfect = _perfect_recovery(problem)
        # the perfect-recovery lanes need no solve: start them where the residual is finite
        y_g, res_g, steps_g, last_g = _root(_residual_general, y0, problem, solver)
        y_0, res_0, steps_0, _ = _root(_residual_tau_zero, y0[:1], problem, solver)
        ok_0 = res_0 == RESULTS.successful
        xi_0 = jnp.exp(y_0[0])
        t_0 = problem.terms(jnp.where(ok_0, xi_0, 1.0), jnp.zeros((), dtype))
        use_0 = (problem.lam == 0) & ok_0 & (t_0.D < problem.alpha) & ~perfect
    else:
        perfect = jnp.asarray(False)
        y_g, res_g, steps_g, last_g = _root(_residual_general, y0, problem, solver)
        y_0, res_0, steps_0 = y0[:1], res_g, jnp.zeros_like(steps_g)
        use_0 = jnp.asarray(False)

    xi = jnp.where(use_0, jnp.exp(y_0[0]), jnp.exp(y_g[0]))
    tau = jnp.where(use_0, 0.0, _from_y(y_g)[1])
    solve_result = RESULTS.where(use_0, res_0, res_g)
    ok = solve_result == RESULTS.successful
    t = problem.terms(jnp.where(ok, xi, 1.0), jnp.where(ok, tau, 1.0))
    alpha = problem.alpha
    E = t.E
    e_test = alpha * xi
    e_train = xi * (alpha - t.D) ** 2 / alpha
    e_train = jnp.where(use_0 | (problem.lam > 0), e_train, 0.0)
    r1 = (t.E + problem.Delta / 2) / (2 * alpha * xi) - 1
    r2 = jnp.where(use_0, 0.0, 1 - t.D / alpha - problem.lam / jnp.where(use_0, 1.0, tau))
    residual = jax.lax.stop_gradient(jnp.maximum(jnp.abs(r1), jnp.abs(r2)))
    values = dict(xi=xi, tau=tau, E=E, e_test=e_test, e_train=e_train, rank=t.rank, D=t.D, b=t.b)

    # perfect recovery: Shat = S*, xi = 0 exactly
    zero = jnp.zeros((), dtype)
    exact = dict(
        xi=zero,
        tau=zero,
        E=zero,
        e_test=zero,
        e_train=zero,
        rank=problem.rank_star(),
        D=alpha,
        b=zero,
    )
    values = {k: jnp.where(perfect, exact[k], v) for k, v in values.items()}
    residual = jnp.where(perfect, 0.0, residual)
    ok = ok | perfect

    finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in values.values()]))
    kappa_cap = jnp.minimum(1.0, problem.kappa)
    rank_tol = 1e-10
    invariants = (
        (values["E"] >= 0)
        & (values["rank"] >= -rank_tol)
        & (values["rank"] <= kappa_cap + rank_tol)
        & (residual <= solver.residual_tol)
    )
    solve_result = RESULTS.where(perfect, RESULTS.successful, solve_result)
    result = RESULTS.where(
        ~ok,
        solve_result,
        RESULTS.where(
            ~finite,
            RESULTS.nonfinite,
            RESULTS.where(invariants, RESULTS.successful, RESULTS.invariant_violated),
        ),
    )
    good = result == RESULTS.successful
    values = {k: jnp.where(good, v, jnp.nan) for k, v in values.items()}
    branch = jnp.where(perfect, BRANCH_PERFECT, jnp.where(use_0, BRANCH_TAU_ZERO, BRANCH_GENERAL))
    last = jnp.where(use_0, jnp.stack([jnp.exp(y_0[0]), zero]), jnp.stack(_from_y(last_g)))
    stats = dict(
        num_steps=jnp.where(perfect, 0, jnp.where(use_0, steps_0, steps_g)),
        residual=residual,
        last_iterate=last,
    )
    return ERMSolution(**values, branch=branch, result=result, stats=stats)


# --------------------------------------------------------------------------- grids and curves
def _rank_constrained(kappa) -> bool:
    """Whether a batch with student width ratios ``kappa`` (``None``: unconstrained) needs the
    rank-constrained branch: some ``kappa < 1``, or ``kappa`` traced (decided before ``vmap``,
    where every ``kappa`` is traced)."""
    return kappa is not None and (not is_concrete(kappa) or bool(np.any(np.asarray(kappa) < 1)))


def _vmapped_problems(teacher, kappa_star, alpha, lam, Delta, kappa, *, d, constrained, **kw):
    """The batch (leading axis) of :class:`ERMProblem` over the flat arrays ``alpha, lam,
    Delta, kappa`` and ``kappa_star`` (the MP teacher's width ratio; unused with a
    ``teacher``), traceable (``eqx.filter_vmap``); ``kw``: further :class:`ERMProblem` flags."""

    def build(ks, al, lm, dl, kp):
        tch = MarchenkoPastur(ks) if teacher is None else teacher
        return ERMProblem(
            al, tch, lam=lm, Delta=dl, kappa=kp, d=d, rank_constrained=constrained, **kw
        )

    return eqx.filter_vmap(build)(kappa_star, alpha, lam, Delta, kappa)


def erm_problem_grid(
    alpha,
    teacher: Teacher | None = None,
    *,
    kappa_star=None,
    lam=0.0,
    Delta=0.0,
    kappa=None,
    d: int | None = None,
    n_nodes: int | None = None,
) -> tuple[ERMProblem, tuple[int, ...]]:
    """A batch of :class:`ERMProblem` over the broadcast of ``alpha, lam, Delta, kappa`` (and
    ``kappa_star`` for the MP teacher), flattened along one leading axis; returns
    ``(problems, shape)`` so results can be reshaped with ``x.reshape(shape)``."""
    check_positive("alpha", alpha)
    check_nonnegative("lam", lam)
    check_nonnegative("Delta", Delta)
    kappa = np.inf if kappa is None else check_positive("kappa", kappa)
    check_teacher_or_kappa_star(teacher, kappa_star)
    if teacher is None:
        ks = np.asarray(check_positive("kappa_star", kappa_star), dtype=float)
    else:
        ks = np.asarray(1.0)
    arrays = np.broadcast_arrays(
        *(np.asarray(v, dtype=float) for v in (alpha, lam, Delta, kappa, ks))
    )
    shape = arrays[0].shape
    a, lm, dl, k, kst = (jnp.asarray(v.ravel()) for v in arrays)
    constrained = _rank_constrained(kappa)
    lam_zero = bool(np.any(arrays[1] == 0))
    problems = _vmapped_problems(
        teacher, kst, a, lm, dl, k, d=d, constrained=constrained, lam_zero=lam_zero, n_nodes=n_nodes
    )
    return problems, shape


@eqx.filter_jit
def _solve_batch(problems, solver, init):
    return eqx.filter_vmap(lambda p, i: solve_erm(p, solver, i))(problems, init)


def _warn_failures(sol: ERMSolution, what: str) -> None:
    if not is_concrete(sol.xi):
        return
    ok = np.asarray(sol.converged)
    if not ok.all():
        warnings.warn(
            f"{what}: {int((~ok).sum())} of {ok.size} ERM fixed points did not converge; "
            "their outputs are NaN (see .result)",
            RuntimeWarning,
            stacklevel=3,
        )


def solve_erm_grid(problems: ERMProblem, solver: ERMSolver | None = None, init=None) -> ERMSolution:
    """Solve a batch of problems (every array field batched along axis 0, e.g. from
    :func:`erm_problem_grid`) with one vmapped, jitted program (one compilation per batch
    shape), every lane from the same fixed start (or ``init``, ``(N, 2)`` warm starts).

    Lanes stop independently (a lane that has converged no longer moves); there is no second
    pass. Failures are NaN with a result code and a ``RuntimeWarning``."""
    solver = _DEFAULT_SOLVER if solver is None else solver
    n = problems.alpha.shape[0]
    dtype = problems.alpha.dtype
    if init is None:
        init = jnp.broadcast_to(jnp.asarray([solver.xi0, solver.tau0], dtype), (n, 2))
    sol = _solve_batch(problems, solver, init)
    if not solver.nested_start and is_concrete(sol.xi):
        sol = _rescue_failed(problems, solver, init, sol)
    _warn_failures(sol, "solve_erm_grid")
    return sol


def _rescue_failed(problems, solver, init, sol):
    """Re-solve only the failed lanes (gathered into a batch padded to a power of two, so
    few programs are compiled) from the nested bracketed start (:func:`_nested_solution`)."""
    failed = np.flatnonzero(~np.asarray(sol.converged))
    if failed.size == 0:
        return sol
    size = 1 << int(np.ceil(np.log2(failed.size)))
    idx = np.concatenate([failed, np.full(size - failed.size, failed[0])])
    sub = jax.tree.map(lambda a: a[idx] if eqx.is_array(a) and a.ndim else a, problems)
    rescue = ERMSolver(
        root_finder=solver.root_finder,
        max_steps=solver.max_steps,
        xi0=solver.xi0,
        tau0=solver.tau0,
        residual_tol=solver.residual_tol,
        nested_start=True,
    )
    fixed = _solve_batch(sub, rescue, init[idx])
    take = jnp.asarray(failed)

    def merge(a, b):
        return a.at[take].set(b[: failed.size]) if eqx.is_array(a) and a.ndim else a

    return jax.tree.map(merge, sol, fixed)


@eqx.filter_jit
def _solve_scan(problems, solver, init):
    def step(carry, problem):
        sol = solve_erm(problem, solver, carry)
        usable = sol.converged & (sol.xi > 0)
        nxt = jnp.where(usable, jnp.stack([sol.xi, jnp.maximum(sol.tau, 0.0)]), carry)
        return nxt, sol

    _, sols = jax.lax.scan(step, init, problems)
    return sols


def solve_erm_curve(
    problems: ERMProblem, solver: ERMSolver | None = None, init=None
) -> ERMSolution:
    """Solve a batch of problems *in order*, each warm-started from the previous converged
    solution (a ``lax.scan``): robust and fast along a curve (e.g. increasing ``alpha``).
    ``init``: the first point's starting ``(xi, tau)`` (default: the solver's)."""
    solver = _DEFAULT_SOLVER if solver is None else solver
    dtype = problems.alpha.dtype
    init = jnp.asarray([solver.xi0, solver.tau0] if init is None else init, dtype=dtype)
    sol = _solve_scan(problems, solver, init)
    _warn_failures(sol, "solve_erm_curve")
    return sol
