"""convert on awkward input: archives, gzip, non-DICOM, truncated files, interruptions, the CLI."""

from __future__ import annotations

import gzip
import json
import shutil
import tarfile
import zipfile

import pytest
from conftest import bids_validator_errors

from qmrbids.cli import main
from qmrbids.convert import api, convert


def _vfa_files(noise_free_phantom):
    root = noise_free_phantom("siemens") / "dicom"
    return sorted(p for folder in sorted(root.glob("00[234]_vfa_*")) for p in folder.iterdir())


def test_zip_tar_and_gzip_sources_convert_like_folders(tmp_path, noise_free_phantom):
    files = _vfa_files(noise_free_phantom)
    with zipfile.ZipFile(tmp_path / "fa03.zip", "w") as archive:
        for p in files[:4]:
            archive.write(p, f"export/{p.parent.name}/{p.name}")
    with tarfile.open(tmp_path / "fa10.tar", "w") as archive:
        for p in files[4:8]:
            archive.add(p, f"{p.parent.name}/{p.name}")
    gz = tmp_path / "gz"
    gz.mkdir()
    for p in files[8:]:
        (gz / f"{p.stem}.dcm.gz").write_bytes(gzip.compress(p.read_bytes()))
    (gz / "notes.txt").write_text("not DICOM")
    report = convert([tmp_path / "fa03.zip", tmp_path / "fa10.tar", gz], tmp_path / "ds", subject="01", jobs=2)
    assert report.exit_code == 0 and report.non_dicom_skipped == 1
    assert [s.classification for s in report.series] == ["anat/VFA_flip-1", "anat/VFA_flip-2", "anat/VFA_flip-3"]
    assert bids_validator_errors(tmp_path / "ds") == []


def test_truncated_and_broken_files_fail_only_their_series(tmp_path, noise_free_phantom):
    source = tmp_path / "in"
    shutil.copytree(noise_free_phantom("siemens") / "dicom", source)
    victim = sorted((source / "016_tb1dam_fa120").iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-3000])  # pixel data cut short
    (source / "garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x7f")  # broken header
    (source / "README.txt").write_text("export notes")
    report = convert([source], tmp_path / "ds", jobs=2)
    assert report.exit_code == 1
    failed = {s.series_number: s.reason for s in report.failed}
    assert list(failed) == [16] and "016_tb1dam_fa120" in failed[16] and "truncated" in failed[16]
    assert len(report.unreadable) == 1 and "garbage.dcm" in report.unreadable[0]
    assert report.non_dicom_skipped == 1
    converted = [s for s in report.series if s.status == "converted"]
    assert len(converted) == 19  # everything else, including the other TB1DAM angle
    assert not list((tmp_path / "ds").rglob("*TB1DAM*flip-2*"))


def test_interrupted_run_leaves_no_partial_files_and_the_next_run_completes(tmp_path, noise_free_phantom, monkeypatch):
    source = noise_free_phantom("philips") / "dicom"
    dataset = tmp_path / "ds"
    calls = {"n": 0}
    real = api.convert_series

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "convert_series", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert([source], dataset, jobs=1)
    monkeypatch.undo()
    assert not list((dataset / ".qmrbids").glob(".convert.*")), "staging folder left behind"
    written = sorted(dataset.rglob("*.nii.gz"))
    assert 0 < len(written) < 10
    assert all(p.with_name(p.name.replace(".nii.gz", ".json")).is_file() for p in written)
    report = convert([source], dataset, jobs=2)
    statuses = [s.status for s in report.series]
    assert statuses.count("up-to-date") == 2 and "failed" not in statuses


def test_cli_dry_run_json_and_exit_codes(tmp_path, noise_free_phantom, capsys):
    source = noise_free_phantom("ge") / "dicom"
    assert main(["convert", str(source), "-o", str(tmp_path / "ds"), "--dry-run", "--format", "json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] and report["summary"] == {"planned": 19}
    first = report["series"][0]
    assert first["targets"] == ["sub-PHANTOM/anat/sub-PHANTOM_flip-1_VFA.nii.gz"]
    assert "differing in FlipAngle (3, 10, 20)" in first["evidence"]
    assert not (tmp_path / "ds").exists()
    assert main(["convert", str(tmp_path / "missing"), "-o", str(tmp_path / "ds")]) == 2
    assert "missing: no such file or folder" in capsys.readouterr().err
    assert main(["convert", str(source), "-o", str(tmp_path / "ds"), "--subject", "a/b"]) == 2
    assert main(["convert", str(source), "-o", str(tmp_path / "ds"), "-q", "--subject", "01"]) == 0
    out = capsys.readouterr()
    assert "converted" in out.out and "missing RepetitionTimePreparation" in out.err  # GE style MP2RAGE


def test_sessions_mt_ratio_pairs_and_mixed_series(tmp_path):
    from qmrbids.phantom import PhantomSettings, write_phantom

    for seed in (1, 2):  # two sessions of one patient
        write_phantom(tmp_path / f"ses{seed}", PhantomSettings(protocols=("vfa", "mts"), seed=seed, snr=40, matrix=16,
                                                               slices=2, patient_id="P01"))
    # an MT ratio pair: the PDw and MTw series of session 1 without the T1w one
    mtr = tmp_path / "mtr"
    shutil.copytree(tmp_path / "ses1" / "dicom" / "017_mts_pdw", mtr / "a")
    shutil.copytree(tmp_path / "ses1" / "dicom" / "018_mts_mtw", mtr / "b")
    report = convert([tmp_path / "ses1" / "dicom", tmp_path / "ses2" / "dicom"], tmp_path / "ds", jobs=2)
    assert report.exit_code == 0
    assert {(s.subject, s.session) for s in report.series} == {("P01", "01"), ("P01", "02")}
    assert (tmp_path / "ds" / "sub-P01" / "sub-P01_sessions.tsv").read_text().split() == [
        "session_id", "ses-01", "ses-02"]
    assert bids_validator_errors(tmp_path / "ds") == []
    pair = convert([mtr], tmp_path / "ds-mtr", jobs=1)
    assert [s.classification for s in pair.series] == ["anat/MTR_mt-off", "anat/MTR_mt-on"]
    assert bids_validator_errors(tmp_path / "ds-mtr") == []
    # a series whose files disagree on geometry is an error naming it; the others still convert
    mixed = tmp_path / "mixed"
    shutil.copytree(tmp_path / "ses1" / "dicom", mixed)
    import pydicom

    victim = sorted((mixed / "003_vfa_fa10").iterdir())[0]
    ds = pydicom.dcmread(victim)
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(victim)
    result = convert([mixed], tmp_path / "ds-mixed", jobs=1)
    assert result.exit_code == 1
    assert [(s.series_number, "mixed series" in s.reason) for s in result.failed] == [(3, True)]


def _dataset_content(dataset):
    """Every file's bytes, with the per-run provenance values (time, keyed UID hash) blanked."""
    content = {}
    for path in sorted(p for p in dataset.rglob("*") if p.is_file() and ".qmrbids" not in p.parts):
        data = path.read_bytes()
        if path.suffix == ".json":
            meta = json.loads(data)
            for key in ("ConvertedAt", "SourceSeriesHMAC"):
                meta.get("QmrbidsProvenance", {}).pop(key, None)
            data = json.dumps(meta, sort_keys=True).encode()
        content[path.relative_to(dataset).as_posix()] = data
    return content


def test_bulk_pass_and_series_by_series_conversion_give_the_same_dataset(tmp_path, noise_free_phantom, monkeypatch):
    source = noise_free_phantom("ge") / "dicom"
    vfa = sorted(source.glob("Series[234]"))
    split = tmp_path / "split"  # one VFA series spread over two folders: the bulk pass cannot give it whole
    for index, path in enumerate(sorted(vfa[0].iterdir())):
        (split / str(index % 2)).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, split / str(index % 2) / path.name)
    sources = [split / "0", split / "1", *vfa[1:]]
    calls = []
    real = api.convert_series

    def recording(planned, bids_dir, staging, config, key, versions, overwrite, premade, deidentify):
        calls.append((planned.series["SeriesNumber"], premade is not None))
        return real(planned, bids_dir, staging, config, key, versions, overwrite, premade, deidentify)

    monkeypatch.setattr(api, "convert_series", recording)
    fresh = convert(sources, tmp_path / "bulk", jobs=1)  # a new dataset: dcm2niix runs during the scan
    assert fresh.exit_code == 0
    assert sorted(calls) == [(2, False), (3, True), (4, True)]  # premade outputs, except for the split series
    calls.clear()
    (tmp_path / "series" / "sub-other").mkdir(parents=True)  # a dataset with subjects: series by series
    assert convert(sources, tmp_path / "series", jobs=1).exit_code == 0
    assert not any(premade for _, premade in calls)
    bulk, series = _dataset_content(tmp_path / "bulk"), _dataset_content(tmp_path / "series")
    series.pop("participants.tsv"), bulk.pop("participants.tsv")  # lists sub-other too
    assert bulk.keys() == series.keys() and len([k for k in bulk if k.endswith("_VFA.nii.gz")]) == 3
    assert bulk == series


def test_siemens_tfl_b1map_series_become_tb1tfl_anat_and_famp(tmp_path):
    """The two series of Siemens' TurboFLASH B1 map, made from a phantom series by header edits."""
    import pydicom
    from pydicom.uid import generate_uid

    from qmrbids.phantom import PhantomSettings, write_phantom

    write_phantom(tmp_path / "ph", PhantomSettings(protocols=("tb1dam",), matrix=16, slices=2))
    base = next((tmp_path / "ph" / "dicom").glob("*_tb1dam_fa060"))
    comments = {"anat": "anatomical image", "famp": "flip angle map, TraRefAmpl: 400.0 V"}
    for number, (kind, comment) in enumerate(comments.items(), start=30):
        series_uid = generate_uid()
        (tmp_path / "b1" / kind).mkdir(parents=True)
        for path in sorted(base.iterdir()):
            ds = pydicom.dcmread(path)
            ds.SequenceName, ds.ProtocolName, ds.SeriesDescription = "*tfl2d1_16", "tfl_b1map", "B1map"
            ds.ImageComments, ds.SeriesNumber, ds.FlipAngle = comment, number, 8
            ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
            ds.save_as(tmp_path / "b1" / kind / path.name)
    report = convert([tmp_path / "b1"], tmp_path / "ds", subject="01", jobs=1)
    assert report.exit_code == 0
    assert [(s.classification, s.rule) for s in report.series] == [
        ("fmap/TB1TFL_acq-anat", "siemens-tb1tfl-anat"), ("fmap/TB1TFL_acq-famp", "siemens-tb1tfl-famp")]
    assert all("ImageComments=(free text, matched)" in s.evidence for s in report.series)
    famp = json.loads((tmp_path / "ds/sub-01/fmap/sub-01_acq-famp_TB1TFL.json").read_text())
    assert "TraRefAmpl" not in json.dumps(famp)  # free text never reaches a sidecar, evidence included
    assert bids_validator_errors(tmp_path / "ds") == []


def test_written_files_get_ordinary_permissions(tmp_path, noise_free_phantom):
    """Atomic writes go through temporary files (created 0600); the dataset must still be readable
    by the group and others as the umask allows, like any file the user creates."""
    import os
    import stat

    from qmrbids.io import FILE_MODE

    vfa = sorted((noise_free_phantom("siemens") / "dicom").glob("00[234]_vfa_*"))
    report = convert(vfa, tmp_path / "ds", subject="01", jobs=1)
    assert report.exit_code == 0
    written = [p for p in (tmp_path / "ds").rglob("*") if p.is_file() and ".qmrbids" not in p.parts]
    assert written and {stat.S_IMODE(os.stat(p).st_mode) for p in written} == {FILE_MODE}


def test_labels_taken_from_patient_ids_are_pointed_out(tmp_path, noise_free_phantom):
    vfa = sorted((noise_free_phantom("siemens") / "dicom").glob("00[234]_vfa_*"))
    report = convert(vfa, tmp_path / "a", dry_run=True)
    assert report.warnings and "PHANTOM" in report.warnings[0] and "--deidentify" in report.warnings[0]
    assert convert(vfa, tmp_path / "b", subject="01", dry_run=True).warnings == []
