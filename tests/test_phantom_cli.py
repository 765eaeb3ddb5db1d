"""The `qmrbids phantom` command: options, errors, determinism, noise and safe output."""

from __future__ import annotations

import csv
import filecmp
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA, load_description

from qmrbids import __version__
from qmrbids.cli import main
from qmrbids.phantom import PhantomSettings, write_phantom
from qmrbids.phantom import build as phantom_build


def _tree(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_version_and_help_from_the_console_script():
    version = subprocess.run([sys.executable, "-m", "qmrbids", "--version"], capture_output=True, text=True)
    assert version.returncode == 0
    assert version.stdout.strip() == f"qmrbids {__version__}"
    helped = subprocess.run([sys.executable, "-m", "qmrbids", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0
    assert "phantom" in helped.stdout and "Write a digital phantom" in helped.stdout and "known truth." in helped.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--vendor", "canon"], "unknown vendor 'canon'"),
        (["--snr", "-1"], "--snr must be 0"),
        (["--protocol", "bogus"], "unknown protocol bogus"),
        (["--b1-range", "0.8"], "--b1-range must be LOW,HIGH"),
        (["--b1-range", "0,1"], "--b1-range values must lie in (0, 3]"),
        (["--field-strength", "7"], "--field-strength must be 1.5 or 3"),
        (["--matrix", "4"], "--matrix must be between"),
        (["--snr", "abc"], "Invalid value for '--snr'"),
        (["--patient-id", "../x"], "--patient-id must be"),
    ],
)
def test_bad_option_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["phantom", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qmrbids: error: ") and message in err, err
    assert not out.exists()


def test_unwritable_output_exits_2_and_writes_nothing(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["phantom", str(blocker / "out"), "--protocol", "vfa", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a-file" in err, err
    assert blocker.read_text() == "not a folder" and _tree(tmp_path) == ["a-file"]


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path, capsys):
    (tmp_path / "dicom").mkdir()
    (tmp_path / "dicom" / "precious.dcm").write_bytes(b"keep me")
    assert main(["phantom", str(tmp_path), "--protocol", "vfa", "-q"]) == 2
    assert "is not a qmrbids phantom" in capsys.readouterr().err
    assert _tree(tmp_path) == ["dicom", "dicom/precious.dcm"]


@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips"])
def test_same_seed_gives_byte_identical_output_and_rerun_is_idempotent(tmp_path, vendor):
    options = ["--snr", "20", "--seed", "7", "--matrix", "32", "--slices", "2", "--vendor", vendor, "-q"]
    assert main(["phantom", str(tmp_path / "a"), *options]) == 0
    assert main(["phantom", str(tmp_path / "b"), *options]) == 0
    files = [p for p in _tree(tmp_path / "a") if (tmp_path / "a" / p).is_file()]
    assert files == [p for p in _tree(tmp_path / "b") if (tmp_path / "b" / p).is_file()]
    assert len(files) > 100
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert not mismatch and not errors
    assert main(["phantom", str(tmp_path / "a"), *options]) == 0  # a re-run replaces it with the same bytes
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert not mismatch and not errors
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["dicom", "truth"]


def test_protocol_data_do_not_depend_on_the_selection_but_on_the_seed(tmp_path):
    common = dict(vendor="ge", snr=30.0, matrix=32, slices=2)
    write_phantom(tmp_path / "all", PhantomSettings(seed=1, **common))
    write_phantom(tmp_path / "one", PhantomSettings(seed=1, protocols=("mts",), **common))
    write_phantom(tmp_path / "other", PhantomSettings(seed=2, protocols=("mts",), **common))
    files = [p for p in _tree(tmp_path / "one") if p.startswith("dicom/") and (tmp_path / "one" / p).is_file()]
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "all", tmp_path / "one", files, shallow=False)
    assert not mismatch and not errors
    a = pydicom.dcmread(tmp_path / "one" / files[0])
    b = pydicom.dcmread(tmp_path / "other" / files[0])
    assert a.StudyInstanceUID != b.StudyInstanceUID
    assert not np.array_equal(a.pixel_array, b.pixel_array)


def test_noise_is_rician_with_sigma_from_snr(tmp_path):
    snr = 50.0
    write_phantom(tmp_path, PhantomSettings(protocols=("mese",), snr=snr, matrix=128, slices=2))
    description = load_description(tmp_path)
    series = description["protocols"]["mese"]["series"][0]
    scale = series["encoding"]["magnitude"]["value_scale"]
    labels = np.asarray(nib.load(tmp_path / "truth/labels.nii.gz").dataobj)
    first_echo = series["volumes"][0]
    data = np.stack([pydicom.dcmread(tmp_path / f).pixel_array.T for f in first_echo["files"]], axis=2) / scale
    sigma = 1.0 / snr
    air = data[labels == 0]
    assert air.size > 10000
    # Rayleigh background: mean sigma*sqrt(pi/2), variance (2 - pi/2) sigma^2
    assert np.mean(air) == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.03)
    assert np.var(air) == pytest.approx((2 - np.pi / 2) * sigma**2, rel=0.06)
    noise_free = np.zeros_like(data)
    write_phantom(tmp_path / "clean", PhantomSettings(protocols=("mese",), matrix=128, slices=2))
    clean_desc = load_description(tmp_path / "clean")
    clean_series = clean_desc["protocols"]["mese"]["series"][0]
    clean_scale = clean_series["encoding"]["magnitude"]["value_scale"]
    noise_free = np.stack([pydicom.dcmread(tmp_path / "clean" / f).pixel_array.T
                           for f in clean_series["volumes"][0]["files"]], axis=2) / clean_scale
    bright = (labels > 0) & (noise_free > 20 * sigma)  # high SNR: Rician is nearly Gaussian there
    residual = data[bright] - noise_free[bright]
    assert np.std(residual) == pytest.approx(sigma, rel=0.06)
    assert abs(np.mean(residual)) < 0.1 * sigma


def test_interrupted_run_leaves_previous_output_untouched(tmp_path, monkeypatch):
    write_phantom(tmp_path, PhantomSettings(protocols=("vfa",), matrix=16, slices=2))
    before = {p: (tmp_path / p).read_bytes() for p in _tree(tmp_path) if (tmp_path / p).is_file()}
    calls = {"n": 0}
    original = phantom_build.SeriesWriter.write

    def interrupted(self, plan):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, plan)

    monkeypatch.setattr(phantom_build.SeriesWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_phantom(tmp_path, PhantomSettings(protocols=("vfa", "irt1"), matrix=16, slices=2))
    after = {p: (tmp_path / p).read_bytes() for p in _tree(tmp_path) if (tmp_path / p).is_file()}
    assert after == before  # no staging folder left, nothing half-written, old output intact


def _reference_rows():
    shared = SHARED_DATA / "reference" / "nist_system_phantom_v1_20C.tsv"
    if not shared.is_file():
        pytest.skip(f"shared reference table absent: {shared}")
    with shared.open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@pytest.mark.parametrize("field_strength", [1.5, 3.0])
def test_truth_spheres_hold_the_published_nist_values(tmp_path, field_strength):
    rows = _reference_rows()
    write_phantom(tmp_path, PhantomSettings(protocols=("vfa",), field_strength=field_strength, slices=2))
    labels = np.asarray(nib.load(tmp_path / "truth/labels.nii.gz").dataobj)
    t1 = np.asarray(nib.load(tmp_path / "truth/T1map.nii.gz").dataobj)
    t2 = np.asarray(nib.load(tmp_path / "truth/T2map.nii.gz").dataobj)
    key = "3T" if field_strength == 3.0 else "1p5T"
    for array, first_label, slice_index in (("nicl2", 1, 0), ("mncl2", 21, 1)):
        for row in rows:
            inside = labels == first_label + int(row["sphere"]) - 1
            assert inside.sum() >= 20, "each sphere needs enough voxels for a region mean"
            assert np.all(inside[:, :, 1 - slice_index] == 0), "one sphere array per slice"
            assert np.allclose(t1[inside], float(row[f"{array}_T1_{key}_ms"]) / 1000, rtol=1e-6)
            assert np.allclose(t2[inside], float(row[f"{array}_T2_{key}_ms"]) / 1000, rtol=1e-6)
    ds = pydicom.dcmread(next((tmp_path / "dicom").rglob("*.IMA")))
    assert float(ds.MagneticFieldStrength) == field_strength
    assert np.all(t1[labels == 0] == 0)


def test_b1_varies_linearly_across_x(tmp_path):
    write_phantom(tmp_path, PhantomSettings(protocols=("tb1dam",), b1_range=(0.7, 1.3), matrix=32, slices=1))
    b1 = np.asarray(nib.load(tmp_path / "truth/B1map.nii.gz").dataobj)
    assert b1[0, :, :] == pytest.approx(0.7) and b1[-1, :, :] == pytest.approx(1.3)
    assert np.allclose(np.diff(b1[:, 0, 0]), 0.6 / 31, rtol=1e-5)
    assert np.all(b1 == b1[:, :1, :1])
