"""The wheel ships the data folders, and the code finds them through importlib.resources."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from qmrbids.resources import DATA_FOLDERS, data_path, package_file

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_code_and_every_data_folder(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("qmrbids-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in DATA_FOLDERS:
        shipped = {n for n in names if n.startswith(f"qmrbids/_data/{folder}/")}
        in_tree = {f"qmrbids/_data/{p.relative_to(ROOT).as_posix()}" for p in (ROOT / folder).rglob("*") if p.is_file()}
        assert in_tree and in_tree <= shipped, f"{folder}: missing {sorted(in_tree - shipped)}"
    for name in ("object.yaml", "protocols.yaml", "vendors.yaml"):
        assert f"qmrbids/phantom/{name}" in names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_data_paths_resolve_to_existing_files():
    assert data_path("validators", "references", "references.yaml").is_file()
    assert package_file("phantom", "protocols.yaml").is_file()


def test_readme_first_command_runs_on_a_fresh_folder(tmp_path):
    """The README's first command, minus the install this environment already did; the browser
    that opens the report is ``true`` here ($BROWSER), so nothing is launched."""
    readme = (ROOT / "README.md").read_text()
    first = readme.split("```bash\n", 1)[1].split("\n```", 1)[0].strip()
    install, _, rest = first.partition(" && ")
    assert install == "pip install ."
    command = rest.replace("examples/", f"{ROOT / 'examples'}/").replace("validators/", f"{ROOT / 'validators'}/")
    run = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "BROWSER": "true",
                              "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    bids = tmp_path / "demo" / "bids"
    assert (bids / "dataset_description.json").is_file()
    assert len(list(bids.glob("sub-*/*/*.nii.gz"))) == 73
    for stage in ("convert", "validate", "fit", "qc", "metrology"):
        assert re.search(rf"\b{stage}\s+ok\b", run.stdout), run.stdout
    assert (bids / "derivatives" / "qmrbids" / "sub-PHANTOM" / "anat" / "sub-PHANTOM_desc-vfa_T1map.nii.gz").is_file()
    report = (bids / "derivatives" / "qmrbids-qc" / "report.html").read_text()
    assert "nothing needs attention" in report and 'id="metrology"' in report
