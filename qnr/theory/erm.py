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

``lam -> 0+`` (minimum nuclear norm): either the interpolating branch (``D = alpha``,
``tau > 0``, ``e_train = 0``) or ``tau = 0`` with ``D(0, xi) < alpha`` and
``e_train = xi (alpha - D)^2/alpha``; at ``lam = 0`` both are solved and the valid one is kept
(the ``tau = 0`` branch iff ``D(0, xi) < alpha``).

Numerics: unknowns ``(log xi, log tau)`` (``log xi`` alone on the ``tau = 0`` branch),
residuals ``(E + Delta/2)/(2 alpha xi) - 1`` and ``1 - D/alpha - lam/tau`` (equation 2 divided
by ``tau``, which is also the ``lam = 0`` interpolation condition), Newton's method from
``optimistix`` (Levenberg-Marquardt as fallback) with implicit differentiation: ``jax.grad``
(or ``jax.jvp``) of any output with respect to ``alpha, lam, Delta, kappa`` or the teacher's
parameters goes through the implicit function theorem (see ``_root``).
"""

from __future__ import annotations

import dataclasses
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Float, Int

from qnr._validate import check_nonnegative, check_positive, is_concrete
from qnr.spectra import (
    AtomicConvolution,
    MPConvolution,
    SemicircleConvolution,
    convolved_law,
    teacher_atoms,
)
from qnr.teachers import MarchenkoPastur, Teacher

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
]

BRANCH_GENERAL = 0  #: ``tau > 0`` (``lam > 0``, or the interpolating ``lam -> 0+`` branch)
BRANCH_TAU_ZERO = 1  #: ``lam -> 0+`` with ``tau = 0`` (non-interpolating)


# --------------------------------------------------------------------------- building blocks
class ERMTerms(eqx.Module):
    """The spectral functionals of THEORY.md section 2 at one ``(tau, xi)``."""

    D: Float[Array, ""]
    E: Float[Array, ""]
    rank: Float[Array, ""]
    b: Float[Array, ""]  #: lower limit ``max(tau, omega)``
    omega: Float[Array, ""]  #: rank-constraint level (``-inf`` when it does not apply)


def _terms_from_law(law: SemicircleConvolution, tau, kappa, constrained: bool) -> ERMTerms:
    xi = law.xi
    dtype = xi.dtype
    tau = jnp.asarray(tau, dtype)
    if constrained:
        kappa = jnp.asarray(kappa, dtype)
        binding = kappa < 1
        mass = jnp.where(binding, kappa, 0.5)
        omega = jnp.where(binding, law.level_with_mass_above(mass), -jnp.inf)
        b = jnp.maximum(tau, omega)
    else:
        omega = jnp.asarray(-jnp.inf, dtype)
        b = tau
    q = law.quadrature(b)
    D = q.integrate(lambda x, r, h: (x - tau) * h * r)
    i2 = q.integrate(lambda x, r, h: (tau * tau - x * x) * r)
    rank = q.integrate(lambda x, r, h: r)
    E = law.second_moment_teacher + i2 + 4 * xi * D
    return ERMTerms(D=D, E=E, rank=rank, b=b, omega=omega)


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

    ``teacher``: ``MarchenkoPastur`` (``d -> inf`` law; ``d`` None) or any teacher with its
    ``d`` atoms (``PowerLaw``, ``Spectrum``). ``xi > 0``; ``tau >= 0`` (any real works: the
    formulas are integrals above ``b``); ``kappa`` the student width ratio (None or
    ``>= 1``: no rank constraint). Differentiable in ``xi``, ``tau``, ``kappa`` and the teacher's
    parameters; jit/vmap-friendly (``kappa`` must be given, possibly traced, to enable the
    constrained path).
    """
    check_positive("xi", xi)
    if kappa is not None:
        check_positive("kappa", kappa)
    law = convolved_law(teacher, xi, d, n_nodes=n_nodes)
    return _terms_from_law(law, tau, kappa, kappa is not None)


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
    concrete ``kappa < 1`` or a traced one), ``lam_zero`` (whether the ``lam -> 0+`` branch
    logic is compiled in; default: when a concrete ``lam == 0`` or a traced one) and
    ``n_nodes`` (quadrature nodes, see :func:`qnr.spectra.convolved_law`).

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
        if teacher is None:
            if kappa_star is None:
                raise ValueError("give a teacher or kappa_star (MP teacher)")
            teacher = MarchenkoPastur(kappa_star)
        elif kappa_star is not None:
            raise ValueError("give either teacher or kappa_star, not both")
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
        return _terms_from_law(self.law(xi), tau, self.kappa, self.rank_constrained)


class ERMSolver(eqx.Module):
    """Settings of the fixed-point solve on ``(log xi, log tau)``: ``method`` ``"newton"``
    (``optimistix.Newton``) or ``"lm"`` (``optimistix.LevenbergMarquardt``, slower but
    globally convergent), tolerances ``rtol``/``atol`` (on the log-variables), at most
    ``max_steps`` steps; ``xi0``/``tau0`` the default initial guess (overridden by ``init``
    warm starts); ``residual_tol``: a solution whose residuals exceed it is reported as a
    failure; ``fallback``: retry a failed Newton solve with Levenberg-Marquardt (a
    ``lax.cond``; :func:`solve_erm_grid` instead re-solves only the failed points)."""

    rtol: float = 1e-11
    atol: float = 1e-11
    max_steps: int = 100
    xi0: float = 1.0
    tau0: float = 1.0
    residual_tol: float = 1e-8
    method: str = eqx.field(static=True, default="newton")
    fallback: bool = eqx.field(static=True, default=True)


_DEFAULT_SOLVER = ERMSolver()


class ERMSolution(eqx.Module):
    """Solution of the ERM fixed point. Failed solves (``result`` not successful) have all
    float fields NaN. ``branch``: :data:`BRANCH_GENERAL` or :data:`BRANCH_TAU_ZERO`."""

    xi: Float[Array, ""]
    tau: Float[Array, ""]
    E: Float[Array, ""]
    e_test: Float[Array, ""]
    e_train: Float[Array, ""]
    rank: Float[Array, ""]
    D: Float[Array, ""]
    b: Float[Array, ""]
    branch: Int[Array, ""]
    result: optx.RESULTS
    stats: dict

    @property
    def value(self) -> Float[Array, "2"]:
        """The unknowns ``(xi, tau)``."""
        return jnp.stack([self.xi, self.tau])

    @property
    def converged(self) -> Array:
        return self.result == optx.RESULTS.successful


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
    section 2): atom ``1 - r`` at 0 plus ``rho_xi`` above ``b`` shifted left by ``tau``."""
    law = problem.law(solution.xi)
    return LearnedSpectrum(law, solution.tau, solution.b, 1 - solution.rank)


# --------------------------------------------------------------------------- residuals
def _residual_general(y, problem: ERMProblem):
    xi, tau = jnp.exp(y[0]), jnp.exp(y[1])
    t = problem.terms(xi, tau)
    r1 = (t.E + problem.Delta / 2) / (2 * problem.alpha * xi) - 1
    r2 = 1 - t.D / problem.alpha - problem.lam / tau
    return jnp.stack([r1, r2])


def _residual_tau_zero(y, problem: ERMProblem):
    xi = jnp.exp(y[0])
    t = problem.terms(xi, jnp.zeros_like(xi))
    return ((t.E + problem.Delta / 2) / (2 * problem.alpha * xi) - 1)[None]


def _root(fn, y0, problem, solver: ERMSolver):
    """Solve ``fn(y, problem) = 0``: Newton's method (``optimistix.Newton``); where it fails
    (divergence, non-finite iterates, too many steps), Levenberg-Marquardt
    (``optimistix.LevenbergMarquardt``, a trust-region method) from the same start.

    Differentiation is by the implicit function theorem: the solve runs on
    ``stop_gradient``-ed inputs and the root is re-attached to the graph by one Newton step
    ``y* - J^{-1} fn(y*, problem)`` with ``J = d fn / dy`` held constant, whose derivative is
    exactly ``-J^{-1} d fn / d theta`` (forward and reverse mode). Failed solves are replaced
    by the (finite) starting point before that step, so a failed or unused branch can never
    inject NaN into the gradients of the selected one.
    """
    y0 = jax.lax.stop_gradient(y0)
    p_const = jax.lax.stop_gradient(problem)

    def run(method):
        sol = optx.root_find(
            fn,
            method,
            y0,
            p_const,
            throw=False,
            max_steps=solver.max_steps,
            adjoint=optx.RecursiveCheckpointAdjoint(),
        )
        ok = (sol.result == optx.RESULTS.successful) & jnp.all(jnp.isfinite(sol.value))
        return sol.value, ok, sol.stats["num_steps"]

    lm = optx.LevenbergMarquardt(rtol=solver.rtol, atol=solver.atol)
    if solver.method == "lm":
        y, ok, steps = run(lm)
    elif solver.method == "newton":
        y, ok, steps = run(optx.Newton(rtol=solver.rtol, atol=solver.atol))
        if solver.fallback:

            def retry(_):
                y2, ok2, steps2 = run(lm)
                return y2, ok2, steps + steps2

            y, ok, steps = jax.lax.cond(ok, lambda _: (y, ok, steps), retry, None)
    else:
        raise ValueError(f"method must be 'newton' or 'lm', got {solver.method!r}")
    y = jax.lax.stop_gradient(jnp.where(ok, y, y0))
    jac = jax.jacfwd(fn)(y, p_const)
    eye = jnp.eye(y.shape[0], dtype=y.dtype)
    jac = jnp.where(ok & jnp.all(jnp.isfinite(jac)), jac, eye)
    y = y - jnp.linalg.solve(jac, fn(y, problem))
    return y, ok, steps


def solve_erm(problem: ERMProblem, solver: ERMSolver | None = None, init=None) -> ERMSolution:
    """Solve the ERM fixed point of THEORY.md section 2 (see the module docstring).

    ``init``: optional warm start ``(xi, tau)`` (e.g. the previous point of a curve).
    jit/vmap/grad-compatible; failure is reported in ``result`` (outputs NaN), never raised.
    At ``lam == 0`` both ``lam -> 0+`` branches are solved and the valid one returned.
    """
    solver = _DEFAULT_SOLVER if solver is None else solver
    dtype = problem.alpha.dtype
    if init is None:
        y0 = jnp.log(jnp.asarray([solver.xi0, solver.tau0], dtype=dtype))
    else:
        init = jnp.asarray(init, dtype=dtype)
        y0 = jnp.log(jnp.where(jnp.isfinite(init) & (init > 0), init, 1.0))
    y_g, ok_g, steps_g = _root(_residual_general, y0, problem, solver)

    lam_zero = problem.lam == 0

    def tau_zero_branch(y0):
        return _root(_residual_tau_zero, y0[:1], problem, solver)

    def skip(y0):
        return y0[:1], jnp.asarray(False), jnp.zeros_like(steps_g)

    if problem.lam_zero:
        y_0, ok_0, steps_0 = jax.lax.cond(lam_zero, tau_zero_branch, skip, y0)
    else:
        y_0, ok_0, steps_0 = skip(y0)

    xi_g, tau_g = jnp.exp(y_g[0]), jnp.exp(y_g[1])
    xi_0 = jnp.exp(y_0[0])
    # branch choice: tau = 0 iff its solution is valid (D(0, xi) < alpha)
    if problem.lam_zero:
        t_0 = problem.terms(jnp.where(ok_0, xi_0, 1.0), jnp.zeros((), dtype))
        use_0 = lam_zero & ok_0 & (t_0.D < problem.alpha)
    else:
        use_0 = jnp.asarray(False)
    xi = jnp.where(use_0, xi_0, xi_g)
    tau = jnp.where(use_0, 0.0, tau_g)
    ok = jnp.where(use_0, ok_0, ok_g)
    t = problem.terms(jnp.where(ok, xi, 1.0), jnp.where(ok, tau, 1.0))
    alpha = problem.alpha
    e_test = alpha * xi
    e_train = xi * (alpha - t.D) ** 2 / alpha
    e_train = jnp.where(use_0 | (problem.lam > 0), e_train, 0.0)
    values = dict(xi=xi, tau=tau, E=t.E, e_test=e_test, e_train=e_train, rank=t.rank, D=t.D, b=t.b)
    r1 = (t.E + problem.Delta / 2) / (2 * alpha * xi) - 1
    r2 = jnp.where(use_0, 0.0, 1 - t.D / alpha - problem.lam / jnp.where(use_0, 1.0, tau))
    residual = jax.lax.stop_gradient(jnp.maximum(jnp.abs(r1), jnp.abs(r2)))
    # a converged iteration whose equations are not satisfied is a failure, not a result
    ok = ok & (residual <= solver.residual_tol)
    ok = ok & jnp.all(jnp.stack([jnp.isfinite(v) for v in values.values()]))
    values = {k: jnp.where(ok, v, jnp.nan) for k, v in values.items()}
    result = optx.RESULTS.where(ok, optx.RESULTS.successful, optx.RESULTS.nonlinear_divergence)
    stats = dict(num_steps=jnp.where(use_0, steps_0, steps_g), residual=residual)
    return ERMSolution(
        **values,
        branch=jnp.where(use_0, BRANCH_TAU_ZERO, BRANCH_GENERAL),
        result=result,
        stats=stats,
    )


# --------------------------------------------------------------------------- grids and curves
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
    if teacher is None:
        if kappa_star is None:
            raise ValueError("give a teacher or kappa_star (MP teacher)")
        ks = np.asarray(check_positive("kappa_star", kappa_star), dtype=float)
    else:
        ks = np.asarray(1.0)
    arrays = np.broadcast_arrays(
        *(np.asarray(v, dtype=float) for v in (alpha, lam, Delta, kappa, ks))
    )
    shape = arrays[0].shape
    flat = [jnp.asarray(a.ravel()) for a in arrays]
    constrained = bool(np.any(arrays[3] < 1))
    lam_zero = bool(np.any(arrays[1] == 0))

    def build(a, lm, dl, k, kst):
        return ERMProblem(
            a,
            teacher,
            kappa_star=kst if teacher is None else None,
            lam=lm,
            Delta=dl,
            kappa=k,
            d=d,
            rank_constrained=constrained,
            lam_zero=lam_zero,
            n_nodes=n_nodes,
        )

    return jax.vmap(build)(*flat), shape


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
    shape). ``init``: optional ``(N, 2)`` warm starts.

    Pass 1 runs the solver's ``method`` without fallback on every point; if some fail and
    ``solver.fallback``, pass 2 runs Levenberg-Marquardt on the batch, warm-started at the
    pass-1 solutions (converged points then cost one or two steps). Remaining failures are
    NaN with a result code and a ``RuntimeWarning``."""
    solver = _DEFAULT_SOLVER if solver is None else solver
    n = problems.alpha.shape[0]
    dtype = problems.alpha.dtype
    if init is None:
        init = jnp.broadcast_to(jnp.asarray([solver.xi0, solver.tau0], dtype), (n, 2))
    sol = _solve_batch(problems, dataclasses.replace(solver, fallback=False), init)
    if solver.fallback and is_concrete(sol.xi) and not bool(jnp.all(sol.converged)):
        warm = jnp.where(
            sol.converged[:, None], jnp.stack([sol.xi, jnp.maximum(sol.tau, 0.0)], -1), init
        )
        lm = dataclasses.replace(solver, method="lm", fallback=False)
        sol2 = _solve_batch(problems, lm, warm)
        sol = jax.tree.map(
            lambda a, b: jnp.where(
                jnp.reshape(sol.converged, sol.converged.shape + (1,) * (a.ndim - 1)), a, b
            ),
            sol,
            sol2,
        )
    _warn_failures(sol, "solve_erm_grid")
    return sol


@eqx.filter_jit
def _solve_scan(problems, solver, init):
    def step(carry, problem):
        sol = solve_erm(problem, solver, carry)
        nxt = jnp.where(sol.converged, jnp.stack([sol.xi, jnp.maximum(sol.tau, 0.0)]), carry)
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
