"""Mono-exponential T2 from multi-echo spin echo, unbiased where late echoes reach the noise floor."""

from __future__ import annotations

import numpy as np

from qmrbids.fit.base import FitError, EchoTimeModel, r_squared
from qmrbids.fit.expfit import ExponentialSolver


class MESEModel(EchoTimeModel):
    """|S(TE)|^2 = S0^2 exp(-2 TE/T2) + c, fitted by least squares on squared magnitudes.

    For magnitude (Rician) data E[|S|^2] = A^2 + 2 sigma^2 exactly, so an exponential plus a
    constant on the squared magnitudes has no noise-floor bias, with no noise estimate needed
    and no echo thrown away; c estimates 2 sigma^2 per voxel. Inputs: a MESE collection with
    >= 4 echoes. Documented range: T2 from 1.2 x the first echo time to the last echo time
    (12-320 ms for 32 echoes of 10 ms). Outputs T2 and M0, the amplitude extrapolated to TE = 0 (which holds
    the T1 saturation (1 - exp(-TR/T1)) and the receive gain). Ideal refocusing (no stimulated
    echoes) is assumed, as in the phantom.
    """

    name = "mese"
    suffix = "MESE"
    outputs = {"T2map": "s", "M0map": "arbitrary"}
    goodness = "Rsquared"
    reference = ("Milford D, Rosbach N, Bendszus M, Heiland S. PLoS One 2015;10:e0145255 (noise-floor "
                 "offset model); Gudbjartsson H, Patz S. MRM 1995;34:910 (E[M^2] = A^2 + 2 sigma^2)")
    algorithm = ("least squares of S0^2 exp(-2 TE/T2) + c on squared magnitudes (variable projection "
                 "over a T2 grid, Gauss-Newton refinement)")

    def __init__(self, echo_times_s):
        te = np.asarray(echo_times_s, dtype=np.float64).reshape(-1)
        if np.unique(te).size < 4 or np.any(te <= 0):
            raise FitError(f"MESE needs at least four distinct positive echo times, not {te.tolist()}")
        self.te = te
        self.solver = ExponentialSolver(te)

    def fit_voxels(self, signals):
        power = signals * signals
        c, d, r, sse = self.solver.fit(power)
        return {"T2map": 2.0 / r, "M0map": np.sqrt(d), "Rsquared": r_squared(power, sse)}
