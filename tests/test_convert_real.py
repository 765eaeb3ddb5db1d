"""convert on the real vendor DICOM of ../shared/data/dicom (dcm2niix's dcm_qa collections)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA, bids_validator_errors

from qmrbids.convert import convert

DICOM = SHARED_DATA / "dicom"

#: folder -> sorted list of (classification, status) expected for its series
EXPECTED = {
    "dcm_qa_fmap": sorted([("fmap/fieldmap", "converted")] * 4 + [("fmap/magnitude", "converted")] * 2
                          + [("fmap/phasediff", "converted")] * 2),
    "dcm_qa_xa30": sorted([("anat/T1w", "converted"), ("fmap/magnitude", "converted"),
                           ("fmap/phasediff", "converted"), ("dwi/dwi", "converted"),
                           ("skip", "skipped"), ("skip", "skipped")]),
    "dcm_qa_enh": sorted([("fmap/fieldmap", "converted"), ("skip", "skipped")]),
    "dcm_qa_ge": sorted([("dwi/dwi", "converted"), ("anat/T1w", "converted")]),
    "dcm_qa_philips": [("dwi/dwi", "converted")],
    "dcm_qa_deident": [("anat/T1w", "converted")],
}


@pytest.fixture(scope="module")
def real_bids(tmp_path_factory):
    if not DICOM.is_dir():
        pytest.skip(f"real vendor DICOM absent: {DICOM} (CI always has it)")
    cache = {}

    def make(folder):
        if folder not in cache:
            out = tmp_path_factory.mktemp(folder) / "ds"
            cache[folder] = (out, convert([DICOM / folder / "In"], out, jobs=2))
        return cache[folder]

    return make


@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_real_series_are_classified_and_the_dataset_is_valid(real_bids, folder):
    dataset, report = real_bids(folder)
    assert report.exit_code == 0, [s.reason for s in report.failed] + report.unreadable
    assert sorted((s.classification, s.status) for s in report.series) == EXPECTED[folder]
    for s in report.series:
        assert s.evidence
        if s.status == "skipped":
            assert s.reason
    assert bids_validator_errors(dataset) == []


def test_scanner_derived_maps_are_explained_and_dwi_keeps_its_gradients(real_bids):
    dataset, report = real_bids("dcm_qa_xa30")
    reasons = {s.description: s.reason for s in report.series if s.status == "skipped"}
    assert "derived" in reasons["DWI_dir80_PA_ADC"] and "ADC" in reasons["DWI_dir80_PA_ADC"]
    assert "TRACEW" in reasons["DWI_dir80_PA_TRACEW"]
    (bval,) = dataset.rglob("*_dwi.bval")
    values = np.loadtxt(bval)
    assert set(np.round(values, -2)) == {0, 2500}
    bvec = np.loadtxt(bval.with_suffix(".bvec"))
    assert bvec.shape == (3, values.size)
