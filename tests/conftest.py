"""Shared fixtures: phantoms written once per session, and their dcm2niix conversions."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dcm2niix
import pytest

from qmrbids.phantom import PhantomSettings, write_phantom

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def noise_free_phantom(tmp_path_factory):
    """Every protocol of a vendor, noise-free, default size, B1 varying 0.8 to 1.2 (cached)."""
    cache: dict[str, Path] = {}

    def make(vendor: str) -> Path:
        if vendor not in cache:
            out = tmp_path_factory.mktemp(f"phantom-{vendor}")
            write_phantom(out, PhantomSettings(vendor=vendor, b1_range=(0.8, 1.2)))
            cache[vendor] = out
        return cache[vendor]

    return make


@pytest.fixture(scope="session")
def converted(noise_free_phantom, tmp_path_factory):
    """dcm2niix output (``%s_%d`` names, uncompressed) of a vendor's noise-free phantom (cached)."""
    cache: dict[str, tuple[Path, Path]] = {}

    def convert(vendor: str) -> tuple[Path, Path]:
        if vendor not in cache:
            source = noise_free_phantom(vendor)
            out = tmp_path_factory.mktemp(f"nifti-{vendor}")
            run = subprocess.run([dcm2niix.bin, "-b", "y", "-z", "n", "-f", "%s_%d", "-o", str(out), str(source / "dicom")],
                                 capture_output=True, text=True, check=False)
            assert run.returncode == 0, run.stdout + run.stderr
            cache[vendor] = (source, out)
        return cache[vendor]

    return convert


def load_description(phantom_dir: Path) -> dict:
    return json.loads((phantom_dir / "truth" / "phantom.json").read_text())


def bids_validator_errors(dataset: Path) -> list[tuple[str, str]]:
    """(code, location) of every error the official BIDS validator (bids-validator-deno) reports."""
    import shutil

    exe = shutil.which("bids-validator-deno")
    if exe is None:
        pytest.fail("bids-validator-deno is not installed; it comes with the test extra (pip install -e '.[test]')")
    run = subprocess.run([exe, str(dataset), "--json"], capture_output=True, text=True, check=False)
    assert run.returncode in (0, 16), run.stderr[-2000:]  # 16: the dataset has errors
    issues = json.loads(run.stdout)["issues"]["issues"]
    errors = [(i["code"], i.get("location", "")) for i in issues if i["severity"] == "error"]
    assert (run.returncode == 16) == bool(errors)
    return errors


@pytest.fixture(scope="session")
def phantom_bids(noise_free_phantom, tmp_path_factory):
    """A vendor's noise-free phantom converted by qmrbids with the example study config (cached)."""
    from qmrbids.convert import convert, load_config

    root = Path(__file__).resolve().parents[1]
    cache: dict[str, tuple[Path, object]] = {}

    def make(vendor: str):
        if vendor not in cache:
            out = tmp_path_factory.mktemp(f"bids-{vendor}") / "dataset"
            report = convert([noise_free_phantom(vendor) / "dicom"], out,
                             load_config(root / "examples" / "phantom-study.yaml"), jobs=2)
            cache[vendor] = (out, report)
        return cache[vendor]

    return make
