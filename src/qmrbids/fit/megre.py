"""R2* and T2* from multi-echo gradient-echo magnitudes."""

from __future__ import annotations

import numpy as np

from qmrbids.fit.base import FitError, EchoTimeModel
from qmrbids.fit.loglinear import weighted_loglinear


class MEGREModel(EchoTimeModel):
    """S(TE) = S0 exp(-R2* TE), weighted log-linear least squares (weights S^2, then fitted^2).

    Inputs: the magnitude images of a MEGRE collection, >= 2 echoes. Closed form per voxel.
    Documented range: T2* from the echo spacing to 3x the last echo time (echoes 3-36 ms:
    3 ms to 108 ms), with the decay monoexponential (no fat, no
    macroscopic field gradients).
    """

    name = "megre"
    suffix = "MEGRE"
    outputs = {"R2starmap": "1/s", "T2starmap": "s", "S0map": "arbitrary"}
    goodness = "Rsquared"
    reference = "Veraart J, Sijbers J, Sunaert S, et al. NeuroImage 2013;81:335-346 (weighted log-linear)"
    algorithm = "iteratively reweighted log-linear least squares (weights S^2, then fitted S^2)"

    def __init__(self, echo_times_s):
        te = np.asarray(echo_times_s, dtype=np.float64).reshape(-1)
        if np.unique(te).size < 2 or np.any(te < 0):
            raise FitError(f"MEGRE needs at least two distinct echo times, not {te.tolist()}")
        self.te = te

    def fit_voxels(self, signals):
        s0, r2s, r2 = weighted_loglinear(signals, self.te)
        return {"R2starmap": r2s, "T2starmap": 1.0 / r2s, "S0map": s0, "Rsquared": r2}
