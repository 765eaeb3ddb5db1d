"""convert on the digital phantom of every vendor: names, sidecars, voxels, validity, idempotence."""

from __future__ import annotations

import hashlib
import json

import jsonschema
import nibabel as nib
import numpy as np
import pytest
from conftest import bids_validator_errors, load_description

from qmrbids.convert import convert, load_config
from qmrbids.phantom import VENDORS
from qmrbids.resources import data_path

#: protocol -> expected (datatype/suffix, entities) of its series, in series order
EXPECTED = {
    "vfa": [("anat/VFA", {"flip": "1"}), ("anat/VFA", {"flip": "2"}), ("anat/VFA", {"flip": "3"})],
    "irt1": [("anat/IRT1", {"inv": str(i)}) for i in range(1, 5)],
    "mp2rage": [("anat/MP2RAGE", {"inv": "1"}), ("anat/MP2RAGE", {"inv": "2"}), ("anat/UNIT1", {})],
    "mese": [("anat/MESE", {})],
    "tb1dam": [("fmap/TB1DAM", {"flip": "1"}), ("fmap/TB1DAM", {"flip": "2"})],
    "mts": [("anat/MTS", {"flip": "1", "mt": "off"}), ("anat/MTS", {"flip": "1", "mt": "on"}),
            ("anat/MTS", {"flip": "2", "mt": "off"})],
    "dwi": [("dwi/dwi", {}), ("dwi/dwi", {})],
}
IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "StationName", "DeviceSerialNumber",
               "StudyInstanceUID", "SeriesInstanceUID", "AcquisitionDateTime", "AcquisitionTime", "StudyDate")


@pytest.mark.parametrize("vendor", VENDORS)
def test_every_phantom_series_is_classified_and_converted(phantom_bids, noise_free_phantom, vendor):
    dataset, report = phantom_bids(vendor)
    assert report.exit_code == 0, [s.reason for s in report.failed]
    description = load_description(noise_free_phantom(vendor))
    by_number = {s.series_number: s for s in report.series}
    for protocol, expected in EXPECTED.items():
        numbers = [s["series_number"] for s in description["protocols"][protocol]["series"]]
        for number, (kind, entities) in zip(numbers, expected, strict=True):
            entry = by_number[number]
            want = kind + "".join(f"_{k}-{v}" for k, v in entities.items())
            assert entry.classification == want, (protocol, entry)
            assert entry.status == "converted" and entry.evidence
            assert all((dataset / t).is_file() for t in entry.targets)
    megre = [s for s in report.series if s.classification == "anat/MEGRE"]
    targets = sorted(t for s in megre for t in s.targets)
    assert len(targets) == 24 and sum("part-phase" in t for t in targets) == 12
    assert len([t for s in report.series if s.classification == "anat/MESE" for t in s.targets]) == 32


@pytest.mark.parametrize("vendor", VENDORS)
def test_official_bids_validator_finds_no_error(phantom_bids, vendor):
    dataset, _ = phantom_bids(vendor)
    assert bids_validator_errors(dataset) == []


@pytest.mark.parametrize("vendor", VENDORS)
def test_sidecars_carry_qmri_fields_and_provenance_but_no_identifiers(phantom_bids, noise_free_phantom, vendor):
    dataset, _ = phantom_bids(vendor)
    acquisition = {p: s["acquisition"] for p, s in load_description(noise_free_phantom(vendor))["protocols"].items()}
    provenance_schema = json.loads(data_path("schema", "0.1.0", "sidecar.json").read_text())
    sidecars = sorted(dataset.glob("sub-*/*/*.json"))
    assert len(sidecars) == 3 + 4 + 3 + 32 + 24 + 2 + 3 + 2
    for path in sidecars:
        meta = json.loads(path.read_text())
        jsonschema.validate(meta["QmrbidsProvenance"], provenance_schema)
        leaked = [k for k in IDENTIFYING if k in meta]
        assert not leaked, f"{path.name}: {leaked}"
        nifti = path.with_name(path.name.replace(".json", ".nii.gz"))
        assert meta["QmrbidsProvenance"]["NiftiSHA256"] == hashlib.sha256(nifti.read_bytes()).hexdigest()
    anat = dataset / "sub-PHANTOM" / "anat"
    vfa = json.loads((anat / "sub-PHANTOM_flip-2_VFA.json").read_text())
    assert vfa["FlipAngle"] == 10 and vfa["RepetitionTimeExcitation"] == pytest.approx(0.015)
    assert vfa["PulseSequenceType"] == "SPGR"
    mts_on = json.loads((anat / "sub-PHANTOM_flip-1_mt-on_MTS.json").read_text())
    assert mts_on["MTState"] is True and mts_on["FlipAngle"] == 6
    assert json.loads((anat / "sub-PHANTOM_flip-2_mt-off_MTS.json").read_text())["MTState"] is False
    assert json.loads((anat / "sub-PHANTOM_inv-3_IRT1.json").read_text())["InversionTime"] == pytest.approx(1.1)
    mp2 = json.loads((anat / "sub-PHANTOM_inv-2_MP2RAGE.json").read_text())
    mp = acquisition["mp2rage"]
    assert mp2["InversionTime"] == pytest.approx(mp["InversionTimes"][1] / 1000)
    assert mp2["FlipAngle"] == mp["FlipAngles"][1]
    assert mp2["NumberShots"] == mp["NumberShots"]  # from the CSA header (Siemens) or EchoTrainLength
    assert mp2["RepetitionTimeExcitation"] == pytest.approx(mp["RepetitionTimeExcitation"] / 1000)
    assert mp2["RepetitionTimePreparation"] == pytest.approx(mp["RepetitionTimePreparation"] / 1000)
    assert mp2["MagneticFieldStrength"] == 3
    for echo in (1, 32):
        mese = json.loads((anat / f"sub-PHANTOM_echo-{echo}_MESE.json").read_text())
        assert mese["EchoTime"] == pytest.approx(0.010 * echo)
    bval = np.loadtxt(dataset / "sub-PHANTOM" / "dwi" / "sub-PHANTOM_run-2_dwi.bval")
    assert list(bval) == [0, 500, 500, 500, 1000, 1000, 1000, 2000, 2000, 2000]


def test_voxels_equal_dcm2niix_output(phantom_bids, converted):
    dataset, report = phantom_bids("philips")
    _, reference = converted("philips")
    pairs = {"sub-PHANTOM/anat/sub-PHANTOM_flip-1_VFA.nii.gz": "301_VFA_FA03.nii",
             "sub-PHANTOM/anat/sub-PHANTOM_echo-3_part-phase_MEGRE.nii.gz": "1401_MEGRE_ME12_e3_ph.nii",
             "sub-PHANTOM/dwi/sub-PHANTOM_run-1_dwi.nii.gz": "2001_DWI_B1000.nii"}
    for ours, theirs in pairs.items():
        a, b = nib.load(dataset / ours), nib.load(reference / theirs)
        np.testing.assert_array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
        np.testing.assert_allclose(a.affine, b.affine)


def test_rerun_changes_nothing_and_new_series_are_added(tmp_path, noise_free_phantom):
    config = load_config(data_path("examples", "phantom-study.yaml"))
    source = noise_free_phantom("ge") / "dicom"
    first_half = sorted(p for p in source.iterdir() if int(p.name.removeprefix("Series")) < 9)
    dataset = tmp_path / "ds"
    report = convert(first_half, dataset, config, jobs=2)
    assert report.exit_code == 0
    snapshot = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in dataset.rglob("*") if p.is_file()}
    again = convert(first_half, dataset, config, jobs=2)
    assert {s.status for s in again.series} == {"up-to-date"}
    assert snapshot == {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in dataset.rglob("*") if p.is_file()}
    everything = convert([source], dataset, config, jobs=2)
    statuses = {s.series_number: s.status for s in everything.series}
    assert all(statuses[n] == "up-to-date" for n in range(2, 9)) and statuses[19] == "converted"
    assert all(snapshot[p][1] == p.read_bytes() for p in snapshot if p.suffix != ".tsv")


def test_dry_run_writes_nothing(tmp_path, noise_free_phantom):
    report = convert([noise_free_phantom("siemens") / "dicom"], tmp_path / "ds", dry_run=True)
    assert not (tmp_path / "ds").exists()
    assert {s.status for s in report.series} == {"planned"}
    assert all(s.targets and s.evidence for s in report.series)


def test_conflicting_target_is_an_error_unless_overwrite(tmp_path, noise_free_phantom):
    dataset = tmp_path / "ds"
    vfa = [noise_free_phantom("siemens") / "dicom" / f"00{n}_vfa_fa{fa}" for n, fa in ((2, "03"), (3, "10"), (4, "20"))]
    assert convert(vfa, dataset, subject="01", jobs=1).exit_code == 0
    other = [noise_free_phantom("ge") / "dicom" / f"Series{n}" for n in (2, 3, 4)]
    clash = convert(other, dataset, subject="01", jobs=1)
    assert clash.exit_code == 1 and all("--overwrite" in s.reason for s in clash.failed)
    assert convert(other, dataset, subject="01", jobs=1, overwrite=True).exit_code == 0
    meta = json.loads((dataset / "sub-01/anat/sub-01_flip-1_VFA.json").read_text())
    assert meta["Manufacturer"].startswith("GE")
