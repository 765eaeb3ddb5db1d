"""Magnetization transfer: saturation (MTsat, Helms 2008) and ratio (MTR)."""

from __future__ import annotations

import numpy as np

from qmrbids.fit.base import FitError, Model, as_angles, b1_input, degrees


class MTsatModel(Model):
    """MTsat from PDw, T1w (MT off) and MTw (MT on) spoiled gradient echoes, B1-corrected.

    Helms et al. MRM 2008;60:1396 (with the erratum MRM 2010;64:1856) model the MT pulse as a
    saturation of a fraction delta of Mz once per TR; their closed-form estimate is the
    small-angle, short-TR expansion of that model. Here the same model is inverted exactly:
    T1 and M0 from the two MT-off images (two-point DESPOT1 with flip angles B1 x nominal), then
    1 - delta = S_MT / (M0 sin(a)(1 - E1) + S_MT cos(a) E1). B1 correction: delta / B1^2 (the
    saturation scales with the MT pulse energy, B1 squared). Outputs MTsat in percent units
    (percent of Mz saturated per TR), R1 and M0. Data order: PDw, MTw, T1w. Documented range:
    T1 in [TR, 1000 TR], B1 x angles < 90 degrees, MTsat x B1^2 < 1.
    """

    name = "mtsat"
    suffix = "MTS"
    outputs = {"MTsat": "percent", "R1map": "1/s", "M0map": "arbitrary"}
    reference = "Helms G, Dathe H, Kallenberg K, Dechent P. MRM 2008;60:1396-1407; erratum MRM 2010;64:1856"
    algorithm = ("exact inversion of the discrete-saturation spoiled gradient-echo model: two-point DESPOT1 "
                 "(PDw, T1w), then the MTw saturation; flip angles scaled by B1, saturation divided by B1^2")

    def __init__(self, flip_angles_deg, repetition_times_s, b1=None):
        self.angles = as_angles(flip_angles_deg)
        self.tr = np.asarray(repetition_times_s, dtype=np.float64).reshape(-1)
        if self.angles.size != 3 or self.tr.size != 3:
            raise FitError("MTsat needs three images: PDw (MT off), MTw (MT on), T1w (MT off)")
        if not np.isclose(self.tr[0], self.tr[2]):
            raise FitError(f"MTsat needs one repetition time for PDw and T1w, not {self.tr[[0, 2]].tolist()}")
        if np.isclose(self.angles[0], self.angles[2]):
            raise FitError("MTsat needs different flip angles for PDw and T1w")
        self.b1 = b1

    required = ("FlipAngle", "RepetitionTimeExcitation")

    @staticmethod
    def data_order(metadata, entities):
        """PDw (MT off at the MTw flip angle), MTw, T1w (the other MT-off image)."""
        on = [i for i in range(len(metadata)) if mt_on(metadata[i], entities[i])]
        off = [i for i in range(len(metadata)) if not mt_on(metadata[i], entities[i])]
        if len(on) != 1 or len(off) != 2:
            raise FitError("MTsat needs one MT-on and two MT-off images")
        pd = min(off, key=lambda i: abs(metadata[i]["FlipAngle"] - metadata[on[0]]["FlipAngle"]))
        return [pd, on[0], next(i for i in off if i != pd)]

    @classmethod
    def from_metadata(cls, metadata, b1=None, **context):
        return cls([m["FlipAngle"] for m in metadata], [m["RepetitionTimeExcitation"] for m in metadata], b1=b1)

    def parameters(self) -> dict:
        return {"FlipAngle": degrees(self.angles), "RepetitionTimeExcitation": self.tr.tolist()}

    uses_b1 = True

    def voxel_inputs(self):
        return b1_input(self.b1)

    def fit_voxels(self, signals, b1=1.0):
        sin = np.sin(self.angles[None, :] * np.reshape(b1, (-1, 1)))
        cos = np.sqrt(1.0 - sin * sin)  # angles < 90 degrees; cheaper than a second cosine
        s_pd, s_mt, s_t1 = signals[:, 0], signals[:, 1], signals[:, 2]
        y_pd, y_t1 = s_pd / sin[:, 0], s_t1 / sin[:, 2]
        x_pd, x_t1 = y_pd * cos[:, 0], y_t1 * cos[:, 2]
        e1 = (y_t1 - y_pd) / (x_t1 - x_pd)
        m0 = (y_pd - e1 * x_pd) / (1.0 - e1)
        r1 = -np.log(e1) / self.tr[0]
        e1_mt = np.exp(-r1 * self.tr[1])
        keep = s_mt / (m0 * sin[:, 1] * (1.0 - e1_mt) + s_mt * cos[:, 1] * e1_mt)
        mtsat = (1.0 - keep) / np.square(b1)
        return {"MTsat": 100.0 * mtsat, "R1map": r1, "M0map": m0}


def mt_on(metadata: dict, entities: dict) -> bool:
    """Whether an image had the MT pulse: MTState, else the mt entity."""
    if "MTState" in metadata:
        return bool(metadata["MTState"])
    return entities.get("mt") == "on"


class MTRModel(Model):
    """MTR = 100 (S_off - S_on) / S_off, in percent (BIDS convention). Data order: MT off, MT on."""

    name = "mtr"
    suffix = "MTR"
    outputs = {"MTRmap": "percent"}
    reference = "Wolff SD, Balaban RS. MRM 1989;10:135-144"
    algorithm = "100 (S_off - S_on) / S_off"

    @staticmethod
    def data_order(metadata, entities):
        if sorted(mt_on(m, e) for m, e in zip(metadata, entities, strict=True)) != [False, True]:
            raise FitError("MTR needs one MT-off and one MT-on image")
        return sorted(range(2), key=lambda i: mt_on(metadata[i], entities[i]))

    @classmethod
    def from_metadata(cls, metadata, **context):
        return cls()

    def fit_voxels(self, signals):
        return {"MTRmap": 100.0 * (signals[:, 0] - signals[:, 1]) / signals[:, 0]}
