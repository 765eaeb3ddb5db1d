"""De-identification of DICOM following PS3.15 Annex E (Basic Application Level Confidentiality
Profile) with the options Clean Descriptors, Retain Safe Private, Retain Longitudinal Temporal
Information with Modified Dates and, only when asked, Retain Device Identity (pseudonymised).

The profile and the safe private list are data (``converters/deidentification.yaml``); this module
applies them to every element, inside nested sequences too. Everything keyed (UIDs, date shifts,
pseudonyms) is an HMAC of the user's key, so the same input and key always give the same bytes,
and another key gives other UIDs. Pixel data are never touched, so images whose pixels may carry
names (BurnedInAnnotation=YES, secondary captures) are refused unless included knowingly.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import pydicom
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from qmrbids import __version__
from qmrbids.dicom.research_ids import ResearchIds, outside
from qmrbids.dicom.scan import Source, read_bytes, scan
from qmrbids.io import atomic_write_bytes
from qmrbids.parallel import map_unordered
from qmrbids.resources import data_path

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and its multi-frame children .7.1 ... .7.4
TEXT_VRS = {"AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
#: Years a date is moved back at least, so shifted dates fall before 1925 (BIDS's advice for
#: de-identified dates) and can never be mistaken for real ones; the key adds up to 10 years.
SHIFT_BASE_DAYS = 150 * 365
SHIFT_SPREAD_DAYS = 3653
_DATE_TOKEN = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
_TOKEN = re.compile(r"[A-Za-z0-9]+")
_REAL_DATE = re.compile(r"(?<!\d)(19[2-9]\d|20\d\d)(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?!\d)"
                        r"|(?<!\d)(19[2-9]\d|20\d\d)-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])(?!\d)")


class DeidentifyError(ValueError):
    """The de-identification cannot run as asked (bad key, map inside the output, ...)."""


class Refused(ValueError):
    """A file is not de-identified because its pixels may carry identifiers."""


@dataclass(frozen=True)
class Options:
    """How to de-identify. ``date_shift``: "auto" (per subject, from the key), "none" (dates
    removed) or a number of days added to every date."""

    key: bytes
    date_shift: str | int = "auto"
    keep_device_identity: bool = False
    include_burned_in: bool = False

    @property
    def retains_dates(self) -> bool:
        return self.date_shift != "none"


def load_key(path: Path) -> bytes:
    """The secret key from a key file (at least 16 bytes after stripping whitespace)."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as error:
        raise DeidentifyError(f"{path}: cannot read the key file ({error.strerror})") from None
    if len(key) < 16:
        raise DeidentifyError(f"{path}: the key must hold at least 16 bytes (e.g. `openssl rand -hex 32 > {path}`)")
    return key


def parse_date_shift(text: str) -> str | int:
    if text in ("auto", "none"):
        return text
    try:
        return int(text)
    except ValueError:
        raise DeidentifyError(f"--date-shift must be auto, none or a whole number of days, not {text!r}") from None


@dataclass(frozen=True)
class Rule:
    name: str
    basic: str  # resolved single action: D, Z, X, K, U
    desc: bool  # Clean Descriptors applies
    dates: bool  # Retain Modified Dates applies
    device: bool  # Retain Device Identity applies


@dataclass(frozen=True)
class Profile:
    rules: dict[int, Rule]
    masks: tuple[tuple[int, int, Rule], ...]  # (mask, value, rule) for repeating groups 50xx/60xx
    clean: frozenset[int]
    safe_private: frozenset[tuple[int, str, int]]
    safe_blocks: frozenset[tuple[int, str]]  # creators whose whole block is kept
    unsafe_private: frozenset[tuple[int, str, int]]
    safe_creators: frozenset[tuple[int, str]]
    codes: dict[str, tuple[str, str]]
    dummy: dict[str, str]

    def is_safe_private(self, group: int, creator: str, element: int) -> bool:
        """Whether private element byte ``element`` of ``creator``'s block in ``group`` is kept."""
        key = (group, creator.strip().upper(), element)
        if key in self.unsafe_private:
            return False
        return key in self.safe_private or key[:2] in self.safe_blocks

    def rule(self, tag: int) -> Rule | None:
        found = self.rules.get(tag)
        if found is None:
            for mask, value, masked in self.masks:
                if tag & mask == value:
                    return masked
        return found


@cache
def profile() -> Profile:
    """The Annex E table and options of ``converters/deidentification.yaml``."""
    data = yaml.safe_load(data_path("converters", "deidentification.yaml").read_text())
    compound = data["compound"]
    rules, masks = {}, []
    for tag, entry in data["attributes"].items():
        basic = compound.get(entry["basic"], entry["basic"])
        rule = Rule(entry["name"], basic, entry.get("desc") == "C", entry.get("dates") == "C", entry.get("device") == "K")
        if "X" in tag:
            mask = int("".join("0" if c == "X" else "F" for c in tag), 16)
            masks.append((mask, int(tag.replace("X", "0"), 16), rule))
        else:
            rules[int(tag, 16)] = rule
    entries = [(int(g), str(c).upper(), e) for listed in data["safe_private"].values() for g, c, e, _ in listed]
    safe = frozenset((g, c, int(e)) for g, c, e in entries if e != "*")
    blocks = frozenset((g, c) for g, c, e in entries if e == "*")
    unsafe = frozenset((int(g), str(c).upper(), int(e)) for g, c, e, _ in data["unsafe_private"])
    return Profile(rules, tuple(masks), frozenset(int(t, 16) for t in data["clean_descriptors"]), safe, blocks, unsafe,
                   frozenset((g, c) for g, c, _ in safe) | blocks,
                   {k: tuple(v) for k, v in data["method_codes"].items()}, data["dummy"])


def _mac(key: bytes, purpose: str, value: str) -> bytes:
    return hmac.new(key, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()


def keyed_uid(uid: str, key: bytes) -> str:
    """A UID in the 2.25 arc from an HMAC of the original: consistent across files, one per key."""
    return f"2.25.{int.from_bytes(_mac(key, 'uid', uid.strip())[:16], 'big')}"


def shift_days(patient_id: str, options: Options) -> int | None:
    """Days added to every date of a subject (None: dates are not retained)."""
    if options.date_shift == "none":
        return None
    if options.date_shift != "auto":
        return int(options.date_shift)
    spread = int.from_bytes(_mac(options.key, "date-shift", patient_id)[:8], "big") % SHIFT_SPREAD_DAYS
    return -(SHIFT_BASE_DAYS + spread)


def shift_da(value: str, days: int) -> str:
    """A DICOM date (YYYYMMDD) moved by ``days`` ('' when it is not a date)."""
    text = value.strip().replace(".", "")
    try:
        day = date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return ""
    return (day + timedelta(days=days)).strftime("%Y%m%d").zfill(8)


def _shift_dt(value: str, days: int) -> str:
    text = value.strip()
    if len(text) < 8:
        return ""
    shifted = shift_da(text[:8], days)
    return shifted + text[8:] if shifted else ""


def refusal(ds: Dataset) -> str:
    """Why a file's pixels may carry identifiers ('' when they may be used)."""
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        return "BurnedInAnnotation is YES (pixels may show names)"
    if str(ds.get("SOPClassUID", "")).startswith(SECONDARY_CAPTURE):
        return "it is a secondary capture (pixels may show names)"
    return ""


@dataclass
class _Context:
    options: Options
    days: int | None
    identifiers: set[str] = field(default_factory=set)

    @property
    def key(self) -> bytes:
        return self.options.key


def _values(element) -> list:
    value = element.value
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def _set(element, values: list) -> None:
    element.value = values[0] if len(values) == 1 else (values or None)


def _action(rule: Rule, tag: int, options: Options) -> str:
    """The action of one profile attribute under the options in force."""
    p = profile()
    if rule.desc:
        return "C" if tag in p.clean else "X"
    if rule.dates:
        return "S" if options.retains_dates else ("Z" if rule.basic == "Z" else "X")
    if rule.device and options.keep_device_identity:
        return "P"
    return rule.basic


def _collect_identifiers(ds: Dataset, options: Options, found: set[str]) -> None:
    """Tokens of the identifying values the profile removes (names, IDs, places; not other
    descriptors), to clean them out of the descriptors that are kept."""
    p = profile()
    for element in ds:
        if element.VR == "SQ":
            for item in element.value or []:
                _collect_identifiers(item, options, found)
            continue
        rule = p.rule(element.tag)
        if rule is None or rule.desc or element.VR not in TEXT_VRS or _action(rule, element.tag, options) == "K":
            continue
        for value in _values(element):
            found.update(t.upper() for t in _TOKEN.findall(str(value)) if len(t) >= 3)


def clean_descriptor(text: str, identifiers: set[str]) -> str:
    """A descriptor without the file's identifying values, date-like tokens or ID-like digit runs."""
    text = _DATE_TOKEN.sub("", text)
    kept = _TOKEN.sub(lambda m: "" if m.group(0).upper() in identifiers or re.search(r"\d{5,}", m.group(0))
                      else m.group(0), text)
    return re.sub(r"\s{2,}", " ", kept).strip(" _-^")


def _dummy(vr: str, original, key: bytes):
    d = profile().dummy
    if vr == "UI":
        return keyed_uid(str(original), key)
    if vr in ("US", "SS", "UL", "SL", "UV", "SV"):
        return 0
    if vr in ("FL", "FD"):
        return 0.0
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        return b"\0\0"
    return d.get(vr, d["default"])


def _pseudonym(value, vr: str, key: bytes):
    if vr == "UI":
        return keyed_uid(str(value), key)
    return "D" + hmac.new(key, b"device\0" + str(value).encode(), hashlib.sha256).hexdigest()[:15].upper()


def _apply(ds: Dataset, tag, element, action: str, ctx: _Context) -> None:
    vr = element.VR
    if action == "X":
        del ds[tag]
    elif action == "Z" or (vr == "SQ" and action in ("D", "P", "C", "S")):
        element.value = Sequence() if vr == "SQ" else None
    elif action == "D":
        if vr in ("DA", "DT") and ctx.days is not None:
            _apply(ds, tag, element, "S", ctx)
        else:
            _set(element, [_dummy(vr, v, ctx.key) for v in _values(element)] or [_dummy(vr, "", ctx.key)])
    elif action == "U":
        _set(element, [keyed_uid(str(v), ctx.key) for v in _values(element) if str(v).strip()])
    elif action == "P":
        _set(element, [_pseudonym(v, vr, ctx.key) for v in _values(element)])
    elif action == "C":
        cleaned = [clean_descriptor(str(v), ctx.identifiers) for v in _values(element)] if vr in TEXT_VRS else []
        _set(element, cleaned)
    elif action == "S":
        if vr == "DA":
            _set(element, [shift_da(str(v), ctx.days) for v in _values(element)])
        elif vr == "DT":
            _set(element, [_shift_dt(str(v), ctx.days) for v in _values(element)])
        elif vr != "TM":  # times keep their values (the shift is whole days); a timezone would locate the site
            del ds[tag]
    elif action == "K" and vr == "SQ":
        for item in element.value or []:
            _walk(item, ctx)


def _leaks(element, ctx: _Context) -> bool:
    """Safety net for kept private text: a real-looking date or an identifying value of the file."""
    if element.VR in ("SQ", "OB", "OW", "OF", "OD", "OL", "FL", "FD", "US", "SS", "UL", "SL"):
        return False
    value = element.value
    text = value.decode("latin-1", "replace") if isinstance(value, bytes | bytearray) else str(value)
    if len(text) > 4096:  # large text blobs (XProtocol) are parameter dumps, not free text
        return False
    if _REAL_DATE.search(text):
        return True
    return any(t.upper() in ctx.identifiers for t in _TOKEN.findall(text) if len(t) >= 3)


def _walk(ds: Dataset, ctx: _Context) -> None:
    """Apply the profile to every element of ``ds`` and of its nested sequences."""
    p = profile()
    kept_blocks: set[tuple[int, int]] = set()
    creators: list[int] = []
    for tag in list(ds.keys()):
        element = ds[tag]
        group, number = tag >> 16, tag & 0xFFFF
        if tag.is_private:
            if 0x10 <= number <= 0xFF:
                creators.append(tag)
                continue
            block = (group << 16) | (number >> 8)
            creator = ds.get(block)
            name = str(creator.value).strip().upper() if creator is not None and number >= 0x1000 else ""
            if p.is_safe_private(group, name, number & 0xFF) and not _leaks(element, ctx):
                kept_blocks.add((group, number >> 8))
                if element.VR == "SQ":
                    for item in element.value or []:
                        _walk(item, ctx)
            else:
                del ds[tag]
            continue
        if number == 0:  # group lengths are recomputed on writing
            del ds[tag]
            continue
        rule = p.rule(tag)
        if rule is not None:
            _apply(ds, tag, element, _action(rule, tag, ctx.options), ctx)
        elif element.VR == "SQ":
            for item in element.value or []:
                _walk(item, ctx)
        elif element.VR in ("DA", "DT"):
            _apply(ds, tag, element, "S" if ctx.days is not None else "X", ctx)
    for tag in creators:
        if (tag >> 16, tag & 0xFF) not in kept_blocks:
            del ds[tag]


def applied_options(options: Options) -> list[str]:
    """The CID 7050 options (keys of ``method_codes``) a run with ``options`` applies."""
    applied = ["basic", "clean_descriptors", "safe_private"]
    if options.retains_dates:
        applied.append("modified_dates")
    if options.keep_device_identity:
        applied.append("device_identity")
    return applied


def _record_method(ds: Dataset, options: Options) -> None:
    """PatientIdentityRemoved, LongitudinalTemporalInformationModified and the method attributes,
    listing exactly the options applied here (earlier pixel/visual cleaning claims are kept)."""
    p = profile()
    ours = {code for code, _ in p.codes.values()}
    prior_pixel = {p.codes[k][0] for k in ("clean_pixel", "clean_visual", "clean_graphics", "clean_structured")}
    items = []
    for item in ds.get("DeidentificationMethodCodeSequence", []):
        code, scheme = str(item.get("CodeValue", "")).strip(), str(item.get("CodingSchemeDesignator", "")).strip()
        if scheme != "DCM" or code in prior_pixel or code not in ours:
            items.append(item)
    for name in applied_options(options):
        code, meaning = p.codes[name]
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code, "DCM", meaning
        items.append(item)
    method = [m for m in _values(ds["DeidentificationMethod"]) if not str(m).startswith("qmrbids")] \
        if "DeidentificationMethod" in ds else []
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "MODIFIED" if options.retains_dates else "REMOVED"
    ds.DeidentificationMethod = [*method, f"qmrbids {__version__}", "DICOM PS3.15 Annex E; options in (0012,0064)"]
    ds.DeidentificationMethodCodeSequence = Sequence(items)


def deidentify_dataset(ds: Dataset, options: Options, research_id: str) -> Dataset:
    """De-identify ``ds`` in place (raises :class:`Refused` for burned-in annotation)."""
    if not options.include_burned_in and (reason := refusal(ds)):
        raise Refused(reason)
    ctx = _Context(options, shift_days(str(ds.get("PatientID", "")).strip(), options))
    _collect_identifiers(ds, options, ctx.identifiers)
    _walk(ds, ctx)
    ds.PatientID = research_id
    ds.PatientName = research_id
    _record_method(ds, options)
    meta = FileMetaDataset()
    old = getattr(ds, "file_meta", None) or FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", old.get("MediaStorageSOPClassUID"))
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "")
    meta.TransferSyntaxUID = old.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian)
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"QMRBIDS_{__version__}"[:16]
    ds.file_meta = meta
    ds.preamble = b"\0" * 128  # vendors may hide text in the preamble
    return ds


def deidentify_bytes(data: bytes, options: Options, research_id: str) -> tuple[bytes, Dataset]:
    """De-identified Part 10 bytes of one DICOM file, and its dataset (for naming)."""
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    deidentify_dataset(ds, options, research_id)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue(), ds


@dataclass
class DeidentifyReport:
    out_dir: str
    files_scanned: int = 0
    non_dicom_skipped: int = 0
    non_image_skipped: int = 0  # DICOM without a SeriesInstanceUID (DICOMDIR, reports)
    written: int = 0
    errors: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    subjects: dict[str, int] = field(default_factory=dict)  # research ID -> files written
    options: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.errors or self.refused else 0

    def to_dict(self) -> dict:
        return asdict(self)


def _one(task: tuple[str, str, str, Options, str]) -> tuple[str, str, str]:
    """(status, research ID, message) of one file: written | refused | error."""
    path, member, research_id, options, out_dir = task
    source = Source(path, member)
    try:
        data, ds = deidentify_bytes(read_bytes(source), options, research_id)
        target = Path(out_dir, research_id, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), f"{ds.SOPInstanceUID}.dcm")
    except Refused as reason:
        return "refused", research_id, f"{source.display}: refused: {reason}; use --include-burned-in to include it knowingly"
    except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
        return "error", research_id, f"{source.display}: cannot de-identify ({type(error).__name__}: {error})"
    atomic_write_bytes(target, data)
    return "written", research_id, ""


def _chunk(tasks: list) -> list[tuple[str, str, str]]:
    return [_one(task) for task in tasks]


def deidentify(sources: list[Path], out_dir: Path, options: Options, *, map_path: Path | None = None, jobs: int = 1,
               on_file: Callable[[], None] | None = None) -> DeidentifyReport:
    """De-identify every DICOM file under ``sources`` into ``out_dir``/<research ID>/<study>/<series>/."""
    out_dir = Path(out_dir)
    if map_path is not None and not outside(map_path, out_dir):
        raise DeidentifyError(f"{map_path}: the research-ID map must be kept outside the output folder {out_dir}")
    scanned = scan([Path(s) for s in sources], jobs=jobs)
    table = scanned.files
    report = DeidentifyReport(str(out_dir), len(table) + scanned.skipped_non_dicom, scanned.skipped_non_dicom,
                              options=[profile().codes[o][1] for o in applied_options(options)])
    non_image = table["error"].str.contains("no SeriesInstanceUID", regex=False)
    report.non_image_skipped = int(non_image.sum())
    bad = table["error"].astype(bool) & ~non_image
    report.errors.extend(str(e) for e in table.loc[bad, "error"])
    good = table[~table["error"].astype(bool)]
    ids = ResearchIds(options.key, map_path)
    labels = ids.assign(sorted(set(good["PatientID"].fillna(""))))
    tasks = [(row["path"], row["member"], labels[row["PatientID"] or ""], options, str(out_dir))
             for row in good.to_dict("records")]
    size = max(1, min(64, len(tasks) // (4 * jobs) or 1))  # chunks: process start-up and pickling amortised
    chunks = [tasks[i:i + size] for i in range(0, len(tasks), size)]
    for results in map_unordered(_chunk, chunks, jobs, processes=True):
        for status, research_id, message in results:
            if status == "written":
                report.written += 1
                report.subjects[research_id] = report.subjects.get(research_id, 0) + 1
            else:
                (report.refused if status == "refused" else report.errors).append(message)
            if on_file:
                on_file()
    report.errors.sort()
    report.refused.sort()
    report.subjects = dict(sorted(report.subjects.items()))
    ids.save()
    return report
