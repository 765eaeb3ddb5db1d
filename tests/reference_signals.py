"""Independent reference for the phantom's signals: the sequences simulated event by event.

Nothing here calls qmrbids: longitudinal magnetisation is stepped through excitations, MT pulses,
inversions and relaxation periods until it repeats, and signals are read where the protocol says
(see truth/phantom.json). Parameters are the unique voxel parameter sets, so loops stay short.
"""

from __future__ import annotations

import numpy as np


def _relax(mz, m0, t1, t):
    e = np.exp(-t / np.where(t1 > 0, t1, np.inf))
    return m0 - (m0 - mz) * e


def _until_steady(step, mz, tol=1e-13, max_cycles=200_000):
    for _ in range(max_cycles):
        new = step(mz)
        if np.max(np.abs(new - mz)) < tol:
            return new
        mz = new
    raise AssertionError("no steady state")


def spgr(m0, t1, t2star, b1, flip_deg, tr, te, mt_delta=None):
    """Spoiled GRE: [MT pulse] -> excitation -> relax TR, repeated; signal right after excitation."""
    alpha = np.deg2rad(flip_deg) * b1
    keep = 1.0 if mt_delta is None else 1.0 - mt_delta * b1**2

    def one_tr(mz):
        return _relax(mz * keep * np.cos(alpha), m0, t1, tr)

    mz = _until_steady(one_tr, m0.astype(float))
    return mz * keep * np.sin(alpha) * np.exp(-te / np.where(t2star > 0, t2star, np.inf))


def ir_se(m0, t1, t2, ti, tr, te, efficiency):
    """Inversion -> TI -> 90 degree readout (Mz saturated) -> TR - TI, repeated; signed signal."""

    def one_tr(mz):
        inverted = _relax(-efficiency * mz, m0, t1, ti)
        saturated = inverted * 0.0  # the 90 degree readout leaves no longitudinal magnetisation
        return _relax(saturated, m0, t1, tr - ti)

    mz = _until_steady(one_tr, m0.astype(float))  # Mz just before the inversion
    at_ti = _relax(-efficiency * mz, m0, t1, ti)
    return at_ti * np.exp(-te / np.where(t2 > 0, t2, np.inf))


def mp2rage(m0, t1, t2star, b1, tr_prep, tr_exc, n, tis, flips, te, efficiency):
    """MP2RAGE, pulse by pulse: returns the signed signal of each block at its k-space centre."""
    before = n // 2
    a = [np.deg2rad(f) * b1 for f in flips]
    starts = [tis[0] - before * tr_exc, tis[1] - before * tr_exc]
    signals = [None, None]

    def one_cycle(mz, record=False):
        mz = -efficiency * mz
        t = 0.0
        for block in range(2):
            mz = _relax(mz, m0, t1, starts[block] - t)
            t = starts[block]
            for pulse in range(n):
                if pulse == before and record:
                    signals[block] = mz * np.sin(a[block])
                mz = _relax(mz * np.cos(a[block]), m0, t1, tr_exc)
                t += tr_exc
        return _relax(mz, m0, t1, tr_prep - t)

    mz = _until_steady(one_cycle, m0.astype(float))
    one_cycle(mz, record=True)
    readout = np.exp(-te / np.where(t2star > 0, t2star, np.inf))
    return signals[0] * readout, signals[1] * readout
