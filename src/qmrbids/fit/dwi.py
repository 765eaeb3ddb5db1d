"""Apparent diffusion coefficient from diffusion-weighted images at two or more b-values."""

from __future__ import annotations

import numpy as np

from qmrbids.fit.base import FitError, Model
from qmrbids.fit.loglinear import weighted_loglinear


class DWIModel(Model):
    """S(b) = S0 exp(-b ADC), weighted log-linear least squares over every volume.

    Inputs: a dwi series with >= 2 distinct b-values (.bval, s/mm^2). Directions are pooled, so
    this is the isotropic (trace) ADC, the scanner's ADC map. Documented range: b_max x ADC <= 4
    (ADC <= 4e-3 mm^2/s at b = 1000, <= 2e-3 at b = 2000), above which the highest shell is at
    the noise floor.
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

    @classmethod
    def from_metadata(cls, metadata, bvalues=None, **context):
        if bvalues is None:
            raise FitError("ADC needs the b-values (.bval file)")
        return cls(bvalues)

    def parameters(self) -> dict:
        return {"BValues": self.b.tolist()}

    def fit_voxels(self, signals):
        s0, adc, r2 = weighted_loglinear(signals, self.b)
        return {"ADC": adc, "S0map": s0, "Rsquared": r2}
