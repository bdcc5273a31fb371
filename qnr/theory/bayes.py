"""Bayes-optimal baseline: RIE error and state evolution (THEORY.md section 4).

Maillard, Troiani, Martin, Krzakala, Zdeborova, NeurIPS 2024 (arXiv 2408.03733), in the
canonical normalization of THEORY.md section 1 (``n = alpha d^2``,
``y = Tr(Z S*) + sqrt(Delta) xi``, ``E = ||Shat - S*||_F^2 / d``).

* **Denoising error.** For ``Y = S* + sqrt(delta) G`` (``G`` GOE, semicircle of variance 1) the
  rotationally invariant estimator ``f(l) = l - 2 delta H(l)`` is Bayes-optimal and its error is
  ``mmse(delta) = delta - (4 pi^2/3) delta^2 int rho_delta(x)^3 dx`` with
  ``rho_delta = mu* boxplus semicircle(delta)`` (``qnr.spectra``).
* **State evolution.** GAMP-RIE (``qnr.sim.gamp``) sees an effective denoising problem of noise
  ``delta_t`` with ``2 alpha delta_{t+1} = mmse(delta_t) + Delta/2``; the Bayes-optimal error is
  ``E_BO = mmse(delta_eff)`` at the fixed point ``2 alpha delta_eff = mmse(delta_eff) + Delta/2``.
  Papers in the Bayes-optimal convention report ``MMSE = kappa* E`` (``qnr.model``).
* **Small delta (derived).** If the teacher law has atoms of masses ``p_i`` (the MP law: one
  atom ``p0 = 1 - kappa*`` at zero when ``kappa* < 1``, plus a continuous part),
  ``mmse(delta)/delta -> c1 = 1 - sum_i p_i^2`` as ``delta -> 0``: each atom becomes a
  semicircle of mass ``p_i`` and variance ``p_i delta``, whose ``int rho^3 = 3 p_i^2/(4 pi^2
  delta)``, and a continuous part contributes ``O(delta^2)``. Hence noiseless perfect
  recovery (``delta_eff = 0``) iff ``alpha >= alpha_BO = c1/2``: ``kappa* - kappa*^2/2`` for
  the MP teacher (THEORY.md section 3), ``kappa - kappa^2`` for a rank-``kappa d`` projector
  (the dimension of its Grassmannian over ``d^2``). For a finite-``d`` atomic law of distinct
  eigenvalues the atoms count individually (``1/d^2`` each), as they do for ``delta`` below
  their spacing squared. Roots below ``delta_min`` (where the spectral quadrature loses
  accuracy) use the linearisation ``mmse(delta) = c1 delta``:
  ``delta_eff = Delta / (2 (2 alpha - c1))``.

The fixed point is a root in ``u = log delta`` found by ``optimistix.Bisection`` on the bracket
``[log max(Delta/(4 alpha), delta_min), log((Q0 + Delta/2)/(2 alpha))]`` (the map is negative at
the left end because ``mmse > 0`` and positive at the right end because ``mmse < Q0``) and
differentiated by the implicit function theorem (``optimistix.ImplicitAdjoint``): ``E_BO`` is
differentiable in ``alpha``, ``Delta`` and the teacher parameters. Everything is
``jit``/``vmap``-compatible; failure is reported in ``.result`` (value masked to NaN).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Bool, Float, Int

from qnr._validate import check_nonnegative, check_positive, check_size
from qnr.model import mmse_from_error
from qnr.spectra import atomic_law, convolved_law, teacher_atoms
from qnr.teachers import MarchenkoPastur, Teacher, resolve_teacher

__all__ = [
    "mmse",
    "zero_mass",
    "alpha_perfect_recovery",
    "state_evolution",
    "BayesOptimal",
    "BayesSolver",
    "BayesSolution",
    "solve_bayes_optimal",
    "bayes_optimal_error",
    "oracle_hilbert",
]

_FOUR_PI2_3 = 4 * jnp.pi**2 / 3


def _check_teacher(teacher) -> None:
    if not isinstance(teacher, Teacher):
        raise ValueError(f"teacher must be a qnr Teacher, got {type(teacher).__name__}")


class _SpectralLaw(eqx.Module):
    """The teacher's spectral law as the spectra layer needs it inside ``jit``: the MP teacher
    itself (closed-form cubic, differentiable in ``kappa*``) or concrete atoms and weights
    (``qnr.spectra.teacher_atoms``, computed once, eagerly: a power law's rank is static)."""

    teacher: MarchenkoPastur | None
    atoms: Float[Array, " p"] | None
    weights: Float[Array, " p"] | None

    def law(self, delta, n_nodes: int | None):
        if self.teacher is not None:
            return convolved_law(self.teacher, delta, n_nodes=n_nodes)
        delta = jnp.asarray(delta, self.atoms.dtype)
        return atomic_law(self.atoms, delta, self.weights, n_nodes=n_nodes or 64)

    def mmse(self, delta, n_nodes: int | None = None):
        law = self.law(delta, n_nodes)
        delta = law.xi
        return delta - _FOUR_PI2_3 * delta**2 * law.integrate(lambda x, r, h: r**3)

    @property
    def q0(self):
        if self.teacher is not None:
            return self.teacher.Q0
        return jnp.sum(self.weights * self.atoms**2)

    @property
    def p0(self):
        """Mass at zero."""
        if self.teacher is not None:
            return jnp.maximum(1 - self.teacher.kappa_star, 0.0)
        scale = jnp.max(jnp.abs(self.atoms))
        return jnp.sum(jnp.where(jnp.abs(self.atoms) <= 1e-12 * scale, self.weights, 0.0))

    @property
    def c1(self):
        """``lim_{delta -> 0} mmse(delta)/delta = 1 - sum_i p_i^2`` over the atoms."""
        if self.teacher is not None:
            return 1 - self.p0**2
        return 1 - jnp.sum(self.weights**2)


def _spectral_law(teacher: Teacher, d: int | None) -> _SpectralLaw:
    _check_teacher(teacher)
    if isinstance(teacher, MarchenkoPastur):
        if d is not None:
            raise ValueError("d must be None for the MP teacher (its d -> inf law is used)")
        return _SpectralLaw(teacher, None, None)
    if d is not None:
        d = check_size("d", d)
    atoms, weights = teacher_atoms(teacher, d)
    return _SpectralLaw(None, atoms, weights)


def mmse(teacher: Teacher, delta, d: int | None = None, *, n_nodes: int | None = None) -> Array:
    """``mmse(delta) = delta - (4 pi^2/3) delta^2 int rho_delta^3``: the error ``||f(Y) -
    S*||_F^2/d`` of the RIE for ``Y = S* + sqrt(delta) G`` (THEORY.md section 4).

    ``teacher``: ``MarchenkoPastur`` (``d -> inf`` law, ``d`` must be None) or any teacher
    through its ``d`` atoms (``qnr.spectra.teacher_atoms``). ``delta > 0``; reliable for
    ``delta >~ 1e-4`` (use :func:`solve_bayes_optimal`, which linearises below that).
    """
    check_positive("delta", delta)
    return _mmse_jit(_spectral_law(teacher, d), delta, n_nodes)


@eqx.filter_jit
def _mmse_jit(spec: _SpectralLaw, delta, n_nodes: int | None) -> Array:
    return spec.mmse(delta, n_nodes)


def zero_mass(teacher: Teacher, d: int | None = None) -> Array:
    """Mass ``p0`` of the teacher's spectral law at zero: ``max(1 - kappa*, 0)`` for the MP
    teacher, the fraction of zero atoms otherwise."""
    return _spectral_law(teacher, d).p0


def alpha_perfect_recovery(teacher: Teacher, d: int | None = None) -> Array:
    """Noiseless Bayes-optimal perfect-recovery threshold ``alpha_BO = (1 - sum_i p_i^2)/2``
    over the atoms ``p_i`` of the teacher law: ``kappa* - kappa*^2/2`` for the MP teacher
    (module docstring for the derivation)."""
    return _spectral_law(teacher, d).c1 / 2


class BayesOptimal(eqx.Module):
    """The Bayes-optimal problem: sample ratio ``alpha = n/d^2`` and label-noise variance
    ``Delta``, both JAX scalars (vmappable, differentiable), and the teacher law. ``d``
    (static): the size whose atoms define a non-MP teacher's law (None for MP; a ``Spectrum``
    defaults to its own values). Build with ``BayesOptimal(alpha, teacher, Delta=...)`` or
    ``BayesOptimal(alpha, kappa_star=0.5)`` for the MP teacher (as ``qnr.theory.ERMProblem``).
    """

    alpha: Float[Array, ""]
    Delta: Float[Array, ""]
    teacher: Teacher
    spectral_law: _SpectralLaw
    d: int | None = eqx.field(static=True, default=None)

    def __init__(
        self,
        alpha,
        teacher: Teacher | None = None,
        *,
        kappa_star=None,
        Delta=0.0,
        d: int | None = None,
    ):
        teacher = resolve_teacher(teacher, kappa_star)
        self.spectral_law = _spectral_law(teacher, d)
        alpha = jnp.asarray(check_positive("alpha", alpha))
        if not jnp.issubdtype(alpha.dtype, jnp.floating):
            alpha = alpha.astype(jnp.zeros(()).dtype)
        self.teacher = teacher
        self.d = None if d is None else check_size("d", d)
        self.alpha = alpha
        self.Delta = jnp.asarray(check_nonnegative("Delta", Delta), dtype=alpha.dtype)


class BayesSolver(eqx.Module):
    """Settings: bisection tolerances on ``log delta`` (``rtol``, ``atol``), ``max_steps``,
    ``delta_min`` (below it the small-``delta`` linearisation is used) and the spectral
    quadrature ``n_nodes`` (None: the spectra default)."""

    rtol: float = 1e-11
    atol: float = 1e-11
    max_steps: int = eqx.field(static=True, default=256)
    delta_min: float = 1e-4
    n_nodes: int | None = eqx.field(static=True, default=None)


class BayesSolution(eqx.Module):
    """Output of :func:`solve_bayes_optimal`.

    ``E`` -- ``E_BO = mmse(delta_eff)`` (also ``.value``); ``delta`` -- ``delta_eff``;
    ``mmse_kappa`` -- ``kappa* E_BO`` (the Bayes-optimal papers' MMSE; ``kappa*`` of the
    teacher, or its rank fraction ``1 - p0`` for a ``Spectrum`` teacher); ``e_test`` --
    ``(E_BO + Delta/2)/2``;
    ``perfect_recovery`` -- ``delta_eff = 0`` (noiseless, ``alpha >= alpha_BO``);
    ``result`` -- ``optimistix.RESULTS``; ``stats`` -- ``num_steps`` of the bisection and
    ``linearised`` (root below ``delta_min``).
    """

    E: Float[Array, ""]
    delta: Float[Array, ""]
    mmse_kappa: Float[Array, ""]
    e_test: Float[Array, ""]
    perfect_recovery: Bool[Array, ""]
    result: optx.RESULTS
    stats: dict[str, Int[Array, ""] | Bool[Array, ""]]

    @property
    def value(self) -> Float[Array, ""]:
        """``E_BO``."""
        return self.E

    @property
    def converged(self) -> Bool[Array, ""]:
        return self.result == optx.RESULTS.successful


def _kappa_star(problem: BayesOptimal) -> Array:
    k = getattr(problem.teacher, "kappa_star", None)
    if k is not None:
        return k
    return 1 - problem.spectral_law.p0


def _solve(problem: BayesOptimal, solver: BayesSolver) -> BayesSolution:
    spec = problem.spectral_law
    alpha, noise = problem.alpha, problem.Delta
    dtype = alpha.dtype

    def mmse_at(delta, spec):
        return spec.mmse(delta, solver.n_nodes)

    def fn(u, args):
        alpha, noise, spec = args
        delta = jnp.exp(u)
        return 2 * alpha * delta - mmse_at(delta, spec) - noise / 2

    q0 = spec.q0.astype(dtype)
    c1 = spec.c1.astype(dtype)  # mmse(delta)/delta at delta -> 0
    delta_min = jnp.asarray(solver.delta_min, dtype)
    lo = jnp.log(jnp.maximum(noise / (4 * alpha), delta_min))
    hi = jnp.log((q0 + noise / 2) / (2 * alpha))
    hi = jnp.maximum(hi, lo + 1e-3)
    args = (alpha, noise, spec)
    # The bracket holds a sign change unless the root lies below delta_min; then a dummy
    # root-find (u - lo + 1/2 on [lo - 1, hi]) keeps Bisection's bracket check satisfied.
    below = fn(lo, args) >= 0

    def bracketed(u, args):
        below, lo, args = args
        return jnp.where(below, u - lo + 0.5, fn(u, args))

    lower = jnp.where(below, lo - 1, lo)
    sol = optx.root_find(
        bracketed,
        optx.Bisection(rtol=solver.rtol, atol=solver.atol),
        (lower + hi) / 2,
        (below, lo, args),
        options={"lower": lower, "upper": hi},
        max_steps=solver.max_steps,
        throw=False,
    )
    slope = 2 * alpha - c1
    delta_lin = jnp.where(slope > 0, noise / (2 * jnp.where(slope > 0, slope, 1.0)), jnp.exp(lo))
    delta_lin = jnp.minimum(delta_lin, jnp.exp(lo))
    delta_root = jnp.exp(sol.value)
    delta = jnp.where(below, delta_lin, delta_root)
    error = jnp.where(below, c1 * delta_lin, mmse_at(delta_root, spec))
    result = optx.RESULTS.where(below, optx.RESULTS.successful, sol.result)
    ok = result == optx.RESULTS.successful
    error = jnp.where(ok, error, jnp.nan)
    delta = jnp.where(ok, delta, jnp.nan)
    k = _kappa_star(problem).astype(dtype)
    return BayesSolution(
        E=error,
        delta=delta,
        mmse_kappa=mmse_from_error(error, k),
        e_test=(error + noise / 2) / 2,
        perfect_recovery=below & (noise == 0) & (slope >= 0),
        result=result,
        stats={"num_steps": sol.stats["num_steps"], "linearised": below},
    )


_solve_jit = eqx.filter_jit(_solve)


def solve_bayes_optimal(problem: BayesOptimal, solver: BayesSolver | None = None) -> BayesSolution:
    """Solve the state-evolution fixed point ``2 alpha delta = mmse(delta) + Delta/2``
    (module docstring). Jitted; ``vmap`` over problems with ``eqx.filter_vmap`` or build the
    problem inside a vmapped function; differentiable in ``alpha``, ``Delta`` and the teacher
    parameters by the implicit function theorem.

    Example::

        sol = solve_bayes_optimal(BayesOptimal(0.2, kappa_star=0.5))
        sol.mmse_kappa  # 0.392 (THEORY.md section 4)
    """
    if not isinstance(problem, BayesOptimal):
        raise ValueError(f"problem must be a BayesOptimal, got {type(problem).__name__}")
    solver = BayesSolver() if solver is None else solver
    if not isinstance(solver, BayesSolver):
        raise ValueError(f"solver must be a BayesSolver, got {type(solver).__name__}")
    check_positive("delta_min", solver.delta_min)
    return _solve_jit(problem, solver)


def bayes_optimal_error(alpha, kappa_star, Delta=0.0) -> Array:
    """``E_BO`` for the MP teacher (convenience; NaN where the solve failed; ``Delta`` is the
    label-noise variance). Vectorised over array ``alpha``/``kappa_star``/``Delta``
    (broadcast) in one compiled program."""
    alpha = jnp.asarray(check_positive("alpha", alpha))
    kappa_star = jnp.asarray(check_positive("kappa_star", kappa_star))
    noise = jnp.asarray(check_nonnegative("Delta", Delta))
    dtype = jnp.result_type(alpha, kappa_star, noise, float)
    a, k, n = jnp.broadcast_arrays(
        alpha.astype(dtype), kappa_star.astype(dtype), noise.astype(dtype)
    )
    return _mp_error_batch(a.ravel(), k.ravel(), n.ravel()).reshape(a.shape)


def _mp_error_one(a, k, n):
    teacher = eqx.tree_at(lambda t: t.kappa_star, MarchenkoPastur(1.0), k)
    prob = eqx.tree_at(lambda p: (p.alpha, p.Delta), BayesOptimal(1.0, teacher), (a, n))
    return _solve(prob, BayesSolver()).E


_mp_error_batch = jax.jit(jax.vmap(_mp_error_one))


def state_evolution(
    teacher: Teacher,
    alpha,
    Delta=0.0,
    *,
    steps: int = 50,
    d: int | None = None,
    n_nodes: int | None = None,
) -> tuple[Float[Array, " steps"], Float[Array, " steps"]]:
    """The GAMP-RIE state-evolution trajectory from ``Shat^0 = 0``:
    ``delta_0 = (Q0 + Delta/2)/(2 alpha)``, ``E_{t+1} = mmse(delta_t)``,
    ``delta_{t+1} = (E_{t+1} + Delta/2)/(2 alpha)``. Returns ``(delta_t, E_{t+1})`` for
    ``t = 0..steps-1`` (compare with ``GAMPSolution.delta_trace``/``error_trace``, undamped)."""
    spec = _spectral_law(teacher, d)
    steps = check_size("steps", steps)
    alpha = jnp.asarray(check_positive("alpha", alpha))
    noise = jnp.asarray(check_nonnegative("Delta", Delta))
    dtype = jnp.result_type(alpha, noise, float)
    alpha, noise = alpha.astype(dtype), noise.astype(dtype)
    return _se_run(alpha, noise, spec, steps, n_nodes)


@eqx.filter_jit
def _se_run(alpha, noise, spec: _SpectralLaw, steps: int, n_nodes: int | None):
    def step(delta, _):
        e = spec.mmse(delta, n_nodes)
        return (e + noise / 2) / (2 * alpha), (delta, e)

    q0 = spec.q0.astype(alpha.dtype)
    _, (deltas, errors) = jax.lax.scan(step, (q0 + noise / 2) / (2 * alpha), None, steps)
    return deltas, errors


def oracle_hilbert(teacher: Teacher, d: int | None = None, *, n_nodes: int | None = None):
    """``hilbert(l, delta) -> H_{rho_delta}(l)``: the asymptotic Hilbert transform of
    ``rho_delta`` for the oracle RIE / GAMP-RIE of ``qnr.sim`` (which cannot import
    ``qnr.spectra`` itself). JAX-traceable and differentiable in ``l``."""
    spec = _spectral_law(teacher, d)

    def hilbert(l, delta):
        return spec.law(delta, n_nodes).hilbert(l)

    return hilbert
