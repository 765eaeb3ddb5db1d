"""Dataset-level files: dataset_description.json, participants, sessions and scans tables, README."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from qmrbids import __version__
from qmrbids.convert.config import StudyConfig
from qmrbids.convert.run import EXTENSION_VERSION
from qmrbids.io import atomic_write_text
from qmrbids.schema import bids_version

CODE_URL = "https://github.com/qmrbids/qmrbids"
README_STUB = """# {name}

This dataset was converted from DICOM by qmrbids {version}. Describe the study here: what was
acquired, on which scanners, for what purpose, and how to cite it. (Written once by qmrbids;
edit it freely, qmrbids will not overwrite it.)
"""
CHANGES_STUB = "1.0.0 {date}\n  - Initial conversion with qmrbids {version}.\n"


def _read_tsv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _write_tsv(path: Path, rows: list[dict], columns: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, delimiter="\t", lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "n/a") or "n/a" for c in columns})
    text = buffer.getvalue()
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)


def _write_json_once(path: Path, content: dict) -> None:
    text = json.dumps(content, indent=2) + "\n"
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)


def write_dataset_files(bids_dir: Path, config: StudyConfig, dcm2niix_version: str, date: str,
                        acq_times: dict[str, str] | None = None) -> list[str]:
    """Create or update the dataset-level files from what the dataset holds now.

    ``acq_times`` (dataset-relative NIfTI path -> acq_time) fill the scans tables' acq_time column
    for newly converted files; values already in a scans table are kept.

    Returns the README/CHANGES stubs written this time, which the user should now edit.
    """
    description_path = bids_dir / "dataset_description.json"
    if not description_path.is_file():
        description = {
            "Name": config.dataset.get("Name", "qmrbids conversion"),
            "BIDSVersion": bids_version(),
            "DatasetType": "raw",
            # Which qMRI extension (schema/<version>/) the data follow; `qmrbids validate` reads it.
            # An extra top-level key: the official validator accepts unknown dataset_description keys.
            "QMRIExtensionVersion": EXTENSION_VERSION,
            **{k: v for k, v in config.dataset.items() if k != "Name"},
            "GeneratedBy": [
                {"Name": "qmrbids", "Version": __version__, "CodeURL": CODE_URL},
                {"Name": "dcm2niix", "Version": dcm2niix_version, "CodeURL": "https://github.com/rordenlab/dcm2niix"},
            ],
        }
        _write_json_once(description_path, description)
    stubs = []
    for name, stub in (("README.md", README_STUB), ("CHANGES", CHANGES_STUB)):
        path = bids_dir / name
        if not path.exists() and not (name == "README.md" and (bids_dir / "README").exists()):
            atomic_write_text(path, stub.format(name=config.dataset.get("Name", "qmrbids conversion"),
                                                version=__version__, date=date))
            stubs.append(name)
    subjects = sorted(p.name for p in bids_dir.glob("sub-*") if p.is_dir())
    participants = {r["participant_id"]: r for r in _read_tsv(bids_dir / "participants.tsv")}
    for subject in subjects:
        participants.setdefault(subject, {"participant_id": subject})
    columns = ["participant_id", *sorted({c for r in participants.values() for c in r} - {"participant_id"})]
    _write_tsv(bids_dir / "participants.tsv", [participants[k] for k in sorted(participants)], columns)
    _write_json_once(bids_dir / "participants.json", {
        "participant_id": {"Description": "Subject label: from the study config, --subject, the research ID "
                                           "(--deidentify), or the sanitised PatientID"}})
    for subject in subjects:
        folder = bids_dir / subject
        sessions = sorted(p.name for p in folder.glob("ses-*") if p.is_dir())
        if sessions:
            known = {r["session_id"]: r for r in _read_tsv(folder / f"{subject}_sessions.tsv")}
            for session in sessions:
                known.setdefault(session, {"session_id": session})
            cols = ["session_id", *sorted({c for r in known.values() for c in r} - {"session_id"})]
            _write_tsv(folder / f"{subject}_sessions.tsv", [known[k] for k in sorted(known)], cols)
        for level in [folder / s for s in sessions] or [folder]:
            prefix = "_".join([subject, *([level.name] if level != folder else [])])
            files = sorted(p.relative_to(level).as_posix() for p in level.glob("*/*.nii.gz"))
            if files:
                scans = level / f"{prefix}_scans.tsv"
                known = {r["filename"]: r for r in _read_tsv(scans)}
                rows = []
                for name in files:
                    row = dict(known.get(name, {"filename": name}))
                    path = (level / name).relative_to(bids_dir).as_posix()
                    if (acq_times or {}).get(path):
                        row["acq_time"] = acq_times[path]
                    rows.append(row)
                columns = ["filename", *sorted({c for r in rows for c in r} - {"filename"})]
                _write_tsv(scans, rows, columns)
    return stubs
