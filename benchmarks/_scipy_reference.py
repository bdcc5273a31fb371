"""Straightforward numpy/scipy reference for the ERM asymptotics (THEORY.md sections 2-3).

The implementation in the style of the published scipy scripts, one point at a time, with no
closed forms for the integrals (the closed-form, vectorised counterpart is
``benchmarks/numpy_replica.py``):

* Stieltjes transform of ``rho_xi = MP(kappa*) boxplus semicircle(xi)`` at ``x + i0`` by
  ``np.roots`` of the cubic ``xi g^3 - (x + k xi) g^2 + (1 - k + k x) g - k = 0``
  (THEORY.md section 2; ``k = kappa*``) at every ``x``, two Newton polishing steps; the
  physical root is the one with ``Im g < 0`` if there is a complex pair, else the real root
  with ``x'(g) < 0`` for the inverse ``x(g) = xi g + 1/g - k/(g - k)`` (THEORY.md section 6).
  ``rho = -Im g / pi``, ``H = Re g``;
* support edges: the real roots of the edge quartic of THEORY.md section 2 (``np.roots``,
  Newton-polished); the real parts of its complex roots are kept as extra breakpoints (after
  the smoothed atom has merged with the bulk they mark a near-cusp of the density,
  THEORY.md section 6);
* ``D(tau, xi) = int_b^inf (x - tau) H rho`` and
  ``E(tau, xi) = Q0 + int_b^inf (tau^2 - x^2) rho + 4 xi D`` (``Q0 = 1 + 1/kappa*``) with
  ``scipy.integrate.quad`` between consecutive breakpoints, ``b = max(tau, omega)``,
  ``rho([omega, inf)) = kappa`` for a rank-constrained student (``kappa < 1``);
* the fixed point ``2 alpha xi = E + Delta/2``, ``tau (1 - D/alpha) = lam`` by nested
  ``scipy.optimize.brentq`` (inner: ``tau`` at fixed ``xi``; outer: ``xi``), with the
  ``lam -> 0+`` limit (interpolating branch ``D = alpha``; otherwise ``tau = 0``);
* thresholds of THEORY.md section 3 with ``brentq`` on the closed semicircle moments.

It never imports qnr. Run at tight tolerances it is the independent high-precision reference
of the tests (``tests/test_thresholds.py``, ``tests/test_design.py``), and at the solver's
accuracy target it is the baseline of ``benchmarks/bench_theory.py``. scipy is a dev/bench
dependency only.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import integrate, optimize

__all__ = [
    "Reference",
    "solve",
    "stieltjes",
    "density_hilbert",
    "support",
    "breakpoints",
    "edge_quartic",
    "semicircle_moments",
    "alpha_bo",
    "alpha_sr",
    "kappa_min",
]


# ----------------------------------------------------------------------------------------
# Spectral ingredients of MP(kappa*) boxplus semicircle(xi)  (THEORY.md section 2)
# ----------------------------------------------------------------------------------------


def stieltjes(x: float, k: float, xi: float) -> complex:
    """``g(x + i0)`` from ``np.roots`` of the cubic; ``Im g <= 0``.

    Complex pair: the root with negative imaginary part. Three real roots (``x`` off the
    support): the one with ``x'(g) = xi - 1/g^2 + k/(g - k)^2 < 0`` (``g`` decreases in ``x``
    off the support)."""
    c3, c2, c1, c0 = xi, -(x + k * xi), 1.0 - k + k * x, -k
    roots = np.roots([c3, c2, c1, c0])
    i = int(np.argmin(roots.imag))
    if roots[i].imag < 0:
        g = complex(roots[i])
    else:
        r = roots.real
        xp = xi - 1.0 / r**2 + k / (r - k) ** 2
        g = complex(r[int(np.argmin(xp))])
    for _ in range(2):  # Newton polish (np.roots is a companion-matrix eigensolve)
        d = (3 * c3 * g + 2 * c2) * g + c1
        if d != 0:
            g = g - (((c3 * g + c2) * g + c1) * g + c0) / d
    return complex(g.real, -abs(g.imag))


def density_hilbert(x: float, k: float, xi: float) -> tuple[float, float]:
    """``(rho_xi(x), H(x)) = (-Im g / pi, Re g)`` at ``g = g(x + i0)``."""
    g = stieltjes(x, k, xi)
    return -g.imag / math.pi, g.real


def edge_quartic(k: float, s: float) -> np.ndarray:
    """Coefficients ``[c4, c3, c2, c1, c0]`` of the edge quartic (THEORY.md section 2,
    ``s = xi``): its real roots are the support edges of ``rho_xi``."""
    c4 = k**2
    c3 = -2 * k - 2 * k**2 - 2 * k**3 * s
    c2 = 1 - 2 * k + k**2 - 2 * k**2 * s + 8 * k**3 * s + k**4 * s**2
    c1 = 8 * k * s + 2 * k**2 * s - 10 * k**3 * s + 8 * k**3 * s**2 - 2 * k**4 * s**2
    c0 = (
        -4 * s
        + 12 * k * s
        - 12 * k**2 * s
        + 4 * k**3 * s
        - 8 * k**2 * s**2
        - 20 * k**3 * s**2
        + k**4 * s**2
        - 4 * k**4 * s**3
    )
    return np.array([c4, c3, c2, c1, c0], dtype=float)


def breakpoints(k: float, xi: float) -> tuple[np.ndarray, np.ndarray]:
    """``(edges, cusps)``: the real roots of the edge quartic (Newton-polished, sorted) and
    the real parts of its complex roots (candidate near-cusps), from ``np.roots``."""
    q = edge_quartic(k, xi)
    dq = np.polyder(q)
    roots = np.roots(q)
    scale = max(1.0, float(np.max(np.abs(roots))))
    is_real = np.abs(roots.imag) < 1e-7 * scale
    edges = np.sort(roots[is_real].real)
    for _ in range(3):
        d = np.polyval(dq, edges)
        edges = edges - np.polyval(q, edges) / np.where(d == 0, 1.0, d)
    return np.sort(edges), np.sort(roots[~is_real].real)


def support(k: float, xi: float) -> list[tuple[float, float]]:
    """Support intervals of ``rho_xi``: consecutive real quartic roots whose midpoint has
    positive density (touching intervals merged)."""
    edges, _ = breakpoints(k, xi)
    intervals: list[tuple[float, float]] = []
    for a, b in zip(edges[:-1], edges[1:]):
        if b <= a or density_hilbert(0.5 * (a + b), k, xi)[0] <= 1e-10:
            continue
        if intervals and abs(intervals[-1][1] - a) < 1e-12:
            intervals[-1] = (intervals[-1][0], b)
        else:
            intervals.append((float(a), float(b)))
    if not intervals:
        raise RuntimeError(f"no support found for kappa*={k}, xi={xi}")
    return intervals


# ----------------------------------------------------------------------------------------
# Closed-form thresholds (THEORY.md section 3)
# ----------------------------------------------------------------------------------------


def semicircle_moments(s: float) -> tuple[float, float, float]:
    """Partial moments ``m_j(s) = int_s^2 x^j rho_sc(x) dx`` of the unit semicircle."""
    r = math.sqrt(max(4.0 - s * s, 0.0))
    a = math.asin(max(min(s / 2, 1.0), -1.0))
    m0 = 0.5 - s * r / (4 * math.pi) - a / math.pi
    m1 = r**3 / (6 * math.pi)
    m2 = 0.5 - r * (s**3 - 2 * s) / (8 * math.pi) - a / math.pi
    return m0, m1, m2


def alpha_bo(k: float) -> float:
    """``kappa* - kappa*^2/2`` (``1/2`` for ``kappa* >= 1``)."""
    return 0.5 if k >= 1 else k - k * k / 2


def _s_star(k: float, xtol: float = 1e-15) -> float:
    """``s*`` in ``(0, 2)``: ``(m1(s) - s m0(s))/s = kappa*/(1 - kappa*)``."""

    def f(s):
        m0, m1, _ = semicircle_moments(s)
        return k * s - (1 - k) * (m1 - s * m0)

    return optimize.brentq(f, 0.0, 2.0, xtol=xtol, rtol=4 * np.finfo(float).eps, maxiter=500)


def kappa_min(k: float) -> float:
    """Rank fraction of the minimum-nuclear-norm solution at the strong-recovery threshold,
    ``kappa* + (1 - kappa*) m0(s*)``."""
    if k >= 1:
        return 1.0
    return k + (1 - k) * semicircle_moments(_s_star(k))[0]


def alpha_sr(k: float, kappa: float | None = None) -> float:
    """Strong-recovery threshold ``kappa* - kappa*^2/2 + ((1 - kappa*)^2/2)(m2 - s m1)``;
    ``kappa`` the student width (``None``: unconstrained; below ``kappa_min`` the lower limit
    is ``max(s, w)`` with ``m0(w) = (kappa - kappa*)/(1 - kappa*)``)."""
    if k >= 1:
        return 0.5 if (kappa is None or kappa >= 1) else math.inf
    if kappa is not None and kappa < k:
        return math.inf
    s = _s_star(k)
    u = s
    if kappa is not None and kappa < kappa_min(k):
        target = (kappa - k) / (1 - k)
        w = optimize.brentq(
            lambda t: semicircle_moments(t)[0] - target, -2.0, 2.0, xtol=1e-15, rtol=1e-15
        )
        if w > s:
            m0w, m1w, _ = semicircle_moments(w)
            s = (1 - k) * m1w / (k + (1 - k) * m0w)  # linear first-order condition
            u = max(s, w)
    _, m1, m2 = semicircle_moments(u)
    return k - k * k / 2 + (1 - k) ** 2 / 2 * (m2 - s * m1)


# ----------------------------------------------------------------------------------------
# ERM fixed point (THEORY.md section 2)
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Reference:
    """Reference solver for the MP teacher at one accuracy setting.

    ``epsabs``/``epsrel``/``limit`` go to every ``quad``; ``xtol`` to every ``brentq``. The
    defaults are the high-precision reference (about 1e-11 relative on ``xi``, ``tau``, ``E``).
    """

    kappa_star: float
    kappa: float | None = None  # student width; None (or >= 1) = no rank constraint
    epsabs: float = 1e-13
    epsrel: float = 1e-12
    xtol: float = 1e-14
    limit: int = 200
    n_evals: int = dataclasses.field(default=0, init=False)
    _cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

    @property
    def Q0(self) -> float:
        return 1.0 + 1.0 / self.kappa_star

    @property
    def constrained(self) -> bool:
        return self.kappa is not None and self.kappa < 1

    # -- integrals over the support ----------------------------------------------------

    def _pieces(self, xi: float) -> list[tuple[float, float]]:
        """Sub-intervals of the support between consecutive breakpoints (edges, cusps)."""
        if xi not in self._cache:
            _, cusps = breakpoints(self.kappa_star, xi)
            pieces = []
            for a, b in support(self.kappa_star, xi):
                inner = sorted(c for c in cusps if a < c < b)
                pts = [a, *inner, b]
                pieces += list(zip(pts[:-1], pts[1:]))
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[xi] = pieces
        return self._cache[xi]

    def _integrate(self, f, lower: float, xi: float) -> float:
        """``int_lower^inf f`` over the support, one ``quad`` per piece."""
        total = 0.0
        for a, b in self._pieces(xi):
            lo = max(a, lower)
            if lo >= b:
                continue
            val, _ = integrate.quad(
                f, lo, b, epsabs=self.epsabs, epsrel=self.epsrel, limit=self.limit
            )
            total += val
        self.n_evals += 1
        return total

    def _rho(self, x, xi):
        return max(density_hilbert(x, self.kappa_star, xi)[0], 0.0)

    def mass_above(self, b: float, xi: float) -> float:
        """``rho_xi([b, inf))``."""
        return self._integrate(lambda x: self._rho(x, xi), b, xi)

    def omega(self, xi: float) -> float:
        """``rho_xi([omega, inf)) = kappa`` (``-inf`` without a rank constraint)."""
        if not self.constrained:
            return -math.inf
        iv = support(self.kappa_star, xi)
        lo, hi = iv[0][0], iv[-1][1]
        return optimize.brentq(
            lambda w: self.mass_above(w, xi) - self.kappa, lo, hi, xtol=self.xtol
        )

    def D(self, tau: float, xi: float, omega: float | None = None) -> float:
        """``D(tau, xi) = int_b^inf (x - tau) H(x) rho_xi(x) dx``, ``b = max(tau, omega)``."""
        omega = self.omega(xi) if omega is None else omega
        b = max(tau, omega)
        k = self.kappa_star

        def f(x):
            r, h = density_hilbert(x, k, xi)
            return (x - tau) * h * max(r, 0.0)

        return self._integrate(f, b, xi)

    def E(self, tau: float, xi: float, omega: float | None = None) -> float:
        """``E(tau, xi) = Q0 + int_b^inf (tau^2 - x^2) rho_xi + 4 xi D(tau, xi)``."""
        omega = self.omega(xi) if omega is None else omega
        b = max(tau, omega)
        second = self._integrate(lambda x: (tau * tau - x * x) * self._rho(x, xi), b, xi)
        return self.Q0 + second + 4 * xi * self.D(tau, xi, omega)

    # -- fixed point ---------------------------------------------------------------------

    def tau_of_xi(self, xi: float, alpha: float, lam: float, omega: float) -> float:
        """Inner solve of ``tau (1 - D(tau, xi)/alpha) = lam`` by ``brentq`` (``lam = 0``:
        ``D(tau, xi) = alpha`` if ``D(0, xi) > alpha``, else ``tau = 0``)."""
        right = support(self.kappa_star, xi)[-1][1]
        if lam == 0:
            if self.D(0.0, xi, omega) <= alpha:
                return 0.0
            return optimize.brentq(
                lambda t: self.D(t, xi, omega) - alpha, 0.0, right, xtol=self.xtol
            )
        return optimize.brentq(
            lambda t: t * (1 - self.D(t, xi, omega) / alpha) - lam,
            0.0,
            max(lam, right) + 1.0,
            xtol=self.xtol,
        )

    def _residual(self, xi, alpha, lam, Delta):
        omega = self.omega(xi)
        tau = self.tau_of_xi(xi, alpha, lam, omega)
        return 2 * alpha * xi - self.E(tau, xi, omega) - Delta / 2

    def solve(self, alpha: float, lam: float, Delta: float = 0.0) -> dict:
        """Fixed point ``(xi, tau)`` and the outputs of THEORY.md section 2: a dict with
        ``xi, tau, E, D, e_test = alpha xi, e_train, rank`` (``e_train = alpha xi (lam/tau)^2``
        for ``lam > 0``; for ``lam -> 0+`` ``xi (alpha - D)^2/alpha`` on the ``tau = 0``
        branch and 0 on the interpolating one). Outer ``brentq`` on
        ``2 alpha xi - E(tau(xi), xi) - Delta/2``; noiseless ``lam -> 0+`` above strong
        recovery the root is ``xi = 0`` (perfect recovery, ``E = 0``, rank ``nan``)."""
        # 2 alpha xi >= Delta/2 at the fixed point (E >= 0): start the bracket there
        xi_lo = Delta / (4 * alpha) if Delta > 0 else 1e-6
        f_lo = self._residual(xi_lo, alpha, lam, Delta)
        if f_lo >= 0:  # noiseless perfect recovery (lam -> 0+, alpha > alpha_SR): xi -> 0
            return dict(xi=0.0, tau=0.0, E=0.0, e_test=0.0, e_train=0.0, rank=math.nan)
        xi_hi = max(2e-6, (self.Q0 + Delta / 2) / (2 * alpha))
        while self._residual(xi_hi, alpha, lam, Delta) < 0:
            xi_lo, xi_hi = xi_hi, 2 * xi_hi
        xi = optimize.brentq(self._residual, xi_lo, xi_hi, args=(alpha, lam, Delta), xtol=self.xtol)
        omega = self.omega(xi)
        tau = self.tau_of_xi(xi, alpha, lam, omega)
        E = self.E(tau, xi, omega)
        D = self.D(tau, xi, omega)
        if lam > 0:
            e_train = alpha * xi * (lam / tau) ** 2
        else:
            e_train = xi * (alpha - D) ** 2 / alpha if tau == 0 else 0.0
        return dict(
            xi=xi,
            tau=tau,
            E=E,
            D=D,
            e_test=alpha * xi,
            e_train=e_train,
            rank=self.mass_above(max(tau, omega), xi),
        )

    # -- interpolation threshold -----------------------------------------------------------

    def alpha_inter(self, Delta: float) -> tuple[float, float]:
        """``(alpha_inter, xi_bar)``: ``2 xi D(0, xi) = E(0, xi) + Delta/2``,
        ``alpha_inter = D(0, xi_bar)`` (``Delta > 0``; THEORY.md section 3)."""

        def f(xi):
            om = self.omega(xi)
            return 2 * xi * self.D(0.0, xi, om) - self.E(0.0, xi, om) - Delta / 2

        lo, hi = 1e-3, 1.0
        while f(hi) < 0:
            lo, hi = hi, 2 * hi
        while f(lo) > 0:
            hi, lo = lo, lo / 2
        xi_bar = optimize.brentq(f, lo, hi, xtol=self.xtol)
        return self.D(0.0, xi_bar), xi_bar


def solve(
    alpha: float,
    kappa_star: float,
    lam: float,
    Delta: float = 0.0,
    kappa: float | None = None,
    **tolerances,
) -> dict:
    """One point: ``Reference(kappa_star, kappa, **tolerances).solve(alpha, lam, Delta)``."""
    return Reference(kappa_star, kappa, **tolerances).solve(alpha, lam, Delta)
