"""R2* and T2* from multi-echo gradient-echo magnitudes."""

from __future__ import annotations

import numpy as np

from qmrbids.fit.base import EchoTimeModel, FitError
from qmrbids.fit.loglinear import weighted_loglinear

#: Echo times count as equally spaced (ARLO applies) when every spacing is within this
#: fraction of the mean spacing; sidecars round echo times to 10 microseconds or so.
UNIFORM_SPACING = 1e-3


class MEGREModel(EchoTimeModel):
    """S(TE) = S0 exp(-R2* TE): ARLO for equally spaced echoes, weighted log-linear otherwise.

    Inputs: the magnitude images of a MEGRE collection, >= 2 echoes. Closed form per voxel.
    ARLO (Pei et al. 2015, with the 2019 erratum's estimator) needs >= 3 equally spaced echoes
    and only multiply-adds over the echoes. Its Simpson-rule integrals bias T2* by up to 0.5 %
    when T2* nears the echo spacing; the bias is a known function of spacing / T2*, so it is
    inverted exactly. S0 is the least-squares amplitude for the fitted R2*; the goodness of fit
    is the R^2 of that curve against the signals. Other echo times use the reweighted
    log-linear fit (weights S^2, then fitted S^2; Veraart et al. 2013).
    Documented range: T2* from the echo spacing to 3x the last echo time (echoes 3-36 ms:
    3 ms to 108 ms), with the decay monoexponential (no fat, no macroscopic field gradients).
    """

    name = "megre"
    suffix = "MEGRE"
    outputs = {"R2starmap": "1/s", "T2starmap": "s", "S0map": "arbitrary"}
    goodness = "Rsquared"
    #: The echo sums are of positive terms, so single precision keeps T2* within 1e-5 and halves the traffic.
    block_dtype = np.float32
    chunk_size = 8192

    def __init__(self, echo_times_s):
        te = np.asarray(echo_times_s, dtype=np.float64).reshape(-1)
        if np.unique(te).size < 2 or np.any(te < 0):
            raise FitError(f"MEGRE needs at least two distinct echo times, not {te.tolist()}")
        self.te = te
        self.order = np.argsort(te, kind="stable")
        spacing = np.diff(te[self.order])
        self.spacing = float(spacing.mean())
        self.arlo = te.size >= 3 and bool(np.all(np.abs(spacing - self.spacing) <= UNIFORM_SPACING * self.spacing))
        if self.arlo:
            self.reference = ("Pei M, Nguyen TD, Thimmappa ND, et al. Magn Reson Med 2015;73:843-850 (ARLO); "
                              "erratum doi:10.1002/mrm.27807")
            self.algorithm = ("ARLO auto-regression on Simpson integrals of equally spaced echoes, "
                              "Simpson-rule bias inverted exactly; S0 by least squares for the fitted R2*")
            self.operators = self._simpson_and_difference()
        else:
            self.reference = "Veraart J, Sijbers J, Sunaert S, et al. NeuroImage 2013;81:335-346 (weighted log-linear)"
            self.algorithm = "iteratively reweighted log-linear least squares (weights S^2, then fitted S^2)"

    def _simpson_and_difference(self) -> np.ndarray:
        """(echoes, 2 (n-2) + 1) operator: signals @ it = [Simpson integrals over each echo triple |
        S_k - S_k+2 | sum of S], in ``block_dtype`` so one BLAS product makes them all."""
        n, third = self.te.size, self.spacing / 3.0
        operators = np.zeros((n, 2 * (n - 2) + 1))
        for k in range(n - 2):
            first, middle, last = self.order[k:k + 3]
            operators[[first, middle, last], k] = third, 4.0 * third, third
            operators[[first, last], n - 2 + k] = 1.0, -1.0
        operators[:, -1] = 1.0
        return operators.astype(self.block_dtype)

    def fit_voxels(self, signals):
        if not self.arlo:
            s0, r2s, r2 = weighted_loglinear(np.asarray(signals, dtype=np.float64), self.te)
            return {"R2starmap": r2s, "T2starmap": 1.0 / r2s, "S0map": s0, "Rsquared": r2}
        n, delta = self.te.size, self.spacing
        products = signals @ self.operators
        integral, difference, total = products[:, :n - 2], products[:, n - 2:-1], products[:, -1]
        ii, id_, dd, squares = (np.einsum("ij,ij->i", a, b).astype(np.float64) for a, b in (
            (integral, integral), (integral, difference), (difference, difference), (signals, signals)))
        # ARLO's T2* is tau = Simpson / exact integral ratio: tau = delta/3 (1 + 4q + q^2) / (1 - q^2),
        # q = exp(-delta R2*); solve that quadratic for q (no solution: non-decaying voxel, map 0)
        c = (3.0 * ii + delta * id_) / (delta * (delta / 3.0 * dd + id_))
        q = (np.sqrt(3.0 + c * c) - 2.0) / (1.0 + c)
        r2s = -np.log(q) / delta
        # S0 by least squares for that decay: sum S_k q^k / sum q^2k (Horner over sorted echoes)
        q_block = q.astype(signals.dtype)
        projection = signals[:, self.order[-1]].copy()
        for column in self.order[-2::-1]:
            projection *= q_block
            projection += signals[:, column]
        projection = projection.astype(np.float64)
        norm = np.expm1(-2.0 * n * delta * r2s) / np.expm1(-2.0 * delta * r2s)
        s0 = projection / norm * np.exp(r2s * self.te[self.order[0]])
        mean_square = total.astype(np.float64) ** 2 / n
        r2 = 1.0 - (squares - projection * projection / norm) / (squares - mean_square)
        return {"R2starmap": r2s, "T2starmap": 1.0 / r2s, "S0map": s0, "Rsquared": r2}
