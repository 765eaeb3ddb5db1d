"""Noise-free phantom pixels equal the signal equations evaluated on the truth maps.

For every vendor and protocol, each DICOM file's pixels (after Rescale Slope/Intercept) are
compared with an independent event-by-event simulation (reference_signals.py) of the protocol
on the truth NIfTI maps, within half a quantisation step of that series' encoding.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
import reference_signals as ref
from conftest import load_description

from qmrbids.phantom import PROTOCOLS, VENDORS

MS = 1e-3


def _truth(phantom_dir, description):
    maps = {name: np.asarray(nib.load(phantom_dir / spec["file"]).dataobj, dtype=float)
            for name, spec in description["maps"].items()}
    return maps


def _unique_voxels(maps):
    """Unique parameter sets, so reference simulations loop over tens of thousands at most."""
    names = ("M0", "T1", "T2", "T2star", "B1", "B0", "ADC", "MTsat")
    stack = np.stack([maps[n].ravel() for n in names], axis=1)
    unique, inverse = np.unique(stack, axis=0, return_inverse=True)
    return {n: unique[:, i] for i, n in enumerate(names)}, inverse.ravel(), maps["T1"].shape


def _expected(protocol, acq, volume, p):
    """Reference value of one volume on the unique parameter sets: (kind, values)."""
    tr = acq.get("RepetitionTime", 0.0) * MS
    if protocol in ("vfa", "tb1dam", "mts"):
        delta = p["MTsat"] if volume.get("mt") else None
        return ref.spgr(p["M0"], p["T1"], p["T2star"], p["B1"], volume["flip_angle_deg"], tr,
                        volume["echo_time_ms"] * MS, delta)
    if protocol == "irt1":
        return np.abs(ref.ir_se(p["M0"], p["T1"], p["T2"], volume["inversion_time_ms"] * MS, tr,
                                volume["echo_time_ms"] * MS, acq["InversionEfficiency"]))
    if protocol == "mese":
        te = volume["echo_time_ms"] * MS
        return p["M0"] * (1 - np.exp(-tr / np.where(p["T1"] > 0, p["T1"], np.inf))) * np.exp(
            -te / np.where(p["T2"] > 0, p["T2"], np.inf))
    if protocol == "megre":
        te = volume["echo_time_ms"] * MS
        magnitude = ref.spgr(p["M0"], p["T1"], p["T2star"], p["B1"], volume["flip_angle_deg"], tr, te)
        return magnitude if volume["part"] == "magnitude" else np.angle(np.exp(2j * np.pi * p["B0"] * te))
    if protocol == "dwi":
        te = volume["echo_time_ms"] * MS
        s0 = p["M0"] * (1 - np.exp(-tr / np.where(p["T1"] > 0, p["T1"], np.inf))) * np.exp(
            -te / np.where(p["T2"] > 0, p["T2"], np.inf))
        return s0 * np.exp(-volume.get("bvalue_s_mm2", 0.0) * p["ADC"])
    if protocol == "mp2rage":
        g1, g2 = ref.mp2rage(p["M0"], p["T1"], p["T2star"], p["B1"], acq["RepetitionTimePreparation"] * MS,
                             acq["RepetitionTimeExcitation"] * MS, acq["NumberShots"],
                             [t * MS for t in acq["InversionTimes"]], acq["FlipAngles"], acq["EchoTime"] * MS,
                             acq["InversionEfficiency"])
        if volume["part"] == "uni":
            den = g1**2 + g2**2
            return np.divide(g1 * g2, den, out=np.zeros_like(den), where=den > 0)
        return np.abs(g1 if volume["inversion_time_ms"] == acq["InversionTimes"][0] else g2)
    raise AssertionError(protocol)


def _dicom_volume(phantom_dir, files):
    """Rescaled pixel values of a volume as [column, row, slice], and the first header."""
    slices, first = [], None
    for path in files:
        ds = pydicom.dcmread(phantom_dir / path)
        first = first or ds
        slope = float(getattr(ds, "RescaleSlope", 1.0))
        intercept = float(getattr(ds, "RescaleIntercept", 0.0))
        slices.append(ds.pixel_array.astype(float).T * slope + intercept)
    return np.stack(slices, axis=2), first


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_noise_free_pixels_match_signal_equations(noise_free_phantom, vendor, protocol):
    phantom_dir = noise_free_phantom(vendor)
    description = load_description(phantom_dir)
    maps = _truth(phantom_dir, description)
    params, inverse, shape = _unique_voxels(maps)
    has_signal = maps["M0"] > 0
    spec = description["protocols"][protocol]
    compared = 0
    for series in spec["series"]:
        for volume in series["volumes"]:
            enc = series["encoding"][volume["part"]]
            expected = _expected(protocol, spec["acquisition"], volume, params)[inverse].reshape(shape)
            found, _ = _dicom_volume(phantom_dir, volume["files"])
            step = enc["rescale_slope"]
            if volume["part"] == "magnitude":
                error = np.abs(found - enc["value_scale"] * expected)
            elif volume["part"] == "phase":
                scale = enc["phase_scale"]
                # phase is defined where there is signal (air is written as phase 0)
                error = np.abs(np.angle(np.exp(1j * (found / scale - expected)))) * scale * has_signal
                step = max(step, 1.0)  # Siemens quantises the phase to 4096 levels over 2 pi
            else:
                error = np.abs(found - (enc["uni_scale"] * (expected + 0.5) + enc["offset"]))
            assert error.max() <= 0.5 * step * (1 + 1e-6) + 1e-9, (
                f"{series['description']} {volume['part']} echo {volume['echo_number']}: "
                f"max error {error.max():.4g} > half step {0.5 * step:.4g}")
            compared += 1
    assert compared >= len(spec["series"])
    # the brightest magnitude voxel of a series uses most of the 16-bit range (fine quantisation)
    top = max(np.max(_dicom_volume(phantom_dir, v["files"])[0]) / s["encoding"]["magnitude"]["rescale_slope"]
              for s in spec["series"] for v in s["volumes"] if v["part"] == "magnitude")
    assert top >= 20000
