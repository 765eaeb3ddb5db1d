"""Accuracy of the fit models against the phantom's signal equations and truth maps (float signals).

Noise-free: closed forms within 1e-4 relative error, the grid/lookup models (IR, MESE, MP2RAGE)
within 1e-3 (the outputs are float32, so 1e-7 is the floor). With noise: complex Gaussian noise,
magnitudes taken (Rician), at an image SNR of 50, i.e. sigma = 1/50 of the voxel's brightest
image in the collection; the median relative error of 20 000 voxels stays within 1 % and the
interquartile spread is bounded. Every test stays inside the model's documented range.
"""

from __future__ import annotations

import numpy as np
import pytest

from qmrbids.fit import (
    DWIModel,
    FitError,
    IRT1Model,
    MEGREModel,
    MESEModel,
    MP2RAGEModel,
    MTRModel,
    MTsatModel,
    TB1DAMModel,
    VFAModel,
    uni_from_inversions,
)
from qmrbids.phantom import Grid, make_truth, simulate_protocol
from qmrbids.phantom import signals as sg
from qmrbids.phantom.acquisition import protocol_definitions

N_NOISY = 20_000
MS = 1e-3


def noisy(signal: np.ndarray, snr: float, seed: int = 7) -> np.ndarray:
    """Magnitude of signal + complex Gaussian noise with sigma = max over the last axis / snr."""
    if snr == 0:
        return np.abs(signal)
    rng = np.random.default_rng(seed)
    sigma = np.abs(signal).max(axis=-1, keepdims=True) / snr
    return np.abs(signal + sigma * (rng.standard_normal(signal.shape) + 1j * rng.standard_normal(signal.shape)))


def relative_error(estimate, truth):
    return np.asarray(estimate, dtype=np.float64) / truth - 1.0


def check(estimate, truth, snr: float, tolerance: float, spread: float):
    error = relative_error(estimate, truth)
    if snr == 0:
        assert np.max(np.abs(error)) <= tolerance, np.max(np.abs(error))
    else:
        q25, median, q75 = np.percentile(error, [25, 50, 75])
        assert abs(median) <= 0.01, median
        assert q75 - q25 <= spread, q75 - q25


def ramp(low, high, n):
    return np.geomspace(low, high, n)


# ---- each model over its documented range: (noise-free tolerance, spread at SNR 50) ----

@pytest.mark.parametrize("snr", [0, 50])
def test_vfa(snr):
    n = 2000 if snr == 0 else N_NOISY
    t1, b1 = ramp(0.015, 15.0, n) if snr == 0 else ramp(0.3, 3.0, n), np.linspace(0.8, 1.2, n)
    angles, tr = [3.0, 10.0, 20.0], 0.015
    s = np.stack([sg.spgr(np.ones(n), t1, np.full(n, 0.05), b1, a, tr, 0.002) for a in angles], axis=-1)
    fit = VFAModel(angles, tr, b1=b1).fit(noisy(s, snr))
    check(fit.T1map, t1, snr, 1e-4, 0.25)
    check(fit.M0map, np.exp(-0.002 / 0.05), snr, 1e-4, 0.25)
    if snr == 0:
        assert np.all(fit.Rsquared > 1 - 1e-6)


@pytest.mark.parametrize("snr", [0, 50])
def test_irt1(snr):
    n = 2000 if snr == 0 else N_NOISY
    t1 = ramp(0.1, 3.75, n)
    ti = np.array([50.0, 400.0, 1100.0, 2500.0]) * MS
    s = np.stack([sg.ir_se(np.ones(n), t1, np.full(n, 0.1), t, 10.0, 0.012, 0.96) for t in ti], axis=-1)
    fit = IRT1Model(ti).fit(noisy(s, snr))
    check(fit.T1map, t1, snr, 1e-3, 0.25)


def test_irt1_restores_polarity_in_any_order():
    """Inversion times given out of order: the sign pattern follows time, not position."""
    t1 = np.array([0.3, 0.8, 2.0])
    ti = np.array([2500.0, 50.0, 1100.0, 400.0]) * MS
    s = np.stack([sg.ir_se(np.ones(3), t1, np.full(3, 0.1), t, 10.0, 0.012, 0.9) for t in ti], axis=-1)
    np.testing.assert_allclose(IRT1Model(ti).fit(np.abs(s)).T1map, t1, rtol=1e-6)


@pytest.mark.parametrize("snr", [0, 50])
def test_mese(snr):
    n = 2000 if snr == 0 else N_NOISY
    te = np.arange(1, 33) * 10.0 * MS
    t2 = ramp(0.012, 0.32, n)
    s = np.stack([sg.mese(np.ones(n), np.ones(n), t2, 4.0, t) for t in te], axis=-1)
    fit = MESEModel(te).fit(noisy(s, snr))
    check(fit.T2map, t2, snr, 1e-3, 0.2)


def test_mese_t2_50ms_unbiased_at_the_noise_floor():
    """T2 = 50 ms, 32 echoes to 320 ms, SNR 50: from about 200 ms on the echoes are noise floor."""
    te = np.arange(1, 33) * 10.0 * MS
    n = N_NOISY
    s = np.stack([sg.mese(np.ones(n), np.ones(n), np.full(n, 0.05), 4.0, t) for t in te], axis=-1)
    data = noisy(s, 50)
    assert np.mean(data[:, -10:]) > 4 * np.mean(s[:, -10:])  # the floor dominates late echoes
    t2 = MESEModel(te).fit(data).T2map
    check(t2, 0.05, 50, 0, 0.15)
    # a plain log-linear fit of all echoes is far off: the model earns its keep
    slope = np.polyfit(te, np.log(data.T), 1)[0]
    assert np.median(-1.0 / slope) > 0.06


@pytest.mark.parametrize("snr", [0, 50])
def test_megre(snr):
    n = 2000 if snr == 0 else N_NOISY
    te = np.arange(1, 13) * 3.0 * MS
    t2s = ramp(0.003, 0.108, n) if snr == 0 else ramp(0.01, 0.1, n)
    s = np.stack([sg.spgr(np.ones(n), np.ones(n), t2s, 1.0, 15.0, 0.04, t) for t in te], axis=-1)
    model = MEGREModel(te)
    assert model.arlo and "ARLO" in model.algorithm
    fit = model.fit(noisy(s, snr))
    check(fit.T2starmap, t2s, snr, 1e-4, 0.15)
    check(fit.R2starmap, 1 / t2s, snr, 1e-4, 0.15)
    s0 = sg.spgr(np.ones(n), np.ones(n), t2s, 1.0, 15.0, 0.04, 0.0)
    check(fit.S0map, s0, snr, 1e-4, 0.1)
    if snr == 0:
        assert np.min(fit.Rsquared) > 1 - 1e-4


@pytest.mark.parametrize("snr", [0, 50])
def test_megre_unequal_spacing_and_echo_order(snr):
    """Echoes out of order give the same maps; unequal spacing falls back to the weighted log-linear fit."""
    n = 2000 if snr == 0 else N_NOISY
    t2s = ramp(0.003, 0.108, n) if snr == 0 else ramp(0.01, 0.1, n)
    for te in (np.arange(1, 13) * 3.0 * MS, np.array([2.0, 4.5, 7.0, 11.0, 16.0, 22.0, 30.0]) * MS):
        s = np.stack([sg.spgr(np.ones(n), np.ones(n), t2s, 1.0, 15.0, 0.04, t) for t in te], axis=-1)
        data = noisy(s, snr)
        shuffled = np.random.default_rng(3).permutation(te.size)
        fit, mixed = MEGREModel(te).fit(data), MEGREModel(te[shuffled]).fit(data[:, shuffled])
        assert MEGREModel(te).arlo == (te.size == 12)
        np.testing.assert_allclose(mixed.T2starmap, fit.T2starmap, rtol=1e-5)
        check(fit.T2starmap, t2s, snr, 1e-4, 0.15)


@pytest.mark.parametrize("snr", [0, 50])
@pytest.mark.parametrize("b", [[0, 500, 500, 500, 1000, 1000, 1000, 2000, 2000, 2000], [0] + [1000] * 6],
                         ids=["multi-shell", "two-shell"])
def test_dwi(snr, b):
    n = 2000 if snr == 0 else N_NOISY
    b = np.array(b, dtype=float)
    adc = ramp(1e-4, 2e-3, n) if b.max() == 2000 else ramp(1e-4, 4e-3, n)
    s = np.stack([sg.dwi(np.ones(n), np.ones(n), np.full(n, 0.1), adc, 4.0, 0.06, x) for x in b], axis=-1)
    fit = DWIModel(b).fit(noisy(s, snr))
    check(fit.ADC, adc, snr, 1e-4, 0.15)
    check(fit.S0map, sg.mese(1.0, 1.0, 0.1, 4.0, 0.06), snr, 1e-4, 0.15)


def test_two_shell_closed_form_is_where_the_reweighted_fit_ends():
    from qmrbids.fit.loglinear import weighted_loglinear

    b = np.array([0.0, 1000, 1000, 1000])
    rng = np.random.default_rng(1)
    s = np.exp(-b * rng.uniform(3e-4, 3e-3, (500, 1))) * rng.uniform(0.9, 1.1, (500, 4))
    fit = DWIModel(b).fit(s)
    s0, adc, _ = weighted_loglinear(s, b)
    np.testing.assert_allclose(fit.ADC, adc, rtol=1e-5)
    np.testing.assert_allclose(fit.S0map, s0, rtol=1e-5)


@pytest.mark.parametrize("snr", [0, 50])
def test_tb1dam(snr):
    n = 2000 if snr == 0 else N_NOISY
    b1, t1 = np.linspace(0.5, 1.45, n), ramp(0.05, 1.0, n)
    s = np.stack([sg.spgr(np.ones(n), t1, np.full(n, 0.05), b1, a, 10.0, 0.003) for a in (60.0, 120.0)], axis=-1)
    fit = TB1DAMModel([60.0, 120.0]).fit(noisy(s, snr))
    check(fit.TB1map / 100.0, b1, snr, 1e-4, 0.06)


@pytest.mark.parametrize("snr", [0, 50])
def test_mtsat(snr):
    n = 2000 if snr == 0 else N_NOISY
    t1, b1 = ramp(0.3, 3.0, n), np.linspace(0.8, 1.2, n)
    mtsat = np.linspace(0.005, 0.03, n)
    series = [(6.0, True), (6.0, False), (20.0, False)]  # MTw, PDw, T1w as acquired
    images = [sg.spgr(np.ones(n), t1, np.full(n, 0.05), b1, a, 0.028, 0.0025, mtsat if mt else None)
              for a, mt in series]
    s = np.stack([images[1], images[0], images[2]], axis=-1)  # model order: PDw, MTw, T1w
    fit = MTsatModel([6.0, 6.0, 20.0], [0.028] * 3, b1=b1).fit(noisy(s, snr))
    check(fit.MTsat / 100.0, mtsat, snr, 1e-4, 0.5)
    check(fit.R1map, 1 / t1, snr, 1e-4, 0.3)


def test_mtr_is_percent_saturation():
    off, on = np.array([[1.0, 0.6], [2.0, 2.0]]).T
    np.testing.assert_allclose(MTRModel().fit(np.stack([off, on], axis=-1)).MTRmap, [40.0, 0.0])


@pytest.mark.parametrize("snr", [0, 50])
def test_mp2rage(snr):
    n = 2000 if snr == 0 else N_NOISY
    t1, b1 = ramp(0.15, 4.0, n), np.linspace(0.8, 1.2, n)
    acq = protocol_definitions()["mp2rage"]["acquisition"]
    timing = dict(tr_prep=acq["RepetitionTimePreparation"] * MS, tr_exc=acq["RepetitionTimeExcitation"] * MS,
                  n_shots=acq["NumberShots"], inversion_times=[t * MS for t in acq["InversionTimes"]],
                  flip_degs=acq["FlipAngles"], te=acq["EchoTime"] * MS, efficiency=acq["InversionEfficiency"])
    g1, g2 = sg.mp2rage(np.ones(n), t1, np.full(n, 0.05), b1, **timing)
    if snr:
        rng = np.random.default_rng(3)
        sigma = np.maximum(np.abs(g1), np.abs(g2)) / snr
        g1 = g1 + sigma * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
        g2 = g2 + sigma * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
        t1, b1, g1, g2 = t1[t1 >= 0.5], b1[t1 >= 0.5], g1[t1 >= 0.5], g2[t1 >= 0.5]  # UNI is flat below
    model = MP2RAGEModel(inversion_times_s=timing["inversion_times"], flip_angles_deg=acq["FlipAngles"],
                         repetition_time_excitation_s=timing["tr_exc"], repetition_time_preparation_s=timing["tr_prep"],
                         number_shots=acq["NumberShots"], inversion_efficiency=acq["InversionEfficiency"], b1=b1)
    fit = model.fit(uni_from_inversions(g1, g2)[:, None])
    check(fit.T1map, t1, snr, 1e-3, 0.2)
    check(fit.R1map, 1 / t1, snr, 1e-3, 0.2)


# ---- NIST system phantom spheres, through the phantom's own protocol simulation ----

@pytest.fixture(scope="module")
def truth():
    return make_truth(Grid(32, 2), 3.0, (0.8, 1.2))


def volumes(name, truth, *, where=None):
    out = []
    for series in simulate_protocol(name, truth, 0.0, 0):
        for volume in series.volumes:
            if where is None or where(volume):
                out.append(volume)
    return out


def spheres_within(truth, estimate, true_map, inside, tolerance=1e-3):
    """Every sphere (labels < 40) whose true value is inside the model's range is within tolerance."""
    checked = 0
    for region in truth.regions:
        if region.label >= 40 or not inside(region.params):
            continue
        voxels = truth.labels == region.label
        error = np.abs(estimate[voxels] / true_map[voxels] - 1.0)
        assert error.max() <= tolerance, (region.name, error.max())
        checked += 1
    return checked


def test_nist_spheres(truth):
    m = truth.maps
    ms = MS
    vfa = volumes("vfa", truth)
    fit = VFAModel([v.flip_angle for v in vfa], 0.015, b1=m["B1"]).fit(np.stack([v.values for v in vfa], -1))
    assert spheres_within(truth, fit.T1map, m["T1"], lambda p: True) == 28

    ir = volumes("irt1", truth)
    fit = IRT1Model([v.inversion_time * ms for v in ir]).fit(np.stack([v.values for v in ir], -1))
    assert spheres_within(truth, fit.T1map, m["T1"], lambda p: 0.1 <= p["T1"] <= 3.75) == 22

    se = volumes("mese", truth)
    fit = MESEModel([v.echo_time * ms for v in se]).fit(np.stack([v.values for v in se], -1))
    assert spheres_within(truth, fit.T2map, m["T2"], lambda p: 0.012 <= p["T2"] <= 0.32) == 18

    gre = volumes("megre", truth, where=lambda v: v.part == "magnitude")
    fit = MEGREModel([v.echo_time * ms for v in gre]).fit(np.stack([v.values for v in gre], -1))
    assert spheres_within(truth, fit.T2starmap, m["T2star"], lambda p: 0.003 <= p["T2star"] <= 0.108) == 18

    dam = volumes("tb1dam", truth)
    fit = TB1DAMModel([v.flip_angle for v in dam]).fit(np.stack([v.values for v in dam], -1))
    assert spheres_within(truth, fit.TB1map / 100, m["B1"], lambda p: p["T1"] <= 1.0, 1e-4) == 20

    dwi = volumes("dwi", truth)[7:]  # the multi-shell series
    fit = DWIModel([v.bvalue for v in dwi]).fit(np.stack([v.values for v in dwi], -1))
    assert spheres_within(truth, fit.ADC, m["ADC"], lambda p: True, 1e-4) == 28

    mts = {(v.flip_angle, v.mt): v.values for v in volumes("mts", truth)}
    data = np.stack([mts[(6.0, False)], mts[(6.0, True)], mts[(20.0, False)]], -1)
    fit = MTsatModel([6.0, 6.0, 20.0], [0.028] * 3, b1=m["B1"]).fit(data)
    assert spheres_within(truth, fit.R1map, 1 / np.where(m["T1"] > 0, m["T1"], 1), lambda p: True, 1e-4) == 28
    tissue = truth.labels >= 41
    np.testing.assert_allclose(fit.MTsat[tissue] / 100, m["MTsat"][tissue], rtol=1e-4, atol=1e-7)

    acq = protocol_definitions()["mp2rage"]["acquisition"]
    uni = next(v for v in volumes("mp2rage", truth) if v.part == "uni").values
    model = MP2RAGEModel(inversion_times_s=[t * ms for t in acq["InversionTimes"]], flip_angles_deg=acq["FlipAngles"],
                         repetition_time_excitation_s=acq["RepetitionTimeExcitation"] * ms,
                         repetition_time_preparation_s=acq["RepetitionTimePreparation"] * ms,
                         number_shots=acq["NumberShots"], b1=m["B1"])
    fit = model.fit(uni[..., None])
    assert spheres_within(truth, fit.T1map, m["T1"], lambda p: 0.15 <= p["T1"] <= 4.0) == 20


# ---- the Model/Fit mechanics ----

def test_mask_and_chunks_do_not_change_the_maps():
    rng = np.random.default_rng(0)
    t1 = rng.uniform(0.3, 3.0, (17, 9, 5))
    s = np.stack([sg.spgr(np.ones_like(t1), t1, np.full_like(t1, 0.05), 1.0, a, 0.015, 0.002) for a in (3, 20)], -1)
    mask = rng.random(t1.shape) > 0.3
    whole = VFAModel([3, 20], 0.015).fit(s, mask)
    small = VFAModel([3, 20], 0.015)
    small.chunk_size = 7
    chunked = small.fit(s, mask)
    np.testing.assert_array_equal(whole.T1map, chunked.T1map)
    assert np.all(whole.T1map[~mask] == 0)
    np.testing.assert_allclose(whole.T1map[mask], t1[mask], rtol=1e-5)
    assert whole.T1map.dtype == np.float32 and whole.T1map.shape == t1.shape
    fortran = VFAModel([3, 20], 0.015, b1=np.asfortranarray(np.ones_like(t1))).fit(np.asfortranarray(s), mask)
    np.testing.assert_array_equal(fortran.T1map, whole.T1map)  # NIfTI (Fortran) order, walked without a copy


def test_bad_acquisitions_are_fit_errors():
    with pytest.raises(FitError, match="two distinct flip angles"):
        VFAModel([10, 10], 0.015)
    with pytest.raises(FitError, match="three distinct"):
        IRT1Model([0.1, 0.5])
    with pytest.raises(FitError, match="a and 2a"):
        TB1DAMModel([60, 100])
    with pytest.raises(FitError, match="mask shape"):
        VFAModel([3, 20], 0.015).fit(np.ones((4, 4, 2)), np.ones((3, 3), bool))
