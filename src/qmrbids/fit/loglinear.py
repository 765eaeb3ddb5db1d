"""Weighted log-linear fit of S = S0 exp(-R x), the closed form behind MEGRE R2* and DWI ADC."""

from __future__ import annotations

import numpy as np


def weighted_loglinear(signals: np.ndarray, x: np.ndarray, iterations: int = 2):
    """(S0, R, residual sum of squares on S) of each row, by iteratively reweighted log-linear LS.

    var(log S) ~ sigma^2 / S^2, so each point is weighted by S^2; the first pass takes the
    weights from the data, later passes from the fitted curve, which keeps points near the noise
    floor from pulling the fit (Gambarota et al.; Veraart et al. NeuroImage 2013;81:335).
    """
    x = np.asarray(x, dtype=np.float64)
    logs = np.log(np.maximum(signals, np.finfo(np.float64).tiny))
    w = signals * signals
    for _ in range(iterations):
        sw = w.sum(axis=1)
        mx = (w * x).sum(axis=1) / sw
        my = (w * logs).sum(axis=1) / sw
        dx = x - mx[:, None]
        slope = (w * dx * (logs - my[:, None])).sum(axis=1) / (w * dx * dx).sum(axis=1)
        intercept = my - slope * mx
        fitted = np.exp(intercept[:, None] + slope[:, None] * x)
        w = fitted * fitted
    res = signals - fitted
    return np.exp(intercept), -slope, (res * res).sum(axis=1)
