"""The empirical-risk-minimisation problem and the solution record shared by its solvers.

THEORY.md section 1. With ``Z_mu = (x_mu x_mu^T - I)/sqrt(d)`` and ``A(S)_mu = Tr(Z_mu S)``,

* data term ``f(S) = (1/(4n)) sum_mu (y_mu - A(S)_mu)^2`` and its gradient
  ``grad f(S) = -(1/(2n)) A^*(y - A(S))``;
* convex objective ``F(S) = f(S) + (lam/d) Tr S`` over the PSD cone;
* network objective ``L(W) = f(W W^T) + (lam/d) ||W||_F^2`` (``= F(W W^T)``: the nuclear route).

A per-sample 0/1 ``sample_mask`` lets one compiled program serve several sample sizes: masked
samples contribute nothing and the normalisation uses the true ``n = sum(sample_mask)``.

Both :func:`qnr.sim.solve_convex` and :func:`qnr.sim.train_network` return an
:class:`ERMSolution` carrying the estimate ``Shat``, its spectrum and the exact metrics of
:mod:`qnr.model` (``E = ||Shat - S*||_F^2/d``, ``e_test = (E + Delta/2)/2``).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Bool, Float, Int

from qnr._validate import check_nonnegative, check_shape, is_concrete
from qnr.model import e_test_from_error, matrix_error
from qnr.sim import _linalg as _la
from qnr.sim.data import Dataset
from qnr.sim.sensing import adjoint_sensing, apply_sensing

__all__ = [
    "ERMProblem",
    "ERMSolution",
    "RESULTS",
    "RANK_RTOL",
    "DUAL_RANK_RTOL",
    "numerical_rank",
    "dual_certificate",
]

RESULTS = optx.RESULTS
"""Result codes (``optimistix.RESULTS``): ``successful``, ``max_steps_reached``, ``nonfinite``."""

RANK_RTOL = 1e-6
"""Default eigenvalue tolerance of the rank: ``#{i : lambda_i > RANK_RTOL * max(lambda_1, 1)}``.

Relative to the top eigenvalue (floored at 1, the scale of ``S*``): exact zeros of the convex
solution and the ``O(gtol)`` residual directions of a converged network are both excluded."""


DUAL_RANK_RTOL = 1e-4
"""Eigenvalue tolerance of the dual slack's rank: ``#{i : mu_i > DUAL_RANK_RTOL * mu_max}``
(measured: in the unique d = 100 case the smallest non-zero ``mu_i`` is ``1e-3 mu_max``, the
numerically zero ones below ``1e-7 mu_max``)."""


def numerical_rank(eigenvalues: Float[Array, "... d"], rtol: float = RANK_RTOL) -> Array:
    """``#{i : lambda_i > rtol * max(lambda_max, 1)}`` along the last axis."""
    top = jnp.maximum(jnp.max(eigenvalues, axis=-1, keepdims=True), 1.0)
    return jnp.sum(eigenvalues > rtol * top, axis=-1)


class ERMProblem(eqx.Module):
    """``min_{S psd} (1/(4n)) sum_mu m_mu (y_mu - Tr(Z_mu S))^2 + (lam/d) Tr S``.

    ``sample_mask`` (``m_mu`` in {0, 1}) marks the real samples; ``n = sum_mu m_mu``.
    ``lam`` is a JAX scalar so that it can be swept under ``vmap`` without recompiling.
    """

    X: Float[Array, "n d"]
    y: Float[Array, " n"]
    lam: Float[Array, ""]
    sample_mask: Float[Array, " n"]

    def __init__(self, X, y, lam, sample_mask=None):
        X = jnp.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-d array (n, d), got shape {X.shape}")
        check_shape("y", y, (X.shape[0],))
        check_nonnegative("lam", lam)
        self.X = X
        self.y = jnp.asarray(y, X.dtype)
        self.lam = jnp.asarray(lam, X.dtype)
        if sample_mask is None:
            sample_mask = jnp.ones(X.shape[0], X.dtype)
        check_shape("sample_mask", sample_mask, (X.shape[0],))
        if is_concrete(sample_mask):
            arr = np.asarray(sample_mask)
            if not np.all((arr == 0) | (arr == 1)) or arr.sum() < 1:
                raise ValueError("sample_mask must be 0/1 with at least one sample")
        self.sample_mask = jnp.asarray(sample_mask, X.dtype)

    @classmethod
    def from_dataset(cls, data: Dataset, lam) -> ERMProblem:
        return cls(data.X, data.y, lam)

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def n(self) -> Array:
        """The true number of samples ``sum(sample_mask)``."""
        return jnp.sum(self.sample_mask)

    def residual(self, S: Float[Array, "d d"]) -> Float[Array, " n"]:
        """``m_mu (y_mu - Tr(Z_mu S))``."""
        return self.sample_mask * (self.y - apply_sensing(self.X, S))

    def data_loss(self, S: Float[Array, "d d"]) -> Array:
        """``f(S) = (1/(4n)) sum_mu m_mu (y_mu - Tr(Z_mu S))^2`` (the training error)."""
        r = self.residual(S)
        return jnp.sum(r**2) / (4 * self.n)

    def data_grad(self, S: Float[Array, "d d"]) -> Float[Array, "d d"]:
        """``grad f(S) = -(1/(2n)) sum_mu m_mu r_mu Z_mu``."""
        return -adjoint_sensing(self.X, self.residual(S)) / (2 * self.n)

    def objective(self, S: Float[Array, "d d"]) -> Array:
        """``F(S) = f(S) + (lam/d) Tr S``."""
        return self.data_loss(S) + self.lam / self.d * jnp.trace(S)


def dual_certificate(
    problem: ERMProblem, S: Float[Array, "d d"], rank_S, rank_rtol: float = DUAL_RANK_RTOL
) -> dict:
    """KKT certificate of a solution of the convex problem and its (non-)uniqueness.

    The dual slack is ``M = grad f(S) + (lam/d) I = (lam/d) I - (1/(2n)) A^*(r)``
    (``r = y - A(S)``). At a minimiser ``M`` is PSD and ``M S = 0``. Because ``f`` is strictly
    convex in ``A(S)``, every minimiser has the same predictions ``A(S)``, residual, ``M`` and
    trace, so the solution set is the face

        ``{S = U B U^T : B psd, A(U B U^T) = A(Shat), Tr B = Tr Shat}``,

    with ``U`` (``d x k``) spanning ``ker M``, ``k = d - rank M``. ``B`` has ``k(k+1)/2``
    entries and they are pinned by ``n + 1`` linear equations, so for Gaussian inputs (linear
    equations in general position) the minimiser is **non-unique** when ``k(k+1)/2 > n + 1``
    (the face has a positive-dimensional affine part through an interior point; Pataki's
    face-dimension count). Separately, ``rank S + rank M < d`` means strict complementarity
    fails (a further, weaker warning sign: the solution may sit on the boundary of a larger
    face). The classic degenerate case: at small ``d`` and ``alpha`` (d = 40, alpha = 0.1,
    lam = 0.01) the most negative label can only be fitted with a large trace, one sample
    keeps the residual ``-2 n lam/sqrt(d)``, ``M = (lam/d) x x^T`` has rank one and the
    whole ``(d-1)``-dimensional PSD cone orthogonal to ``x`` is the face: solvers started at
    different points return ``E`` anywhere in a wide range at the same objective.

    Returns ``dual_rank`` (``rank M`` at tolerance ``rank_rtol * max eig M``),
    ``face_dim`` (``k``), ``complementarity_deficit`` (``k - rank S``; 0 under strict
    complementarity), ``dual_min_eig`` (``min eig M / (lam/d)``: ``>= 0`` up to the solver
    tolerance), ``residual_participation`` (``(sum r^2)^2 / (n sum r^4)``, small when the
    residual sits on a few samples) and ``degenerate`` (``k(k+1)/2 > n + 1``).
    Valid for the convex (rank-unconstrained) problem only.
    """
    d = problem.d
    n = problem.n
    dtype = S.dtype
    r = problem.residual(S)
    M = problem.data_grad(S) + problem.lam / d * jnp.eye(d, dtype=dtype)
    # serialise with the eigen-decomposition that gave rank_S: two independent batched eighs
    # (vmapped over seeds) run concurrently by XLA's CPU thunk executor can deadlock in
    # jaxlib's LAPACK ParallelBatchMap on a small thread pool (observed on 2 cores)
    M, _ = jax.lax.optimization_barrier((M, jnp.asarray(rank_S)))
    mu = _la.eigvalsh((M + M.T) / 2)
    top = jnp.maximum(mu[-1], jnp.finfo(dtype).tiny)
    dual_rank = jnp.sum(mu > rank_rtol * top).astype(jnp.int32)
    k = d - dual_rank
    rank_S = jnp.asarray(rank_S, jnp.int32)
    r2 = jnp.sum(r**2)
    participation = r2**2 / jnp.maximum(n * jnp.sum(r**4), jnp.finfo(dtype).tiny)
    scale = jnp.where(problem.lam > 0, problem.lam / d, top)
    return dict(
        dual_rank=dual_rank,
        face_dim=k.astype(jnp.int32),
        complementarity_deficit=(k - rank_S).astype(jnp.int32),
        dual_min_eig=(mu[0] / scale).astype(dtype),
        residual_participation=participation.astype(dtype),
        degenerate=(k * (k + 1)).astype(dtype) / 2 > n + 1,
    )


class ERMSolution(eqx.Module):
    """What an ERM solver returns (for a single problem; leading axes under ``vmap``).

    ``Shat``: the estimate (``W W^T`` for a network); ``eigenvalues``: its spectrum in
    decreasing order; ``E = ||Shat - S*||_F^2/d`` and ``e_test = (E + Delta/2)/2`` (NaN when no
    teacher was given); ``e_train = f(Shat)``; ``loss`` the objective value (``F(Shat)``, or
    ``L(W)`` for a network); ``rank_fraction = rank(Shat)/d`` with the tolerance
    :data:`RANK_RTOL`; ``trace = Tr Shat`` (``= ||W||_F^2`` for a network); ``iterations``;
    ``result`` an ``optimistix.RESULTS`` code; ``stats`` solver diagnostics; ``W`` the network
    weights (``None`` for the convex solver); ``trajectory`` the recorded history (or ``None``).

    ``degenerate``: the minimiser is not unique (convex solver only, from the dual
    certificate :func:`dual_certificate`: the optimal face ``ker M`` of dimension ``k`` has
    ``k(k+1)/2 > n + 1``); ``Shat`` is then one of many minimisers with the same objective
    and different ``E`` -- which one depends on the solver and its starting point, so its
    ``E`` and rank are not the quantities the replica theory predicts. ``result`` stays
    ``successful`` (the objective is minimal); summaries count these runs separately.
    Always ``False`` for networks and rank-constrained solves (no certificate).
    """

    Shat: Float[Array, "d d"]
    eigenvalues: Float[Array, " d"]
    E: Float[Array, ""]
    e_test: Float[Array, ""]
    e_train: Float[Array, ""]
    loss: Float[Array, ""]
    rank_fraction: Float[Array, ""]
    trace: Float[Array, ""]
    iterations: Int[Array, ""]
    result: RESULTS
    stats: dict
    W: Float[Array, "d m"] | None = None
    trajectory: dict | None = None
    degenerate: Bool[Array, ""] | bool = False

    @property
    def value(self) -> Float[Array, "d d"]:
        """Alias of ``Shat`` (optimistix naming)."""
        return self.Shat

    @property
    def converged(self) -> Bool[Array, ""]:
        return self.result == RESULTS.successful


def make_solution(
    problem: ERMProblem,
    Shat,
    loss,
    iterations,
    result,
    stats,
    *,
    S_star=None,
    Delta=0.0,
    rank_rtol: float = RANK_RTOL,
    W=None,
    trajectory=None,
    certify: bool | Array = False,
) -> ERMSolution:
    """Compute the metrics of an estimate ``Shat`` and pack an :class:`ERMSolution`."""
    d = problem.d
    Shat = (Shat + Shat.T) / 2
    eig = _la.eigvalsh(Shat)[::-1]
    if S_star is None:
        E = jnp.asarray(jnp.nan, Shat.dtype)
    else:
        E = matrix_error(Shat, S_star)
    e_test = e_test_from_error(E, jnp.asarray(Delta, Shat.dtype))
    rank = numerical_rank(eig, rank_rtol)
    degenerate = jnp.asarray(False)
    if certify is not False:
        cert = dual_certificate(problem, Shat, rank)
        degenerate = cert.pop("degenerate") & jnp.asarray(certify)
        stats = {**stats, **cert}
    return ERMSolution(
        Shat=Shat,
        eigenvalues=eig,
        E=E,
        e_test=e_test,
        e_train=problem.data_loss(Shat),
        loss=loss,
        rank_fraction=rank / d,
        trace=jnp.trace(Shat),
        iterations=jnp.asarray(iterations),
        result=result,
        stats=stats,
        W=W,
        trajectory=trajectory,
        degenerate=degenerate,
    )
