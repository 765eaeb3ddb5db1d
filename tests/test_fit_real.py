"""Our ADC against the scanner's own ADC map on real Siemens XA30 DICOM (dcm2niix's dcm_qa_xa30).

Series 10 is a b = 0 / 2500 s/mm^2 DWI (80 directions), series 11 the ADC map the scanner computed
from it, stored as integers in 1e-6 mm^2/s. qmrbids converts series 10 (and skips 11 as a derived
map), fits it, and the two maps must agree in the brain: voxels our automatic mask keeps and the
scanner did not zero. The median relative difference is printed (measured: -7e-5).
"""

from __future__ import annotations

import subprocess

import dcm2niix
import nibabel as nib
import numpy as np
import pytest
from conftest import SHARED_DATA

from qmrbids.convert import convert
from qmrbids.fit.run import run_fit

XA30 = SHARED_DATA / "dicom" / "dcm_qa_xa30" / "In"


def test_adc_agrees_with_the_scanner(tmp_path, capsys):
    if not XA30.is_dir():
        pytest.skip(f"real vendor DICOM absent: {XA30}")
    report = convert([XA30 / "10_DWI_dir80_PA"], tmp_path / "ds", jobs=1)
    assert report.exit_code == 0
    run = subprocess.run([dcm2niix.bin, "-b", "n", "-z", "n", "-f", "scanner_adc", "-o", str(tmp_path),
                          str(XA30 / "11_DWI_dir80_PA")], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    fitted = run_fit(tmp_path / "ds", models=["dwi"])
    (result,) = fitted.results
    assert result.status == "fitted", result.error
    ours_img, scanner_img = nib.load(str(result.outputs[0])), nib.load(str(tmp_path / "scanner_adc.nii"))
    np.testing.assert_allclose(ours_img.affine, scanner_img.affine, atol=1e-3)
    ours = np.asarray(ours_img.dataobj, dtype=np.float64)
    scanner = np.asarray(scanner_img.dataobj, dtype=np.float64) * 1e-6
    brain = (ours > 0) & (scanner > 0)
    assert brain.sum() > 50_000
    difference = ours[brain] / scanner[brain] - 1.0
    q25, median, q75 = np.percentile(difference, [25, 50, 75])
    with capsys.disabled():
        print(f"\nADC vs scanner in {brain.sum()} brain voxels: median relative difference {median:+.2e}, "
              f"IQR [{q25:+.2e}, {q75:+.2e}]")
    assert abs(median) <= 1e-3
    assert q75 - q25 <= 5e-3
