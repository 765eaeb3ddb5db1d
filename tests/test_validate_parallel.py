"""Checking files in forked processes gives the same report as one process, issue for issue."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from qmrbids.validate import Options, validate_dataset
from qmrbids.validate.engine import SHARDS_PER_PROCESS, _shards
from qmrbids.validate.index import index_dataset
from qmrbids.validate.reporters import write_json

EXAMPLE = SHARED_DATA / "bids-examples" / "qmri_vfa"


def _many_subjects(tmp_path: Path) -> Path:
    """qmri_vfa with 8 subjects and defects of every scope: per file, inherited, collection, dataset."""
    ds = Path(shutil.copytree(EXAMPLE, tmp_path / "ds", ignore=shutil.ignore_patterns("derivatives")))
    for n in range(2, 9):
        target = ds / f"sub-{n:02d}"
        shutil.copytree(ds / "sub-01", target)
        for path in sorted(target.rglob("sub-01_*")):
            path.rename(path.with_name(path.name.replace("sub-01_", f"sub-{n:02d}_")))
    (ds / "participants.tsv").write_text("participant_id\n" + "".join(f"sub-{n:02d}\n" for n in range(1, 8)))
    root = json.loads((ds / "VFA.json").read_text())
    (ds / "VFA.json").write_text(json.dumps({**root, "MagneticFieldStrength": "3T"}))   # inherited by all
    for p in ds.glob("sub-03/anat/sub-03_flip-2_VFA.*"):
        p.unlink()                                                                        # collection of one
    sidecar = ds / "sub-06" / "anat" / "sub-06_flip-1_VFA.json"
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "EchoTime": "short"}))
    (ds / "sub-07" / "anat" / "sub-07_flip-3_VFA.json").write_text("{}")                # no data file
    (ds / "sub-08" / "notes.txt").write_text("x\n")
    return ds


@pytest.mark.skipif(not EXAMPLE.is_dir(), reason=f"{EXAMPLE} (the BIDS examples) is absent")
def test_forked_workers_give_the_serial_report(tmp_path):
    ds = _many_subjects(tmp_path)
    reports = {}
    for jobs in (1, 3):
        out = io.StringIO()
        write_json(validate_dataset(ds, Options(read_nifti_headers=False, jobs=jobs)), out)
        reports[jobs] = json.loads(out.getvalue())
    assert reports[1] == reports[3]
    codes = reports[1]["summary"]["codes"]
    for code in ("JSON_SCHEMA_VALIDATION_ERROR", "QMR_VFA_TOO_FEW_FLIP_ANGLES", "SIDECAR_WITHOUT_DATAFILE",
                 "PARTICIPANT_ID_MISMATCH", "NOT_INCLUDED"):
        assert code in codes, code
    inherited = [i for i in reports[3]["issues"] if i["path"] == "/VFA.json" and i["code"] == "JSON_SCHEMA_VALIDATION_ERROR"]
    assert len(inherited) == 1   # reported once, not once per worker


def test_shards_keep_top_level_folders_whole(tmp_path):
    for rel in ["README", "dataset_description.json", "sub-01/anat/a.nii", "sub-01/anat/b.nii",
                "sub-02/anat/c.nii", "sub-03/d.nii", "sub-03/e.nii"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    tree = index_dataset(tmp_path).tree
    everything = ["", "sub-01", "sub-02", "sub-03"]
    processes, shards = _shards(tree, 2)
    assert processes == 2 and len(shards) >= 2
    assert sum(shards, []) == everything   # whole folders, each once, in dataset order
    assert _shards(tree, 1) == (1, [everything])
    assert _shards(tree, 0) == (1, [everything])   # small datasets stay in one process


def test_shards_are_several_per_process(tmp_path):
    for n in range(1, 65):
        (tmp_path / f"sub-{n:02d}" / "anat").mkdir(parents=True)
        (tmp_path / f"sub-{n:02d}" / "anat" / f"sub-{n:02d}_T1w.nii").write_text("")
    processes, shards = _shards(index_dataset(tmp_path).tree, 2)
    assert processes == 2 and len(shards) == 2 * SHARDS_PER_PROCESS
    assert max(map(len, shards)) - min(map(len, shards)) <= 2
