"""Small multi-site, multi-session phantom datasets for the QC tests, with planted deviations.

Every session is a small phantom (32 x 32 x 2 voxels, VFA and MESE) converted by qmrbids. The
deviant dataset plants, each in its own session: a MESE series acquired with TR 3000 ms instead of
4000 ms and one of its echoes missing; a site (B) that runs VFA with 4 degrees instead of 3; a
noisy VFA series (SNR 8 instead of 50, converted over the clean one); a T1 map with out-of-range
voxels (and a clean T2 map and ADC map elsewhere).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from qmrbids.convert import convert, load_config
from qmrbids.phantom import PhantomSettings, write_phantom
from qmrbids.qc import draft_protocol, protocol_yaml

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = ("vfa", "mese")
SNR = 50.0
NOISY_SNR = 8.0
BAD_TR_MS = 3000.0
SITE_B_FLIP = 4.0
MISSING_ECHO = "echo-5_MESE"
PLANTED_LOW, PLANTED_HIGH = 6, 4  # out-of-range voxels planted in the T1 map (-1 s and 50 s)


def _session(tmp: Path, dataset: Path, subject: str, session: str, seed: int, snr: float = SNR,
             edit: dict | None = None, protocols: tuple[str, ...] = PROTOCOLS) -> Path:
    """Write a phantom, optionally change DICOM values of series (``{description part: {keyword: value}}``),
    convert (replacing series already converted)."""
    source = tmp / f"dicom-{subject}-{session}-{'-'.join(protocols)}"
    write_phantom(source, PhantomSettings(protocols=protocols, snr=snr, seed=seed, matrix=32, slices=2,
                                          patient_id=subject))
    for pattern, values in (edit or {}).items():
        files = sorted((source / "dicom").glob(f"*{pattern}*/*"))
        assert files, pattern
        for path in files:
            ds = pydicom.dcmread(path)
            for keyword, value in values.items():
                setattr(ds, keyword, value)
            ds.save_as(path)
    report = convert([source / "dicom"], dataset, load_config(ROOT / "examples" / "phantom-study.yaml"),
                     subject=subject, session=session, jobs=2, overwrite=True)
    assert report.exit_code == 0, [s.reason for s in report.failed]
    return source


def _set_sites(dataset: Path, sites: dict[str, str]) -> None:
    path = dataset / "participants.tsv"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["participant_id", "site"], delimiter="\t", lineterminator="\n",
                                extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "site": sites[row["participant_id"].removeprefix("sub-")]})


def _map(dataset: Path, subject: str, session: str, suffix: str, data: np.ndarray, affine: np.ndarray,
         units: str, desc: str = "") -> Path:
    folder = dataset / "derivatives" / "qmrbids" / f"sub-{subject}" / f"ses-{session}" / "anat"
    folder.mkdir(parents=True, exist_ok=True)
    (dataset / "derivatives" / "qmrbids" / "dataset_description.json").write_text(json.dumps(
        {"Name": "qmrbids maps", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "qmrbids tests"}]}))
    name = f"sub-{subject}_ses-{session}" + (f"_desc-{desc}" if desc else "") + f"_{suffix}"
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), folder / f"{name}.nii.gz")
    (folder / f"{name}.json").write_text(json.dumps({"Units": units}))
    return folder / f"{name}.nii.gz"


@pytest.fixture(scope="session")
def qc_clean(tmp_path_factory):
    """Three clean sessions on two sites (A: S01 ses-1/ses-2, B: S02 ses-1) and a protocol drafted from S01 ses-1."""
    tmp = tmp_path_factory.mktemp("qc-clean")
    dataset = tmp / "bids"
    for subject, session, seed in (("S01", "1", 1), ("S01", "2", 2), ("S02", "1", 3)):
        _session(tmp, dataset, subject, session, seed)
    _set_sites(dataset, {"S01": "A", "S02": "B"})
    protocol_path = tmp / "protocol.yaml"
    protocol_path.write_text(protocol_yaml(draft_protocol(dataset, "S01", "1")))
    return dataset, protocol_path


@pytest.fixture(scope="session")
def qc_deviant(tmp_path_factory, qc_clean):
    """The clean study's reference session plus one session per planted deviation, maps in derivatives."""
    tmp = tmp_path_factory.mktemp("qc-deviant")
    dataset = tmp / "bids"
    reference = _session(tmp, dataset, "S01", "1", 1)
    _session(tmp, dataset, "S01", "2", 2, edit={"mese": {"RepetitionTime": BAD_TR_MS}})
    for path in (dataset / "sub-S01" / "ses-2" / "anat").glob(f"sub-S01_ses-2_{MISSING_ECHO}.*"):
        path.unlink()
    _session(tmp, dataset, "S02", "1", 3, edit={"vfa_fa03": {"FlipAngle": SITE_B_FLIP}})
    _session(tmp, dataset, "S03", "1", 4)
    noisy = _session(tmp, dataset, "S03", "1", 5, snr=NOISY_SNR, protocols=("vfa",))
    _set_sites(dataset, {"S01": "A", "S02": "B", "S03": "A"})
    truth = nib.load(reference / "truth" / "T1map.nii.gz")
    t1 = np.asarray(truth.dataobj, dtype=float)
    inside = np.flatnonzero(t1)
    t1.flat[inside[:PLANTED_LOW]] = -1.0
    t1.flat[inside[PLANTED_LOW:PLANTED_LOW + PLANTED_HIGH]] = 50.0
    _map(dataset, "S01", "1", "T1map", t1, truth.affine, "s")
    residual = np.where(t1 != 0, 0.02, 0.0)
    _map(dataset, "S01", "1", "T1map", residual, truth.affine, "arbitrary", desc="residual")
    t2 = nib.load(reference / "truth" / "T2map.nii.gz")
    _map(dataset, "S01", "2", "T2map", np.asarray(t2.dataobj), t2.affine, "s")
    adc = nib.load(reference / "truth" / "ADCmap.nii.gz")
    _map(dataset, "S01", "2", "dwi", np.asarray(adc.dataobj), adc.affine, "mm^2/s", desc="ADC")
    mriqc = dataset / "derivatives" / "mriqc" / "sub-S01" / "ses-1" / "anat"
    mriqc.mkdir(parents=True)
    (mriqc / "sub-S01_ses-1_flip-3_VFA.json").write_text(json.dumps({"snr_total": 12.5, "efc": 0.5, "cjv": 0.3}))
    _, protocol_path = qc_clean
    return dataset, protocol_path, {"noisy": noisy, "t1_nonzero": inside.size}


def with_site_override(protocol_path: Path, out: Path) -> Path:
    """The protocol with site B's flip angle for flip-1_VFA (4 degrees), as a study would declare it."""
    import yaml

    data = yaml.safe_load(protocol_path.read_text())
    data["sites"] = {"B": {"series": {"flip-1_VFA": {"parameters": {"FlipAngle": {"value": SITE_B_FLIP,
                                                                                  "tolerance": 0.5}}}}}}
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out

