"""Apparent diffusion coefficient from diffusion-weighted images at two or more b-values."""

from __future__ import annotations

import numpy as np

from qmrbids.fit.base import FitError, Model, rowsum
from qmrbids.fit.loglinear import log_signal, weighted_loglinear


class DWIModel(Model):
    """S(b) = S0 exp(-b ADC), weighted log-linear least squares over every volume.

    Inputs: a dwi series with >= 2 distinct b-values (.bval, s/mm^2). Directions are pooled, so
    this is the isotropic (trace) ADC, the scanner's ADC map. Documented range: b_max x ADC <= 4
    (ADC <= 4e-3 mm^2/s at b = 1000, <= 2e-3 at b = 2000), above which the highest shell is at
    the noise floor. With two distinct b-values (the clinical b = 0 / b = 1000 case) the fit has
    a closed form: the line through the mean log signal of each shell, which is where the
    reweighted fit ends (its weights are equal within a shell), at a fraction of the cost.
    """

    name = "dwi"
    suffix = "dwi"
    outputs = {"ADC": "mm2/s", "S0map": "arbitrary"}
    goodness = "Rsquared"
    reference = "Stejskal EO, Tanner JE. J Chem Phys 1965;42:288; Veraart J et al. NeuroImage 2013;81:335"
    algorithm = "iteratively reweighted log-linear least squares over all b-values (directions pooled)"

    def __init__(self, bvalues_s_mm2):
        b = np.asarray(bvalues_s_mm2, dtype=np.float64).reshape(-1)
        if np.unique(b).size < 2 or np.any(b < 0):
            raise FitError(f"ADC needs at least two distinct b-values, not {b.tolist()}")
        self.b = b
        shells = np.unique(b)
        member = (b[:, None] == shells[None, :]).astype(np.float64)
        # two shells: the matrix averaging the log signal over each shell (closed form, see above)
        self.shell_means = member / member.sum(axis=0) if shells.size == 2 else None
        self.shells = shells
        self.shell_of_volume = np.searchsorted(shells, b)

    @classmethod
    def from_metadata(cls, metadata, bvalues=None, **context):
        if bvalues is None:
            raise FitError("ADC needs the b-values (.bval file)")
        return cls(bvalues)

    def parameters(self) -> dict:
        return {"BValues": self.b.tolist()}

    def fit_voxels(self, signals):
        if self.shell_means is None:
            s0, adc, r2 = weighted_loglinear(signals, self.b)
            return {"ADC": adc, "S0map": s0, "Rsquared": r2}
        logs = log_signal(signals)
        means = logs @ self.shell_means  # (voxels, 2)
        adc = (means[:, 0] - means[:, 1]) / (self.shells[1] - self.shells[0])
        # R^2 of the log-linear fit: the share of the log signal's variance between the shells
        fitted = means[:, self.shell_of_volume]
        centred = logs - (rowsum(logs) / logs.shape[1])[:, None]
        within = logs - fitted
        r2 = 1.0 - rowsum(within * within) / rowsum(centred * centred)
        return {"ADC": adc, "S0map": np.exp(means[:, 0] + adc * self.shells[0]), "Rsquared": r2}
