"""Signal equations of the phantom's protocols, vectorised over voxels.

All times in seconds, angles in degrees, B0 offsets in Hz. Maps are numpy arrays of one shape;
air voxels have M0 = 0 and relaxation times 0 and give exactly zero signal. Transmit-field (B1)
errors scale every excitation of the gradient-echo sequences (spgr, megre, mp2rage) and the MT
saturation (as B1 squared); the spin-echo sequences (ir_se, mese, dwi) are modelled with ideal,
B1-insensitive pulses, and MESE as a pure mono-exponential decay (no stimulated echoes).
"""

from __future__ import annotations

import numpy as np


def decay(t: float | np.ndarray, tau: np.ndarray) -> np.ndarray:
    """exp(-t / tau), with tau = 0 (air) treated as no relaxation."""
    return np.exp(-t / np.where(tau > 0, tau, np.inf))


def spgr(m0, t1, t2star, b1, flip_deg, tr, te, mtsat=None):
    """Spoiled gradient-echo steady state, optionally with an MT pulse before each excitation.

    The MT pulse saturates a fraction delta = MTsat * B1**2 of the longitudinal magnetisation once
    per TR (the discrete form of Helms et al. MRM 2008;60:1396):
    S = M0 sin(a) (1 - delta)(1 - E1) / (1 - (1 - delta) cos(a) E1) * exp(-TE/T2*), a = B1 * flip.
    """
    alpha = np.deg2rad(flip_deg) * b1
    e1 = decay(tr, t1)
    keep = 1.0 if mtsat is None else 1.0 - mtsat * b1**2
    mz = m0 * (1.0 - e1) / (1.0 - keep * np.cos(alpha) * e1)
    return keep * mz * np.sin(alpha) * decay(te, t2star)


def ir_se(m0, t1, t2, ti, tr, te, efficiency):
    """Inversion-recovery spin echo, signed (real) signal.

    The readout saturates Mz at TI; it recovers for TR - TI, is inverted with the given efficiency
    and relaxes for TI: S = M0 (1 - (1 + eff) exp(-TI/T1) + eff exp(-TR/T1)) exp(-TE/T2),
    which is the a + b exp(-TI/T1) form of Barral et al. MRM 2010;64:1057.
    """
    return m0 * (1.0 - (1.0 + efficiency) * decay(ti, t1) + efficiency * decay(tr, t1)) * decay(te, t2)


def mese(m0, t1, t2, tr, te):
    """Multi-echo spin echo with ideal refocusing: S = M0 (1 - exp(-TR/T1)) exp(-TE/T2)."""
    return m0 * (1.0 - decay(tr, t1)) * decay(te, t2)


def megre(m0, t1, t2star, b1, b0_hz, flip_deg, tr, te):
    """Complex multi-echo spoiled gradient echo: spgr magnitude with phase 2 pi B0 TE."""
    return spgr(m0, t1, t2star, b1, flip_deg, tr, te) * np.exp(2j * np.pi * b0_hz * te)


def dwi(m0, t1, t2, adc_mm2_s, tr, te, bvalue_s_mm2):
    """Isotropic diffusion-weighted spin echo: S = M0 (1 - exp(-TR/T1)) exp(-TE/T2) exp(-b ADC)."""
    return mese(m0, t1, t2, tr, te) * np.exp(-bvalue_s_mm2 * adc_mm2_s)


def _affine_relax(t, t1, m0):
    """Free T1 relaxation over t as an affine map Mz -> a Mz + b."""
    e = decay(t, t1)
    return e, m0 * (1.0 - e)


def _affine_block(npulses, alpha, tr, t1, m0):
    """npulses of (excite alpha, relax tr) as an affine map Mz -> a Mz + b."""
    c = np.cos(alpha) * decay(tr, t1)
    b_step = m0 * (1.0 - decay(tr, t1))
    a = c**npulses
    # geometric sum b_step * (1 + c + ... + c^(n-1)), written to stay finite when c == 1
    with np.errstate(divide="ignore", invalid="ignore"):
        geometric = np.where(np.isclose(c, 1.0), float(npulses), (1.0 - a) / (1.0 - c))
    return a, b_step * geometric


def _compose(first, second):
    """Affine map of applying ``first`` then ``second``."""
    a1, b1 = first
    a2, b2 = second
    return a2 * a1, a2 * b1 + b2


def mp2rage(m0, t1, t2star, b1, *, tr_prep, tr_exc, n_shots, inversion_times, flip_degs, te, efficiency):
    """The two MP2RAGE gradient-echo signals (signed) at the k-space centre of each block.

    Steady state of the sequence of Marques et al. NeuroImage 2010;49:1271, solved exactly over
    one cycle: inversion (efficiency eff) - TA - block 1 - TB - block 2 - TC, each block being
    n_shots excitations spaced tr_exc in linear order, n_shots // 2 of them before the k-space
    centre, so TA = TI1 - (n//2) tr_exc, TB = TI2 - TI1 - n tr_exc, TC = TR - TI2 - (n - n//2) tr_exc.
    The signal of block i is Mz just before its centre excitation times sin(B1 alpha_i) exp(-TE/T2*).
    """
    n = int(n_shots)
    before = n // 2
    ti1, ti2 = inversion_times
    ta = ti1 - before * tr_exc
    tb = ti2 - ti1 - n * tr_exc
    tc = tr_prep - ti2 - (n - before) * tr_exc
    if min(ta, tb, tc) < -1e-9:  # a rounding error below a nanosecond is no overlap
        raise ValueError("MP2RAGE timing is impossible: TA, TB and TC must be >= 0")
    ta, tb, tc = max(ta, 0.0), max(tb, 0.0), max(tc, 0.0)
    a1, a2 = (np.deg2rad(f) * b1 for f in flip_degs)
    inversion = (-efficiency * np.ones_like(t1), np.zeros_like(t1))
    to_centre_1 = _compose(_compose(inversion, _affine_relax(ta, t1, m0)), _affine_block(before, a1, tr_exc, t1, m0))
    rest_1 = _affine_block(n - before, a1, tr_exc, t1, m0)
    to_centre_2 = _compose(_compose(rest_1, _affine_relax(tb, t1, m0)), _affine_block(before, a2, tr_exc, t1, m0))
    rest_2 = _compose(_affine_block(n - before, a2, tr_exc, t1, m0), _affine_relax(tc, t1, m0))
    cycle = _compose(_compose(to_centre_1, to_centre_2), rest_2)
    steady = cycle[1] / (1.0 - cycle[0])  # Mz just before the inversion
    mz1 = to_centre_1[0] * steady + to_centre_1[1]
    mz2 = to_centre_2[0] * mz1 + to_centre_2[1]
    readout = decay(te, t2star)
    return mz1 * np.sin(a1) * readout, mz2 * np.sin(a2) * readout


def uni(gre1, gre2):
    """MP2RAGE uniform image Re(G1* G2) / (|G1|^2 + |G2|^2), in [-0.5, 0.5]; 0 where both are 0."""
    num = np.real(np.conj(gre1) * gre2)
    den = np.abs(gre1) ** 2 + np.abs(gre2) ** 2
    return np.divide(num, den, out=np.zeros(np.shape(num)), where=den > 0)
