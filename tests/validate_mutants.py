"""Defective copies of the BIDS examples: each mutation breaks one official rule (conformance tests)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _write_json(path: Path, content) -> None:
    path.write_text(json.dumps(content, indent=2))


def _first(root: Path, pattern: str) -> Path:
    return sorted(p for p in root.rglob(pattern) if "derivatives" not in p.parts)[0]


def _rename(path: Path, new_name: str) -> None:
    path.rename(path.with_name(new_name))


def drop_name(root):
    d = _json(root / "dataset_description.json")
    d.pop("Name", None)
    _write_json(root / "dataset_description.json", d)


def no_description(root):
    (root / "dataset_description.json").unlink()


def malformed_sidecar(root):
    _first(root, "sub-*_*.json").write_text('{"EchoTime": 0.01,')


def bom_sidecar(root):
    p = _first(root, "sub-*_*.json")
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())


def array_sidecar(root):
    _first(root, "sub-*_*.json").write_text("[1, 2]")


def wrong_type(root):
    p = _first(root, "sub-*_*.json")
    d = _json(p)
    d["EchoTime"] = "short"
    _write_json(p, d)


def negative_value(root):
    p = _first(root, "sub-*_*.json")
    d = _json(p)
    d["EchoTime"] = -0.01
    d["FlipAngle"] = -5
    _write_json(p, d)


def drop_required_field(root):
    """Remove the fields qMRI suffixes require (FlipAngle for VFA, EchoTime for MESE, ...) everywhere."""
    for p in root.rglob("*.json"):
        if "derivatives" not in p.parts and p.name != "dataset_description.json":
            d = _json(p)
            for key in ("FlipAngle", "EchoTime", "InversionTime"):
                d.pop(key, None)
            _write_json(p, d)


def bad_entity_label(root):
    p = _first(root, "sub-*_*.nii*")
    _rename(p, p.name.replace("_", "_run-x_", 1))


def entity_order(root):
    p = _first(root, "sub-*_*.nii*")
    stem, ext = p.name.split(".", 1)
    parts = stem.split("_")
    _rename(p, "_".join([parts[0], "run-1", "acq-z", *parts[1:]]) + "." + ext)


def entity_no_label(root):
    p = _first(root, "sub-*_*.nii*")
    _rename(p, p.name.replace("_", "_acq-_", 1))


def unknown_entity(root):
    p = _first(root, "sub-*_*.nii*")
    _rename(p, p.name.replace("_", "_foo-bar_", 1))


def bad_suffix(root):
    p = _first(root, "sub-*_*.nii*")
    stem, ext = p.name.split(".", 1)
    _rename(p, stem.rsplit("_", 1)[0] + "_T1wx." + ext)


def bad_extension(root):
    p = _first(root, "sub-*_*.nii*")
    _rename(p, p.name.split(".", 1)[0] + ".nii.bz2")


def wrong_datatype_folder(root):
    p = _first(root, "sub-*/anat/*.nii*")
    target = p.parent.parent / "func"
    target.mkdir(exist_ok=True)
    shutil.move(p, target / p.name)


def wrong_subject_folder(root):
    p = _first(root, "sub-*_*.nii*")
    _rename(p, p.name.replace(p.name.split("_")[0], "sub-zz", 1))


def stray_root_file(root):
    (root / "notes.txt").write_text("scanner notes\n")


def stray_folder(root):
    (root / "extra").mkdir()
    (root / "extra" / "data.csv").write_text("a,b\n1,2\n")


def orphan_sidecar(root):
    p = _first(root, "sub-*_*.json")
    (p.parent / p.name.replace("_", "_acq-orphan_", 1)).write_text(p.read_text())


def participants_missing_subject(root):
    (root / "participants.tsv").write_text("participant_id\tage\nsub-nobody\t30\n")


def _participants(root, header: str, row) -> None:
    """participants.tsv with ``header`` and ``row(subject)`` for each subject folder."""
    subs = sorted(p.name for p in root.glob("sub-*") if p.is_dir())
    (root / "participants.tsv").write_text(header + "".join(row(s) for s in subs))


def participants_bad_header(root):
    (root / "participants.tsv").write_text("age\tparticipant_id\n30\tsub-01\n")


def participants_unequal_row(root):
    _participants(root, "participant_id\tage\n", lambda s: f"{s}\t30\textra\n")


def participants_duplicate_column(root):
    _participants(root, "participant_id\tage\tage\n", lambda s: f"{s}\t30\t31\n")


def participants_empty_line(root):
    _participants(root, "participant_id\n\n", lambda s: f"{s}\n")


def participants_bad_id(root):
    _participants(root, "participant_id\n", lambda s: f"{s[4:]}\n")


def participants_bad_values(root):
    _participants(root, "participant_id\tage\tsex\n", lambda s: f"{s}\tabc\tQ\n")


def duplicate_participant(root):
    _participants(root, "participant_id\n", lambda s: f"{s}\n{s}\n")


def participants_age_over_maximum(root):
    _participants(root, "participant_id\tage\n", lambda s: f"{s}\t90\n")   # the schema's age: Maximum 89


def participants_value_outside_levels(root):
    _participants(root, "participant_id\tgroup\n", lambda s: f"{s}\tc\n")
    _write_json(root / "participants.json", {"group": {"Description": "arm", "Levels": {"a": "drug", "b": "placebo"}}})


def participants_pseudo_age(root):
    _participants(root, "participant_id\tage\n", lambda s: f"{s}\t89+\n")


def participants_redefined_column(root):
    _participants(root, "participant_id\n", lambda s: f"{s}\n")
    _write_json(root / "participants.json", {"participant_id": {"Description": "id", "Format": "number"}})


def participants_undefined_column(root):
    _participants(root, "participant_id\tscore\n", lambda s: f"{s}\t3\n")
    (root / "participants.json").unlink(missing_ok=True)


CITATION = """cff-version: 1.2.0
message: "If you use this dataset, please cite it."
title: "A qMRI example"
authors:
  - family-names: Doe
    given-names: Jane
date-released: "2026-01-01"
url: "https://example.org/data"
"""


def citation_valid(root):
    """A valid CITATION.cff, the authors moved there from dataset_description.json."""
    (root / "CITATION.cff").write_text(CITATION)
    d = _json(root / "dataset_description.json")
    d.pop("Authors", None)
    _write_json(root / "dataset_description.json", d)


def citation_invalid(root):
    citation_valid(root)
    (root / "CITATION.cff").write_text("cff-version: 1.2.0\ntitle: x\nauthors: []\ndate-released: 2026-01-01\n")


def citation_not_yaml(root):
    citation_valid(root)
    (root / "CITATION.cff").write_text("cff-version: [1.2.0\n")


def intended_for_missing(root):
    p = _first(root, "sub-*/*/*.json")
    d = _json(p)
    d["IntendedFor"] = ["anat/sub-01_nothing_T1w.nii.gz"]
    _write_json(p, d)


def bidsignored_stray(root):
    (root / "notes.txt").write_text("scanner notes\n")
    (root / ".bidsignore").write_text("notes.txt\n")


def scans_bad_filename(root):
    sub = sorted(p for p in root.glob("sub-*") if p.is_dir())[0]
    (sub / f"{sub.name}_scans.tsv").write_text("filename\tacq_time\nanat/none.nii.gz\tnot-a-time\n")


MUTATIONS = {f.__name__: f for f in (
    drop_name, no_description, malformed_sidecar, bom_sidecar, array_sidecar, wrong_type, negative_value,
    drop_required_field, bad_entity_label, entity_order, entity_no_label, unknown_entity, bad_suffix,
    bad_extension, wrong_datatype_folder, wrong_subject_folder, stray_root_file, stray_folder,
    orphan_sidecar, participants_missing_subject, participants_bad_header, participants_unequal_row,
    participants_duplicate_column, participants_empty_line, participants_bad_id, participants_bad_values,
    duplicate_participant, participants_age_over_maximum, participants_value_outside_levels,
    intended_for_missing, bidsignored_stray, scans_bad_filename, citation_invalid, citation_not_yaml,
)}
#: Mutations that only warn, with the warning each must raise (the official validator's too).
WARNING_MUTATIONS = {f.__name__: (f, code) for f, code in (
    (participants_pseudo_age, "TSV_PSEUDO_AGE_DEPRECATED"),
    (participants_redefined_column, "TSV_COLUMN_TYPE_REDEFINED"),
    (participants_undefined_column, "TSV_ADDITIONAL_COLUMNS_UNDEFINED"),
)}


#: Every change by name: the mutations above plus a valid variant (CITATION.cff instead of Authors).
CHANGES = {**MUTATIONS, **{name: f for name, (f, _) in WARNING_MUTATIONS.items()}, "citation_valid": citation_valid}


def make_mutant(source: Path, mutation: str, dest: Path) -> Path:
    """Copy ``source`` (symlinks kept) into ``dest`` and apply one mutation."""
    shutil.copytree(source, dest, symlinks=True)
    CHANGES[mutation](dest)
    return dest
