"""Checking files in forked processes gives the same report as one process, issue for issue."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from qmrbids.validate import Options, validate_dataset
from qmrbids.validate.engine import _shards
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


def test_shards_keep_top_level_folders_whole():
    class Ctx:
        def __init__(self, path):
            self.path = path

    contexts = [Ctx(p) for p in ["/README", "/dataset_description.json", "/sub-01/", "/sub-01/anat/",
                                 "/sub-01/anat/a.nii", "/sub-02/", "/sub-02/anat/b.nii", "/sub-03/", "/sub-03/c.nii"]]
    shards = _shards(contexts, 2)
    assert len(shards) == 2 and sum(map(len, shards)) == len(contexts)
    tops = [{c.path.split("/")[1] for c in shard if c.path.count("/") > 1} for shard in shards]
    assert not tops[0] & tops[1]
    assert _shards(contexts, 1) == [contexts]
    assert len(_shards(contexts, 0)) == 1   # small datasets stay in one process
