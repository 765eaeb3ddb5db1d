"""Headers of the phantom DICOM: what every file must carry, consistent UIDs, vendor specifics."""

from __future__ import annotations

import warnings

import pydicom
import pytest
from conftest import load_description
from hypothesis import given
from hypothesis import strategies as st

from qmrbids.phantom import VENDORS
from qmrbids.phantom.csa import ascconv, encode_csa2

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # nibabel warns that its DICOM readers are experimental
    from nibabel.nicom import csareader

REQUIRED = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "RepetitionTime",
    "EchoTime", "FlipAngle", "EchoNumbers", "ScanningSequence", "SequenceVariant", "MagneticFieldStrength",
    "Manufacturer", "ManufacturerModelName", "SoftwareVersions", "SeriesDescription", "ProtocolName",
    "ImageType", "SeriesNumber", "InstanceNumber", "MRAcquisitionType",
)


def _headers(phantom_dir):
    description = load_description(phantom_dir)
    for protocol, spec in description["protocols"].items():
        for series in spec["series"]:
            for volume in series["volumes"]:
                for path in volume["files"]:
                    yield protocol, series, volume, pydicom.dcmread(phantom_dir / path, stop_before_pixels=True)


@pytest.mark.parametrize("vendor", VENDORS)
def test_every_file_carries_the_attributes_a_qmri_conversion_needs(noise_free_phantom, vendor):
    studies, frames, sops, series_uids = set(), set(), set(), {}
    count = 0
    for protocol, series, volume, ds in _headers(noise_free_phantom(vendor)):
        count += 1
        missing = [k for k in REQUIRED if k not in ds]
        assert not missing, f"{series['description']}: missing {missing}"
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"  # classic MR Image Storage
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.BitsAllocated == 16
        assert int(ds.SeriesNumber) == series["series_number"]
        studies.add(ds.StudyInstanceUID)
        frames.add(ds.FrameOfReferenceUID)
        sops.add(ds.SOPInstanceUID)
        assert series_uids.setdefault(int(ds.SeriesNumber), ds.SeriesInstanceUID) == ds.SeriesInstanceUID
        assert float(ds.EchoTime) == pytest.approx(volume["echo_time_ms"])
        assert float(ds.FlipAngle) == pytest.approx(volume["flip_angle_deg"])
        if "inversion_time_ms" in volume:
            assert float(ds.InversionTime) == pytest.approx(volume["inversion_time_ms"])
        if protocol in ("irt1", "mp2rage") and volume["part"] == "magnitude":
            assert "IR" in ds.ScanningSequence
    assert len(studies) == 1 and len(frames) == 1
    assert len(sops) == count
    assert len(set(series_uids.values())) == len(series_uids)


def test_siemens_csa_headers_parse_and_carry_protocol_values(noise_free_phantom):
    phantom_dir = noise_free_phantom("siemens")
    for protocol, series, volume, ds in _headers(phantom_dir):
        series_csa = csareader.get_csa_header(ds, "series")
        phoenix = csareader.get_scalar(series_csa, "MrPhoenixProtocol")
        assert "### ASCCONV BEGIN" in phoenix
        image_csa = csareader.get_csa_header(ds, "image")
        if protocol == "mp2rage":
            assert "sFastImaging.lTurboFactor\t = 160" in phoenix and "lInvContrasts\t = 2" in phoenix
            assert "alTR[0]\t = 5000000" in phoenix
        if protocol == "dwi":
            assert csareader.get_scalar(image_csa, "B_value") == volume["bvalue_s_mm2"]
            if volume["bvalue_s_mm2"] > 0:
                assert list(csareader.get_vector(image_csa, "DiffusionGradientDirection", 3)) == pytest.approx(
                    volume["direction_lps"])


def test_ge_and_philips_mark_phase_images_in_the_vendor_way(noise_free_phantom):
    for vendor in ("ge", "philips"):
        for protocol, series, volume, ds in _headers(noise_free_phantom(vendor)):
            if protocol != "megre":
                continue
            is_phase = volume["part"] == "phase"
            if vendor == "ge":
                assert ds[0x0043, 0x102F].value == (1 if is_phase else 0)
            else:
                assert ("P" in ds.ImageType) == is_phase and ds[0x2005, 0x1011].value == ("P" if is_phase else "M")


@given(st.lists(st.tuples(st.text(st.characters(min_codepoint=65, max_codepoint=122), min_size=1, max_size=40),
                          st.sampled_from(["IS", "DS", "FD", "LO", "UN"]),
                          st.lists(st.integers(-10**6, 10**6), min_size=1, max_size=6)), min_size=1, max_size=8,
                unique_by=lambda t: t[0]))
def test_csa2_encoding_round_trips_through_nibabel(elements):
    parsed = csareader.read(encode_csa2(elements))
    assert parsed["type"] == 2 and parsed["n_tags"] == len(elements)
    for name, _, values in elements:
        assert [float(v) for v in parsed["tags"][name]["items"]] == [float(v) for v in values]


def test_ascconv_quotes_strings_like_siemens():
    text = ascconv({"tSequenceFileName": "%SiemensSeq%\\gre", "alTR[0]": 15000, "sKSpace.unReordering": "0x1"})
    assert 'tSequenceFileName\t = ""%SiemensSeq%\\gre""' in text
    assert "alTR[0]\t = 15000" in text and "sKSpace.unReordering\t = 0x1" in text
