"""T1 from MP2RAGE (Marques et al. 2010): lookup of the uniform image, B1-corrected."""

from __future__ import annotations

import numpy as np

from qmrbids.fit.base import FitError, Model, as_angles, b1_input, degrees
from qmrbids.phantom import signals as equations

#: T1 grid of the lookup tables (s).
T1_GRID = np.geomspace(0.05, 6.0, 600)
#: B1 rows of the lookup table; voxels start from the nearest row and are refined exactly.
B1_GRID = np.round(np.arange(0.40, 1.81, 0.02), 2)


def uni_from_inversions(inv1, inv2):
    """MP2RAGE uniform image Re(G1* G2)/(|G1|^2 + |G2|^2) from complex or signed INV1/INV2."""
    return equations.uni(np.asarray(inv1), np.asarray(inv2))


class MP2RAGEModel(Model):
    """T1 by inverting UNI(T1, B1) (Marques et al. NeuroImage 2010;49:1271).

    Input: the UNI image in [-0.5, 0.5] (data last axis of length 1; see
    :func:`uni_from_inversions` for INV1/INV2). Signal equation: the exact steady state of
    ``qmrbids.phantom.signals.mp2rage``; readout convention: each block of NumberShots
    excitations in linear order has NumberShots // 2 excitations before the k-space centre,
    which InversionTime points to (Marques 2010 use the same centre-of-k-space convention).
    Algorithm: a table of UNI over a T1 grid for B1 rows 0.40-1.80 gives each voxel a start
    value (nearest B1 row, linear interpolation in UNI), then three secant-Newton steps on the
    exact UNI(T1, B1 of the voxel) remove the table error. Documented range: T1 on the monotonic
    branch of UNI(T1) at the voxel's B1 within 0.05-6 s; for the phantom protocol (TI 0.7/2.5 s,
    4/5 degrees, 160 shots of 7 ms, TR 5 s) T1 0.15-4 s at B1 0.8-1.2. Below it UNI is flat.
    """

    name = "mp2rage"
    suffix = "UNIT1"
    outputs = {"T1map": "s", "R1map": "1/s"}
    reference = "Marques JP, Kober T, Krueger G, et al. NeuroImage 2010;49:1271-1281"
    algorithm = ("lookup of UNI over a (B1, T1) table, refined by secant-Newton steps on the exact steady-state "
                 "signal; NumberShots // 2 excitations before the k-space centre")

    def __init__(self, *, inversion_times_s, flip_angles_deg, repetition_time_excitation_s,
                 repetition_time_preparation_s, number_shots, inversion_efficiency=0.96, b1=None):
        self.timing = dict(
            tr_prep=float(repetition_time_preparation_s), tr_exc=float(repetition_time_excitation_s),
            n_shots=int(number_shots), inversion_times=[float(t) for t in inversion_times_s],
            flip_degs=degrees(as_angles(flip_angles_deg)), efficiency=float(inversion_efficiency),
        )
        if len(self.timing["inversion_times"]) != 2 or len(self.timing["flip_degs"]) != 2:
            raise FitError("MP2RAGE needs two inversion times and two flip angles")
        try:
            self.table = self.uni(T1_GRID[None, :], B1_GRID[:, None])
        except ValueError as error:
            raise FitError(str(error)) from None
        self.b1 = b1

    required = ("InversionTime", "FlipAngle", "RepetitionTimeExcitation", "RepetitionTimePreparation",
                "NumberShots")

    @classmethod
    def from_metadata(cls, metadata, b1=None, **context):
        """From the sidecars of the two inversions (INV1, INV2); InversionEfficiency defaults to 0.96."""
        if len(metadata) != 2:
            raise FitError("MP2RAGE needs the sidecars of both inversions (inv-1, inv-2) for its timing")
        first = metadata[0]
        return cls(inversion_times_s=[m["InversionTime"] for m in metadata],
                   flip_angles_deg=[m["FlipAngle"] for m in metadata],
                   repetition_time_excitation_s=first["RepetitionTimeExcitation"],
                   repetition_time_preparation_s=first["RepetitionTimePreparation"],
                   number_shots=first["NumberShots"], inversion_efficiency=first.get("InversionEfficiency", 0.96),
                   b1=b1)

    def parameters(self) -> dict:
        t = self.timing
        return {"InversionTime": t["inversion_times"], "FlipAngle": t["flip_degs"],
                "RepetitionTimeExcitation": t["tr_exc"], "RepetitionTimePreparation": t["tr_prep"],
                "NumberShots": t["n_shots"], "InversionEfficiency": t["efficiency"]}

    uses_b1 = True

    def voxel_inputs(self):
        return b1_input(self.b1)

    def uni(self, t1, b1):
        """UNI of the protocol for T1 (s) and B1 (arrays that broadcast)."""
        t1, b1 = np.broadcast_arrays(np.asarray(t1, float), np.asarray(b1, float))
        g1, g2 = equations.mp2rage(np.ones_like(t1), t1, np.zeros_like(t1), b1, te=0.0, **self.timing)
        return equations.uni(g1, g2)

    def _branch(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(UNI, T1) of the monotonic decreasing branch of a table row, UNI increasing."""
        curve = self.table[row]
        start = int(np.argmax(curve))
        rising = np.diff(curve[start:]) >= 0
        stop = start + int(np.argmax(rising)) if rising.any() else len(curve) - 1
        return curve[start:stop + 1][::-1], T1_GRID[start:stop + 1][::-1]

    def fit_voxels(self, signals, b1=1.0):
        u = signals[:, 0]
        b1 = np.broadcast_to(np.asarray(b1, float), u.shape)
        rows = np.clip(np.rint((b1 - B1_GRID[0]) / 0.02).astype(int), 0, B1_GRID.size - 1)
        t1 = np.full(u.shape, np.nan)
        for row in np.unique(rows):
            pick = rows == row
            uni_axis, t1_axis = self._branch(row)
            inside = (u[pick] >= uni_axis[0]) & (u[pick] <= uni_axis[-1])
            t1[pick] = np.where(inside, np.interp(u[pick], uni_axis, t1_axis), np.nan)
        step = 1e-4
        for _ in range(3):  # secant-Newton on log T1
            f0 = self.uni(t1, b1) - u
            f1 = self.uni(t1 * (1 + step), b1) - u
            t1 = t1 * np.exp(-f0 * np.log1p(step) / (f1 - f0))
        return {"T1map": t1, "R1map": 1.0 / t1}
