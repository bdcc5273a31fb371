"""Any discrete teacher spectrum convolved with a semicircle, by subordination.

The teacher law is ``mu* = sum_i p_i delta_{t_i}`` (finite-``d`` spectra: ``p_i = 1/d``). Its
Stieltjes transform ``G(w) = sum_i p_i / (w - t_i)``. Free convolution with a semicircle of
variance ``xi`` is subordinated (Biane 1997): ``g(z) = G(w(z))`` with ``w = z - xi g(z)``, i.e.
``z = w + xi G(w)``.

Parameterisation of the real axis by ``u = Re w(x + i0)`` (Biane): with ``a_i = u - t_i``,

* off the support ``w`` is real (``v = Im w = 0``) and ``F(u) = xi sum p_i / a_i^2 < 1``;
* on the support ``v > 0`` solves ``xi sum_i p_i / (a_i^2 + v^2) = 1``;
* ``x(u) = u + xi sum_i p_i a_i / (a_i^2 + v^2)`` is a continuous increasing bijection of the
  real line, ``rho(x) = v / (pi xi)`` and ``H(x) = (x - u) / xi``;
* the support edges are ``x(u)`` at the roots of ``F(u) = 1``: one left of the smallest atom,
  one right of the largest, and two in each gap ``(t_i, t_{i+1})`` where ``min F < 1``.

Integrals are computed in the variable ``u``, with ``dx/du = 2 xi (v^2 M2 + M1^2 / M2)``
(``M1 = sum p a/s^2``, ``M2 = sum p/s^2``, ``s = a^2 + v^2``; derived by differentiating the
constraint), which stays finite at the edges; ``v ~ sqrt(u - u_edge)`` there, so the
``sin``-substitution rule of :mod:`qnr.spectra._base` applies unchanged.

At most ``max_intervals`` intervals are resolved separately (the widest gaps are kept); gaps
beyond that are integrated across, the integrand being set to 0 where ``v = 0``, which keeps
the result correct at a reduced (algebraic) convergence rate. ``Quadrature`` users can read
:meth:`AtomicConvolution.num_gaps` to detect that case.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from qnr.spectra._base import Quadrature, SemicircleConvolution, Support, theta_rule
from qnr.spectra._roots import newton_polish, safe_newton

__all__ = ["AtomicConvolution", "atomic_law"]


def _F(u, args):
    """``F(u) = xi sum p/(u - t)^2`` and derivatives ``F'``, ``F''``."""
    t, p, xi = args
    a = u[..., None] - t
    inv = 1 / a
    i2 = inv * inv
    f = xi * jnp.sum(p * i2, axis=-1)
    f1 = -2 * xi * jnp.sum(p * i2 * inv, axis=-1)
    f2 = 6 * xi * jnp.sum(p * i2 * i2, axis=-1)
    return f, f1, f2


def _dF(u, args):
    _, f1, f2 = _F(u, args)
    return f1, f2


def _edge_fn(u, args):
    """``h(u) = F(u)^(-1/2) - 1`` (nearly linear near an isolated atom) and ``h'``."""
    f, f1, _ = _F(u, args)
    return lax.rsqrt(f) - 1, -0.5 * f1 * f ** (-1.5)


def _w_fn(w, args):
    """``psi(w) = 1/(xi S(w)) - 1`` with ``S(w) = sum p/(a^2 + w)``; increasing in ``w = v^2``."""
    a2, p, xi = args
    s = a2 + w[..., None]
    S = jnp.sum(p / s, axis=-1)
    M2 = jnp.sum(p / (s * s), axis=-1)
    return 1 / (xi * S) - 1, M2 / (xi * S * S)


def _solve_w(u, t, p, xi):
    """``w = v(u)^2``: 0 off the support, else the root of ``xi sum p/(a^2 + w) = 1``
    (``0 < w <= xi``); gradients by implicit differentiation."""
    a2 = (u[..., None] - t) ** 2
    F = xi * jnp.sum(p / a2, axis=-1)
    on = F > 1
    # off the support the bracket is empty, so those elements stop at once
    hi = jnp.where(on, jnp.broadcast_to(xi, u.shape), 0.0)
    w = safe_newton(_w_fn, (a2, p, xi), jnp.zeros_like(u), hi)
    w = jnp.where(on, w, 1.0)  # finite filler keeps the polishing NaN-free
    w = newton_polish(_w_fn, (a2, p, xi), w)
    return jnp.where(on, jnp.maximum(w, 0.0), 0.0), F


def _x_of_u(u, t, p, xi):
    """``x(u)``, ``v(u)``, ``dx/du`` (see module docstring)."""
    w, F = _solve_w(u, t, p, xi)
    on = w > 0
    a = u[..., None] - t
    s = a * a + w[..., None]
    x = u + xi * jnp.sum(p * a / s, axis=-1)
    M1 = jnp.sum(p * a / (s * s), axis=-1)
    M2 = jnp.sum(p / (s * s), axis=-1)
    dx_on = 2 * xi * (w * M2 + M1 * M1 / M2)
    dx = jnp.where(on, dx_on, 1 - F)
    v = jnp.where(on, jnp.sqrt(jnp.where(on, w, 1.0)), 0.0)
    return x, v, dx


def _invert_fn(u, args):
    t, p, xi, target = args
    x, _, dx = _x_of_u(u, t, p, xi)
    return x - target, dx


class AtomicConvolution(SemicircleConvolution):
    """``rho_xi = (sum_i p_i delta_{t_i}) boxplus semicircle(xi)`` by subordination.

    ``atoms`` sorted ascending, ``weights`` positive summing to 1. Differentiable in ``xi``,
    the atoms and the weights; vmappable. ``n_nodes`` nodes per interval, at most
    ``max_intervals`` separately resolved intervals (both static).
    """

    atoms: Float[Array, " p"]
    weights: Float[Array, " p"]
    xi: Float[Array, ""]
    n_nodes: int = eqx.field(static=True, default=16)
    max_intervals: int = eqx.field(static=True, default=32)
    n_panels: int = eqx.field(static=True, default=128)

    @property
    def _args(self):
        return self.atoms, self.weights, self.xi

    @property
    def mean_teacher(self):
        return jnp.sum(self.weights * self.atoms)

    @property
    def second_moment_teacher(self):
        return jnp.sum(self.weights * self.atoms**2)

    # ---- support in the u variable ----------------------------------------------------------
    def _gaps(self):
        """Per gap ``(t_i, t_{i+1})``: minimiser of ``F``, open flag, the two roots of
        ``F = 1`` (stop-gradient values)."""
        t, p, xi = self._args
        lo, hi = t[:-1], t[1:]
        ok = hi - lo > 1e-13 * (1 + jnp.abs(hi))
        lo_s = jnp.where(ok, lo, 0.0)
        hi_s = jnp.where(ok, hi, 1.0)
        args = (t, p, xi)
        umin = safe_newton(_dF, args, lo_s, hi_s, increasing=True)
        fmin = _F(umin, args)[0]
        opened = ok & (fmin < 1)
        # closed gaps get an empty bracket (no iterations spent on them)
        left = safe_newton(_edge_fn, args, jnp.where(opened, lo_s, umin), umin, increasing=True)
        right = safe_newton(_edge_fn, args, umin, jnp.where(opened, hi_s, umin), increasing=False)
        return umin, opened, left, right

    def _u_intervals(self):
        """Sorted ``u``-intervals ``[ua_j, ub_j]`` (``K = max_intervals``), valid mask, and the
        number of open gaps in the teacher spectrum."""
        t, p, xi = self._args
        args = (t, p, xi)
        sq = jnp.sqrt(xi)
        L = safe_newton(_edge_fn, args, t[0] - sq, t[0], increasing=False)
        R = safe_newton(_edge_fn, args, t[-1], t[-1] + sq, increasing=True)
        L = newton_polish(_edge_fn, args, L)
        R = newton_polish(_edge_fn, args, R)
        K = self.max_intervals
        n_gap = t.shape[0] - 1
        if n_gap == 0 or K == 1:
            lo = jnp.broadcast_to(L, (K,))
            hi = jnp.broadcast_to(R, (K,))
            valid = jnp.arange(K) == 0
            n_open = jnp.zeros((), jnp.int32) if n_gap == 0 else jnp.sum(self._gaps()[1])
            return lo, hi, valid, n_open
        umin, opened, left, right = self._gaps()
        n_open = jnp.sum(opened)
        m = min(K - 1, n_gap)
        width = right - left
        score = jnp.where(opened, width, -jnp.inf)
        _, sel = lax.top_k(score, m)
        sel_open = opened[sel]
        key = jnp.where(sel_open, umin[sel], jnp.inf)
        order = jnp.argsort(key)
        sel, sel_open = sel[order], sel_open[order]
        filler = L - 1.0
        p_sel = newton_polish(_edge_fn, args, jnp.where(sel_open, left[sel], filler))
        q_sel = newton_polish(_edge_fn, args, jnp.where(sel_open, right[sel], filler))
        starts = jnp.concatenate([L[None], jnp.where(sel_open, q_sel, L)])
        ends = jnp.concatenate([jnp.where(sel_open, p_sel, R), R[None]])
        valid = jnp.concatenate([jnp.ones((1,), bool), sel_open])
        if m + 1 < K:
            pad = K - m - 1
            starts = jnp.concatenate([starts, jnp.broadcast_to(L, (pad,))])
            ends = jnp.concatenate([ends, jnp.broadcast_to(R, (pad,))])
            valid = jnp.concatenate([valid, jnp.zeros((pad,), bool)])
        starts = jnp.where(valid, starts, L)
        ends = jnp.where(valid, ends, R)
        return starts, ends, valid, n_open

    @eqx.filter_jit
    def num_gaps(self) -> Array:
        """Number of gaps in the support (``num_intervals - 1`` when all are resolved); if it
        exceeds ``max_intervals - 1`` the quadrature integrates across the smallest gaps."""
        return self._u_intervals()[3]

    @eqx.filter_jit
    def support(self) -> Support:
        ua, ub, valid, _ = self._u_intervals()
        t, p, xi = self._args
        xa = _x_of_u(ua, t, p, xi)[0]
        xb = _x_of_u(ub, t, p, xi)[0]
        return Support(xa, xb, valid)

    # ---- quadrature -------------------------------------------------------------------------
    def _rule_u(self, ua, ub, active, valid):
        """Composite rule on the ``u``-intervals: ``n_panels`` panels in ``theta`` (the
        ``sin`` substitution of each interval), allocated to the intervals in proportion to
        their number of resolvable features (one per interval, the rest by
        ``min(#atoms, length / sqrt(xi p))``), each with ``n_nodes`` Gauss-Legendre nodes."""
        t, p, xi = self._args
        K = ua.shape[0]
        P = max(self.n_panels, K)
        n_atoms = jnp.searchsorted(t, ub) - jnp.searchsorted(t, ua)
        scale = jnp.sqrt(xi * jnp.min(p))
        feat = jnp.minimum(n_atoms.astype(xi.dtype), (ub - ua) / scale)
        feat = jnp.where(valid, jnp.maximum(feat, 0.0), 0.0)
        base = valid.astype(jnp.int32)
        extra = P - jnp.sum(base)
        share = feat / jnp.maximum(jnp.sum(feat), 1e-300)
        counts = base + jnp.floor(extra.astype(share.dtype) * share).astype(jnp.int32)
        cum = jnp.cumsum(counts)
        k = jnp.arange(P, dtype=cum.dtype)
        j = jnp.minimum(jnp.searchsorted(cum, k, side="right"), K - 1)
        in_use = k < cum[-1]
        i = k - (cum - counts)[j]
        c = jnp.maximum(counts[j], 1).astype(xi.dtype)
        th_lo = -jnp.pi / 2 + jnp.pi * i.astype(xi.dtype) / c
        th_half = jnp.pi / (2 * c)
        tau, w = theta_rule(self.n_nodes, xi.dtype)
        tau, w = tau * (2 / jnp.pi), w * (2 / jnp.pi)  # back to Gauss-Legendre on [-1, 1]
        theta = (th_lo + th_half)[:, None] + th_half[:, None] * tau
        wth = th_half[:, None] * w
        a, b = ua[j], ub[j]
        mid, half = (a + b) / 2, (b - a) / 2
        u = mid[:, None] + half[:, None] * jnp.sin(theta)
        x, v, dx = _x_of_u(u, t, p, xi)
        on = v > 0
        use = (active[j] & in_use)[:, None] & on
        wt = jnp.where(use, half[:, None] * wth * jnp.cos(theta) * dx, 0.0)
        rho = v / (jnp.pi * xi)
        h = (x - u) / xi
        return Quadrature(x.ravel(), rho.ravel(), h.ravel(), wt.ravel())

    def _lower_u(self, ua, ub, lower):
        """Lower limit in ``u`` per interval for ``x >= lower``, and the activity mask."""
        t, p, xi = self._args
        xa = _x_of_u(ua, t, p, xi)[0]
        xb = _x_of_u(ub, t, p, xi)[0]
        cut = (lower > xa) & (lower < xb)
        args = (t, p, xi, lower)
        mid = (ua + ub) / 2
        u_cut = safe_newton(
            _invert_fn, args, jnp.where(cut, ua, mid), jnp.where(cut, ub, mid), increasing=True
        )
        u_cut = jnp.where(cut, u_cut, mid)
        u_cut = newton_polish(_invert_fn, args, u_cut)
        u_low = jnp.where(cut, u_cut, ua)
        return u_low, lower < xb

    @eqx.filter_jit
    def quadrature(self, lower=-jnp.inf) -> Quadrature:
        ua, ub, valid, _ = self._u_intervals()
        lower = jnp.asarray(lower, dtype=self.xi.dtype)
        u_low, active = self._lower_u(ua, ub, lower)
        active = active & valid
        u_low = jnp.where(active, u_low, ua)
        return self._rule_u(u_low, ub, active, valid)

    # ---- transforms -------------------------------------------------------------------------
    def _u_of_x(self, x):
        t, p, xi = self._args
        sq = jnp.sqrt(xi)
        lo = jnp.minimum(x, t[0]) - sq - 1
        hi = jnp.maximum(x, t[-1]) + sq + 1
        args = (t, p, xi, x)
        u = safe_newton(_invert_fn, args, lo, hi, increasing=True)
        return newton_polish(_invert_fn, args, u)

    @eqx.filter_jit
    def boundary_values(self, x):
        x = jnp.asarray(x, dtype=self.xi.dtype)
        t, p, xi = self._args
        u = self._u_of_x(x)
        _, v, _ = _x_of_u(u, t, p, xi)
        return v / (jnp.pi * xi), (x - u) / xi

    @eqx.filter_jit
    def stieltjes(self, z):
        """Newton on ``w + xi G(w) = z`` in the upper half plane (start ``w = z + i sqrt(xi)``;
        steps that would leave ``Im w >= Im z`` are halved), then ``g = (z - w)/xi``."""
        t, p, xi = self._args
        z = jnp.asarray(z)
        # double precision when z or xi is (what standard promotion of z with complex64 gives)
        wide = xi.dtype == jnp.float64 or z.dtype in (jnp.float64, jnp.complex128)
        cdt = jnp.complex128 if wide else jnp.complex64
        z = z.astype(cdt)
        tc, pc, xic = t.astype(cdt), p.astype(cdt), xi.astype(cdt)

        def h(w, args):
            tc, pc, xic, z = args
            d = w[..., None] - tc
            G = jnp.sum(pc / d, axis=-1)
            G1 = -jnp.sum(pc / (d * d), axis=-1)
            return w + xic * G - z, 1 + xic * G1

        args = lax.stop_gradient((tc, pc, xic, z))

        def body(_, w):
            f, df = h(w, args)
            step = f / df
            for _ in range(8):
                bad = (w - step).imag < z.imag.astype(w.real.dtype) * 0.999
                step = jnp.where(bad, step / 2, step)
            return jnp.where(jnp.isfinite(step), w - step, w)

        w0 = lax.stop_gradient(z + 1j * jnp.sqrt(xic))
        w = lax.fori_loop(0, 200, body, w0)
        w = newton_polish(h, (tc, pc, xic, z), w)
        return (z - w) / xic


def atomic_law(atoms, xi, weights=None, **kwargs) -> AtomicConvolution:
    """Build an :class:`AtomicConvolution` from (unsorted) atoms and optional weights."""
    atoms = jnp.asarray(atoms)
    if weights is None:
        weights = jnp.full(atoms.shape, 1.0 / atoms.shape[0], dtype=atoms.dtype)
    order = jnp.argsort(atoms)
    return AtomicConvolution(atoms[order], jnp.asarray(weights)[order], jnp.asarray(xi), **kwargs)
