"""End to end: phantom DICOM -> ``qmrbids convert`` -> ``qmrbids fit`` -> maps against the truth.

DICOM stores integers: magnitudes as 16-bit values scaled to the protocol's brightest voxel, the
MP2RAGE UNI image as 12 bits over [-0.5, 0.5]. Rounding to +-0.5 of a stored unit changes a
signal by up to 0.5/value, 2e-5 for bright voxels and ~5e-4 for the darkest fitted ones (10 % of
the top, the auto mask's floor), and each model amplifies signal errors by its condition
number (up to ~5 here). Hence 3e-3 on the maximum relative error for the magnitude models. For
MP2RAGE the bound is computed: half a UNI step (0.5/4095) divided by the slope dUNI/dT1 at the
voxel's T1 and B1. The DAM B1 map is exact only for T1 <= TR/10 = 1 s, so B1-corrected maps are
compared where T1 <= 1 s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import bids_validator_errors
from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

from qmrbids.cli import main
from qmrbids.fit import FitError
from qmrbids.fit.run import run_fit

SUB = "sub-PHANTOM"


@pytest.fixture(scope="module")
def fitted(phantom_bids, noise_free_phantom, tmp_path_factory):
    """A copy of the converted Siemens phantom, fitted with every model (2 local processes)."""
    source, _ = phantom_bids("siemens")
    dataset = tmp_path_factory.mktemp("fit") / "dataset"
    shutil.copytree(source, dataset)
    report = run_fit(dataset, jobs=2)
    return dataset, report, noise_free_phantom("siemens") / "truth"


def truth_on(truth: Path, name: str, image: nib.Nifti1Image) -> np.ndarray:
    """A truth map reordered onto the voxel axes of ``image`` (series differ in axis order)."""
    img = nib.load(str(truth / f"{name}.nii.gz"))
    return apply_orientation(np.asarray(img.dataobj), ornt_transform(io_orientation(img.affine),
                                                                      io_orientation(image.affine)))


def derivative(dataset: Path, relative: str) -> nib.Nifti1Image:
    return nib.load(str(dataset / "derivatives" / "qmrbids" / SUB / relative))


def test_every_collection_is_fitted(fitted):
    _, report, _ = fitted
    assert report.exit_code == 0
    fitted_models = sorted(r.model for r in report.results if r.status == "fitted")
    assert fitted_models == sorted(["tb1dam", "vfa", "irt1", "mp2rage", "mese", "megre", "mtsat", "mtr", "dwi", "dwi"])


CASES = [  # derivative map, truth map, scale truth -> map, documented range on the truth, B1-corrected
    ("fmap/sub-PHANTOM_desc-tb1dam_TB1map.nii.gz", "B1map", 100.0, lambda t: t["T1"] <= 1.0, False),
    ("anat/sub-PHANTOM_desc-vfa_T1map.nii.gz", "T1map", 1.0, lambda t: t["T1"] > 0, True),
    ("anat/sub-PHANTOM_desc-irt1_T1map.nii.gz", "T1map", 1.0, lambda t: (t["T1"] >= 0.1) & (t["T1"] <= 3.75), False),
    ("anat/sub-PHANTOM_desc-mese_T2map.nii.gz", "T2map", 1.0, lambda t: (t["T2"] >= 0.012) & (t["T2"] <= 0.32), False),
    ("anat/sub-PHANTOM_desc-megre_T2starmap.nii.gz", "T2starmap", 1.0,
     lambda t: (t["T2star"] >= 0.003) & (t["T2star"] <= 0.108), False),
    ("anat/sub-PHANTOM_desc-mtsat_R1map.nii.gz", "R1", 1.0, lambda t: t["T1"] > 0, True),
    ("dwi/sub-PHANTOM_run-1_desc-dwi_ADC.nii.gz", "ADCmap", 1.0, lambda t: t["T1"] > 0, False),
    ("dwi/sub-PHANTOM_run-2_desc-dwi_ADC.nii.gz", "ADCmap", 1.0, lambda t: t["T1"] > 0, False),
]


@pytest.mark.parametrize("relative, truth_name, scale, inside, b1_corrected", CASES,
                         ids=[c[0].split("_", 2)[-1] for c in CASES])
def test_maps_match_the_truth_through_dicom(fitted, relative, truth_name, scale, inside, b1_corrected):
    dataset, _, truth = fitted
    image = derivative(dataset, relative)
    estimate = np.asarray(image.dataobj, dtype=np.float64)
    t = {name: truth_on(truth, f"{name}map", image) for name in ("T1", "T2", "T2star")}
    if truth_name == "R1":
        true = 1.0 / np.where(t["T1"] > 0, t["T1"], np.inf)
    else:
        true = truth_on(truth, truth_name, image) * scale
    select = inside(t) & (t["T1"] > 0)
    if b1_corrected:
        select &= t["T1"] <= 1.0
    fitted_voxels = select & (estimate != 0)
    assert fitted_voxels.sum() >= 0.8 * select.sum()  # the auto mask keeps the object
    error = np.abs(estimate[fitted_voxels] / true[fitted_voxels] - 1.0)
    assert error.max() <= 3e-3, error.max()
    assert np.median(error) <= 3e-4


def test_mp2rage_within_uni_quantisation(fitted):
    from qmrbids.fit.run import build_model, find_collections

    dataset, _, truth = fitted
    image = derivative(dataset, "anat/sub-PHANTOM_desc-mp2rage_T1map.nii.gz")
    estimate = np.asarray(image.dataobj, dtype=np.float64)
    t1, b1 = truth_on(truth, "T1map", image), truth_on(truth, "B1map", image)
    select = (t1 >= 0.15) & (t1 <= 4.0) & (t1 <= 1.0) & (estimate != 0)
    model, _ = build_model(find_collections(dataset, ["mp2rage"])[0])
    t1, b1 = t1[select], b1[select]
    slope = np.abs(model.uni(t1 * 1.001, b1) - model.uni(t1, b1)) / (0.001 * t1)
    bound = 0.5 / 4095 / slope + 2e-4 * t1  # half a 12-bit UNI step, plus the B1 map's error
    assert np.all(np.abs(estimate[select] - t1) <= bound)
    assert select.sum() > 500


def test_derivative_passes_the_bids_validator(fitted):
    dataset, _, _ = fitted
    assert bids_validator_errors(dataset / "derivatives" / "qmrbids") == []
    # and as part of its source dataset, validated recursively (bids-validator-deno -r)
    run = subprocess.run([shutil.which("bids-validator-deno"), str(dataset), "-r", "--json"], capture_output=True,
                         text=True, check=False)
    assert run.returncode == 0, run.stdout[-2000:]
    report = json.loads(run.stdout)
    assert list(report["derivativesSummary"]) == ["/derivatives/qmrbids/"]  # the derivative was validated
    for summary in [report, *report["derivativesSummary"].values()]:
        assert [i for i in summary["issues"]["issues"] if i["severity"] == "error"] == []


def test_provenance(fitted):
    dataset, _, _ = fitted
    out = dataset / "derivatives" / "qmrbids"
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert {"Name", "Version", "CodeURL"} <= set(description["GeneratedBy"][0])
    assert description["SourceDatasets"] and description["DatasetLinks"]["raw"] == "../.."
    sidecar = json.loads((out / SUB / "anat" / "sub-PHANTOM_desc-vfa_T1map.json").read_text())
    assert sidecar["Units"] == "s" and sidecar["SkullStripped"] is False
    assert sidecar["Sources"][:3] == [f"bids:raw:{SUB}/anat/{SUB}_flip-{k}_VFA.nii.gz" for k in (1, 2, 3)]
    assert sidecar["Sources"][3] == f"bids::{SUB}/fmap/{SUB}_desc-tb1dam_TB1map.nii.gz"
    for uri in sidecar["Sources"][:3]:
        assert (dataset / uri.removeprefix("bids:raw:")).is_file()
    assert sidecar["VaryingAcquisitionParameters"]["FlipAngle"] == [3, 10, 20]
    assert sidecar["RepetitionTimeExcitation"] == 0.015 and sidecar["ModelParameters"]["FlipAngle"] == [3.0, 10.0, 20.0]
    assert sidecar["EstimationReference"] and sidecar["EstimationAlgorithm"] and sidecar["FitDurationSeconds"] >= 0
    ir = json.loads((out / SUB / "anat" / "sub-PHANTOM_desc-irt1_T1map.json").read_text())
    assert ir["VaryingAcquisitionParameters"]["InversionTime"] == [0.05, 0.4, 1.1, 2.5]
    assert ir["Sources"][0].endswith("inv-1_IRT1.nii.gz")
    dwi = json.loads((out / SUB / "dwi" / "sub-PHANTOM_run-2_desc-dwi_ADC.json").read_text())
    assert dwi["Units"] == "mm2/s" and dwi["Sources"][1].endswith("run-2_dwi.bval")
    r2 = nib.load(str(out / SUB / "anat" / "sub-PHANTOM_desc-irt1Rsquared_T1map.nii.gz")).get_fdata()
    assert np.all(r2[r2 != 0] > 0.9999)  # quantised, noise-free data


def test_rerun_skips_up_to_date_maps_and_refits_changed_inputs(fitted):
    dataset, _, _ = fitted
    report = run_fit(dataset, models=["mese", "irt1"], b1="none")
    assert {r.status for r in report.results} == {"up-to-date"}
    source = dataset / SUB / "anat" / f"{SUB}_inv-2_IRT1.nii.gz"
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    report = run_fit(dataset, models=["mese", "irt1"], b1="none")
    assert {r.model: r.status for r in report.results} == {"mese": "up-to-date", "irt1": "fitted"}
    assert not list((dataset / "derivatives" / "qmrbids").rglob("*.tmp"))  # staging folders are gone


@pytest.fixture
def small_copy(fitted, tmp_path):
    """The phantom dataset (inputs only) with just the VFA and TB1DAM collections."""
    dataset, _, _ = fitted
    copy = tmp_path / "dataset"
    shutil.copytree(dataset, copy, ignore=shutil.ignore_patterns("derivatives", "*MESE*", "*MEGRE*", "*_dwi*"))
    return copy


def test_readiness_errors_list_everything_and_write_nothing(small_copy):
    for k in (2, 3):
        sidecar = small_copy / SUB / "anat" / f"{SUB}_flip-{k}_VFA.json"
        meta = json.loads(sidecar.read_text())
        del meta["RepetitionTimeExcitation"]
        sidecar.write_text(json.dumps(meta))
    with pytest.raises(FitError) as error:
        run_fit(small_copy, models=["vfa"])
    message = str(error.value)
    assert "sub-PHANTOM VFA: RepetitionTimeExcitation missing in flip-2" in message
    assert "sub-PHANTOM VFA: RepetitionTimeExcitation missing in flip-3" in message
    assert not (small_copy / "derivatives").exists()
    assert main(["fit", str(small_copy), "--model", "vfa", "-q"]) == 1


def test_a_broken_image_fails_its_collection_only(small_copy):
    broken = small_copy / SUB / "anat" / f"{SUB}_inv-3_IRT1.nii.gz"
    broken.write_bytes(broken.read_bytes()[:200])
    report = run_fit(small_copy, models=["irt1", "tb1dam"], output_dir=small_copy.parent / "out")
    status = {r.model: r for r in report.results}
    assert status["tb1dam"].status == "fitted" and status["irt1"].status == "failed"
    assert "sub-PHANTOM IRT1" in status["irt1"].error and "\n" not in status["irt1"].error
    assert report.exit_code == 1


def test_cli(small_copy, capsys):
    assert main(["fit", str(small_copy), "--model", "tb1dam", "--model", "vfa", "--jobs", "2", "-q"]) == 0
    assert "sub-PHANTOM VFA [vfa]: fitted" in capsys.readouterr().out
    assert (small_copy / "derivatives" / "qmrbids" / SUB / "anat" / f"{SUB}_desc-vfa_T1map.nii.gz").is_file()
    assert main(["fit", str(small_copy), "--participant-label", "sub-PHANTOM", "--model", "tb1dam", "-q"]) == 0
    assert main(["fit", str(small_copy), "--participant-label", "OTHER", "-q"]) == 1  # nothing to fit
    assert main(["fit", str(small_copy), "--model", "nope"]) == 2
    assert main(["fit", str(small_copy), "--mask", "missing.nii.gz"]) == 2
    assert main(["fit", str(small_copy / "nowhere")]) == 2


def test_dask_cluster_gives_the_serial_maps(small_copy, tmp_path):
    import distributed  # the test extra installs it, as qmrbids[dask] does
    serial = run_fit(small_copy, models=["tb1dam", "vfa", "irt1"], output_dir=tmp_path / "serial")
    with distributed.LocalCluster(n_workers=2, processes=False, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        dask = run_fit(small_copy, models=["tb1dam", "vfa", "irt1"], output_dir=tmp_path / "dask",
                       scheduler=cluster.scheduler_address)
    assert [r.status for r in dask.results] == [r.status for r in serial.results] == ["fitted"] * 3
    maps = sorted((tmp_path / "serial").rglob("*.nii.gz"))
    assert len(maps) == 7
    for path in maps:
        other = tmp_path / "dask" / path.relative_to(tmp_path / "serial")
        np.testing.assert_array_equal(nib.load(str(path)).get_fdata(), nib.load(str(other)).get_fdata())
