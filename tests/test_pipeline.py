"""qmrbids run: every stage on a small phantom, errors in one stage reported while the rest go on."""

from __future__ import annotations

import json

from qmrbids.cli import main
from qmrbids.phantom import PhantomSettings, write_phantom
from qmrbids.pipeline import phantom_labels, run_pipeline


def test_run_then_rerun_and_a_broken_series(tmp_path, capsys):
    write_phantom(tmp_path / "ph", PhantomSettings(protocols=("vfa", "tb1dam", "mese"), matrix=32, slices=2))
    source = tmp_path / "ph" / "dicom"
    assert phantom_labels([source]) == tmp_path / "ph" / "truth" / "labels.nii.gz"
    report = run_pipeline([source], tmp_path / "ds", jobs=2)
    stages = {s.name: s for s in report.stages}
    assert [s.name for s in report.stages] == ["convert", "validate", "fit", "qc", "metrology"]
    assert report.exit_code == 0, [(s.name, s.summary, s.messages) for s in report.stages]
    assert stages["convert"].summary == "6 converted" and stages["validate"].summary.startswith("0 errors")
    assert stages["fit"].summary.startswith("3 collections")  # tb1dam, vfa (B1-corrected), mese
    assert report.report.is_file()
    metrology = json.loads((report.report.parent / "metrology.json").read_text())
    vfa = metrology["summary"]["linearity"]["sub-PHANTOM desc-vfa_T1map"]
    assert abs(vfa["slope"] - 1) < 0.02 and vfa["r_squared"] > 0.999  # noise-free: B1-corrected DESPOT1 is exact
    # the same run again: nothing to do, nothing rewritten
    snapshot = {p: p.stat().st_mtime_ns for p in (tmp_path / "ds").rglob("*.nii.gz")}
    again = run_pipeline([source], tmp_path / "ds", jobs=2)
    assert {s.name: s.summary for s in again.stages}["convert"] == "6 up-to-date"
    assert snapshot == {p: p.stat().st_mtime_ns for p in (tmp_path / "ds").rglob("*.nii.gz")}
    # a truncated file: convert reports its series, the others go through every stage, exit code 1
    broken = next(source.glob("*_vfa_fa10")) / "IM_0001.IMA"
    broken.write_bytes(broken.read_bytes()[:-500])
    code = main(["run", str(source), "-o", str(tmp_path / "ds2"), "-q", "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["exit_code"] == 1
    by_name = {s["name"]: s for s in out["stages"]}
    assert by_name["convert"]["status"] == "errors" and any("truncated" in m for m in by_name["convert"]["messages"])
    assert by_name["qc"]["status"] in ("ok", "errors") and out["report"]
    assert (tmp_path / "ds2" / "derivatives" / "qmrbids" / "sub-PHANTOM" / "anat" / "sub-PHANTOM_desc-mese_T2map.nii.gz").is_file()
