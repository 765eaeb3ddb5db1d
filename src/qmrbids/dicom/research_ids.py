"""Research subject IDs in place of PatientIDs, through a mapping file kept outside any dataset.

The map is a two-column TSV (``patient_id``, ``research_id``). A patient seen before gets the
label used before; new patients get the next number (``001``, ``002``, ...) in sorted PatientID
order, so the same inputs always give the same labels. Without a map file, the label is a keyed
hash of the PatientID: stable for whoever holds the key, meaningless to anyone else.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
from pathlib import Path

from qmrbids.io import atomic_write_text

COLUMNS = ("patient_id", "research_id")


class ResearchIdError(ValueError):
    """The map file cannot be used; the message names the file and the problem."""


def keyed_label(patient_id: str, key: bytes) -> str:
    """A BIDS-safe pseudonym of a PatientID (12 hex digits of an HMAC)."""
    return hmac.new(key, b"research-id\0" + patient_id.encode(), hashlib.sha256).hexdigest()[:12]


class ResearchIds:
    """PatientID -> research label, optionally backed by a map file."""

    def __init__(self, key: bytes, map_path: Path | None = None):
        self.key = key
        self.map_path = Path(map_path) if map_path else None
        self.labels: dict[str, str] = {}
        self._changed = False
        if self.map_path and self.map_path.is_file():
            self.labels = self._read(self.map_path)

    @staticmethod
    def _read(path: Path) -> dict[str, str]:
        try:
            rows = list(csv.DictReader(io.StringIO(path.read_text()), delimiter="\t"))
        except (OSError, UnicodeDecodeError) as error:
            raise ResearchIdError(f"{path}: cannot read the research-ID map ({error})") from None
        if rows and set(COLUMNS) - set(rows[0]):
            raise ResearchIdError(f"{path}: a research-ID map needs the columns {', '.join(COLUMNS)}")
        labels: dict[str, str] = {}
        for number, row in enumerate(rows, start=2):
            pid, label = row["patient_id"], row["research_id"]
            if not label or not label.isalnum():
                raise ResearchIdError(f"{path}: line {number}: research_id must be letters and digits, not {label!r}")
            if label in labels.values() and labels.get(pid) != label:
                raise ResearchIdError(f"{path}: line {number}: research_id {label} is used twice")
            labels[pid] = label
        return labels

    def assign(self, patient_ids) -> dict[str, str]:
        """Labels of ``patient_ids``; new patients get the next free number (map) or a keyed label."""
        for pid in sorted(set(patient_ids) - set(self.labels)):
            if self.map_path is None:
                self.labels[pid] = keyed_label(pid, self.key)
                continue
            used = set(self.labels.values())
            numbers = [int(v) for v in used if v.isdigit()]
            candidate = max(numbers, default=0) + 1
            while f"{candidate:03d}" in used:
                candidate += 1
            self.labels[pid] = f"{candidate:03d}"
            self._changed = True
        return {pid: self.labels[pid] for pid in patient_ids}

    def save(self) -> None:
        """Write the map (atomically) when it gained patients."""
        if self.map_path is None or not self._changed:
            return
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
        writer.writerow(COLUMNS)
        for pid in sorted(self.labels, key=lambda p: (len(self.labels[p]), self.labels[p])):
            writer.writerow([pid, self.labels[pid]])
        atomic_write_text(self.map_path, buffer.getvalue())
        self._changed = False


def outside(path: Path, folder: Path) -> bool:
    """True when ``path`` is not inside ``folder`` (the map and key must never enter a dataset)."""
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
    except ValueError:
        return True
    return False
