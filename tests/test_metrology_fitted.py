"""Metrology on maps qmrbids fitted itself: two vendors x two B1 ranges (four sites), two noisy
sessions each; every statistic is recomputed here from the fitted maps and the label image."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import stats

from qmrbids.convert import convert
from qmrbids.fit.run import run_fit
from qmrbids.phantom import PhantomSettings, write_phantom
from qmrbids.qc.phantom_sessions import labels_on_grid, measure

SITES = {("siemens", (1.0, 1.0)): "SA", ("siemens", (0.8, 1.2)): "SB", ("ge", (1.0, 1.0)): "GA", ("ge", (0.8, 1.2)): "GB"}
SEEDS = (1, 2)


@pytest.fixture(scope="module")
def fitted_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("fitted")
    for (vendor, b1), patient in SITES.items():
        for seed in SEEDS:
            write_phantom(root / f"{patient}{seed}", PhantomSettings(
                vendor=vendor, protocols=("vfa", "tb1dam", "mese"), matrix=32, slices=2, seed=seed, snr=200, b1_range=b1,
                patient_id=patient))
    assert convert([root / f"{p}{s}" / "dicom" for p in SITES.values() for s in SEEDS], root / "ds", jobs=2).exit_code == 0
    (root / "ds" / "participants.tsv").write_text(
        "participant_id\tsite\n" + "".join(f"sub-{p}\t{p}\n" for p in SITES.values()))
    assert run_fit(root / "ds", jobs=2).exit_code == 0
    return root


def _region_means(root, patient, session, labels_path, method):
    image = nib.load(root / "ds" / "derivatives" / "qmrbids" / f"sub-{patient}" / f"ses-{session}" / "anat"
                     / f"sub-{patient}_ses-{session}_{method}.nii.gz")
    data = np.asarray(image.dataobj, dtype=np.float64)
    labels = labels_on_grid(labels_path, image)
    return {label: float(data[labels == label].mean()) for label in (*range(1, 15), *range(21, 35))}


@pytest.mark.parametrize("method", ["desc-mese_T2map", "desc-vfa_T1map"])
def test_statistics_of_fitted_maps_match_direct_computation(fitted_study, tmp_path, method):
    root = fitted_study
    labels_path = root / "SA1" / "truth" / "labels.nii.gz"
    report = measure(root / "ds", "nist-v1", labels_path, temperature_c=20.0, output_dir=tmp_path)
    assert set(report.accuracy["method"]) == {"desc-mese_T2map", "desc-vfa_T1map"}  # R-squared maps left out
    means = {(p, s): _region_means(root, p, f"0{s}", labels_path, method) for p in SITES.values() for s in SEEDS}
    acc = report.accuracy[report.accuracy.method == method]
    reference = acc.drop_duplicates("label").set_index("label")["reference"].to_dict()
    for row in acc.itertuples():  # accuracy: region means of the fitted maps
        assert row.mean == pytest.approx(means[(row.subject, int(row.session))][row.label], rel=1e-9)
        assert row.percent_bias == pytest.approx(100 * (row.mean - row.reference) / row.reference, rel=1e-9)
    if method == "desc-mese_T2map":  # MESE T2 is exact up to noise in the phantom
        assert acc[acc.in_sensitive_range]["percent_bias"].abs().median() < 1.0
    # repeatability per site over its two sessions, written out
    for patient in SITES.values():
        pairs = np.array([[means[(patient, s)][label] for s in SEEDS] for label in reference])
        wsd = np.sqrt(np.mean(np.var(pairs, axis=1, ddof=1)))
        got = report.summary["repeatability"][f"{method} @ {patient}"]
        assert got["wsd"] == pytest.approx(wsd, rel=1e-9) and got["df"] == len(reference)
        low, high = (2.77 * wsd * np.sqrt(len(reference) / stats.chi2.ppf(q, len(reference))) for q in (0.975, 0.025))
        assert got["rc_ci95"] == pytest.approx([low, high], rel=1e-3)
        diff = pairs[:, 1] - pairs[:, 0]
        assert got["ba_bias"] == pytest.approx(diff.mean(), rel=1e-9, abs=1e-12)
    # reproducibility across the four sites: site means per region, ICC(A,1) written out
    table = np.array([[np.mean([means[(p, s)][label] for s in SEEDS]) for p in sorted(SITES.values())]
                      for label in reference])
    n, k = table.shape
    grand, rows, cols = table.mean(), table.mean(axis=1), table.mean(axis=0)
    msr, msc = k * ((rows - grand) ** 2).sum() / (n - 1), n * ((cols - grand) ** 2).sum() / (k - 1)
    mse = ((table - rows[:, None] - cols[None, :] + grand) ** 2).sum() / ((n - 1) * (k - 1))
    rdc = report.summary["reproducibility"][method]
    assert rdc["icc_a1"] == pytest.approx((msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n), rel=1e-9)
    assert sorted(rdc["sites"]) == sorted(SITES.values()) and set(rdc["site_percent_bias"]) == set(SITES.values())
    assert set(report.accuracy["temperature_c"]) == {20.0}
    assert any("serial" in w for w in report.warnings)
