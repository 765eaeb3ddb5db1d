"""Header-only index of a DICOM tree: one row per file in a pandas table.

Sources may be folders (searched recursively, whatever their organisation), single files, ``.zip``
and ``.tar`` archives, and gzip-compressed files (``.dcm.gz``). Pixel data are never read. A file
that is not DICOM is counted and skipped; a DICOM file that cannot be parsed (truncated, corrupt)
becomes a row with an ``error`` naming the file, so the rest of the scan goes on.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError

#: Standard attributes copied into the table (keyword -> column), as strings or numbers.
TEXT_ATTRIBUTES = (
    "PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyDescription",
    "SeriesInstanceUID", "SeriesDescription", "ProtocolName", "SeriesDate", "SeriesTime", "AcquisitionTime",
    "SOPInstanceUID", "SOPClassUID", "Modality", "Manufacturer", "ManufacturerModelName", "SoftwareVersions",
    "ImageType", "ScanningSequence", "SequenceVariant", "ScanOptions", "SequenceName", "MRAcquisitionType",
    "ImageOrientationPatient", "BurnedInAnnotation", "InPlanePhaseEncodingDirection", "FrameOfReferenceUID",
    "ImageComments",
)
NUMBER_ATTRIBUTES = (
    "SeriesNumber", "InstanceNumber", "AcquisitionNumber", "EchoTime", "RepetitionTime", "InversionTime",
    "FlipAngle", "EchoNumbers", "EchoTrainLength", "MagneticFieldStrength", "Rows", "Columns", "SliceThickness",
    "NumberOfFrames", "DiffusionBValue",
)
#: Private attributes that classification needs: column -> (group, creator, element).
PRIVATE_ATTRIBUTES = {
    "GEImageKind": (0x0043, "GEMS_PARM_01", 0x2F),  # 0 magnitude, 1 phase, 2 real, 3 imaginary
    "GEBValue": (0x0043, "GEMS_PARM_01", 0x39),
    "GEPulseSequence": (0x0019, "GEMS_ACQU_01", 0x9C),
    "SiemensBValue": (0x0019, "SIEMENS MR HEADER", 0x0C),
    "PhilipsBValue": (0x2001, "Philips Imaging DD 001", 0x03),
    "PhilipsImageKind": (0x2005, "Philips MR Imaging DD 001", 0x11),
}
#: Enhanced (multi-frame) MR: where the per-series values sit inside the functional groups.
ENHANCED_ATTRIBUTES = {
    "EchoTime": ("MREchoSequence", "EffectiveEchoTime"),
    "RepetitionTime": ("MRTimingAndRelatedParametersSequence", "RepetitionTime"),
    "FlipAngle": ("MRTimingAndRelatedParametersSequence", "FlipAngle"),
    "InversionTime": ("MRModifierSequence", "InversionTimes"),
    "DiffusionBValue": ("MRDiffusionSequence", "DiffusionBValue"),
    "ImageOrientationPatient": ("PlaneOrientationSequence", "ImageOrientationPatient"),
    "FrameType": ("MRImageFrameTypeSequence", "FrameType"),
}
_TEXT_TAGS = tuple((k, pydicom.datadict.tag_for_keyword(k)) for k in TEXT_ATTRIBUTES)
_NUMBER_TAGS = tuple((k, pydicom.datadict.tag_for_keyword(k)) for k in NUMBER_ATTRIBUTES)
_ECHO_TIME = pydicom.datadict.tag_for_keyword("EchoTime")
COLUMNS = ("path", "member", "error", *TEXT_ATTRIBUTES, *NUMBER_ATTRIBUTES, *PRIVATE_ATTRIBUTES,
           "EchoTimes", "FrameTypes", "BValues")


@dataclass(frozen=True)
class Source:
    """One file to read: a path, and for archive members the member name inside it."""

    path: str
    member: str = ""

    @property
    def display(self) -> str:
        return f"{self.path}:{self.member}" if self.member else self.path


@dataclass
class ScanResult:
    """The file table, plus counts of what was not DICOM and where reading failed."""

    files: pd.DataFrame
    skipped_non_dicom: int = 0
    sources: list[str] = field(default_factory=list)

    @property
    def errors(self) -> pd.DataFrame:
        return self.files[self.files["error"].astype(bool)]


def iter_sources(paths: list[Path]) -> Iterator[Source]:
    """Every file under the given folders, files and archives, in a stable order."""
    for root in paths:
        root = Path(root)
        if root.is_dir():
            for folder, dirs, names in os.walk(root, followlinks=False):
                dirs.sort()
                for name in sorted(names):
                    if name.startswith("."):
                        continue
                    yield from _expand(Path(folder) / name)
        elif root.exists():
            yield from _expand(root)
        else:
            raise FileNotFoundError(f"{root}: no such file or folder")


def _expand(path: Path) -> Iterator[Source]:
    name = path.name.lower()
    if name.endswith(".zip") and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                if not info.is_dir():
                    yield Source(str(path), info.filename)
    elif name.endswith((".tar", ".tar.gz", ".tgz")) and tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            for info in sorted(archive.getmembers(), key=lambda i: i.name):
                if info.isfile():
                    yield Source(str(path), info.name)
    else:
        yield Source(str(path))


def read_bytes(source: Source) -> bytes:
    """The (decompressed) content of a source file."""
    if source.member:
        if zipfile.is_zipfile(source.path):
            with zipfile.ZipFile(source.path) as archive:
                data = archive.read(source.member)
        else:
            with tarfile.open(source.path) as archive:
                handle = archive.extractfile(source.member)
                data = handle.read() if handle else b""
    else:
        data = Path(source.path).read_bytes()
    name = (source.member or source.path).lower()
    if name.endswith(".gz") and data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data


def _looks_like_dicom(head: bytes) -> bool:
    """Part 10 files carry 'DICM' at byte 128; headerless files start with a group 0x0008 tag."""
    return head[128:132] == b"DICM" or head[:2] in (b"\x08\x00", b"\x02\x00")


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        return "\\".join(_text(v) for v in value)
    return str(value).strip()


def _number(value) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        value = value[0] if len(value) else None
        return _number(value)
    if isinstance(value, str):
        value = value.split("\\")[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


_BINARY = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i", "FL": "<f", "FD": "<d"}


def _raw(ds, tag: int):
    """Value of one element, decoded straight from its raw bytes (much faster than pydicom's
    general conversion); text comes back as a backslash-joined string, binary numbers as a list."""
    try:
        element = ds.get_item(tag)
    except KeyError:
        return None
    if element is None:
        return None
    value = element.value
    if not isinstance(value, bytes | bytearray) or not ds.is_little_endian:
        return ds[tag].value  # already converted, or an encoding we leave to pydicom
    vr = element.VR or dictionary_vr(tag)
    if vr in _BINARY:
        size = struct.calcsize(_BINARY[vr])
        return [struct.unpack_from(_BINARY[vr], value, i)[0] for i in range(0, len(value) - size + 1, size)]
    if vr in ("OB", "OW", "UN", "SQ"):
        return None
    return value.decode("latin-1").strip(" \x00")


@cache
def dictionary_vr(tag: int) -> str:
    try:
        return pydicom.datadict.dictionary_VR(tag)
    except KeyError:
        return "UN"


_PRIVATE_GROUPS = {group for group, _, _ in PRIVATE_ATTRIBUTES.values()}


def _private_values(ds) -> dict[str, object]:
    """The PRIVATE_ATTRIBUTES of a file, found through their creators' (gggg,00xx) elements."""
    blocks = {}
    for tag in ds.keys():
        group, element = tag >> 16, tag & 0xFFFF
        if group in _PRIVATE_GROUPS and 0x10 <= element <= 0xFF:
            blocks[(group, _text(_raw(ds, tag)))] = element
    out = {}
    for column, (group, creator, element) in PRIVATE_ATTRIBUTES.items():
        block = blocks.get((group, creator))
        out[column] = None if block is None else _raw(ds, (group << 16) | (block << 8) | element)
    return out


def _functional_values(ds, sequence: str, keyword: str) -> list:
    """Values of ``keyword`` inside ``sequence`` of the shared and every per-frame functional group."""
    values = []
    for groups in (ds.get("SharedFunctionalGroupsSequence") or [], ds.get("PerFrameFunctionalGroupsSequence") or []):
        for group in groups:
            for item in group.get(sequence) or []:
                if keyword in item:
                    values.append(item.get(keyword))
    return values


def header_row(source: Source) -> dict | None:
    """Table row of one file, None when it is not DICOM."""
    row: dict = {"path": source.path, "member": source.member, "error": ""}
    try:
        if source.member or source.path.lower().endswith(".gz"):
            data = read_bytes(source)
            if not _looks_like_dicom(data[:132]):
                return None
            stream = io.BytesIO(data)
            ds = pydicom.dcmread(stream, stop_before_pixels=True)
            size, pixel_element = len(data), _element_header(stream)
        else:
            with open(source.path, "rb") as handle:
                if not _looks_like_dicom(handle.read(132)):
                    return None
                handle.seek(0)
                ds = pydicom.dcmread(handle, stop_before_pixels=True)
                size, pixel_element = os.fstat(handle.fileno()).st_size, _element_header(handle)
        for keyword, tag in _TEXT_TAGS:
            row[keyword] = _text(_raw(ds, tag))
        for keyword, tag in _NUMBER_TAGS:
            row[keyword] = _number(_raw(ds, tag))
        for column, value in _private_values(ds).items():
            row[column] = _text(value)
        row["EchoTimes"] = _text(_raw(ds, _ECHO_TIME))
        row["FrameTypes"] = ""
        row["BValues"] = ""
        if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
            _enhanced(ds, row)
        if not row["SeriesInstanceUID"]:
            row["error"] = f"{source.display}: no SeriesInstanceUID (0020,000E); not an image of a series"
        elif (missing := _missing_pixel_bytes(ds, size, pixel_element)) > 0:
            row["error"] = f"{source.display}: truncated: {missing} bytes of pixel data are missing"
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, AttributeError, TypeError,
            IndexError, OverflowError) as error:
        row["error"] = f"{source.display}: unreadable DICOM header ({type(error).__name__}: {error})"
    return row


_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian


def _element_header(handle) -> tuple[int, bytes]:
    """Where the reader stopped (the Pixel Data element, when present) and the 12 bytes there."""
    position = handle.tell()
    return position, handle.read(12)


def _missing_pixel_bytes(ds, file_size: int, pixel_element: tuple[int, bytes]) -> int:
    """How many bytes of uncompressed pixel data the file lacks (0 when complete or compressed).

    The Pixel Data element's own length is compared with what is left of the file; without a
    readable element header, the bytes the image needs are compared with the whole file size.
    """
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        return 0
    position, header = pixel_element
    if header[:4] == _PIXEL_DATA_TAG and len(header) == 12:
        explicit = header[4:6].isalpha() and header[4:6].isupper()
        length = struct.unpack("<I", header[8:12] if explicit else header[4:8])[0]
        if length != 0xFFFFFFFF:
            return max(0, position + (12 if explicit else 8) + length - file_size)
    try:
        needed = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
                  * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.BitsAllocated) // 8)
    except (AttributeError, TypeError, ValueError):
        return 0
    return max(0, needed - file_size)  # the header's own bytes make this a lower bound


def _enhanced(ds, row: dict) -> None:
    """Fill per-series values of an enhanced multi-frame file from its functional groups.

    Enhanced MR has no ScanningSequence/SequenceVariant; their classic tokens are derived from
    EchoPulseSequence, InversionRecovery and the spoiling/MT attributes so rules apply alike.
    """
    if not row["ScanningSequence"]:
        tokens = {"GRADIENT": ["GR"], "SPIN": ["SE"], "BOTH": ["SE", "GR"]}.get(str(ds.get("EchoPulseSequence", "")), [])
        if str(ds.get("InversionRecovery", "")) == "YES":
            tokens.append("IR")
        if str(ds.get("EchoPlanarPulseSequence", "")) == "YES":
            tokens.append("EP")
        row["ScanningSequence"] = "\\".join(tokens)
    if not row["SequenceVariant"]:
        variant = []
        if str(ds.get("Spoiling", "")) not in ("", "NONE"):
            variant.append("SP")
        if str(ds.get("MagnetizationTransfer", "NONE")) not in ("", "NONE"):
            variant.append("MTC")
        row["SequenceVariant"] = "\\".join(variant)
    for column, (sequence, keyword) in ENHANCED_ATTRIBUTES.items():
        values = _functional_values(ds, sequence, keyword)
        if not values:
            continue
        if column == "EchoTime":
            row["EchoTimes"] = "\\".join(sorted({_text(v) for v in values}, key=float))
        if column == "DiffusionBValue":
            row["BValues"] = "\\".join(sorted({_text(v) for v in values}, key=float))
        if column == "FrameType":
            row["FrameTypes"] = "|".join(sorted({_text(v) for v in values}))
            continue
        if column == "ImageOrientationPatient":
            row[column] = row[column] or _text(values[0])
        elif row.get(column) is None:
            row[column] = _number(values[0])


def _rows(sources: list[Source]) -> list[dict | None]:
    return [header_row(s) for s in sources]


def scan(paths: list[Path], jobs: int = 1, on_progress: Callable[[int], None] | None = None) -> ScanResult:
    """Index every file under ``paths``; ``jobs`` > 1 reads headers in that many processes."""
    sources = list(iter_sources(paths))
    rows: list[dict] = []
    skipped = 0
    chunk = 256
    chunks = [sources[i:i + chunk] for i in range(0, len(sources), chunk)]
    if jobs > 1 and len(sources) > chunk:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = pool.map(_rows, chunks)
            for part, result in zip(chunks, results, strict=True):
                skipped += _collect(result, rows)
                if on_progress:
                    on_progress(len(part))
    else:
        for part in chunks:
            skipped += _collect(_rows(part), rows)
            if on_progress:
                on_progress(len(part))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return ScanResult(table, skipped, [str(p) for p in paths])


def _collect(result: list[dict | None], rows: list[dict]) -> int:
    skipped = 0
    for row in result:
        if row is None:
            skipped += 1
        else:
            rows.append(row)
    return skipped
