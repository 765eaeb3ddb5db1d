"""Least squares of y = a + b exp(-r t) per voxel, vectorised: variable projection + Gauss-Newton.

For a fixed rate r the model is linear in (a, b), so the best fit for every rate of a log-spaced
grid follows from one matrix product with the grid's orthonormal bases (variable projection,
Golub & Pereyra 1973; Barral et al. MRM 2010;64:1057 use the same reduction). The best grid point
of each voxel then seeds a few Gauss-Newton steps on (a, b, r) in which a step is kept only where
it lowers the residual. With ``polarity`` the data are magnitudes of a signal that may change sign
once (inversion recovery): every sign pattern "first p samples negative" is tried on the grid, the
two best patterns are refined, and the one with the lower refined residual wins.
"""

from __future__ import annotations

import numpy as np

from qmrbids.fit.base import rowsum


def rate_grid(t: np.ndarray, size: int = 40) -> np.ndarray:
    """Log-spaced rates covering time constants from a tenth of the shortest spacing to 5x the span."""
    t = np.sort(np.asarray(t, dtype=np.float64))
    spacing = np.min(np.diff(t)) if t.size > 1 else t[0]
    short = max(min(spacing, t[t > 0].min() if np.any(t > 0) else spacing) / 10.0, 1e-6)
    return np.geomspace(1.0 / (5.0 * t[-1]), 1.0 / short, size)


class ExponentialSolver:
    """Fits ``a + b exp(-r t)`` for fixed sample times ``t`` (one instance, many voxel blocks)."""

    grid_block = 512

    def __init__(self, t, *, polarity: bool = False, grid: np.ndarray | None = None, iterations: int = 5):
        self.t = np.asarray(t, dtype=np.float64)
        self.order = np.argsort(self.t)
        self.rates = rate_grid(self.t) if grid is None else np.asarray(grid, dtype=np.float64)
        self.iterations = iterations
        k = self.t.size
        # sign patterns: the p earliest samples negated (p = k is p = 0 with a, b negated)
        patterns = np.ones((k if polarity else 1, k))
        for p in range(patterns.shape[0]):
            patterns[p, self.order[:p]] = -1.0
        self.patterns = patterns
        bases = []
        for r in self.rates:
            q, _ = np.linalg.qr(np.stack([np.ones(k), np.exp(-r * self.t)], axis=1))
            bases.append(q)
        q_all = np.concatenate(bases, axis=1)  # (k, 2G)
        # pattern p applied to the data equals the basis rows multiplied by the pattern
        self.projectors = np.concatenate([patterns[p][:, None] * q_all for p in range(patterns.shape[0])], axis=1)

    def _linear(self, y, r):
        """Best (a, b) for given rates, closed form of the 2x2 normal equations."""
        e = np.exp(-r[:, None] * self.t)
        k = self.t.size
        se, see = rowsum(e), rowsum(e * e)
        sy, sye = rowsum(y), rowsum(y * e)
        det = k * see - se * se
        a = (see * sy - se * sye) / det
        b = (k * sye - se * sy) / det
        return a, b

    def _sse(self, y, a, b, r):
        res = y - a[:, None] - b[:, None] * np.exp(-r[:, None] * self.t)
        return rowsum(res * res)

    def _refine(self, y, r):
        """Gauss-Newton on (a, b, log r), each step kept only where it lowers the residual.

        The 3x3 normal equations are solved in closed form (cofactors), elementwise over voxels.
        """
        a, b = self._linear(y, r)
        sse = self._sse(y, a, b, r)
        t = self.t
        k = float(t.size)
        for _ in range(self.iterations):
            e = np.exp(-r[:, None] * t)
            res = y - a[:, None] - b[:, None] * e
            g = -(b * r)[:, None] * t * e  # derivative with respect to log r
            s_e, s_g = rowsum(e), rowsum(g)
            s_ee, s_eg, s_gg = rowsum(e * e), rowsum(e * g), rowsum(g * g)
            r0, r1, r2 = rowsum(res), rowsum(e * res), rowsum(g * res)
            c00 = s_ee * s_gg - s_eg * s_eg
            c01 = s_eg * s_g - s_e * s_gg
            c02 = s_e * s_eg - s_ee * s_g
            c11 = k * s_gg - s_g * s_g
            c12 = s_e * s_g - k * s_eg
            c22 = k * s_ee - s_e * s_e
            det = k * c00 + s_e * c01 + s_g * c02
            da = (c00 * r0 + c01 * r1 + c02 * r2) / det
            db = (c01 * r0 + c11 * r1 + c12 * r2) / det
            dlog = (c02 * r0 + c12 * r1 + c22 * r2) / det
            r_new = r * np.exp(np.clip(dlog, -2.0, 2.0))
            a_new, b_new = a + da, b + db
            sse_new = self._sse(y, a_new, b_new, r_new)
            better = sse_new < sse
            a, b, r = np.where(better, a_new, a), np.where(better, b_new, b), np.where(better, r_new, r)
            sse = np.where(better, sse_new, sse)
        return a, b, r, sse

    def fit(self, y: np.ndarray):
        """(a, b, r, residual sum of squares) of each row of ``y`` (voxels, samples).

        With polarity, a and b describe the signed signal (the magnitudes restored to it).
        """
        n = y.shape[0]
        best_grid = np.empty((n, self.patterns.shape[0]), dtype=np.intp)
        best_energy = np.empty((n, self.patterns.shape[0]))
        for start in range(0, n, self.grid_block):  # cache-sized blocks
            rows = slice(start, start + self.grid_block)
            energy = (y[rows] @ self.projectors) ** 2
            energy = energy.reshape(-1, self.patterns.shape[0], self.rates.size, 2)
            energy = energy[..., 0] + energy[..., 1]
            best_grid[rows] = energy.argmax(axis=2)
            best_energy[rows] = np.take_along_axis(energy, best_grid[rows][..., None], axis=2)[..., 0]
        if self.patterns.shape[0] == 1:
            return self._refine(y, self.rates[best_grid[:, 0]])
        ranked = np.argsort(-best_energy, axis=1)[:, :2]  # the two best sign patterns
        candidates = []
        for c in range(2):
            p = ranked[:, c]
            signed = y * self.patterns[p]
            candidates.append(self._refine(signed, self.rates[best_grid[np.arange(n), p]]))
        first = candidates[0][3] <= candidates[1][3]
        return tuple(np.where(first, x0, x1) for x0, x1 in zip(*candidates, strict=True))
