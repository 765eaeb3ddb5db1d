"""De-identification: planted identifiers vanish, qMRI metadata and voxels survive, keys are keyed."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA
from deid_markers import Planted, leaks, plant_tree

from qmrbids.cli import main
from qmrbids.convert import convert
from qmrbids.deid_check import check
from qmrbids.dicom.deidentify import (SHIFT_BASE_DAYS, Options, Refused, deidentify, deidentify_dataset, keyed_uid,
                                      shift_days)
from qmrbids.dicom.research_ids import ResearchIds
from qmrbids.phantom import PhantomSettings, write_phantom

KEY = b"0123456789abcdef0123456789abcdef"
OTHER_KEY = b"fedcba9876543210fedcba9876543210"
VENDORS = ("siemens", "ge", "philips")
QMRI_FIELDS = ("FlipAngle", "EchoTime", "InversionTime", "RepetitionTime", "MagneticFieldStrength")
DICOM = SHARED_DATA / "dicom"
REAL_SERIES = ("dcm_qa_enh/In", "dcm_qa_ge/In/01_Ax_DWI_TENSOR_R2", "dcm_qa_xa30/In/8_gre_field_mapping",
               "dcm_qa_xa30/In/9_gre_field_mapping")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Phantom DICOM of a vendor (VFA, IR, DWI; 2 slices) with markers planted; (folder, Planted)."""
    cache = {}

    def make(vendor):
        if vendor not in cache:
            root = tmp_path_factory.mktemp(f"planted-{vendor}")
            write_phantom(root / "phantom", PhantomSettings(vendor=vendor, protocols=("vfa", "irt1", "dwi"), slices=2))
            markers = Planted()
            plant_tree(root / "phantom" / "dicom", root / "dicom", markers)
            cache[vendor] = (root / "dicom", markers)
        return cache[vendor]

    return make


@pytest.fixture(scope="module")
def planted_real(tmp_path_factory):
    if not DICOM.is_dir():
        pytest.skip(f"real vendor DICOM absent: {DICOM} (CI always has it)")
    root = tmp_path_factory.mktemp("planted-real")
    markers = Planted()
    for series in REAL_SERIES:
        plant_tree(DICOM / series, root / "dicom" / series.replace("/", "_"), markers)
    return root / "dicom", markers


def _deidentify(source: Path, out: Path, key=KEY, **options):
    report = deidentify([source], out, Options(key, **options), jobs=2)
    assert report.exit_code == 0, report.errors + report.refused
    return report


def _volumes(dataset: Path) -> dict[str, tuple]:
    """name (without the subject label) -> (voxels, affine, qMRI fields, bval, bvec) of a BIDS dataset."""
    out = {}
    for nifti in sorted(dataset.rglob("*.nii.gz")):
        name = nifti.name.split("_", 1)[1]
        meta = json.loads(Path(str(nifti).replace(".nii.gz", ".json")).read_text())
        bval, bvec = (Path(str(nifti).replace(".nii.gz", ext)) for ext in (".bval", ".bvec"))
        image = nib.load(nifti)
        out[name] = (np.asanyarray(image.dataobj), image.affine, {k: meta.get(k) for k in QMRI_FIELDS},
                     np.loadtxt(bval) if bval.is_file() else None, np.loadtxt(bvec) if bvec.is_file() else None)
    return out


def _assert_same_volumes(reference: Path, other: Path) -> None:
    expected, got = _volumes(reference), _volumes(other)
    assert sorted(got) == sorted(expected) and expected
    for name, (voxels, affine, fields, bval, bvec) in expected.items():
        g_voxels, g_affine, g_fields, g_bval, g_bvec = got[name]
        np.testing.assert_array_equal(g_voxels, voxels, err_msg=name)
        np.testing.assert_allclose(g_affine, affine, atol=1e-5, err_msg=name)
        assert g_fields == fields, name
        for a, b in ((bval, g_bval), (bvec, g_bvec)):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_allclose(b, a, atol=1e-6, err_msg=name)


def _findings_text(report) -> str:
    return "\n".join(f"{f.location} {f.value}" for f in report.findings)


@pytest.mark.parametrize("vendor", VENDORS)
def test_planted_identifiers_vanish_and_the_check_agrees(planted, vendor, tmp_path):
    source, markers = planted(vendor)
    _deidentify(source, tmp_path / "deid")
    assert leaks(tmp_path / "deid", markers) == []
    assert check([tmp_path / "deid"]).findings == []
    found = _findings_text(check([source]))
    assert [m for m in sorted(markers.markers) if m not in found] == []
    assert [d for d in sorted(markers.dates) if d not in found] == []


@pytest.mark.parametrize("vendor", VENDORS)
def test_deidentified_dicom_converts_to_the_same_voxels_and_qmri_metadata(planted, vendor, tmp_path):
    source, markers = planted(vendor)
    _deidentify(source, tmp_path / "deid")
    plain = convert([source], tmp_path / "plain", jobs=2)
    from_deid = convert([tmp_path / "deid"], tmp_path / "from-deid", jobs=2)
    on_the_way = convert([source], tmp_path / "on-the-way", deidentify=Options(KEY), map_path=tmp_path / "map.tsv",
                         jobs=2)
    for report in (plain, from_deid, on_the_way):
        assert report.exit_code == 0 and {s.status for s in report.series} == {"converted"}
    _assert_same_volumes(tmp_path / "plain", tmp_path / "from-deid")
    _assert_same_volumes(tmp_path / "plain", tmp_path / "on-the-way")
    assert leaks(tmp_path / "on-the-way", markers) == []
    assert check([tmp_path / "on-the-way"]).findings == []
    assert [p.name for p in (tmp_path / "on-the-way").glob("sub-*")] == ["sub-001"]
    header, row = (tmp_path / "map.tsv").read_text().splitlines()
    assert header == "patient_id\tresearch_id" and row.startswith("ZQXM00100020") and row.endswith("\t001")


def test_real_series_with_planted_identifiers(planted_real, tmp_path):
    source, markers = planted_real
    _deidentify(source, tmp_path / "deid")
    assert leaks(tmp_path / "deid", markers) == []
    assert check([tmp_path / "deid"]).findings == []
    found = _findings_text(check([source]))
    assert [m for m in sorted(markers.markers) if m not in found] == []
    plain = convert([source], tmp_path / "plain", jobs=2)
    on_the_way = convert([source], tmp_path / "on-the-way", deidentify=Options(KEY), jobs=2)
    from_deid = convert([tmp_path / "deid"], tmp_path / "from-deid", jobs=2)
    for report in (plain, on_the_way, from_deid):
        assert report.exit_code == 0, [s.reason for s in report.failed]
        assert sorted(s.classification for s in report.series) == sorted(s.classification for s in plain.series)
    assert leaks(tmp_path / "on-the-way", markers) == []
    assert check([tmp_path / "on-the-way"]).findings == []
    # subject labels differ (research IDs), so compare per series description and suffix
    for other in ("on-the-way", "from-deid"):
        a, b = _volumes(tmp_path / "plain"), _volumes(tmp_path / other)
        assert sorted(b) == sorted(a)
        for name in a:
            np.testing.assert_array_equal(b[name][0], a[name][0], err_msg=name)
            assert b[name][2] == a[name][2]
            if a[name][3] is not None:
                np.testing.assert_allclose(b[name][3], a[name][3])


def test_dcm_qa_deident_keeps_its_deidentification_method(tmp_path):
    folder = DICOM / "dcm_qa_deident" / "In"
    if not folder.is_dir():
        pytest.skip(f"real vendor DICOM absent: {folder} (CI always has it)")
    original = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
    codes = [(i.CodeValue, i.CodingSchemeDesignator) for i in original.DeidentificationMethodCodeSequence]
    for mode, options in (("plain", None), ("deid", Options(KEY))):
        report = convert([folder], tmp_path / mode, deidentify=options, jobs=2)
        assert report.exit_code == 0
        (sidecar,) = (tmp_path / mode).rglob("*_T1w.json")
        meta = json.loads(sidecar.read_text())
        got = [(i["CodeValue"], i["CodingSchemeDesignator"]) for i in meta["DeidentificationMethodCodeSequence"]]
        if mode == "plain":
            assert meta["DeidentificationMethod"] == list(original.DeidentificationMethod)
            assert got == codes
        else:  # earlier visual cleaning claims stay; the options are exactly ours
            assert meta["DeidentificationMethod"][:2] == list(original.DeidentificationMethod)
            assert got == [("113102", "DCM"), ("replace_recognizable", "mri_reface"), ("113100", "DCM"),
                           ("113105", "DCM"), ("113111", "DCM"), ("113107", "DCM")]
    assert check([tmp_path / "deid"]).findings == []


def test_same_key_same_bytes_other_key_other_uids(planted, tmp_path):
    source, _ = planted("ge")
    _deidentify(source, tmp_path / "a")
    _deidentify(source, tmp_path / "b")
    _deidentify(source, tmp_path / "c", key=OTHER_KEY)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.dcm"))
    assert files and files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.dcm"))
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    other = sorted((tmp_path / "c").rglob("*.dcm"))
    uids = {pydicom.dcmread(tmp_path / "a" / f, stop_before_pixels=True).StudyInstanceUID for f in files}
    other_uids = {pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID for f in other}
    assert len(uids) == len(other_uids) == 1 and uids != other_uids
    pixels = sorted(pydicom.dcmread(tmp_path / "a" / f).PixelData for f in files)
    assert pixels == sorted(pydicom.dcmread(f).PixelData for f in other)
    archive = shutil.make_archive(str(tmp_path / "source"), "zip", source)  # archives read like folders
    _deidentify(Path(archive), tmp_path / "zipped")
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "zipped" / f).read_bytes() for f in files)
    a, b = tmp_path / "x", tmp_path / "y"
    convert([source], a, deidentify=Options(KEY), jobs=2)
    convert([source], b, deidentify=Options(KEY), jobs=2)
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and ".qmrbids" not in p.parts)
    assert names == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and ".qmrbids" not in p.parts)
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def test_uids_and_dates_are_keyed_and_keep_intervals():
    uid = "1.2.840.113619.2.55.3.12345"
    assert keyed_uid(uid, KEY) == keyed_uid(uid, KEY) != keyed_uid(uid, OTHER_KEY)
    assert keyed_uid(uid, KEY).startswith("2.25.") and len(keyed_uid(uid, KEY)) <= 64
    days = shift_days("PATIENT-A", Options(KEY))
    assert days == shift_days("PATIENT-A", Options(KEY)) != shift_days("PATIENT-B", Options(KEY))
    assert days <= -SHIFT_BASE_DAYS
    assert shift_days("PATIENT-A", Options(KEY, date_shift=-30)) == -30
    assert shift_days("PATIENT-A", Options(KEY, date_shift="none")) is None
    sessions = []
    for study_date in ("20200110", "20200315"):
        ds = pydicom.Dataset()
        ds.PatientID, ds.StudyDate, ds.AcquisitionDateTime = "PATIENT-A", study_date, study_date + "101500"
        deidentify_dataset(ds, Options(KEY), "001")
        sessions.append(ds)
    first, second = (np.datetime64(f"{s.StudyDate[:4]}-{s.StudyDate[4:6]}-{s.StudyDate[6:]}") for s in sessions)
    assert (second - first).astype(int) == 65 and int(sessions[0].StudyDate[:4]) < 1925
    assert sessions[0].AcquisitionDateTime == sessions[0].StudyDate + "101500"


def _coded(ds) -> list[str]:
    return [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]


def test_method_codes_list_exactly_the_options_applied(planted):
    source, _ = planted("siemens")
    original = pydicom.dcmread(next(p for p in sorted(source.rglob("*")) if p.is_file()))
    serial = original.DeviceSerialNumber

    def run(**options):
        return deidentify_dataset(original.copy(), Options(KEY, **options), "001")

    default = run()
    assert _coded(default) == ["113100", "113105", "113111", "113107"]
    assert default.PatientIdentityRemoved == "YES" and default.LongitudinalTemporalInformationModified == "MODIFIED"
    assert not default.DeviceSerialNumber and default.PatientID == default.PatientName == "001"
    device = run(keep_device_identity=True)
    assert _coded(device) == ["113100", "113105", "113111", "113107", "113109"]
    assert device.DeviceSerialNumber not in ("", serial) and device.DeviceSerialNumber == run(
        keep_device_identity=True).DeviceSerialNumber
    no_dates = run(date_shift="none")
    assert _coded(no_dates) == ["113100", "113105", "113111"]
    assert no_dates.LongitudinalTemporalInformationModified == "REMOVED" and not no_dates.StudyDate
    assert not no_dates.get("AcquisitionDate") and "InstanceCreationDate" not in no_dates


def test_burned_in_annotation_and_secondary_capture_are_refused_unless_included(planted, tmp_path):
    source, _ = planted("ge")
    files = sorted(p for p in source.rglob("*") if p.is_file())
    burned, capture = (pydicom.dcmread(f) for f in files[:2])
    burned.BurnedInAnnotation = "YES"
    capture.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    for ds in (burned, capture):
        with pytest.raises(Refused):
            deidentify_dataset(ds.copy(), Options(KEY), "001")
        assert deidentify_dataset(ds.copy(), Options(KEY, include_burned_in=True), "001").PatientIdentityRemoved == "YES"
    (tmp_path / "in").mkdir()
    burned.save_as(tmp_path / "in" / "burned.dcm")
    report = deidentify([tmp_path / "in"], tmp_path / "out", Options(KEY))
    assert report.exit_code == 1 and report.written == 0 and "BurnedInAnnotation" in report.refused[0]


def test_check_reports_contradicted_claims_and_extra_private_tags(planted, tmp_path):
    source, _ = planted("philips")
    _deidentify(source, tmp_path / "deid")
    path = next((tmp_path / "deid").rglob("*.dcm"))
    ds = pydicom.dcmread(path)
    ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
    ds.private_block(0x0029, "SOME VENDOR", create=True).add_new(0x01, "LO", "whatever")
    ds.AcquisitionDate = "20190314"
    ds.save_as(path)
    kinds = {f.kind for f in check([tmp_path / "deid"]).findings}
    assert "claims Modified Dates but LongitudinalTemporalInformationModified is not MODIFIED" in kinds
    assert "private tag outside the safe list (SOME VENDOR)" in kinds
    assert "real-looking date" in kinds


def test_research_ids_are_stable_and_sequential(tmp_path):
    path = tmp_path / "map.tsv"
    ids = ResearchIds(KEY, path)
    assert ids.assign(["MRN-7", "MRN-3"]) == {"MRN-7": "002", "MRN-3": "001"}
    ids.save()
    again = ResearchIds(KEY, path)
    assert again.assign(["MRN-9", "MRN-7"]) == {"MRN-9": "003", "MRN-7": "002"}
    again.save()
    assert path.read_text() == "patient_id\tresearch_id\nMRN-3\t001\nMRN-7\t002\nMRN-9\t003\n"
    assert [p.name for p in tmp_path.iterdir()] == ["map.tsv"]  # written atomically, no leftovers
    keyed = ResearchIds(KEY).assign(["MRN-7"])["MRN-7"]
    assert keyed == ResearchIds(KEY).assign(["MRN-7"])["MRN-7"] != ResearchIds(OTHER_KEY).assign(["MRN-7"])["MRN-7"]
    assert keyed.isalnum() and "MRN" not in keyed


def test_cli_deidentify_check_and_usage_errors(planted, tmp_path, capsys):
    source, _ = planted("siemens")
    key = tmp_path / "key"
    key.write_text(KEY.decode())
    out = tmp_path / "out"
    assert main(["deidentify", str(source), "-o", str(out), "--map", str(out / "map.tsv"), "--key-file", str(key),
                 "-q"]) == 2
    assert "outside" in capsys.readouterr().err
    assert main(["deidentify", str(source), "-o", str(out), "-q"]) == 2
    assert main(["deidentify", str(source), "-o", str(out), "--key-file", str(key), "--map", str(tmp_path / "m.tsv"),
                 "--jobs", "2", "-q"]) == 0
    assert main(["deidentify", "--check", str(out)]) == 0
    assert main(["deidentify", "--check", str(source)]) == 1
    assert "ZQXM00100020" in capsys.readouterr().out
    assert main(["convert", str(source), "-o", str(tmp_path / "bids"), "--map", str(tmp_path / "m.tsv"), "-q"]) == 2
    assert main(["convert", str(source), "-o", str(tmp_path / "bids"), "--deidentify", "--key-file", str(key),
                 "--map", str(tmp_path / "m.tsv"), "-q"]) == 0
    assert main(["deidentify", "--check", str(tmp_path / "bids")]) == 0


def test_plain_conversion_writes_no_acquisition_time_in_nifti_headers(planted, tmp_path):
    source, _ = planted("siemens")
    report = convert([source], tmp_path / "bids", jobs=2)
    assert report.exit_code == 0
    niftis = sorted((tmp_path / "bids").rglob("*.nii.gz"))
    before = {p: p.read_bytes() for p in niftis}
    for path, data in before.items():
        assert data[3] == 0 and data[4:8] == b"\0\0\0\0"  # gzip: no name, no time
        header = nib.load(path).header
        assert "Time=" not in header["descrip"].item().decode() and header["aux_file"].item() == b""
    findings = check([tmp_path / "bids"]).findings
    assert [f for f in findings if f.location.startswith(("NIfTI", "gzip"))] == []
    convert([source], tmp_path / "bids", jobs=2)
    assert {p: p.read_bytes() for p in niftis} == before


def test_compress_clean_keeps_voxels_and_drops_the_time(tmp_path):
    from qmrbids.convert.nifti import compress_clean

    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    image = nib.Nifti1Image(data, np.eye(4))
    image.header["descrip"] = b"TE=4.6;Time=143012.500;phase=1"
    image.header["aux_file"] = b"scan 20190314"
    path = tmp_path / "x.nii.gz"
    raw = gzip.compress(image.to_bytes(), mtime=1_600_000_000)
    path.write_bytes(raw[:3] + b"\x08" + raw[4:10] + b"x.nii\0" + raw[10:])  # with FNAME, as gzip tools write
    assert compress_clean(path) == path
    cleaned = nib.load(path)
    np.testing.assert_array_equal(np.asanyarray(cleaned.dataobj), data)
    assert cleaned.header["descrip"].item() == b"TE=4.6;phase=1" and cleaned.header["aux_file"].item() == b""
    assert path.read_bytes()[3:8] == b"\0\0\0\0\0"
    first = path.read_bytes()
    compress_clean(path)
    assert path.read_bytes() == first
    plain = tmp_path / "y.nii"  # dcm2niix's uncompressed output: compressed once, with the same bytes
    plain.write_bytes(image.to_bytes())
    assert compress_clean(plain) == tmp_path / "y.nii.gz" and not plain.exists()
    assert (tmp_path / "y.nii.gz").read_bytes() == first


def test_check_finds_identifiers_in_a_bids_dataset(planted, tmp_path):
    source, _ = planted("ge")
    dataset = tmp_path / "bids"
    assert convert([source], dataset, deidentify=Options(KEY), jobs=2).exit_code == 0
    assert check([dataset]).findings == []
    (sidecar,) = [p for p in dataset.rglob("*_run-1_dwi.json")]
    meta = json.loads(sidecar.read_text())
    meta.update({"AcquisitionDateTime": "2019-03-14T10:15:00", "InstitutionName": "General Hospital",
                 "SeriesDescription": "dwi 14.03.2019"})
    sidecar.write_text(json.dumps(meta))
    (scans,) = dataset.rglob("*_scans.tsv")
    scans.write_text("filename\tacq_time\nanat/flip-1_VFA.nii.gz\t2019-03-14T10:15:00\n")
    vfa = next(dataset.rglob("*_VFA.nii.gz"))
    image = nib.load(vfa)
    image.header["descrip"] = b"TE=2;Time=101500.000"
    raw = gzip.compress(image.to_bytes(), mtime=1_600_000_000)
    flip9 = "flip-9_VFA.nii.gz"
    (vfa.parent / flip9).write_bytes(raw[:3] + b"\x08" + raw[4:10] + b"n\0" + raw[10:])
    (vfa.parent / "20190314").mkdir()
    found = {(Path(f.path).name, f.location, f.kind) for f in check([dataset]).findings}
    assert (sidecar.name, "AcquisitionDateTime", "identifying field") in found
    assert (sidecar.name, "InstitutionName", "identifying field") in found
    assert (sidecar.name, "SeriesDescription", "real-looking date") in found
    assert (scans.name, "line 2", "real-looking date") in found
    assert {(flip9, "NIfTI descrip", "acquisition time or date"), (flip9, "gzip header", "carries a file name (FNAME)"),
            (flip9, "gzip header", "carries a modification time (MTIME)")} <= found
    assert ("20190314", "name", "real-looking date in a name") in found


def test_deidentified_scans_tables_carry_shifted_acquisition_times(tmp_path):
    write_phantom(tmp_path / "ph", PhantomSettings(protocols=("vfa",), matrix=16, slices=2, patient_id="P1"))
    fa03 = [pydicom.dcmread(p) for p in next((tmp_path / "ph" / "dicom").glob("*_vfa_fa03")).iterdir()]
    first = min(fa03, key=lambda ds: str(ds.AcquisitionTime))  # flip-1: the first row of the table
    plain = convert([tmp_path / "ph" / "dicom"], tmp_path / "plain", jobs=1)
    assert plain.exit_code == 0
    (plain_scans,) = (tmp_path / "plain").rglob("*_scans.tsv")
    assert plain_scans.read_text().splitlines()[0] == "filename"  # a real date identifies the scan: left out
    assert convert([tmp_path / "ph" / "dicom"], tmp_path / "deid", deidentify=Options(KEY), jobs=1).exit_code == 0
    (scans,) = (tmp_path / "deid").rglob("*_scans.tsv")
    rows = [line.split("\t") for line in scans.read_text().splitlines()]
    assert rows[0] == ["filename", "acq_time"] and len(rows) == 4
    shifted = rows[1][1]
    days = (np.datetime64(shifted[:10]) - np.datetime64(f"{first.SeriesDate[:4]}-{first.SeriesDate[4:6]}-"
                                                       f"{first.SeriesDate[6:8]}")).astype(int)
    assert -SHIFT_BASE_DAYS - 3660 < days <= -SHIFT_BASE_DAYS and int(shifted[:4]) < 1925
    clock = str(first.AcquisitionTime)
    assert shifted[11:] == f"{clock[:2]}:{clock[2:4]}:{clock[4:6]}"
    assert check([tmp_path / "deid"]).findings == []
    again = convert([tmp_path / "ph" / "dicom"], tmp_path / "deid", deidentify=Options(KEY), jobs=1)
    assert {s.status for s in again.series} == {"up-to-date"} and scans.read_text().count("\t") == 4
