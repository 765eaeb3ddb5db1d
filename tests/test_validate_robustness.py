"""Hostile trees never crash the validator; every defect becomes an issue."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmrbids.validate import Options, validate_dataset
from qmrbids.validate.index import IgnoreRules

DESCRIPTION = b'{"Name": "fuzz", "BIDSVersion": "1.11.0"}'
NAMES = st.sampled_from(["sub-01_T1w", "sub-01_flip-1_VFA", "participants", "sub-01_scans", "dataset_description",
                         "README", "sub-01_echo-x_MESE", "x", "sub-01_acq-_T1w", "task-rest_bold"])
EXTENSIONS = st.sampled_from([".json", ".tsv", ".nii", ".nii.gz", "", ".txt"])
CONTENT = st.one_of(st.binary(max_size=300), st.just(b""), st.just(b"\xff\xfe{\x00"), st.just(b'{"a": [1, 2'),
                    st.just(b"[1, 2, 3]"), st.just(b"participant_id\tage\n\nsub-01\t3\textra\n"),
                    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
FOLDERS = st.sampled_from(["", "sub-01", "sub-01/anat", "sub-01/ses-1/fmap", "derivatives/x", "junk", "sub-01/anat/deep"])
ENTRIES = st.lists(st.tuples(FOLDERS, NAMES, EXTENSIONS, CONTENT), max_size=12)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _write(root: Path, entries) -> None:
    (root / "dataset_description.json").write_bytes(DESCRIPTION)
    for folder, name, ext, content in entries:
        target = root / folder
        if target.exists() and not target.is_dir():
            continue
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{name}{ext}"
        if not path.is_dir():
            path.write_bytes(content)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=ENTRIES, strict=st.booleans())
def test_generated_trees_never_crash(entries, strict):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write(root, entries)
        report = validate_dataset(root, Options(strict_official=strict))
        for issue in report.issues:
            assert issue.level in ("error", "warning", "info") and issue.code and issue.path.startswith("/")
        for folder, name, ext, _ in entries:
            path = f"/{folder}/{name}{ext}".replace("//", "/")
            target = root / path[1:]
            if target.is_file() and target.stat().st_size == 0 and "derivatives" not in path:
                assert ("EMPTY_FILE", path) in {(i.code, i.path) for i in report.issues}


def test_binary_json_and_bad_tables_are_issues(tmp_path):
    _write(tmp_path, [("sub-01/anat", "sub-01_T1w", ".json", b"\x00\xff\x10binary"),
                      ("sub-01/anat", "sub-01_T1w", ".nii.gz", b"\x1f\x8b not really gzip"),
                      ("", "participants", ".tsv", b"participant_id\tage\nsub-01\n")])
    found = {(i.code, i.path) for i in validate_dataset(tmp_path).issues}
    assert ("INVALID_JSON_ENCODING", "/sub-01/anat/sub-01_T1w.json") in found
    assert ("NIFTI_HEADER_UNREADABLE", "/sub-01/anat/sub-01_T1w.nii.gz") in found
    assert ("TSV_EQUAL_ROWS", "/participants.tsv") in found


def test_invalid_utf8_name(tmp_path):
    _write(tmp_path, [])
    os.makedirs(os.path.join(os.fsencode(tmp_path), b"sub-01", b"anat"))
    with open(os.path.join(os.fsencode(tmp_path), b"sub-01", b"anat", b"sub-01_\xff_T1w.nii"), "wb") as handle:
        handle.write(b"x")
    found = {(i.code, i.path) for i in validate_dataset(tmp_path).issues}
    assert ("INVALID_FILENAME_ENCODING", "/sub-01/anat/sub-01_\\xff_T1w.nii") in found


def test_symlink_loops_and_broken_links(tmp_path):
    _write(tmp_path, [("sub-01/anat", "sub-01_T1w", ".json", b"{}")])
    (tmp_path / "sub-01" / "anat" / "loop").symlink_to(tmp_path / "sub-01", target_is_directory=True)
    (tmp_path / "sub-01" / "anat" / "sub-01_T1w.nii.gz").symlink_to(tmp_path / "nowhere.nii.gz")
    found = {(i.code, i.path) for i in validate_dataset(tmp_path).issues}
    assert ("SYMLINK_LOOP", "/sub-01/anat/loop/") in found
    assert ("ORPHANED_SYMLINK", "/sub-01/anat/sub-01_T1w.nii.gz") in found


def test_huge_participants_table_reads_every_row(tmp_path):
    """All rows are read (the official validator stops at 1,000 and reports a false mismatch)."""
    subjects = [f"sub-{i:05d}" for i in range(3000)]
    for s in subjects[:1500] + subjects[2999:]:
        (tmp_path / s).mkdir()
    _write(tmp_path, [("", "participants", ".tsv", ("participant_id\tage\n" + "".join(
        f"{s}\t{20 + i % 50}\n" for i, s in enumerate(subjects))).encode())])
    codes = {i.code for i in validate_dataset(tmp_path).issues if i.level == "error"}
    assert "PARTICIPANT_ID_MISMATCH" not in codes  # every folder is listed, far past row 1000
    shutil.rmtree(tmp_path / subjects[2999])
    (tmp_path / "sub-extra").mkdir()
    codes = {i.code for i in validate_dataset(tmp_path).issues if i.level == "error"}
    assert "PARTICIPANT_ID_MISMATCH" in codes


@pytest.mark.skipif(IS_ROOT, reason="permissions do not apply to root")
def test_unreadable_files_and_folders(tmp_path):
    _write(tmp_path, [("sub-01/anat", "sub-01_T1w", ".json", b"{}"), ("sub-01/anat", "sub-01_T1w", ".nii", b"x"),
                      ("sub-01/fmap", "sub-01_phasediff", ".json", b"{}")])
    (tmp_path / "sub-01" / "anat" / "sub-01_T1w.json").chmod(0)
    (tmp_path / "sub-01" / "fmap").chmod(0)
    try:
        found = {(i.code, i.path) for i in validate_dataset(tmp_path).issues}
    finally:
        (tmp_path / "sub-01" / "fmap").chmod(0o755)
    assert ("FILE_READ", "/sub-01/anat/sub-01_T1w.json") in found
    assert ("FILE_READ", "/sub-01/fmap/") in found


@pytest.mark.parametrize("path, is_dir, ignored", [
    ("notes.txt", False, True), ("keep.txt", False, False), ("sub-01/anat/x.txt", False, True),
    ("extra", True, True), ("sub-01/extra", True, False),           # "/extra/": the root folder only
    ("extra", False, False),                                        # a "dir/" pattern matches folders
    ("sub-01/junk", True, True), ("sub-01/anat/junk", True, False),  # a middle slash anchors at the root
    ("a/b/tmp", False, True), ("tmp", False, True), (".git", True, True),
    ("docs", True, True), ("sub-01/docs", False, True),             # no slash: any level
])
def test_bidsignore_patterns(path, is_dir, ignored):
    rules = IgnoreRules([".*", "*.txt", "/extra/", "sub-*/junk/", "**/tmp", "!keep.txt", "docs"])
    assert rules.ignores(path, is_dir) is ignored


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([".*", "*.txt", "/extra/", "sub-*/junk/", "**/tmp", "docs", "*_T1w.json", "a?c"]),
                max_size=6),
       st.lists(st.sampled_from(["sub-01", "junk", "extra", "tmp", "docs", ".git", "x.txt", "abc", "sub-01_T1w.json"]),
                min_size=1, max_size=4), st.booleans())
def test_bidsignore_without_negation_matches_the_ordered_rules(patterns, parts, is_dir):
    """The single alternation used when no pattern starts with "!" decides like last-match-wins."""
    rules = IgnoreRules(patterns)
    assert rules.any_match is not None
    path = "/".join(parts)
    ordered = any(regex.match(path) for regex, _, dir_only in rules.rules if is_dir or not dir_only)
    assert rules.ignores(path, is_dir) is ordered


def test_special_files_are_issues(tmp_path):
    _write(tmp_path, [])
    os.mkfifo(tmp_path / "sub-01_T1w.nii")
    found = {(i.code, i.path) for i in validate_dataset(tmp_path).issues}
    assert ("FILE_READ", "/sub-01_T1w.nii") in found


def test_a_file_that_grew_after_indexing_is_read_whole(tmp_path):
    from qmrbids.validate.context import FileReader
    from qmrbids.validate.index import index_dataset

    _write(tmp_path, [])
    sidecar = tmp_path / "task-rest_bold.json"
    sidecar.write_bytes(b'{"RepetitionTime": 2}')
    file = index_dataset(tmp_path).tree.files["task-rest_bold.json"]
    sidecar.write_bytes(b'{"RepetitionTime": 2, "TaskName": "rest"}')
    reader = FileReader(tmp_path)
    assert reader.json(file) == {"RepetitionTime": 2, "TaskName": "rest"}
    assert reader.read(file, 5) == b'{"Rep'


@pytest.mark.parametrize("content", [b"\xff\xfe binary", b"a: [1,\n", b"- just a list\n",
                                     b"a: &a [x, x, x, x, x, x, x, x, x, x]\n" + b"".join(
                                         f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n".encode()
                                         for p, c in zip("abcdefgh", "bcdefghi"))])
def test_hostile_citation_files_are_issues(tmp_path, content):
    """Undecodable, unparsable, wrongly shaped or alias-bomb CITATION.cff: an issue, quickly, never a crash."""
    _write(tmp_path, [])
    (tmp_path / "CITATION.cff").write_bytes(content)
    codes = {i.code for i in validate_dataset(tmp_path).issues if i.path == "/CITATION.cff"}
    assert codes & {"FILE_READ", "CITATION_CFF_VALIDATION_ERROR"}
