"""Vectorised numpy reference for the MP-teacher ERM replica theory (no quadrature).

A strong, fully vectorised numpy baseline, independent of qnr (it never imports it), for the
fixed point of THEORY.md section 2 with the MP teacher and no rank constraint
(``kappa >= 1``, so the threshold is ``b = tau``), ``lam >= 0`` and ``Delta >= 0``. Every
spectral integral is evaluated in closed form (THEORY.md section 6); there is no quadrature
and no Python loop over points: a whole batch of problems is solved at once.

Spectral integrals (THEORY.md sections 2 and 6). ``rho_xi = MP(kappa*) boxplus sc(xi)``;
on the support ``g(x + i0)`` is the root with ``Im g < 0`` of

    xi g^3 - (x + k xi) g^2 + (1 - k + k x) g - k = 0,          k = kappa*,

(off the support all three roots are real and the physical one is the unique real root with
``x'(g) < 0``), ``rho = -Im g / pi``, ``H = Re g``, and the inverse of ``g`` is rational,

    x(g) = xi g + 1/g - k/(g - k),    x'(g) = xi - 1/g^2 + k/(g - k)^2.

Hence ``int p rho dx = -(1/pi) Im int p g dx`` and ``int p H rho dx = -(1/(2 pi)) Im int p g^2
dx``. With ``J[j, m] = int_b^e x^j g^m dx`` (``e`` the top support edge) integration by parts
in ``g`` gives

    J[j, m] = [x^(j+1) g^m / (j+1)]_b^e - (m/(j+1)) [G[j+1, m-1]]_{g(b)}^{g(e)},
    G[n, q]' = x(g)^n g^q,

and ``G[n, q]`` is a Laurent polynomial in ``g`` plus terms in ``(g - k)^-p`` plus
``c1 log g + c2 log(g - k)`` (partial fractions derived with sympy, table ``_LAURENT``; the log
branch has its argument in ``[-pi, 0]``, continuous on the closed lower half-plane where the
path ``g(x + i0)``, ``b <= x <= e``, lies). At the top edge ``g(e) = g_e`` is the unique
root in ``(0, k)`` of ``x'(g) = 0`` (``x'`` increases on ``(0, k)``), real, so only the log
terms contribute there; gaps in the support add nothing to the imaginary part.

Derivatives at fixed ``b``: ``dg/dxi = -g/x'(g)`` at fixed ``x`` (THEORY.md section 6), so
``d J[j, m]/d xi = -m [G[j, m]]_{g(b)}^{g(e)}`` (the top edge moves, but the integrand's
imaginary part vanishes there) and ``d J[j, m]/d b = -b^j g(b)^m``. These give exact
Jacobians for the Newton solver (no finite differences: they would lose about half of the
digits and cost 4 more evaluations per iteration).

ERM quantities (THEORY.md section 2, ``b = tau``): ``D = h1 - tau h0``,
``E = Q0 + tau^2 m0 - m2 + 4 xi D`` with ``Q0 = 1 + 1/kappa*``, rank fraction ``r = m0``; and
``dD/dtau = -h0``, ``dE/dtau = 2 tau m0 - 4 xi h0``.

Run ``python benchmarks/numpy_replica.py`` for the self-test (closed forms against
``scipy.integrate.quad``, THEORY.md reference rows, timing on a 64 x 64 grid).
"""

from __future__ import annotations

import math
import time

import numpy as np

__all__ = ["spectral_integrals", "erm_terms", "solve", "stieltjes", "top_edge"]

PI = math.pi

# Partial fractions of x(g)^n g^q = sum_a A[a] g^a + sum_p B[p] (g - k)^-p
# (sympy.apart, verified symbolically). Keys: (n, q) -> (A, B) as functions of (xi, k).
_LAURENT = {
    (1, 0): lambda xi, k: ({-1: 1.0, 1: xi}, {1: -k}),
    (2, 0): lambda xi, k: (
        {-2: 1.0, -1: 2.0, 0: 2 * xi * (1 - k), 2: xi**2},
        {1: -2 * k**2 * xi - 2, 2: k**2},
    ),
    (3, 0): lambda xi, k: (
        {
            -3: 1.0,
            -2: 3.0,
            -1: 3 * xi + 3 + 3 / k,
            0: -3 * k**2 * xi**2,
            1: 3 * xi**2 * (1 - k),
            3: xi**3,
        },
        {
            1: -3 * k**3 * xi**2 + 3 * k**2 * xi - 6 * k * xi - 3 - 3 / k,
            2: 3 * k * (k**2 * xi + 1),
            3: -(k**3),
        },
    ),
    (0, 1): lambda xi, k: ({1: 1.0}, {}),
    (1, 1): lambda xi, k: ({0: 1 - k, 2: xi}, {1: -(k**2)}),
    (2, 1): lambda xi, k: (
        {-1: 1.0, 0: -2 * k**2 * xi, 1: 2 * xi * (1 - k), 3: xi**2},
        {1: -2 * k**3 * xi + k**2 - 2 * k, 2: k**3},
    ),
    (0, 2): lambda xi, k: ({2: 1.0}, {}),
    (1, 2): lambda xi, k: ({0: -(k**2), 1: 1 - k, 3: xi}, {1: -(k**3)}),
}


def _im_G(n, q, xi, k, gb, gbk, th_b, ph_b):
    """``Im (G[n, q](g_e) - G[n, q](g_b))``, ``gbk = g_b - k``.

    The log terms enter through ``th_b = Im(log g_e - log g_b) = arg(1/g_b)`` and
    ``ph_b = -Im(log(g_e - k) - log(g_b - k)) = arg(k - g_b)``, both in ``[0, pi]`` (branch
    continuous on the closed lower half-plane; ``g_e`` is real in ``(0, k)``), written as
    ``atan2`` of ``|Im g_b|`` so that no ``pi`` cancels (the ``log(g - k)`` coefficient grows
    like ``xi^2``)."""
    A, B = _LAURENT[(n, q)](xi, k)
    out = A.get(-1, 0.0) * th_b - B.get(1, 0.0) * ph_b
    for a, c in A.items():
        if a != -1:
            out = out - c * (gb ** (a + 1)).imag / (a + 1)
    for p, c in B.items():
        if p != 1:
            out = out - c * (gbk ** (1 - p)).imag / (1 - p)
    return out


def top_edge(kappa_star, xi):
    """``(g_e, e)``: the root ``g_e`` in ``(0, k)`` of ``x'(g) = xi - 1/g^2 + k/(g-k)^2``
    (increasing there) by vectorised bisection plus Newton, and the edge ``e = x(g_e)``."""
    k, xi = np.broadcast_arrays(np.asarray(kappa_star, float), np.asarray(xi, float))
    lo = np.zeros_like(k)
    hi = k.copy()
    for _ in range(56):
        mid = 0.5 * (lo + hi)
        f = xi - 1 / mid**2 + k / (mid - k) ** 2
        pos = f > 0
        hi = np.where(pos, mid, hi)
        lo = np.where(pos, lo, mid)
    g = 0.5 * (lo + hi)
    for _ in range(2):
        f = xi - 1 / g**2 + k / (g - k) ** 2
        fp = 2 / g**3 - 2 * k / (g - k) ** 3
        g_new = g - f / fp
        g = np.where((g_new > 0) & (g_new < k), g_new, g)
    return g, xi * g + 1 / g - k / (g - k)


def stieltjes(kappa_star, xi, x):
    """Physical root ``g(x + i0)`` of the cubic (arrays broadcast), vectorised.

    All roots from ``np.linalg.eigvals`` of stacked (balanced) companion matrices, two
    Newton steps on each; the root with the most negative imaginary part if it is complex,
    else the real root with ``x'(g) < 0`` (the smallest ``x'`` if rounding makes it ambiguous
    at an edge, where the candidates coincide)."""
    k, xi, x = np.broadcast_arrays(*(np.asarray(a, float) for a in (kappa_star, xi, x)))
    shape = k.shape
    k, xi, x = k.ravel(), xi.ravel(), x.ravel()
    c2 = -(x + k * xi) / xi
    c1 = (1 - k + k * x) / xi
    c0 = -k / xi
    C = np.zeros((k.size, 3, 3))
    C[:, 0, 0], C[:, 0, 1], C[:, 0, 2] = -c2, -c1, -c0
    C[:, 1, 0] = 1.0
    C[:, 2, 1] = 1.0
    r = np.linalg.eigvals(C).astype(complex)  # (N, 3)
    a3, a2, a1, a0 = xi[:, None], -(x + k * xi)[:, None], (1 - k + k * x)[:, None], -k[:, None]
    for _ in range(2):
        p = ((a3 * r + a2) * r + a1) * r + a0
        dp = (3 * a3 * r + 2 * a2) * r + a1
        ok = dp != 0
        rn = np.where(ok, r - p / np.where(ok, dp, 1.0), r)
        pn = ((a3 * rn + a2) * rn + a1) * rn + a0
        r = np.where(np.abs(pn) <= np.abs(p), rn, r)
    i_c = np.argmin(r.imag, axis=1)
    g_c = np.take_along_axis(r, i_c[:, None], 1)[:, 0]
    kk = k[:, None]
    xp = xi[:, None] - 1 / r.real**2 + kk / (r.real - kk) ** 2
    i_r = np.argmin(np.where(np.abs(r.imag) == 0, xp, np.inf), axis=1)
    g_r = np.take_along_axis(r.real, i_r[:, None], 1)[:, 0] + 0j
    is_c = g_c.imag < 0
    g = np.where(is_c, g_c, g_r)
    g = g.real - 1j * np.abs(g.imag)
    return g.reshape(shape)


def spectral_integrals(kappa_star, xi, b, with_xi_derivatives=False):
    """Exact partial moments of ``rho_xi = MP(kappa*) boxplus semicircle(xi)`` above ``b``.

    Returns a dict with ``m0, m1, m2`` (``int_b^inf x^j rho_xi``) and ``h0, h1``
    (``int_b^inf x^j H rho_xi``), arrays broadcast over the inputs; with
    ``with_xi_derivatives`` also ``dm0, dm1, dm2, dh0, dh1`` (derivatives in ``xi`` at fixed
    ``b``), and always ``g_b`` (``g(b + i0)``) and ``e`` (top support edge). Formulas: module
    docstring (THEORY.md section 6). All integrals vanish when ``b >= e``.
    """
    k, xi, b = np.broadcast_arrays(*(np.asarray(a, float) for a in (kappa_star, xi, b)))
    g_e, e = top_edge(k, xi)
    gb = stieltjes(k, xi, b)
    gbk = gb - k
    lb = np.arctan2(np.abs(gb.imag), gb.real)
    lbk = np.arctan2(np.abs(gb.imag), k - gb.real)
    inside = b < e

    def imJ(j, m):
        bt = -(b ** (j + 1)) * (gb**m).imag / (j + 1)
        return bt - (m / (j + 1)) * _im_G(j + 1, m - 1, xi, k, gb, gbk, lb, lbk)

    out = {
        "m0": -imJ(0, 1) / PI,
        "m1": -imJ(1, 1) / PI,
        "m2": -imJ(2, 1) / PI,
        "h0": -imJ(0, 2) / (2 * PI),
        "h1": -imJ(1, 2) / (2 * PI),
    }
    if with_xi_derivatives:
        # d Im J[j, m] / d xi = -m Im [G[j, m]]
        out["dm0"] = _im_G(0, 1, xi, k, gb, gbk, lb, lbk) / PI
        out["dm1"] = _im_G(1, 1, xi, k, gb, gbk, lb, lbk) / PI
        out["dm2"] = _im_G(2, 1, xi, k, gb, gbk, lb, lbk) / PI
        out["dh0"] = _im_G(0, 2, xi, k, gb, gbk, lb, lbk) / PI
        out["dh1"] = _im_G(1, 2, xi, k, gb, gbk, lb, lbk) / PI
    for name in list(out):
        out[name] = np.where(inside, out[name], 0.0)
    out["g_b"] = gb
    out["e"] = e
    return out


def _terms(k, xi, tau, derivs):
    s = spectral_integrals(k, xi, tau, with_xi_derivatives=derivs)
    Q0 = 1 + 1 / k
    D = s["h1"] - tau * s["h0"]
    E = Q0 + tau**2 * s["m0"] - s["m2"] + 4 * xi * D
    out = {"D": D, "E": E, "rank": s["m0"]}
    if derivs:
        D_xi = s["dh1"] - tau * s["dh0"]
        out["D_xi"] = D_xi
        out["D_tau"] = -s["h0"]
        out["E_xi"] = tau**2 * s["dm0"] - s["dm2"] + 4 * D + 4 * xi * D_xi
        out["E_tau"] = 2 * tau * s["m0"] - 4 * xi * s["h0"]
    return out


def erm_terms(kappa_star, xi, tau):
    """``(D, E, rank)`` of THEORY.md section 2 with ``b = tau`` (no rank constraint):
    ``D = h1 - tau h0``, ``E = Q0 + tau^2 m0 - m2 + 4 xi D``, ``Q0 = 1 + 1/kappa*``,
    ``rank = m0`` (partial moments from :func:`spectral_integrals`)."""
    t = _terms(np.asarray(kappa_star, float), np.asarray(xi, float), np.asarray(tau, float), 0)
    return t["D"], t["E"], t["rank"]


def _residuals(alpha, k, lam, Delta, xi, tau, fixed0, derivs=True):
    """Residuals and Jacobian in ``(log xi, log tau)``; ``fixed0`` lanes have ``tau = 0``
    (lam -> 0+ branch) and the 1-D system ``r1(log xi)`` (``r2 := 0``)."""
    t = _terms(k, xi, tau, derivs)
    S = t["E"] + Delta / 2
    r1 = S / (2 * alpha * xi) - 1
    tau_safe = np.where(fixed0, 1.0, tau)
    r2 = np.where(fixed0, 0.0, 1 - t["D"] / alpha - lam / tau_safe)
    r = np.stack([r1, r2], -1)
    if not derivs:
        return r, t, None
    j11 = t["E_xi"] / (2 * alpha) - S / (2 * alpha * xi)
    j12 = np.where(fixed0, 0.0, tau * t["E_tau"] / (2 * alpha * xi))
    j21 = np.where(fixed0, 0.0, -xi * t["D_xi"] / alpha)
    j22 = np.where(fixed0, 1.0, -tau * t["D_tau"] / alpha + lam / tau_safe)
    J = np.stack([np.stack([j11, j12], -1), np.stack([j21, j22], -1)], -2)
    return r, t, J


def _newton(alpha, k, lam, Delta, fixed0, tol, max_iter, xi0=1.0, tau0=1.0):
    """Damped Newton in ``(u, v) = (log xi, log tau)`` on flat arrays, every lane at once:
    Newton step clipped to norm 1.5, Armijo backtracking on ``||r||^2`` (``c = 1e-4``,
    halving, at most 30 times), per-lane convergence mask (``max |r| < tol``): converged or
    stuck lanes are no longer evaluated."""
    n = alpha.size
    u = np.full(n, math.log(xi0))
    v = np.full(n, math.log(tau0))

    def tau_of(v, f0):
        return np.where(f0, 0.0, np.exp(v))

    r, _, J = _residuals(alpha, k, lam, Delta, np.exp(u), tau_of(v, fixed0), fixed0)
    f = np.sum(r**2, -1)
    conv = np.max(np.abs(r), -1) < tol
    active = ~conv & np.all(np.isfinite(r), -1)
    iters = np.zeros(n, int)
    for _ in range(max_iter):
        idx = np.nonzero(active)[0]
        if idx.size == 0:
            break
        iters[idx] += 1
        Ji, ri = J[idx], r[idx]
        det = Ji[:, 0, 0] * Ji[:, 1, 1] - Ji[:, 0, 1] * Ji[:, 1, 0]
        bad = ~np.isfinite(det) | (det == 0)
        det = np.where(bad, 1.0, det)
        du = -(Ji[:, 1, 1] * ri[:, 0] - Ji[:, 0, 1] * ri[:, 1]) / det
        dv = -(-Ji[:, 1, 0] * ri[:, 0] + Ji[:, 0, 0] * ri[:, 1]) / det
        # singular Jacobian: steepest descent on ||r||^2 instead
        gu = -(Ji[:, 0, 0] * ri[:, 0] + Ji[:, 1, 0] * ri[:, 1])
        gv = -(Ji[:, 0, 1] * ri[:, 0] + Ji[:, 1, 1] * ri[:, 1])
        du, dv = np.where(bad, gu, du), np.where(bad, gv, dv)
        dv = np.where(fixed0[idx], 0.0, dv)
        norm = np.hypot(du, dv)
        scale = np.minimum(1.0, 1.5 / np.maximum(norm, 1e-300))
        du, dv = du * scale, dv * scale
        # directional derivative of ||r||^2 along the (clipped) step: 2 r.J.d
        slope = 2 * (
            ri[:, 0] * (Ji[:, 0, 0] * du + Ji[:, 0, 1] * dv)
            + ri[:, 1] * (Ji[:, 1, 0] * du + Ji[:, 1, 1] * dv)
        )
        slope = np.minimum(slope, -1e-300)
        t = np.ones(idx.size)
        searching = np.ones(idx.size, bool)
        new_u, new_v = u[idx].copy(), v[idx].copy()
        new_r, new_J, new_f = ri.copy(), Ji.copy(), f[idx].copy()
        for _ls in range(30):
            s = np.nonzero(searching)[0]
            if s.size == 0:
                break
            li = idx[s]
            uu = u[li] + t[s] * du[s]
            vv = v[li] + t[s] * dv[s]
            rr, _, JJ = _residuals(
                alpha[li], k[li], lam[li], Delta[li], np.exp(uu), tau_of(vv, fixed0[li]),
                fixed0[li],
            )  # fmt: skip
            ff = np.sum(rr**2, -1)
            ok = np.isfinite(ff) & (ff <= f[li] + 1e-4 * t[s] * slope[s])
            acc = s[ok]
            new_u[acc], new_v[acc] = uu[ok], vv[ok]
            new_r[acc], new_J[acc], new_f[acc] = rr[ok], JJ[ok], ff[ok]
            searching[acc] = False
            t[s[~ok]] *= 0.5
        u[idx], v[idx], r[idx], J[idx], f[idx] = new_u, new_v, new_r, new_J, new_f
        conv[idx] = np.max(np.abs(new_r), -1) < tol
        # lanes whose line search failed are stuck (at the noise floor or at no solution)
        active[idx] = ~conv[idx] & ~searching
    return np.exp(u), tau_of(v, fixed0), conv, iters


def solve(alpha, kappa_star, lam, Delta=0.0, tol=1e-12, max_iter=60):
    """Fixed point of THEORY.md section 2 (MP teacher, ``kappa >= 1``), whole batch at once.

    Equations ``2 alpha xi = E(tau, xi) + Delta/2`` and ``tau (1 - D(tau, xi)/alpha) = lam``,
    solved as ``r1 = (E + Delta/2)/(2 alpha xi) - 1 = 0``, ``r2 = 1 - D/alpha - lam/tau = 0``
    by damped Newton in ``(log xi, log tau)`` from ``(1, 1)`` (:func:`_newton`) with the
    exact Jacobian of the closed forms (module docstring). ``lam == 0`` means ``lam -> 0+``:
    first the ``tau = 0`` branch (1-D Newton in ``log xi``, integrals from ``b = 0``), kept
    where it converges with ``D(0, xi) < alpha``; elsewhere the interpolating branch
    ``D = alpha``, ``tau > 0`` (the 2-D system with ``lam = 0``). Noiseless ``lam -> 0+``
    lanes on which both branches fail and ``xi`` has run below ``1e-9`` on either are reported as
    perfect recovery (``xi = E = 0``; THEORY.md section 6), converged.

    Returns a dict of arrays (broadcast shape): ``xi, tau, E, D, e_test = alpha xi,
    e_train = xi (alpha - D)^2 / alpha`` (0 on the interpolating ``lam = 0`` branch),
    ``rank`` (``rho_xi([tau, inf))``), ``converged`` (``max |r| < tol``), ``iterations``
    (Newton iterations, both branches together).
    """
    arrs = np.broadcast_arrays(*(np.asarray(a, float) for a in (alpha, kappa_star, lam, Delta)))
    shape = arrs[0].shape
    alpha, k, lam, Delta = (a.ravel().copy() for a in arrs)
    n = alpha.size
    xi = np.full(n, np.nan)
    tau = np.full(n, np.nan)
    conv = np.zeros(n, bool)
    iters = np.zeros(n, int)
    zero = lam == 0
    todo = np.ones(n, bool)
    if np.any(zero):
        i0 = np.nonzero(zero)[0]
        x0, t0, c0, it0 = _newton(
            alpha[i0], k[i0], lam[i0], Delta[i0], np.ones(i0.size, bool), tol, max_iter
        )
        D0 = _terms(k[i0], x0, t0, False)["D"]
        keep = c0 & (D0 < alpha[i0])
        xi[i0[keep]], tau[i0[keep]], conv[i0[keep]] = x0[keep], 0.0, True
        iters[i0] = it0
        todo[i0[keep]] = False
        small0 = np.zeros(n, bool)
        small0[i0] = (Delta[i0] == 0) & (x0 < 1e-9)
    i1 = np.nonzero(todo)[0]
    if i1.size:
        x1, t1, c1, it1 = _newton(
            alpha[i1], k[i1], lam[i1], Delta[i1], np.zeros(i1.size, bool), tol, max_iter
        )
        xi[i1], tau[i1], conv[i1] = x1, t1, c1
        iters[i1] += it1
    perfect = np.zeros(n, bool)
    if np.any(zero):
        perfect = zero & (Delta == 0) & ~conv & (small0 | (xi < 1e-9))
    t = _terms(k, np.where(perfect, 1.0, xi), np.where(perfect, 1.0, tau), False)
    E, D, rank = t["E"], t["D"], t["rank"]
    interp = zero & (tau > 0)
    e_train = np.where(interp, 0.0, xi * (alpha - D) ** 2 / alpha)
    E = np.where(perfect, 0.0, E)
    xi = np.where(perfect, 0.0, xi)
    tau = np.where(perfect, 0.0, tau)
    e_train = np.where(perfect, 0.0, e_train)
    rank = np.where(perfect, np.minimum(k, 1.0), rank)
    conv = conv | perfect
    out = dict(
        xi=xi, tau=tau, E=E, D=D, e_test=alpha * xi, e_train=e_train, rank=rank,
        converged=conv, iterations=iters,
    )  # fmt: skip
    return {name: val.reshape(shape) for name, val in out.items()}


# ----------------------------------------------------------------------------------------
# Self-test
# ----------------------------------------------------------------------------------------


def _quad_reference(k, xi, b):
    """``(m0, m1, m2, h0, h1)`` by ``scipy.integrate.quad`` (epsrel 1e-13) on the density
    from ``np.roots`` of the cubic, split at the edges (real roots of the quartic of
    THEORY.md section 2) and at the real parts of its complex roots (near-cusps); and the
    integrals of the absolute values of the integrands (the scale of the rounding error)."""
    from scipy import integrate

    s = xi
    quartic = [
        k**2,
        -2 * k - 2 * k**2 - 2 * k**3 * s,
        1 - 2 * k + k**2 - 2 * k**2 * s + 8 * k**3 * s + k**4 * s**2,
        8 * k * s + 2 * k**2 * s - 10 * k**3 * s + 8 * k**3 * s**2 - 2 * k**4 * s**2,
        -4 * s + 12 * k * s - 12 * k**2 * s + 4 * k**3 * s - 8 * k**2 * s**2
        - 20 * k**3 * s**2 + k**4 * s**2 - 4 * k**4 * s**3,
    ]  # fmt: skip
    rts = np.roots(quartic)
    top = float(top_edge(k, xi)[1])
    pts = sorted({float(r.real) for r in rts if b < r.real < top})
    edges = [b] + pts + [top]

    def gx(x):
        r = np.roots([xi, -(x + k * xi), 1 - k + k * x, -k])
        return r[np.argmin(r.imag)]

    def rho(x):
        return max(-gx(x).imag, 0.0) / PI

    def hrho(x):
        g = gx(x)
        return g.real * max(-g.imag, 0.0) / PI

    fs = [rho, lambda x: x * rho(x), lambda x: x * x * rho(x), hrho, lambda x: x * hrho(x)]
    out, mag = [], []
    for f in fs:
        tot = tot_abs = 0.0
        for lo, hi in zip(edges[:-1], edges[1:]):
            if hi > lo:
                tot += integrate.quad(f, lo, hi, epsabs=0.0, epsrel=1e-13, limit=1000)[0]
                tot_abs += integrate.quad(
                    lambda x, f=f: abs(f(x)), lo, hi, epsabs=0.0, epsrel=1e-8, limit=1000
                )[0]
        out.append(tot)
        mag.append(tot_abs)
    return np.array(out), np.array(mag)


def _self_test():
    import warnings

    rng = np.random.default_rng(0)
    names = ["m0", "m1", "m2", "h0", "h1"]
    print("closed forms vs scipy quad (epsrel 1e-13), 12 random (kappa*, b) per xi:")
    print("  rel = |closed - quad| / |quad| over integrals with |quad| > 1e-3 int |f|;")
    print("  scaled = |closed - quad| / int |f| over all five (h0 vanishes below the support)")
    worst = {False: [0.0, 0.0], True: [0.0, 0.0]}
    for xi in [1e-6, 1e-3, 0.04, 1.0, 1e3]:
        rels, scs, rels_e = [], [], []
        for i in range(12):
            k = float(np.exp(rng.uniform(np.log(0.05), np.log(3.0))))
            _, e = top_edge(k, xi)
            e = float(e)
            lo = -2.5 * math.sqrt(xi) - 0.1
            if i % 3 == 2:  # close below the top edge
                b = e - (e - lo) * 10 ** rng.uniform(-6, -1)
            else:
                b = float(rng.uniform(lo, e))
            got = spectral_integrals(k, xi, b)
            got = np.array([float(got[nm]) for nm in names])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                want, mag = _quad_reference(k, xi, b)
            err = np.abs(got - want)
            big = np.abs(want) > 1e-3 * mag
            near = i % 3 == 2
            rel, sc = np.max(err[big] / np.abs(want[big])), np.max(err / mag)
            worst[near] = [max(worst[near][0], rel), max(worst[near][1], sc)]
            (rels_e if near else rels).append(rel)
            scs.append(sc)
        print(
            f"  xi={xi:8.0e}: max rel {max(rels):.1e} (b uniform), {max(rels_e):.1e} "
            f"(b within 1e-6..1e-1 of the top edge); max scaled {max(scs):.1e}"
        )
    print(f"  overall, b uniform: max rel {worst[False][0]:.1e}, scaled {worst[False][1]:.1e}")
    print(
        f"  overall, b near the top edge: max rel {worst[True][0]:.1e}, scaled {worst[True][1]:.1e}"
    )
    # beyond the top edge everything vanishes
    z = spectral_integrals(0.5, 0.3, 10.0)
    print(f"  b above the top edge: max |integral| {max(abs(float(z[nm])) for nm in names)}")

    # xi derivatives against central differences (sanity of the Jacobian)
    k, xi, b = 0.5, 0.6, 0.4
    s = spectral_integrals(k, xi, b, with_xi_derivatives=True)
    h = 1e-5
    sp_, sm_ = spectral_integrals(k, xi + h, b), spectral_integrals(k, xi - h, b)
    dmax = max(
        abs(float(s["d" + nm]) - (float(sp_[nm]) - float(sm_[nm])) / (2 * h)) for nm in names
    )
    print(f"xi-derivatives vs central differences: max abs diff {dmax:.1e}")

    print("reference rows (THEORY.md section 2):")
    r = solve(0.3, 0.5, 0.05, 0.0)
    want = dict(xi=0.6327, tau=0.5732, E=0.3796, e_train=0.001444, rank=0.501)
    for nm, w in want.items():
        print(f"  alpha 0.3 lam 0.05: {nm:8s} {float(r[nm]):.6f}  (THEORY {w}; rel diff "
              f"{abs(float(r[nm]) / w - 1):.1e})")  # fmt: skip
    print(f"  converged {bool(r['converged'])} in {int(r['iterations'])} iterations")
    r0 = solve(np.array([0.1, 0.3]), 0.5, 0.0, 0.0)
    for i, (a, E, rk) in enumerate([(0.1, 2.126, 0.260), (0.3, 0.322, 0.542)]):
        print(
            f"  noiseless lam->0+ alpha {a}: E {r0['E'][i]:.6f} (THEORY {E}), rank "
            f"{r0['rank'][i]:.6f} (THEORY {rk}), tau {r0['tau'][i]:.3e}, "
            f"converged {bool(r0['converged'][i])} in {r0['iterations'][i]} it"
        )

    print("against the quadrature reference benchmarks/_scipy_reference.py (tight tols):")
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import _scipy_reference as sref

    for a, k, lam, Delta in [(0.3, 0.5, 0.05, 0.0), (0.3, 0.5, 0.0, 0.0), (1.2, 0.2, 0.05, 0.1)]:
        want = sref.Reference(k).solve(a, lam, Delta)
        got = solve(a, k, lam, Delta)
        err = max(abs(float(got[nm]) / want[nm] - 1) for nm in ("xi", "tau", "E", "rank"))
        print(f"  alpha {a} kappa* {k} lam {lam} Delta {Delta}: max rel diff {err:.1e}")

    print("64 x 64 grid (alpha 0.01..1.5, kappa* 0.05..3, lam 0.05, Delta 0.1):")
    A, K = np.meshgrid(np.geomspace(0.01, 1.5, 64), np.geomspace(0.05, 3.0, 64), indexing="ij")
    solve(A[:2], K[:2], 0.05, 0.1)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        g = solve(A, K, 0.05, 0.1)
        times.append(time.perf_counter() - t0)
    tmed = sorted(times)[1]
    nfail = int(np.sum(~g["converged"]))
    print(
        f"  {tmed:.3f} s total, {tmed / A.size * 1e3:.3f} ms per point; non-converged "
        f"{nfail}/{A.size}; iterations max {g['iterations'].max()}, mean "
        f"{g['iterations'].mean():.2f}"
    )
    # residual check of the grid solution
    D, E, _ = erm_terms(K, g["xi"], g["tau"])
    res = np.maximum(
        np.abs((E + 0.05) / (2 * A * g["xi"]) - 1), np.abs(1 - D / A - 0.05 / g["tau"])
    )
    print(f"  max residual {np.nanmax(res):.1e}")


if __name__ == "__main__":
    _self_test()
