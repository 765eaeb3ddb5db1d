"""Plant unique markers and real-looking dates in every attribute of the PS3.15 Annex E profile a
vendor file can carry (also inside nested sequences and in private tags), then search output bytes
for any of them. Markers depend on the attribute only, so every file of a subject agrees."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from qmrbids.dicom.deidentify import profile

TEXT = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"}
SKIP_GROUPS = {0x0000, 0x0002, 0xFFFA, 0xFFFC}
DESCRIPTORS = {0x0008103E, 0x00181030, 0x00180010}
KEY_UIDS = {0x00080018, 0x0020000D, 0x0020000E, 0x00200052}  # identity of files and series: kept unique


def marker(kind: str, tag: int) -> str:
    return f"ZQX{kind}{tag:08X}"


@dataclass
class Planted:
    """Everything planted: text markers, dates (YYYYMMDD), and UIDs that must all disappear."""

    markers: set[str] = field(default_factory=set)
    dates: set[str] = field(default_factory=set)
    uids: set[str] = field(default_factory=set)

    def date(self, index: int) -> str:
        value = (date(1930, 1, 1) + timedelta(days=(37 * index) % 30000)).strftime("%Y%m%d")  # 1930..2012
        self.dates.add(value)
        return value

    def text(self, kind: str, tag: int) -> str:
        value = marker(kind, tag)
        self.markers.add(value)
        return value


def _nested_item(planted: Planted, tag: int) -> Dataset:
    item = Dataset()
    item.CodeValue = planted.text("N", tag)
    item.CodingSchemeDesignator = "99ZQX"
    item.CodeMeaning = planted.text("Q", tag)
    item.PersonName = planted.text("R", tag)
    uid = f"1.2.826.0.1.3680043.10.999.{tag}"
    planted.uids.add(uid)
    item.ReferencedSOPInstanceUID = uid
    return item


def plant(ds: Dataset, planted: Planted) -> None:
    """Fill ``ds`` with markers in every profile attribute, nested sequences and private tags."""
    original_pid = str(ds.get("PatientID", ""))
    for index, tag in enumerate(sorted(profile().rules)):
        if tag >> 16 in SKIP_GROUPS or tag in DESCRIPTORS:
            continue
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        if vr in TEXT:
            value = planted.text("M", tag)
        elif vr == "DA":
            value = planted.date(index)
        elif vr == "DT":
            value = planted.date(index) + "101500"
        elif vr == "TM":
            value = "101500"
        elif vr == "AS":
            value = "042Y"
        elif vr in ("IS", "DS"):
            value = "123"
        elif vr == "UI":
            if tag in KEY_UIDS or tag in ds:
                continue
            value = f"1.2.826.0.1.3680043.10.998.{tag}"
            planted.uids.add(value)
        elif vr == "SQ":
            value = Sequence([_nested_item(planted, tag)])
        else:
            continue
        ds.add_new(tag, vr, value)
    for tag in KEY_UIDS:
        if tag in ds:
            planted.uids.add(str(ds[tag].value))
    # one subject per original patient: the marker plus a tag of the original PatientID
    subject = hashlib.sha256(original_pid.encode()).hexdigest()[:4].upper()
    ds.PatientID, ds.PatientName = marker("M", 0x00100020) + subject, marker("M", 0x00100010) + subject
    name, pid = ds.PatientName, ds.PatientID
    ds.SeriesDescription = f"{ds.get('SeriesDescription', '')} {name}"
    ds.ProtocolName = f"{ds.get('ProtocolName', '')} {pid} {planted.date(9000)}"
    ds.ContrastBolusAgent = f"GADO {name}"
    # a nested sequence the profile does not list, holding profile attributes
    holder = Dataset()
    holder.InstitutionName = planted.text("S", 0x00080080)
    holder.OtherPatientNames = planted.text("S", 0x00101001)
    holder.InstanceCreationDate = planted.date(9001)
    ds.PerformedProtocolCodeSequence = Sequence([holder])
    # private tags: a vendor block element outside the safe list, a foreign creator with text,
    # a date and a sequence, and identifying text inside a block the safe list keeps whole
    for group, creator in ((0x0019, "SIEMENS MR HEADER"), (0x0019, "GEMS_ACQU_01"), (0x2001, "Philips Imaging DD 001")):
        block = ds.private_block(group, creator, create=True)
        block.add_new(0x7E, "LO", planted.text("P", group << 16 | 0x7E) + creator[:3])
    foreign = ds.private_block(0x0033, "ACME PACS 1.0", create=True)
    foreign.add_new(0x01, "LO", planted.text("P", 0x00331001))
    foreign.add_new(0x02, "DA", planted.date(9002))
    foreign.add_new(0x03, "SQ", Sequence([_nested_item(planted, 0x00331003)]))
    philips = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
    philips.add_new(0x7F, "LO", f"{pid} {planted.date(9003)}")


def plant_tree(source: Path, target: Path, planted: Planted) -> int:
    """Copy every DICOM file under ``source`` to ``target`` with markers planted; returns the count."""
    count = 0
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
        except pydicom.errors.InvalidDicomError:
            continue
        plant(ds, planted)
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out, enforce_file_format=True)
        count += 1
    return count


def _hits(blob: bytes, needle: bytes, before: bytes = b"", after: bytes = b"") -> bool:
    """Whether ``needle`` occurs in ``blob`` with no byte of ``before``/``after`` right next to it."""
    at = blob.find(needle)
    while at >= 0:
        prev = blob[at - 1:at] if at else b""
        nxt = blob[at + len(needle):at + len(needle) + 1]
        if not (prev and prev in before) and not (nxt and nxt in after):
            return True
        at = blob.find(needle, at + 1)
    return False


def leaks(root: Path, planted: Planted) -> list[str]:
    """Every planted value found in the bytes (gzip members decompressed too) or paths under ``root``.

    Markers are matched case-insensitively; UIDs and dates only as whole values (a date may start
    a DT), never as digits inside a longer number or UID."""
    digits, uid_chars = b"0123456789", b"0123456789."
    needles = [(m.upper().encode(), b"", b"") for m in planted.markers]
    needles += [(u.encode(), uid_chars, digits) for u in planted.uids]
    for d in planted.dates:
        needles += [(d.encode(), uid_chars, b""), (f"{d[:4]}-{d[4:6]}-{d[6:]}".encode(), digits, digits)]
    found = []
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root)).encode()
        blobs = [rel.upper()]
        if path.is_file():
            data = path.read_bytes()
            blobs += [data.upper()] + ([gzip.decompress(data).upper()] if data[:2] == b"\x1f\x8b" else [])
        for needle, before, after in needles:
            if any(_hits(blob, needle, before, after) for blob in blobs):
                found.append(f"{path.relative_to(root)}: {needle.decode()}")
    return found
