"""Transmit field (B1+) from the double-angle method."""

from __future__ import annotations

import numpy as np

from qmrbids.fit.base import FitError, Model, as_angles, degrees


class TB1DAMModel(Model):
    """B1 = arccos(S(2a) / (2 S(a))) / a (Insko & Bolinger 1993; Stollberger & Wach 1996).

    Inputs: a TB1DAM collection with two flip angles a and 2a and TR long enough for full
    recovery. Output TB1map in the BIDS convention: percent of the nominal flip angle
    (FlipAngle_effective = TB1map / 100 x FlipAngle_nominal; 100 = nominal). Documented range:
    T1 <= TR/10 (residual saturation exp(-TR/T1) < 5e-5) and B1 x 2a < 180 degrees.
    """

    name = "tb1dam"
    suffix = "TB1DAM"
    outputs = {"TB1map": "percent"}
    reference = "Insko EK, Bolinger L. J Magn Reson A 1993;103:82-85 (double-angle method)"
    algorithm = "closed form arccos(S2 / (2 S1)) / a1; percent of nominal"

    def __init__(self, flip_angles_deg):
        angles = as_angles(flip_angles_deg)
        if angles.size != 2 or not np.isclose(angles.max(), 2.0 * angles.min(), rtol=1e-3):
            raise FitError(f"TB1DAM needs two flip angles a and 2a, not {np.rad2deg(angles).tolist()} degrees")
        self.order = np.argsort(angles)
        self.alpha = float(angles.min())

    required = ("FlipAngle",)

    @classmethod
    def from_metadata(cls, metadata, **context):
        return cls([m["FlipAngle"] for m in metadata])

    def parameters(self) -> dict:
        return {"FlipAngle": degrees(np.array([self.alpha, 2 * self.alpha]))}

    def fit_voxels(self, signals):
        s1, s2 = signals[:, self.order[0]], signals[:, self.order[1]]
        ratio = np.clip(s2 / (2.0 * s1), -1.0, 1.0)
        return {"TB1map": 100.0 * np.arccos(ratio) / self.alpha}
