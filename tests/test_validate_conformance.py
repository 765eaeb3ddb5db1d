"""--strict-official agrees with the official validator (bids-validator-deno) on verdict and error codes.

Both sides evaluate the same pinned schema: deno is pointed at bidsschematools' schema.json with
``--schema``. NIfTI headers are ignored and EMPTY_FILE is configured away because the examples
hold 0-byte images. Each dataset is run through deno once per test session.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import bidsschematools.data
import pytest

from conftest import SHARED_DATA
from qmrbids.validate import Options, validate_dataset
from validate_mutants import MUTATIONS, WARNING_MUTATIONS, make_mutant

EXAMPLES = SHARED_DATA / "bids-examples"
SCHEMA_JSON = Path(bidsschematools.data.__file__).parent / "schema.json"
MUTANT_BASES = ("qmri_vfa", "qmri_mese")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"{EXAMPLES} (the BIDS examples) is absent")]


def _examples() -> list[str]:
    return sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()) if EXAMPLES.is_dir() else []


@pytest.fixture(scope="session")
def official_verdict():
    """(has errors, error codes) from bids-validator-deno, cached per dataset path."""
    exe = shutil.which("bids-validator-deno")
    if exe is None:
        pytest.fail("bids-validator-deno is not installed; it comes with the test extra (pip install -e '.[test]')")
    cache: dict[Path, tuple[bool, set[str]]] = {}

    def run(dataset: Path, severity: str = "error") -> tuple[bool, set[str]]:
        if dataset not in cache:
            done = subprocess.run([exe, str(dataset), "--json", "--ignoreNiftiHeaders", "--config",
                                   str(EXAMPLES / "default-config.json"), "--schema", SCHEMA_JSON.as_uri()],
                                  capture_output=True, text=True, check=False)
            assert done.returncode in (0, 16), done.stderr[-2000:]
            cache[dataset] = (done.returncode == 16, json.loads(done.stdout)["issues"]["issues"])
        failed, issues = cache[dataset]
        return failed, {i["code"] for i in issues if i["severity"] == severity}

    return run


def _ours(dataset: Path, level: str = "error") -> tuple[bool, set[str]]:
    config = json.loads((EXAMPLES / "default-config.json").read_text())
    report = validate_dataset(dataset, Options(strict_official=True, config=config, read_nifti_headers=False))
    assert report.qmri_schema_version is None
    codes = {i.code for i in report.issues if i.level == level}
    return report.exit_code() == 1, codes


@pytest.mark.parametrize("name", _examples())
def test_examples_match_official(name, official_verdict):
    assert _ours(EXAMPLES / name) == official_verdict(EXAMPLES / name)


@pytest.fixture(scope="session")
def mutants(tmp_path_factory):
    root = tmp_path_factory.mktemp("mutants")
    cache: dict[tuple[str, str], Path | None] = {}

    def make(base: str, mutation: str) -> Path | None:
        if (base, mutation) not in cache:
            dest = root / f"{base}-{mutation}"
            try:
                cache[base, mutation] = make_mutant(EXAMPLES / base, mutation, dest)
            except IndexError:  # the dataset has no file this mutation needs
                cache[base, mutation] = None
        return cache[base, mutation]

    return make


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
@pytest.mark.parametrize("base", MUTANT_BASES)
def test_mutants_match_official(base, mutation, mutants, official_verdict):
    dataset = mutants(base, mutation)
    if dataset is None:
        pytest.skip(f"{base} has no file for {mutation}")
    ours, theirs = _ours(dataset), official_verdict(dataset)
    assert ours == theirs
    if mutation != "bidsignored_stray":
        assert ours[0], "every mutation but the ignored stray file breaks a rule"


@pytest.mark.parametrize("mutation", sorted(WARNING_MUTATIONS))
def test_table_warnings_match_official(mutation, mutants, official_verdict):
    """Column signatures (schema, sidecar definitions, redefinitions) warn where the official validator does."""
    dataset = mutants("qmri_vfa", mutation)
    code = WARNING_MUTATIONS[mutation][1]
    ours, theirs = _ours(dataset, "warning"), official_verdict(dataset, "warning")
    assert code in theirs[1]
    assert {c for c in ours[1] if c.startswith("TSV_")} == {c for c in theirs[1] if c.startswith("TSV_")}
    assert ours[0] == theirs[0]


def test_valid_citation_file_passes_as_with_the_official(mutants, official_verdict):
    dataset = mutants("qmri_vfa", "citation_valid")
    assert (dataset / "CITATION.cff").is_file()
    ours, theirs = _ours(dataset), official_verdict(dataset)
    assert ours == theirs
    assert not {c for c in ours[1] if "CITATION" in c}
