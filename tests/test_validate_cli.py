"""`qmrbids validate`: exit codes, report formats, options; plus the expression compiler's semantics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from conftest import SHARED_DATA
from qmrbids.cli import main
from qmrbids.validate.expressions import compile_expression

EXAMPLES = SHARED_DATA / "bids-examples"
needs_examples = pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"{EXAMPLES} (the BIDS examples) is absent")
CONFIG = str(EXAMPLES / "default-config.json")


@pytest.fixture
def broken(tmp_path) -> Path:
    """qmri_vfa with one flip angle removed (a qMRI error) and a stray file (an official error)."""
    ds = Path(shutil.copytree(EXAMPLES / "qmri_vfa", tmp_path / "ds"))
    for p in ds.glob("sub-01/anat/sub-01_flip-2_VFA.*"):
        p.unlink()
    (ds / "notes.txt").write_text("x\n")
    return ds


@needs_examples
def test_exit_codes(broken, capsys):
    clean = str(EXAMPLES / "qmri_vfa")
    assert main(["validate", clean, "--config", CONFIG, "--ignore-nifti-headers"]) == 0
    assert main(["validate", clean, "--config", CONFIG, "--fail-on", "warning"]) == 1
    assert main(["validate", str(broken), "--config", CONFIG]) == 1
    assert main(["validate", str(broken), "--config", CONFIG, "--ignore", "NOT_INCLUDED",
                 "--ignore", "QMR_VFA_TOO_FEW_FLIP_ANGLES"]) == 0
    assert main(["validate", str(broken), "--schema-version", "0.0.9"]) == 2
    assert "known versions: 0.1.0" in capsys.readouterr().err
    assert main(["validate", str(broken / "missing")]) == 2
    assert main(["validate", str(broken), "--config", str(broken / "notes.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("qmrbids: error:") == 2 and "Traceback" not in err


@needs_examples
def test_the_executable_exits_with_the_report_complete(broken, tmp_path):
    """``python -m qmrbids`` (the console script's path) skips the final collection, not the exit code or output."""
    out = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "qmrbids", "validate", str(broken), "--config", CONFIG,
                           "--format", "json", "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert "QMR_VFA_TOO_FEW_FLIP_ANGLES" in json.loads(out.read_text())["summary"]["codes"]
    printed = subprocess.run([sys.executable, "-m", "qmrbids", "validate", str(EXAMPLES / "qmri_vfa"), "--config",
                              CONFIG], capture_output=True, text=True)
    assert printed.returncode == 0 and re.search(r"19 files: 0 errors, \d+ warnings\n$", printed.stdout), printed.stdout


@needs_examples
def test_strict_official_drops_qmri_rules(broken, capsys):
    assert main(["validate", str(broken), "--config", CONFIG, "--strict-official", "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["qmri_schema_version"] is None
    assert set(report["summary"]["codes"]) >= {"NOT_INCLUDED"}
    assert not any(code.startswith("QMR_") for code in report["summary"]["codes"])


@needs_examples
def test_json_report(broken, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["validate", str(broken), "--config", CONFIG, "--format", "json", "-o", str(out)]) == 1
    assert capsys.readouterr().out == ""
    report = json.loads(out.read_text())
    assert report["format_version"] == 1
    assert report["tool"] == {"name": "qmrbids", "version": __import__("qmrbids").__version__}
    assert (report["bids_version"], report["bids_schema_version"], report["qmri_schema_version"]) == ("1.11.2", "2.0.1", "0.1.0")
    errors = {(i["code"], i["path"]) for i in report["issues"] if i["level"] == "error"}
    assert errors == {("NOT_INCLUDED", "/notes.txt"),
                      ("QMR_VFA_TOO_FEW_FLIP_ANGLES", "/sub-01/anat/sub-01_flip-1_VFA.nii.gz")}
    assert report["summary"]["error"] == 2
    assert report["summary"]["warning"] == sum(1 for i in report["issues"] if i["level"] == "warning")


def test_json_issues_are_each_issue_as_a_dict():
    """The templated JSON writer gives exactly ``Issue.to_dict`` per issue, empty paths and rows included."""
    import io

    from qmrbids.validate.engine import Report
    from qmrbids.validate.issues import Issue
    from qmrbids.validate.reporters import write_json

    issues = [Issue("A", "error", "/x\u00e9\"y.json", "m \\ n", key="K", row=3, rule_id="r"),
              Issue("A", "error", "/z.json", "m \\ n", key="K", row=3, rule_id="r"),
              Issue("B", "warning", "", "no path", dataset="derivatives/d")]
    out = io.StringIO()
    write_json(Report("", issues, "1", "2", None, 3), out)
    assert json.loads(out.getvalue())["issues"] == [i.to_dict() for i in issues]
    assert __import__("gc").isenabled()   # the collector paused for the writing is running again


@needs_examples
def test_sarif_and_junit(broken, capsys):
    main(["validate", str(broken), "--config", CONFIG, "--format", "sarif"])
    sarif = json.loads(capsys.readouterr().out)
    assert sarif["version"] == "2.1.0"
    run = sarif["runs"][0]
    assert run["tool"]["driver"]["name"] == "qmrbids"
    rules = [r["id"] for r in run["tool"]["driver"]["rules"]]
    errors = [r for r in run["results"] if r["level"] == "error"]
    assert {(r["ruleId"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]) for r in errors} == {
        ("NOT_INCLUDED", "notes.txt"), ("QMR_VFA_TOO_FEW_FLIP_ANGLES", "sub-01/anat/sub-01_flip-1_VFA.nii.gz")}
    assert all(rules[r["ruleIndex"]] == r["ruleId"] for r in run["results"])
    main(["validate", str(broken), "--config", CONFIG, "--format", "junit"])
    suites = ET.fromstring(capsys.readouterr().out)
    suite = suites.find("testsuite")
    failed = {case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None}
    assert failed == {"/notes.txt", "/sub-01/anat/sub-01_flip-1_VFA.nii.gz"}
    assert suite.get("failures") == "2"


@needs_examples
def test_text_report_groups_by_code(broken, capsys):
    main(["validate", str(broken), "--config", CONFIG])
    text = capsys.readouterr().out
    assert "ERROR NOT_INCLUDED (1 file)" in text and "    /notes.txt" in text
    assert "\033[" not in text  # no colour when not on a terminal
    assert re.search(r"qMRI extension 0.1.0; \d+ files: 2 errors, \d+ warnings$", text.rstrip().splitlines()[-1])


@needs_examples
def test_recursive_reports_derivatives_separately(tmp_path, capsys):
    ds = Path(shutil.copytree(EXAMPLES / "qmri_vfa", tmp_path / "ds"))
    (ds / "derivatives" / "qMRLab" / "sub-01" / "anat" / "stray.txt").write_text("x")
    main(["validate", str(ds), "--config", CONFIG, "--format", "json", "--recursive", "--strict-official"])
    report = json.loads(capsys.readouterr().out)
    assert [d["dataset"] for d in report["datasets"]] == ["", "derivatives/qMRLab"]
    # The example's derivative really lacks required map metadata (bids-validator-deno -r agrees).
    official = {(code, f"/sub-01/{folder}/sub-01_{suffix}.{ext}")
                for code, ext in (("JSON_SCHEMA_VALIDATION_ERROR", "json"), ("SIDECAR_KEY_REQUIRED", "nii.gz"))
                for folder, suffix in (("anat", "M0map"), ("anat", "T1map"), ("fmap", "TB1map"))}
    assert {(i["code"], i["path"]) for i in report["issues"] if i["level"] == "error"} == {
        *official, ("NOT_INCLUDED", "/sub-01/anat/stray.txt")}
    assert {i["dataset"] for i in report["issues"] if i["level"] == "error"} == {"derivatives/qMRLab"}


class _Ctx:
    def __init__(self, **values):
        self.values = values

    def lookup(self, name):
        return self.values.get(name)

    def exists(self, paths, rule="dataset"):
        return len(paths) if isinstance(paths, list) else 1


@pytest.mark.parametrize("source, context, expected", [
    ('suffix == "VFA"', {"suffix": "VFA"}, True),
    ("sidecar.EchoTime < 1", {"sidecar": {"EchoTime": 0.01}}, True),
    ("sidecar.EchoTime < 1", {"sidecar": {}}, False),              # undefined < 1 is false in JavaScript
    ("sidecar.X.Y == 1", {"sidecar": {}}, None),                    # property of undefined throws -> null
    ("sidecar.TR == 2", {"sidecar": {"TR": "2"}}, True),            # loose ==
    ("!sidecar.List", {"sidecar": {"List": []}}, False),            # [] is truthy
    ('"flip" in entities', {"entities": {"flip": "1"}}, True),
    ("length(unique(collection)) >= 2", {"collection": [3, 3]}, False),
    ('intersects([suffix], ["T1map", "T2map"])', {"suffix": "T2map"}, ["T2map"]),
    ('match(extension, "^\\.nii(\\.gz)?$")', {"extension": ".nii.gz"}, True),
    ('match(extension, "^\\.nii(\\.gz)?$")', {"extension": ".nii.bz2"}, False),
    ("sorted(intersects(a, b))", {"a": None, "b": ["x"]}, None),    # sorted(false) throws
    ("exists(sidecar.IntendedFor, 'subject') + 1 == 3", {"sidecar": {"IntendedFor": ["a", "b"]}}, True),
    ('type(sidecar.EchoTime) == "array"', {"sidecar": {"EchoTime": [0.01, 0.02]}}, True),
    ("nifti_header.dim[0] < 4 || x", {"nifti_header": {"dim": [3, 64]}}, True),
    ('sidecar.X + 1 == "a1"', {"sidecar": {"X": "a"}}, True),       # + joins strings
    ("sidecar.X - 1 == 0", {"sidecar": {"X": True}}, True),         # true is 1
    ("sidecar.X + 1 > 0", {"sidecar": {}}, False),                   # undefined + 1 is NaN
    ("length(path) - 3 == 4 && substr(path, 0, 2) == 'ab'", {"path": "abcdefg"}, True),
])
def test_expression_semantics(source, context, expected):
    assert compile_expression(source)(_Ctx(**context)) == expected


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    import qmrbids.validate as validate_package

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(validate_package, "validate_dataset", interrupted)
    assert main(["validate", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip() == "qmrbids: interrupted; nothing partial was left behind"


def test_shipped_parse_trees_are_those_of_the_installed_parser():
    """validators/bids-expressions.json holds exactly bidsschematools' parse of every shipped expression.

    If this fails after an upgrade or a rule change, regenerate the file with
    ``qmrbids.validate.schema_rules.write_parsed_expressions()``.
    """
    from importlib.metadata import version

    from bidsschematools import expressions as ast

    from qmrbids.resources import data_path
    from qmrbids.validate.expressions import PARSED_CACHE, from_data, parse, to_data
    from qmrbids.validate.schema_rules import shipped_expressions

    shipped = json.loads(data_path(*PARSED_CACHE).read_text())
    assert shipped["bidsschematools"] == version("bidsschematools")
    assert set(shipped["expressions"]) == shipped_expressions()
    for source, tree in shipped["expressions"].items():
        assert to_data(ast.parse(source)) == tree, source
        assert str(from_data(tree)) == str(ast.parse(source)), source
    assert to_data(parse('suffix == "VFA"')) == ["BinOp", "suffix", "==", '"VFA"']


@needs_examples
def test_fixed_values_hold_in_every_loaded_context():
    """Selectors are decided per kind of file on the values ``fixed_value`` promises; load_context keeps them."""
    from qmrbids.validate.context import NOT_FIXED, DatasetContext, FileReader, fixed_value
    from qmrbids.validate.index import index_dataset
    from qmrbids.validate.official import iter_contexts, load_context
    from qmrbids.validate.rules import PER_FILE_NAMES
    from qmrbids.validate.schema_rules import official_schema

    prepared = official_schema()
    checked = set()
    for name in ("ds001", "asl001", "dwi_deriv", "qmri_mp2rage", "qmri_mpm"):
        index = index_dataset(EXAMPLES / name)
        ds = DatasetContext(tree=index.tree, reader=FileReader(EXAMPLES / name), schema=prepared.schema,
                            description={}, subjects={})
        for ctx in iter_contexts(ds, prepared, index.tree):
            if ctx.directory:
                continue
            load_context(ctx, prepared, read_headers=True)
            for key in PER_FILE_NAMES - {"exists()"}:
                fixed = fixed_value(key, ctx.extension)
                if fixed is not NOT_FIXED:
                    assert ctx.lookup(key) == fixed, (ctx.path, key)
                    checked.add((key, ctx.extension))
    assert {("json", ".nii.gz"), ("sidecar", ".json"), ("columns", ".json"), ("gzip", ".json"),
            ("nifti_header", ".tsv")} <= checked


@pytest.mark.parametrize("text, expected", [("12abc", 12.0), (" -.5e1x", -5.0), ("1e", 1.0), ("+Infinity", float("inf")),
                                            ("0x10", 0.0), ("abc", None), ("", None)])
def test_table_bounds_read_numbers_as_javascript_parse_float(text, expected):
    from qmrbids.validate.tables import js_parse_float

    value = js_parse_float(text)
    assert (value != value) if expected is None else value == expected
