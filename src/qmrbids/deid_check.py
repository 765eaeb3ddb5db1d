"""``deidentify --check``: look for identifiers left in a DICOM tree or a BIDS dataset.

In DICOM: attributes of the PS3.15 Annex E profile still holding values the options claimed in
DeidentificationMethodCodeSequence do not allow, real-looking dates (1925 or later), private tags
outside the safe list, free text, and claims the header contradicts. In BIDS: identifying sidecar
fields, real-looking dates in sidecars and TSVs, NIfTI header text fields (``descrip``,
``aux_file``, ``db_name``), gzip headers that carry a name or time, and file and folder names.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from qmrbids.convert.sidecars import sidecar_rules
from qmrbids.dicom.deidentify import profile
from qmrbids.dicom.scan import iter_sources, read_bytes

FIRST_REAL_YEAR = 1925  # BIDS: de-identified dates are shifted to 1925 or earlier
_COMPACT_DATE = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?!\d)")
_ISO_DATE = re.compile(r"(?<!\d)(\d{4})[-./](\d{1,2})[-./](\d{1,2})(?!\d)")
_DAY_FIRST = re.compile(r"(?<!\d)(\d{1,2})[-./](\d{1,2})[-./](\d{4})(?!\d)")  # 14.03.2019 or 03/14/2019
_ID_LIKE = re.compile(r"\d{5,}")
_CLOCK = re.compile(r"\bTime=")
PATIENT_ID, PATIENT_NAME = 0x00100020, 0x00100010
ALLOWED_SIDECAR_KEYS = {"SeriesDescription", "ProtocolName", "ContrastBolusAgent", "PatientPosition",
                        "DeidentificationMethod", "DeidentificationMethodCodeSequence"}


@dataclass(frozen=True)
class Finding:
    path: str
    location: str
    kind: str
    value: str

    def __str__(self) -> str:
        shown = self.value if len(self.value) <= 120 else self.value[:117] + "..."
        return f"{self.path}: {self.location}: {self.kind}: {shown!r}"


@dataclass
class CheckReport:
    paths: list[str]
    files_checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.findings else 0

    def to_dict(self) -> dict:
        return {"paths": self.paths, "files_checked": self.files_checked,
                "findings": [asdict(f) for f in self.findings]}


def real_dates(text: str) -> list[str]:
    """Date-like tokens of ``text`` that fall in 1925 .. next year (shifted dates fall earlier)."""
    found = []
    for pattern in (_COMPACT_DATE, _ISO_DATE, _DAY_FIRST):
        for match in pattern.finditer(text):
            a, b, c = (int(g) for g in match.groups())
            readings = [(a, b, c)] if pattern is not _DAY_FIRST else [(c, b, a), (c, a, b)]
            for year, month, day in readings:
                try:
                    date(year, month, day)
                except ValueError:
                    continue
                if FIRST_REAL_YEAR <= year <= date.today().year + 1:
                    found.append(match.group(0))
                    break
    return found


def _text(value) -> str:
    if isinstance(value, bytes | bytearray):
        return "".join(c for c in bytes(value).decode("latin-1") if c.isprintable())
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        return "\\".join(_text(v) for v in value)
    return "" if value is None else str(value).strip()


def _flatten(items) -> str:
    """The text values inside sequence items, for a finding's value."""
    parts = []
    for item in items:
        for element in item:
            if element.VR == "SQ":
                parts.append(f"{element.keyword}=[{_flatten(element.value or [])}]")
            elif element.VR in ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UI",
                                "UT", "UC"):
                parts.append(f"{element.keyword or element.tag}={_text(element.value)}")
    return "; ".join(parts)


def _claims(ds: Dataset) -> set[str]:
    return {str(item.get("CodeValue", "")).strip() for item in ds.get("DeidentificationMethodCodeSequence", [])
            if str(item.get("CodingSchemeDesignator", "")).strip() == "DCM"}


def check_dataset(ds: Dataset, where: str) -> list[Finding]:
    """Findings of one DICOM dataset (``where`` names its file)."""
    claims = _claims(ds)
    removed = str(ds.get("PatientIdentityRemoved", "")).strip().upper() == "YES"
    temporal = str(ds.get("LongitudinalTemporalInformationModified", "")).strip().upper()
    out: list[Finding] = []

    def add(location: str, kind: str, value: str) -> None:
        out.append(Finding(where, location, kind, value))

    if not removed:
        add("PatientIdentityRemoved", "not marked de-identified", str(ds.get("PatientIdentityRemoved", "")))
    if "113100" in claims and not removed:
        add("DeidentificationMethodCodeSequence", "claims the Basic Profile but PatientIdentityRemoved is not YES", "113100")
    if "113107" in claims and temporal != "MODIFIED":
        add("DeidentificationMethodCodeSequence", "claims Modified Dates but LongitudinalTemporalInformationModified "
            "is not MODIFIED", temporal)
    _check_items(ds, "", claims, removed, add)
    return out


def _check_items(ds: Dataset, prefix: str, claims: set[str], removed: bool, add) -> None:
    p = profile()
    safe_claimed = "113111" in claims
    for element in ds:
        tag = element.tag
        location = prefix + (element.keyword or f"({tag.group:04X},{tag.element:04X})")
        value = "" if element.VR == "SQ" else _text(element.value)
        if tag.is_private:
            number = tag.element
            if 0x10 <= number <= 0xFF:
                if not (safe_claimed and (tag.group, value.upper()) in p.safe_creators):
                    add(location, "private creator outside the safe list", value)
                continue
            creator = ds.get((tag.group << 16) | (number >> 8)) if number >= 0x1000 else None
            name = _text(creator.value).upper() if creator is not None else ""
            if not (safe_claimed and p.is_safe_private(tag.group, name, number & 0xFF)):
                if element.VR == "SQ" or value:
                    shown = _flatten(element.value or []) if element.VR == "SQ" else value
                    add(location, f"private tag outside the safe list ({name or 'no creator'})", shown)
            if element.VR == "SQ":
                for index, item in enumerate(element.value or []):
                    _check_items(item, f"{location}[{index}].", claims, removed, add)
            continue
        rule = p.rule(tag)
        if element.VR == "SQ":
            items = element.value or []
            if rule is not None and items and not (rule.device and "113109" in claims):
                add(location, "profile sequence still holds items", f"{len(items)} item(s): {_flatten(items)}")
            for index, item in enumerate(items):
                _check_items(item, f"{location}[{index}].", claims, removed, add)
            continue
        if not value:
            continue
        if element.VR in ("DA", "DT") and real_dates(re.sub(r"(\d{8})\d+", r"\1", value)):
            add(location, "real-looking date", value)
            continue
        if tag in (PATIENT_ID, PATIENT_NAME):
            if not removed:
                add(location, "patient identifier", value)
            continue
        if rule is None:
            if element.VR in ("LT", "ST", "UT") and (real_dates(value) or _ID_LIKE.search(value)):
                add(location, "free text holds a date or ID-like number", value)
            continue
        if rule.basic == "U" and removed:
            continue
        if rule.dates and claims & {"113106", "113107"}:
            continue
        if rule.device and "113109" in claims:
            continue
        if rule.desc and tag in p.clean and "113105" in claims:
            if real_dates(value) or _ID_LIKE.search(value):
                add(location, "cleaned descriptor holds a date or ID-like number", value)
            continue
        if rule.basic == "D" and value in p.dummy.values():
            continue
        kind = "free text" if element.VR in ("LT", "ST", "UT") else "identifying attribute holds a value"
        add(location, f"{kind} ({rule.name})", value)


def _is_dicom(head: bytes) -> bool:
    return head[128:132] == b"DICM" or head[:2] in (b"\x08\x00", b"\x02\x00")


def _check_names(root: Path, report: CheckReport) -> None:
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in [*dirs, *sorted(n for n in names if not n.startswith("."))]:
            if dates := real_dates(name):
                rel = (Path(folder) / name).relative_to(root)
                report.findings.append(Finding(str(root / rel), "name", "real-looking date in a name", ", ".join(dates)))


def _check_dicom_tree(root: Path, report: CheckReport) -> None:
    for source in iter_sources([root]):
        try:
            data = read_bytes(source)
        except (OSError, EOFError, ValueError):
            continue
        if not _is_dicom(data[:132]):
            continue
        report.files_checked += 1
        try:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
            report.findings.extend(check_dataset(ds, source.display))
        except Exception as error:  # noqa: BLE001 - an unreadable file is itself worth reporting
            report.findings.append(Finding(source.display, "file", "unreadable DICOM; cannot check", str(error)))


def _identifying_keys() -> set[str]:
    keys = set(sidecar_rules()["scrub"])
    for tag in profile().rules:
        keyword = pydicom.datadict.keyword_for_tag(tag)
        if keyword:
            keys.add(keyword)
    return keys - ALLOWED_SIDECAR_KEYS


def _walk_json(value, location: str, path: str, keys: set[str], out: list[Finding]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{location}.{key}" if location else key
            if key in keys and item not in (None, "", [], {}):
                out.append(Finding(path, where, "identifying field", json.dumps(item)[:200]))
            elif not key.endswith("Version"):  # software versions may embed release dates
                _walk_json(item, where, path, keys, out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk_json(item, f"{location}[{index}]", path, keys, out)
    elif isinstance(value, str) and (dates := real_dates(value)):
        out.append(Finding(path, location, "real-looking date", ", ".join(dates)))


def gzip_header_findings(path: Path) -> list[Finding]:
    """A gzip member header must carry no file name, comment or modification time."""
    head = path.open("rb").read(10)
    if head[:2] != b"\x1f\x8b":
        return []
    out = []
    flags, mtime = head[3], int.from_bytes(head[4:8], "little")
    if flags & 0x08:
        out.append(Finding(str(path), "gzip header", "carries a file name (FNAME)", ""))
    if flags & 0x10:
        out.append(Finding(str(path), "gzip header", "carries a comment (FCOMMENT)", ""))
    if mtime:
        out.append(Finding(str(path), "gzip header", "carries a modification time (MTIME)", str(mtime)))
    return out


NIFTI_TEXT = {"db_name": (4, 22), "descrip": (148, 228), "aux_file": (228, 252), "intent_name": (328, 344)}


def nifti_text_fields(header: bytes) -> dict[str, str]:
    return {name: header[a:b].split(b"\0")[0].decode("latin-1") for name, (a, b) in NIFTI_TEXT.items()}


def _check_nifti(path: Path) -> list[Finding]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        header = handle.read(348)
    out = []
    for name, text in nifti_text_fields(header).items():
        if not text:
            continue
        if name in ("db_name", "aux_file"):
            out.append(Finding(str(path), f"NIfTI {name}", "text field holds a value", text))
        elif _CLOCK.search(text) or real_dates(text):
            out.append(Finding(str(path), f"NIfTI {name}", "acquisition time or date", text))
    return out


def _check_bids(root: Path, report: CheckReport) -> None:
    keys = _identifying_keys()
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            if name.endswith(".json"):
                report.files_checked += 1
                try:
                    content = json.loads(path.read_text())
                except (OSError, ValueError) as error:
                    report.findings.append(Finding(str(path), "file", "unreadable JSON; cannot check", str(error)))
                    continue
                _walk_json(content, "", str(path), keys, report.findings)
            elif name.endswith(".tsv"):
                report.files_checked += 1
                with path.open(newline="") as handle:
                    for line, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
                        for cell in row:
                            if dates := real_dates(cell):
                                report.findings.append(Finding(str(path), f"line {line}", "real-looking date",
                                                               ", ".join(dates)))
            if name.endswith((".nii", ".nii.gz")):
                report.files_checked += 1
                report.findings.extend(_check_nifti(path))
            if name.endswith(".gz"):
                report.findings.extend(gzip_header_findings(path))


def check(paths: list[Path]) -> CheckReport:
    """Findings of every DICOM tree or BIDS dataset (a folder with dataset_description.json) in ``paths``."""
    report = CheckReport([str(p) for p in paths])
    for root in map(Path, paths):
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such file or folder")
        if root.is_dir() and (root / "dataset_description.json").is_file():
            _check_bids(root, report)
        else:
            _check_dicom_tree(root, report)
        if root.is_dir():
            _check_names(root, report)
    return report
