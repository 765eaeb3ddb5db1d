"""The qMRI extension reports the defects that break fits, which the official rules let through."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SHARED_DATA, bids_validator_errors
from qmrbids.resources import data_path
from qmrbids.validate import Options, validate_dataset
from qmrbids.schema.bids import bids_schema
from qmrbids.validate.qmri import ObjectSchema, UnknownVersion, known_versions
from qmrbids.validate.quick_accept import acceptor

EXAMPLES = SHARED_DATA / "bids-examples"
needs_examples = pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"{EXAMPLES} (the BIDS examples) is absent")
NO_HEADERS = {"read_nifti_headers": False}


def _copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXAMPLES / name, tmp_path / name, symlinks=True))


def _edit(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _codes(dataset: Path, **options) -> dict[str, set[str]]:
    report = validate_dataset(dataset, Options(**{**NO_HEADERS, **options}))
    out: dict[str, set[str]] = {}
    for issue in report.all_issues():
        if issue.code.startswith("QMR_"):
            out.setdefault(issue.code, set()).add("/".join(p for p in (issue.dataset, issue.path.strip("/")) if p))
    return out


# Defects the examples really have (read from their sidecars): TB1TFL EchoTime 1.97 (ms),
# SA2RAGE inv-1 InversionTime 45 (ms), a scanner T1map without a sidecar giving Units.
EXAMPLE_FINDINGS = {
    "qmri_mp2rage": {"QMR_MAP_UNITS": {"sub-1/anat/sub-1_T1map.nii"}},
    "qmri_sa2rage": {"QMR_TIME_NOT_IN_SECONDS": {"sub-01/fmap/sub-01_flip-1_inv-1_TB1SRGE.nii.gz"}},
    "qmri_tb1tfl": {"QMR_TIME_NOT_IN_SECONDS": {"sub-01/fmap/sub-01_acq-anat_TB1TFL.nii.gz",
                                                "sub-01/fmap/sub-01_acq-famp_TB1TFL.nii.gz"}},
}


@needs_examples
@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()) if EXAMPLES.is_dir() else [])
def test_examples_qmri_findings(name):
    assert _codes(EXAMPLES / name) == EXAMPLE_FINDINGS.get(name, {})


@needs_examples
def test_vfa_with_one_flip_angle(tmp_path):
    ds = _copy("qmri_vfa", tmp_path)
    for p in (ds / "sub-01" / "anat").glob("sub-01_flip-2_VFA.*"):
        p.unlink()
    assert _codes(ds) == {"QMR_VFA_TOO_FEW_FLIP_ANGLES": {"sub-01/anat/sub-01_flip-1_VFA.nii.gz"}}
    assert _codes(ds, strict_official=True) == {}


@needs_examples
def test_vfa_with_equal_flip_angles(tmp_path):
    ds = _copy("qmri_vfa", tmp_path)
    for p in (ds / "sub-01" / "anat").glob("*_VFA.json"):
        _edit(p, FlipAngle=3)
    assert set(_codes(ds)) == {"QMR_VFA_TOO_FEW_FLIP_ANGLES"}


@needs_examples
def test_times_in_milliseconds(tmp_path):
    ds = _copy("qmri_mese", tmp_path)
    first = sorted((ds / "sub-01" / "anat").glob("*_MESE.json"))[0]
    _edit(first, EchoTime=10.0)
    irt1 = _copy("qmri_irt1", tmp_path)
    inv = sorted((irt1 / "sub-01" / "anat").glob("*_IRT1.json"))[0]
    _edit(inv, InversionTime=350)
    assert _codes(ds)["QMR_TIME_NOT_IN_SECONDS"] == {str(first.relative_to(ds).with_suffix(".nii.gz"))}
    assert _codes(irt1)["QMR_TIME_NOT_IN_SECONDS"] == {str(inv.relative_to(irt1).with_suffix(".nii.gz"))}
    # a gradient-echo TR of 15 (ms) is suspicious; an inversion-recovery TR of 10 s is not
    _edit(inv, InversionTime=0.35, RepetitionTime=10.0)
    assert "QMR_TIME_SUSPICIOUS" not in _codes(irt1)
    vfa = _copy("qmri_vfa", tmp_path)
    flip = sorted(vfa.rglob("*_VFA.json"))[0]
    _edit(flip, RepetitionTime=15.0)
    assert _codes(vfa)["QMR_TIME_SUSPICIOUS"] == {str(flip.relative_to(vfa).with_suffix(".nii.gz"))}


@needs_examples
def test_map_units_in_derivatives(tmp_path):
    ds = _copy("qmri_vfa", tmp_path)
    t1 = ds / "derivatives" / "qMRLab" / "sub-01" / "anat" / "sub-01_T1map.json"
    _edit(t1, Units="ms")
    assert "QMR_MAP_UNITS" not in _codes(ds)  # derivatives are separate datasets
    found = _codes(ds, recursive=True)
    assert "derivatives/qMRLab/sub-01/anat/sub-01_T1map.nii.gz" in found["QMR_MAP_UNITS"]
    _edit(t1, Units="s")
    assert "derivatives/qMRLab/sub-01/anat/sub-01_T1map.nii.gz" not in _codes(ds, recursive=True).get("QMR_MAP_UNITS", set())


@needs_examples
def test_mt_entity_outside_enum(tmp_path):
    ds = _copy("qmri_mtsat", tmp_path)
    on = sorted(ds.rglob("*mt-on*_MTS.nii*"))[0]
    on.rename(on.with_name(on.name.replace("mt-on", "mt-yes")))
    codes = _codes(ds)
    assert codes["QMR_MT_ENTITY_VALUE"] == {str(on.relative_to(ds)).replace("mt-on", "mt-yes")}
    assert "QMR_MTS_INCOMPLETE" in codes  # the collection lost its MT-on image


@needs_examples
def test_derivative_without_description(tmp_path):
    ds = _copy("qmri_vfa", tmp_path)
    (ds / "derivatives" / "qMRLab" / "dataset_description.json").unlink()
    assert _codes(ds)["QMR_DERIVATIVE_NO_DESCRIPTION"] == {"derivatives/qMRLab/dataset_description.json"}
    _edit_description = ds / "derivatives" / "qMRLab" / "dataset_description.json"
    _edit_description.write_text(json.dumps({"Name": "x", "BIDSVersion": "1.11.0", "DatasetType": "raw"}))
    assert set(_codes(ds)) == {"QMR_DERIVATIVE_GENERATED_BY"}


@needs_examples
def test_mp2rage_missing_inversion(tmp_path):
    ds = _copy("qmri_mp2rage", tmp_path)
    for p in ds.rglob("*inv-2*"):
        p.unlink()
    assert "QMR_MP2RAGE_INVERSIONS" in _codes(ds)


@needs_examples
def test_fit_readiness(tmp_path):
    ds = _copy("qmri_vfa", tmp_path)
    for sidecar in [ds / "VFA.json", *ds.glob("sub-01/anat/*_VFA.json")]:
        data = json.loads(sidecar.read_text())
        del data["RepetitionTimeExcitation"]
        sidecar.write_text(json.dumps(data))
    assert _codes(ds)["QMR_FIT_FIELD_MISSING"] == {"sub-01/anat/sub-01_flip-1_VFA.nii.gz",
                                                   "sub-01/anat/sub-01_flip-2_VFA.nii.gz"}


@needs_examples
def test_provenance_checked_against_sidecar_schema(tmp_path):
    ds = _copy("qmri_vfa", tmp_path)
    sidecar = ds / "sub-01" / "anat" / "sub-01_flip-1_VFA.json"
    _edit(sidecar, QmrbidsProvenance={"QmrbidsVersion": "0.1.0", "SourceFileCount": 0})
    report = validate_dataset(ds, Options(**NO_HEADERS))
    found = [i for i in report.issues if i.code == "QMR_PROVENANCE_INVALID"]
    assert {i.path for i in found} == {"/sub-01/anat/sub-01_flip-1_VFA.json"}
    assert any("SourceFileCount" in i.message for i in found) and any("required" in i.message for i in found)


PROVENANCE_SCHEMA = json.loads(data_path("schema", "0.1.0", "sidecar.json").read_text())
_values = st.one_of(st.none(), st.booleans(), st.integers(-2, 3), st.sampled_from(["0.1.0", "a" * 64, "A" * 64, "",
                    "2026-01-01T00:00:00Z", "yesterday"]), st.lists(st.sampled_from(["x", 1]), max_size=2))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.dictionaries(st.sampled_from([*PROVENANCE_SCHEMA["properties"], "Extra"]), _values), _values))
def test_provenance_schema_split_equals_whole_validation(value):
    """Validating property by property (memoised) finds exactly the errors of one jsonschema pass."""
    schema = ObjectSchema(PROVENANCE_SCHEMA)
    assert schema.parts is not None
    whole = jsonschema.Draft202012Validator(PROVENANCE_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    expected = sorted(("/".join(map(str, e.absolute_path)), e.message) for e in whole.iter_errors(value))
    assert sorted(schema.errors(value)) == expected
    assert sorted(schema.errors(value)) == expected   # memoised answers too


def _simple_definitions() -> list[tuple[dict, bool]]:
    metadata = bids_schema().to_dict()["objects"]["metadata"]
    found = [({k: v for k, v in d.items() if k not in ("name", "display_name", "description")}, False)
             for d in metadata.values()]
    return found + [(d, True) for d in PROVENANCE_SCHEMA["properties"].values()]


SIMPLE_DEFINITIONS = _simple_definitions()
_PROBES = [None, True, False, 0, 1, -1, 2, 0.5, -0.5, 1.0, 1e9, float("nan"), float("inf"), "", "x", "a" * 64, "A" * 64,
           "n/a", "2026-01-01T00:00:00Z", [], [1], {}, {"a": 1}]


def test_quick_acceptance_never_accepts_what_jsonschema_rejects():
    """For every metadata and provenance definition, on probe values around its types, enums and bounds."""
    accepted = 0
    for definition, format_asserts in SIMPLE_DEFINITIONS:
        accept = acceptor(definition, format_asserts=format_asserts, ignored=frozenset({"unit"}))
        if accept is None:
            continue
        near = [b + d for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") if k in definition
                for b in [definition[k]] for d in (-1, -1e-9, 0, 1e-9, 1)]
        checker = jsonschema.Draft202012Validator.FORMAT_CHECKER if format_asserts else None
        validator = jsonschema.Draft202012Validator(definition, format_checker=checker)
        for value in [*_PROBES, *definition.get("enum", []), *near]:
            if accept(value):
                accepted += 1
                assert list(validator.iter_errors(value)) == [], (definition, value)
    assert accepted > 1000   # the probes do reach the accepting side


def test_quick_acceptance_covers_the_common_metadata():
    """Most metadata definitions get a quick test; those with other keywords are left to jsonschema."""
    accepted = [acceptor(d, format_asserts=f, ignored=frozenset({"unit"})) for d, f in SIMPLE_DEFINITIONS]
    assert sum(a is not None for a in accepted) > 300
    sha = acceptor(PROVENANCE_SCHEMA["properties"]["NiftiSHA256"], format_asserts=True)
    assert sha("a" * 64) and not sha("A" * 64) and not sha(64)
    assert acceptor(PROVENANCE_SCHEMA["properties"]["ConvertedAt"], format_asserts=True) is None   # format asserts
    echo = acceptor({"type": "number", "exclusiveMinimum": 0}, format_asserts=False)
    assert echo(0.002) and not echo(0) and not echo(True) and not echo(float("nan"))


@needs_examples
def test_extension_version_from_dataset_and_override(tmp_path):
    ds = _copy("qmri_vfa", tmp_path)
    _edit(ds / "dataset_description.json", QMRIExtensionVersion="0.1.0")
    assert validate_dataset(ds, Options(**NO_HEADERS)).qmri_schema_version == "0.1.0"
    _edit(ds / "dataset_description.json", QMRIExtensionVersion="7.0.0")
    with pytest.raises(UnknownVersion, match="known versions: 0.1.0"):
        validate_dataset(ds, Options(**NO_HEADERS))
    assert validate_dataset(ds, Options(schema_version="0.1.0", **NO_HEADERS)).qmri_schema_version == "0.1.0"
    assert known_versions() == ["0.1.0"]


def test_converted_phantom_is_valid(phantom_bids):
    dataset, _ = phantom_bids("siemens")
    description = json.loads((dataset / "dataset_description.json").read_text())
    assert description["QMRIExtensionVersion"] == "0.1.0"
    report = validate_dataset(dataset)
    assert report.qmri_schema_version == "0.1.0"
    assert [i for i in report.issues if i.level == "error"] == []
    assert report.files > 50
    assert bids_validator_errors(dataset) == []  # the version key is acceptable to the official validator


@needs_examples
def test_gzip_header_privacy_warnings_as_the_official_validator(tmp_path):
    """A NIfTI gzip header with the source file name and a time leaks both; deno warns, so do we."""
    import gzip
    import subprocess

    import nibabel as nib
    import numpy as np

    ds = _copy("qmri_vfa", tmp_path)
    shutil.rmtree(ds / "derivatives")
    image = nib.Nifti1Image(np.ones((4, 4, 2), dtype=np.float32), np.eye(4)).to_bytes()
    leaky = ds / "sub-01" / "anat" / "sub-01_flip-1_VFA.nii.gz"
    clean = ds / "sub-01" / "anat" / "sub-01_flip-2_VFA.nii.gz"
    for target in (leaky, clean):
        target.chmod(0o644)
    with open(leaky, "wb") as raw, gzip.GzipFile("DOE_JOHN_T1.nii", "wb", fileobj=raw, mtime=1700000000) as out:
        out.write(image)
    clean.write_bytes(gzip.compress(image, mtime=0))

    report = validate_dataset(ds)
    ours = {(i.code, i.path) for i in report.issues if i.code.startswith("GZIP_")}
    leaky_path = "/sub-01/anat/sub-01_flip-1_VFA.nii.gz"
    assert ours == {("GZIP_HEADER_MTIME", leaky_path), ("GZIP_HEADER_FILENAME", leaky_path)}
    run = subprocess.run([shutil.which("bids-validator-deno"), str(ds), "--json"], capture_output=True, text=True)
    official = {(i["code"], i["location"]) for i in json.loads(run.stdout)["issues"]["issues"]
                if i["code"].startswith("GZIP_")}
    assert official == ours
