"""dcm2niix (the PyPI wheel) converts every phantom series of every vendor correctly.

Checked per vendor: every (series, echo, part) becomes exactly one NIfTI + JSON; the sidecars
carry the EchoTime, FlipAngle, InversionTime and RepetitionTime the phantom wrote (MP2RAGE's TR
by each vendor's convention); voxel values equal the DICOM pixels; the NIfTI grid equals the
truth maps' grid; diffusion series get the b-values and gradient directions the phantom wrote.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import load_description
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from test_phantom_pixels import _dicom_volume

from qmrbids.phantom import VENDORS


def _sidecars(nifti_dir):
    """(SeriesNumber, EchoNumber, is_phase) -> (json dict, nifti path) for every dcm2niix output."""
    out = {}
    for path in sorted(nifti_dir.glob("*.json")):
        meta = json.loads(path.read_text())
        key = (meta["SeriesNumber"], meta.get("EchoNumber", 1), "PHASE" in meta.get("ImageType", []))
        assert key not in out, f"two outputs for {key}: {out.get(key, (None, ''))[1]} and {path}"
        out[key] = (meta, path.with_suffix(".nii"))
    return out


def _in_truth_space(image, truth_affine):
    """Data of a dcm2niix image flipped/permuted onto the truth grid (whose affine it must then share)."""
    ornt = ornt_transform(io_orientation(image.affine), io_orientation(truth_affine))
    data = apply_orientation(np.asanyarray(image.get_fdata()), ornt)
    affine = image.affine @ inv_ornt_aff(ornt, image.shape[:3])
    np.testing.assert_allclose(affine, truth_affine, atol=1e-3)
    return data


def _expected_tr(vendor, protocol, acquisition):
    if protocol == "mp2rage":
        key = "RepetitionTimePreparation" if vendor == "siemens" else "RepetitionTimeExcitation"
        return acquisition[key] / 1000
    return acquisition["RepetitionTime"] / 1000


@pytest.mark.parametrize("vendor", VENDORS)
def test_every_series_converts_with_its_acquisition_values(converted, vendor):
    phantom_dir, nifti_dir = converted(vendor)
    description = load_description(phantom_dir)
    outputs = _sidecars(nifti_dir)
    truth_affine = np.array(description["geometry"]["affine_ras"])
    expected_keys = set()
    for protocol, spec in description["protocols"].items():
        acquisition = spec["acquisition"]
        for series in spec["series"]:
            diffusion = any("bvalue_s_mm2" in v for v in series["volumes"])
            volumes = series["volumes"][:1] if diffusion else series["volumes"]
            for volume in volumes:
                key = (series["series_number"], volume["echo_number"], volume["part"] == "phase")
                expected_keys.add(key)
                assert key in outputs, f"{vendor} {series['description']}: no dcm2niix output for {key}"
                meta, nifti = outputs[key]
                where = f"{vendor} {nifti.name}"
                assert meta["EchoTime"] == pytest.approx(volume["echo_time_ms"] / 1000, rel=1e-6), where
                assert meta["FlipAngle"] == pytest.approx(volume["flip_angle_deg"], rel=1e-6), where
                assert meta["RepetitionTime"] == pytest.approx(_expected_tr(vendor, protocol, acquisition), rel=1e-6), where
                if "inversion_time_ms" in volume:
                    assert meta["InversionTime"] == pytest.approx(volume["inversion_time_ms"] / 1000, rel=1e-6), where
                if volume.get("mt") is not None:
                    assert ("MTC" in meta["SequenceVariant"].split("\\")) == volume["mt"], where
                    if "MTState" in meta:
                        assert meta["MTState"] == volume["mt"], where
                assert meta["MagneticFieldStrength"] == description["settings"]["field_strength"]
                assert meta["Manufacturer"].lower().startswith(vendor[:2]) or vendor == "ge"
                image = nib.load(nifti)
                data = _in_truth_space(image, truth_affine)
                if diffusion:
                    _check_diffusion(nifti, image, series, phantom_dir, data)
                else:
                    dicom, _ = _dicom_volume(phantom_dir, volume["files"])
                    np.testing.assert_allclose(data, dicom, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(dicom).max()),
                                               err_msg=where)
    assert set(outputs) == expected_keys, f"unexpected extra outputs: {set(outputs) - expected_keys}"


def _check_diffusion(nifti, image, series, phantom_dir, data):
    volumes = series["volumes"]
    bvals = np.loadtxt(nifti.with_suffix(".bval"))
    bvecs = np.loadtxt(nifti.with_suffix(".bvec"))
    np.testing.assert_allclose(bvals, [v["bvalue_s_mm2"] for v in volumes])
    # phantom directions are LPS; FSL bvecs are in voxel axes, x flipped when the affine is not radiological
    rotation = image.affine[:3, :3] / np.linalg.norm(image.affine[:3, :3], axis=0)
    for index, volume in enumerate(volumes):
        g_lps = np.array(volume["direction_lps"])
        voxel = rotation.T @ (g_lps * [-1, -1, 1])
        if np.linalg.det(rotation) > 0:
            voxel[0] = -voxel[0]
        np.testing.assert_allclose(bvecs[:, index], voxel, atol=1e-4, err_msg=f"{nifti.name} volume {index}")
        dicom, _ = _dicom_volume(phantom_dir, volume["files"])
        np.testing.assert_allclose(data[..., index], dicom, rtol=1e-5, atol=1e-6 * max(1.0, dicom.max()))


@pytest.mark.parametrize("vendor", VENDORS)
def test_truth_maps_share_the_converted_grid(converted, vendor):
    phantom_dir, nifti_dir = converted(vendor)
    description = load_description(phantom_dir)
    first = next(iter(sorted(nifti_dir.glob("*.nii"))))
    reference = nib.load(first)
    for spec in [*description["maps"].values(), description["labels"]]:
        truth = nib.load(phantom_dir / spec["file"])
        ornt = ornt_transform(io_orientation(truth.affine), io_orientation(reference.affine))
        np.testing.assert_allclose(truth.affine @ inv_ornt_aff(ornt, truth.shape), reference.affine, atol=1e-3)
        assert truth.shape == reference.shape[:3]
