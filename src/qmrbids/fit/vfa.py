"""Variable flip angle T1 (DESPOT1), linear form, with the flip angles corrected by B1."""

from __future__ import annotations

import numpy as np

from qmrbids.fit.base import FitError, Model, as_angles, b1_input, degrees, rowsum


class VFAModel(Model):
    """DESPOT1: S/sin(a) = E1 S/tan(a) + M0 (1 - E1), a = B1 x nominal angle, E1 = exp(-TR/T1).

    Inputs: a VFA collection with >= 2 distinct flip angles (spoiled gradient echo, one TR).
    Ordinary least squares of that line per voxel, in closed form (Deoni et al. MRM
    2003;49:515). Exact for the spoiled steady state; documented range T1 in [TR, 1000 TR] and
    B1 x angles below 90 degrees. M0 absorbs exp(-TE/T2*) and the receive gain.
    """

    name = "vfa"
    suffix = "VFA"
    outputs = {"T1map": "s", "M0map": "arbitrary"}
    goodness = "Rsquared"
    reference = "Deoni SCL, Rutt BK, Peters TM. MRM 2003;49:515-526 (DESPOT1)"
    algorithm = "linear least squares of S/sin(a) against S/tan(a), flip angles scaled by B1"

    def __init__(self, flip_angles_deg, repetition_time_s: float, b1=None):
        self.angles = as_angles(flip_angles_deg)
        if np.unique(self.angles).size < 2:
            raise FitError("VFA needs at least two distinct flip angles")
        if not repetition_time_s > 0:
            raise FitError(f"RepetitionTime must be positive, not {repetition_time_s}")
        self.tr = float(repetition_time_s)
        self.b1 = b1

    required = ("FlipAngle", "RepetitionTimeExcitation")

    @classmethod
    def from_metadata(cls, metadata, b1=None, **context):
        tr = {m["RepetitionTimeExcitation"] for m in metadata}
        if len(tr) != 1:
            raise FitError(f"VFA needs one RepetitionTimeExcitation, not {sorted(tr)}")
        return cls([m["FlipAngle"] for m in metadata], tr.pop(), b1=b1)

    def parameters(self) -> dict:
        return {"FlipAngle": degrees(self.angles), "RepetitionTimeExcitation": self.tr}

    uses_b1 = True

    def voxel_inputs(self):
        return b1_input(self.b1)

    def fit_voxels(self, signals, b1=1.0):
        angles = self.angles * np.reshape(b1, (-1, 1))
        sin = np.sin(angles)
        cos = np.sqrt(1.0 - sin * sin)  # angles < 90 degrees; cheaper than a second cosine
        y = signals / sin
        x = y * cos
        mx, my = rowsum(x) / x.shape[1], rowsum(y) / y.shape[1]
        x -= mx[:, None]
        y -= my[:, None]
        sxx, sxy, syy = rowsum(x * x), rowsum(x * y), rowsum(y * y)
        slope = sxy / sxx
        slope[(slope <= 0) | (slope >= 1)] = np.nan  # no T1 makes such a line: the voxel gets 0
        t1 = -self.tr / np.log(slope)
        m0 = (my - slope * mx) / (1.0 - slope)
        # R^2 of the DESPOT1 line (1 - SS_res / SS_tot in its own coordinates)
        return {"T1map": t1, "M0map": m0, "Rsquared": sxy * sxy / (sxx * syy)}
