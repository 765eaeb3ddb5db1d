"""qmrbids metrology on a converted multi-site, multi-session phantom dataset.

The maps are the phantom's true T1 with a planted per-site scale error and per-session noise, so
every statistic can be recomputed here from the maps and the label image directly.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from qmrbids.cli import main
from qmrbids.convert import convert
from qmrbids.phantom import PhantomSettings, write_phantom
from qmrbids.qc.phantom_sessions import measure

SITES = {"siemens": ("PHA", 0.0), "ge": ("PHB", 0.03)}  # vendor: (patient, planted T1 scale error)
SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def phantom_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrology")
    for vendor, (patient, _) in SITES.items():
        for seed in SEEDS:
            write_phantom(root / f"{vendor}{seed}", PhantomSettings(vendor=vendor, protocols=("vfa",), matrix=32, slices=2,
                                                                    seed=seed, patient_id=patient))
    sources = [root / f"{v}{s}" / "dicom" for v in SITES for s in SEEDS]
    assert convert(sources, root / "ds", jobs=2).exit_code == 0
    truth = nib.load(root / "siemens1" / "truth" / "T1map.nii.gz")
    labels = root / "siemens1" / "truth" / "labels.nii.gz"
    rng = np.random.default_rng(0)
    means = {}
    for vendor, (patient, scale) in SITES.items():
        for index, seed in enumerate(SEEDS, start=1):
            data = np.asarray(truth.dataobj) * (1 + scale) * (1 + 0.004 * rng.standard_normal())
            folder = root / "ds" / "derivatives" / "qmrbids" / f"sub-{patient}" / f"ses-0{index}" / "anat"
            folder.mkdir(parents=True)
            stem = folder / f"sub-{patient}_ses-0{index}_desc-VFA_T1map"
            nib.save(nib.Nifti1Image(data.astype(np.float32), truth.affine), f"{stem}.nii.gz")
            stem.with_suffix(".json").write_text('{"Units": "s"}')
            rsquared = stem.with_name(stem.name.replace("VFA_", "VFARsquared_"))  # goodness of fit: not measured
            nib.save(nib.Nifti1Image(np.ones(data.shape, np.float32), truth.affine), f"{rsquared}.nii.gz")
            rsquared.with_suffix(".json").write_text('{"Units": "arbitrary"}')
            means[(vendor, index)] = data
    return root, labels, means


def test_accuracy_repeatability_and_reproducibility_match_direct_computation(phantom_study, tmp_path):
    root, labels_path, maps = phantom_study
    report = measure(root / "ds", "nist-v1", labels_path, temperature_c=20.0, output_dir=tmp_path)
    labels = np.asarray(nib.load(labels_path).dataobj)
    site_of = report.accuracy.groupby("subject")["site"].unique().map(list).to_dict()
    assert site_of == {"PHA": ["Siemens Prisma_fit"], "PHB": ["GE SIGNA Premier"]}  # scanner from the sidecars
    reference = report.accuracy.drop_duplicates("label").set_index("label")["reference"]
    assert len(reference) == 28
    # accuracy: region means of each map, straight from the arrays
    for (vendor, index), data in maps.items():
        patient = SITES[vendor][0]
        rows = report.accuracy[(report.accuracy.subject == patient) & (report.accuracy.session == f"0{index}")]
        for row in rows.itertuples():
            direct = float(np.mean(data[labels == row.label].astype(np.float32).astype(np.float64)))
            assert row.mean == pytest.approx(direct, rel=1e-6)
            assert row.percent_bias == pytest.approx(100 * (direct - row.reference) / row.reference, rel=1e-5, abs=1e-9)
    # repeatability per site: pooled within-region SD over the three sessions
    for vendor, (patient, scale) in SITES.items():
        per_region = [[float(np.mean(maps[(vendor, i)][labels == label].astype(np.float32).astype(np.float64))) for i in (1, 2, 3)]
                      for label in reference.index]
        wsd = np.sqrt(np.mean([np.var(v, ddof=1) for v in per_region]))
        wcv = np.sqrt(np.mean([(np.std(v, ddof=1) / np.mean(v)) ** 2 for v in per_region]))
        site = report.accuracy[report.accuracy.subject == patient]["site"].iloc[0]
        stats = report.summary["repeatability"][f"desc-VFA_T1map @ {site}"]
        assert stats["wsd"] == pytest.approx(wsd, rel=1e-5) and stats["wcv_percent"] == pytest.approx(100 * wcv, rel=1e-5)
        assert stats["rc"] == pytest.approx(2.77 * wsd, rel=1e-3)
    # reproducibility: the planted 3 % scale error of one site shows as its bias
    rdc = report.summary["reproducibility"]["desc-VFA_T1map"]
    bias = rdc["site_percent_bias"]
    assert bias["Siemens Prisma_fit"] == pytest.approx(0.0, abs=0.5)
    assert bias["GE SIGNA Premier"] == pytest.approx(3.0, abs=0.5)
    assert report.summary["linearity"]["sub-PHB ses-01 desc-VFA_T1map"]["slope"] == pytest.approx(1.03, abs=0.01)
    assert not any("temperature" in w for w in report.warnings)
    assert any("serial" in w for w in report.warnings)
    written = {p.name for p in tmp_path.iterdir()}
    assert written == {"metrology_accuracy.tsv", "metrology_repeatability.tsv", "metrology_reproducibility.tsv",
                       "metrology.json"}
    assert len(pd.read_csv(tmp_path / "metrology_accuracy.tsv", sep="\t")) == 6 * 28


def test_cli_writes_tables_and_reports_missing_inputs(phantom_study, tmp_path, capsys):
    root, labels, _ = phantom_study
    code = main(["metrology", str(root / "ds"), "--labels", str(labels), "-o", str(tmp_path), "--format", "json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert "desc-VFA_T1map" in out["summary"]["reproducibility"]
    assert main(["metrology", str(root / "ds"), "-o", str(tmp_path)]) == 2  # no label image anywhere
    assert "give --labels" in capsys.readouterr().err
    assert main(["metrology", str(root / "ds"), "--labels", str(labels), "--reference", "nist-v9"]) == 2


def test_qc_report_shows_the_metrology(phantom_study, tmp_path):
    root, labels, _ = phantom_study
    code = main(["qc", str(root / "ds"), "-o", str(tmp_path), "--phantom-labels", str(labels), "-q"])
    assert code in (0, 1)  # no protocol: the metrics decide; metrology never fails the run
    page = (tmp_path / "report.html").read_text()
    section = page[page.index('<section id="metrology">'):]
    section = section[:section.index("</section>")]
    assert "desc-VFA_T1map" in section and "data:image/png;base64," in section and "repeatability" in section
    assert section.count("<tr>") >= 1 + 6  # header + one row per session
    assert (tmp_path / "metrology_accuracy.tsv").is_file()
