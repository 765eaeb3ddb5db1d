"""qmrbids qc and protocol init on small multi-site phantom datasets converted by qmrbids."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from qc_datasets import (BAD_TR_MS, MISSING_ECHO, NOISY_SNR, PLANTED_HIGH, PLANTED_LOW, SITE_B_FLIP, SNR, qc_clean,
                         qc_deviant, with_site_override)

from qmrbids.cli import main
from qmrbids.qc import ProtocolError, draft_protocol, load_protocol, run_qc, write_outputs
from qmrbids.qc.protocol import protocol_from_data
from qmrbids.resources import data_path

__all__ = ["qc_clean", "qc_deviant"]  # fixtures used below


@pytest.fixture(scope="module")
def deviant_result(qc_deviant):
    dataset, protocol_path, _ = qc_deviant
    return run_qc(dataset, load_protocol(protocol_path))


def _value_scale(phantom_dir, protocol: str) -> float:
    description = json.loads((phantom_dir / "truth" / "phantom.json").read_text())
    return description["protocols"][protocol]["series"][0]["encoding"]["magnitude"]["value_scale"]


def test_clean_dataset_reports_nothing(qc_clean, tmp_path):
    dataset, protocol_path = qc_clean
    result = run_qc(dataset, load_protocol(protocol_path))
    assert result.findings == []
    assert [r for r in result.records if r.status in ("warn", "fail")] == []
    assert result.problems == [] and result.exit_code == 0
    assert {(r.site, r.subject, r.session, r.compliance, r.qc, r.missing) for r in result.rows} == {
        ("A", "S01", "1", "pass", "pass", 0), ("A", "S01", "2", "pass", "pass", 0), ("B", "S02", "1", "pass", "pass", 0)}
    assert main(["qc", str(dataset), "--protocol", str(protocol_path), "-o", str(tmp_path), "-q"]) == 0
    assert "Summary: nothing needs attention" in (tmp_path / "report.html").read_text()


def test_wrong_tr_and_missing_echo(deviant_result):
    findings = [f for f in deviant_result.findings if (f.subject, f.session) == ("S01", "2")]
    missing = [f for f in findings if f.kind == "missing"]
    assert [(f.series, f.status, f.site) for f in missing] == [(MISSING_ECHO, "fail", "A")]
    deviations = [f for f in findings if f.kind == "deviation"]
    assert {f.parameter for f in deviations} == {"RepetitionTime"}
    assert {f.series for f in deviations} == {f"echo-{n}_MESE" for n in range(1, 33)} - {MISSING_ECHO}
    assert {(f.expected, f.found, f.status) for f in deviations} == {("4 ± 1%", f"{BAD_TR_MS / 1000:g}", "fail")}
    assert not [f for f in deviant_result.findings if (f.subject, f.session) in (("S01", "1"), ("S03", "1"))]


def test_site_with_another_flip_angle(deviant_result, qc_deviant, tmp_path):
    site_b = [f for f in deviant_result.findings if f.site == "B"]
    assert [(f.subject, f.series, f.parameter, f.expected, f.found, f.status) for f in site_b] == [
        ("S02", "flip-1_VFA", "FlipAngle", "3 ± 0.5", f"{SITE_B_FLIP:g}", "fail")]
    dataset, protocol_path, _ = qc_deviant
    override = load_protocol(with_site_override(protocol_path, tmp_path / "sites.yaml"))
    result = run_qc(dataset, override)
    assert not [f for f in result.findings if f.site == "B"]
    assert len(result.findings) == len(deviant_result.findings) - 1  # site A still expects 3 degrees


def test_noisy_series_fails_snr_with_true_noise(deviant_result, qc_deviant):
    _, _, planted = qc_deviant
    snr = {(r.subject, r.series): r for r in deviant_result.records if r.name == "snr"}
    sigma = {(r.subject, r.series): r.value for r in deviant_result.records if r.name == "noise_sigma"}
    flagged = {(r.subject, r.series, r.name): r.status for r in deviant_result.records if r.status in ("warn", "fail")}
    # flip-1 (3 degrees) has a true SNR of 0.3 here, at the floor of any SNR estimate: warn or fail
    assert flagged.pop(("S03", "flip-1_VFA", "snr")) in ("warn", "fail")
    assert flagged == {("S03", "flip-2_VFA", "snr"): "fail", ("S03", "flip-3_VFA", "snr"): "fail",
                       ("S01", "T1map", "out_of_range_fraction"): "fail"}
    # the noise estimate is the phantom's sigma (value_scale / SNR), and SNR falls by SNR's ratio
    expected = _value_scale(planted["noisy"], "vfa") / NOISY_SNR
    for n in (1, 2, 3):
        assert sigma[("S03", f"flip-{n}_VFA")] == pytest.approx(expected, rel=0.1)
    ratio = snr[("S03", "flip-3_VFA")].value / snr[("S01", "flip-3_VFA")].value
    assert ratio == pytest.approx(NOISY_SNR / SNR, rel=0.3)
    assert snr[("S03", "flip-3_VFA")].threshold.startswith("fail < ")


def test_map_with_out_of_range_voxels(deviant_result, qc_deviant):
    _, _, planted = qc_deviant
    maps = {(r.map_kind, r.name): r for r in deviant_result.records if r.kind == "map"}
    t1 = maps[("T1map", "out_of_range_fraction")]
    assert t1.value == pytest.approx((PLANTED_LOW + PLANTED_HIGH) / planted["t1_nonzero"])
    assert (t1.status, t1.subject, t1.session, t1.unit) == ("fail", "S01", "1", "1")
    assert maps[("T1map", "residual_median")].value == pytest.approx(0.02)
    for kind in ("T2map", "ADC"):  # truth maps: nothing out of range
        assert (maps[(kind, "out_of_range_fraction")].value, maps[(kind, "out_of_range_fraction")].status) == (0.0, "pass")
    assert maps[("ADC", "median")].unit == "mm^2/s"
    assert [r.maps_fitted for r in deviant_result.rows if r.subject == "S01"] == ["T1map", "ADC, T2map"]


def test_mriqc_values_are_read_not_recomputed(deviant_result):
    records = {r.name: r for r in deviant_result.records if r.path.endswith("sub-S01_ses-1_flip-3_VFA.nii.gz")}
    assert (records["snr"].value, records["snr"].source) == (12.5, "mriqc")
    assert (records["efc"].value, records["efc"].source) == (0.5, "mriqc")
    assert records["ghosting_ratio"].source == "qmrbids"


def test_management_report_and_outputs(deviant_result, tmp_path):
    rows = {(r.subject, r.session): r for r in deviant_result.rows}
    assert rows[("S01", "2")].missing_series == MISSING_ECHO and rows[("S01", "2")].compliance == "fail"
    assert (rows[("S03", "1")].compliance, rows[("S03", "1")].qc) == ("pass", "fail")
    assert rows[("S03", "1")].qc_failures + rows[("S03", "1")].qc_warnings == 3  # the three noisy VFA images
    assert {(t.site, t.sessions, t.sessions_compliant, t.missing) for t in deviant_result.totals} == {
        ("A", 3, 2, 1), ("B", 1, 0, 0)}
    written = {p.name for fmt in ("html", "json", "tsv") for p in write_outputs(deviant_result, tmp_path, fmt)}
    assert written == {"report.html", "management.tsv", "qc.json", "metrics.tsv", "compliance.tsv"}
    report = json.loads((tmp_path / "qc.json").read_text())
    assert report["summary"]["missing"] == 1 and report["exit_code"] == 1
    assert (tmp_path / "metrics.tsv").read_text().splitlines()[0].split("\t")[:4] == ["site", "subject", "session", "series"]
    assert "site_total\tA" in (tmp_path / "management.tsv").read_text()


def test_cli_exit_codes(qc_deviant, tmp_path, capsys):
    dataset, protocol_path, _ = qc_deviant
    assert main(["qc", str(dataset), "--protocol", str(protocol_path), "-o", str(tmp_path), "--format", "json"]) == 1
    err = capsys.readouterr().err
    assert "FlipAngle: expected 3 ± 0.5, found 4" in err and "missing (missing)" in err
    assert main(["qc", str(dataset), "--participant-label", "S02", "-o", str(tmp_path / "s02")]) == 0  # no protocol
    assert main(["qc", str(tmp_path / "nowhere")]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("Name: x\nseries: {flip-1_VFA: {parameters: {FlipAngle: {value: 3, allowed: [3]}}}}\n")
    assert main(["qc", str(dataset), "--protocol", str(bad)]) == 2
    assert "bad.yaml: series/flip-1_VFA/parameters/FlipAngle" in capsys.readouterr().err


def test_protocol_init_round_trip(qc_clean, tmp_path):
    dataset, _ = qc_clean
    out = tmp_path / "drafted.yaml"
    assert main(["protocol", "init", str(dataset), "--participant-label", "S01", "--session-label", "2", "-o", str(out)]) == 0
    protocol = load_protocol(out)
    series = protocol.data["series"]
    assert len(series) == 35 and series["flip-2_VFA"]["parameters"]["FlipAngle"] == {"value": 10, "tolerance": 0.5}
    assert series["echo-3_MESE"]["parameters"]["EchoTime"]["value"] == pytest.approx(0.03)
    assert protocol.data["defaults"]["Manufacturer"] == {"allowed": ["Siemens"]}
    result = run_qc(dataset, protocol)
    assert result.findings == [] and result.exit_code == 0
    assert main(["protocol", "init", str(dataset), "--participant-label", "S01", "-o", str(out)]) == 2  # two sessions
    assert draft_protocol(dataset, "S02")["series"].keys() == series.keys()


def test_shipped_protocols_validate_and_schema_rejects_errors(phantom_bids):
    for path in sorted(data_path("validators", "protocols").glob("*.yaml")):
        if path.name != "init.yaml":
            load_protocol(path)
    with pytest.raises(ProtocolError, match="series/VFA: 'level' was unexpected|Additional properties"):
        protocol_from_data({"Name": "x", "series": {"VFA": {"level": "fail"}}}, "inline")
    dataset, _ = phantom_bids("siemens")  # the example study converted: complies with the example protocol
    result = run_qc(dataset, load_protocol(data_path("validators", "protocols", "phantom-study.yaml")))
    assert result.findings == [] and result.exit_code == 0
    assert not math.isfinite(next(r.value for r in result.records if r.name == "snr"))  # noise-free: infinite SNR
    assert yaml.safe_load(data_path("validators", "qc", "metrics.yaml").read_text())["maps"]["T1map"]["ranges"]["s"]
