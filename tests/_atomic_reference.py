"""Independent reference for the discrete-teacher spectral integrals (tests only): the density of
``sum_i p_i delta_{t_i} boxplus semicircle(xi)`` from the roots of the subordination polynomial
(numpy), support edges by brentq, and scipy's adaptive quadrature (in a cosine variable that
makes the square-root edges analytic). Every quantity is written relative to a nearby atom, so that
the tiny semicircles of small ``xi`` keep their relative precision. No qnr code is used."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import integrate, optimize


class Reference:
    def __init__(self, atoms, weights, xi):
        self.t = np.asarray(atoms, float)
        self.p = np.asarray(weights, float)
        self.xi = float(xi)
        self.n = self.t.size
        self._polys = {}
        self.intervals = self._intervals()

    # ------------------------------------------------------------------ subordination root
    def _poly(self, k):
        """Coefficients ``A = prod(delta + c_j)`` and ``B = xi sum_i p_i prod_{j != i}``
        (``c_j = t_k - t_j``), cached per anchor."""
        if k not in self._polys:
            c = self.t[k] - self.t
            A = np.poly1d([1.0])
            for cj in c:
                A = A * np.poly1d([1.0, cj])
            B = np.poly1d([0.0])
            for i in range(self.n):
                q = np.poly1d([self.xi * self.p[i]])
                for j in range(self.n):
                    if j != i:
                        q = q * np.poly1d([1.0, c[j]])
                B = B + q
            self._polys[k] = (c, A.coeffs, np.concatenate([[0.0, 0.0], B.coeffs]))
        return self._polys[k]

    def _delta(self, k, y):
        """``delta = w - t_k`` (``Im >= 0``) at ``x = t_k + y``: root of
        ``(delta - y) prod(delta + c_j) + xi sum_i p_i prod_{j != i}(delta + c_j)`` with the
        largest imaginary part, polished by Newton on the rational form."""
        c, A, B = self._poly(k)
        coeffs = np.concatenate([A, [0.0]]) - y * np.concatenate([[0.0], A])
        coeffs[-B.size :] += B
        roots = np.roots(coeffs)
        d = roots[np.argmax(roots.imag)]
        for _ in range(4):
            inv = 1 / (d + c)
            f = d - y + self.xi * np.sum(self.p * inv)
            df = 1 - self.xi * np.sum(self.p * inv * inv)
            d = d - f / df
        return d, c

    def rho_h(self, k, y):
        d, c = self._delta(k, y)
        g = np.sum(self.p / (d + c))
        if d.imag <= 0:
            return 0.0, g.real
        return max(-g.imag, 0.0) / np.pi, g.real

    # ------------------------------------------------------------------ support edges
    def _F(self, k, a):
        """``F = xi sum p/(u - t)^2`` at ``u = t_k + a``."""
        c = self.t[k] - self.t
        return self.xi * np.sum(self.p / (a + c) ** 2)

    def _x(self, k, a):
        """``x(u) - t_k`` at ``u = t_k + a`` (a real, off the support or at an edge)."""
        c = self.t[k] - self.t
        return a + self.xi * np.sum(self.p / (a + c))

    def _root(self, k, lo, hi):
        def h(a):
            return self._F(k, a) ** -0.5 - 1

        return optimize.brentq(h, lo, hi, xtol=1e-300, rtol=8.9e-16, maxiter=500)

    def _intervals(self):
        """Support intervals as ``(k, y_lo, y_hi)``: ``x in [t_k + y_lo, t_k + y_hi]``."""
        t, xi = self.t, self.xi
        s = np.sqrt(xi)
        edges = [(0, self._x(0, self._root(0, -s * 1.000001, -1e-300)))]
        for i in range(self.n - 1):
            gap = t[i + 1] - t[i]

            def dF(a, i=i):  # F' at u = t_i + a, increasing in a on (0, gap)
                c = t[i] - t
                return -np.sum(self.p / (a + c) ** 3)

            a_min = optimize.brentq(dF, gap * 1e-12, gap * (1 - 1e-12), xtol=1e-300, rtol=8.9e-16)
            if self._F(i, a_min) >= 1:
                continue
            # two edges: right edge of the interval of atom i, left edge of atom i + 1
            a_r = self._root(i, 1e-300, a_min)
            b_l = self._root(i + 1, a_min - gap, -1e-300)
            edges.append((i, self._x(i, a_r)))
            edges.append((i + 1, self._x(i + 1, b_l)))
        edges.append(
            (self.n - 1, self._x(self.n - 1, self._root(self.n - 1, 1e-300, s * 1.000001)))
        )
        out = []
        for (ka, ya), (kb, yb) in zip(edges[::2], edges[1::2]):
            out.append((ka, ya, (t[kb] - t[ka]) + yb))
        return out

    # ------------------------------------------------------------------ integrals
    def _integral(self, lo, hi, fn):
        """``int_lo^hi fn(y) dy`` by adaptive quadrature (scipy ``quad``, epsrel 1e-13) in
        ``phi``, ``y = lo + (hi - lo)(1 - cos phi)/2``: square-root edges become analytic."""
        h = hi - lo

        def f(phi):
            return fn(lo + h * (1 - np.cos(phi)) / 2) * (h / 2) * np.sin(phi)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", integrate.IntegrationWarning)
            val, _ = integrate.quad(f, 0.0, np.pi, epsabs=0, epsrel=1e-13, limit=200)
        return val

    def integrals(self, b, which="up"):
        """``[m0, m1, m2, h0, h1]`` above (``up``) or below (``low``) ``b``."""
        out = np.zeros(5)
        for k, lo, hi in self.intervals:
            yb = b - self.t[k]
            if which == "up":
                a, c = max(lo, yb), hi
            else:
                a, c = lo, min(hi, yb)
            if not a < c:
                continue
            tk = self.t[k]
            for j, (pw, hp) in enumerate([(0, 0), (1, 0), (2, 0), (0, 1), (1, 1)]):

                def fn(y, pw=pw, hp=hp, k=k, tk=tk):
                    r, h = self.rho_h(k, y)
                    return (tk + y) ** pw * r * (h if hp else 1.0)

                out[j] += self._integral(a, c, fn)
        return out
