"""Protocol compliance: every parameter deviation (expected vs found) and every missing series per session."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import nibabel as nib

from qmrbids.qc.inventory import Image, Inventory
from qmrbids.qc.protocol import Protocol, describe

HEADER_PARAMETERS = ("VoxelSize", "Matrix", "NumberOfSlices", "NumberOfVolumes")


@dataclass
class Finding:
    """One compliance finding. ``kind``: deviation, missing, unexpected or unreadable."""

    site: str
    subject: str
    session: str
    series: str
    kind: str
    parameter: str
    expected: str
    found: str
    status: str  # fail | warn
    path: str

    def to_dict(self) -> dict:
        return asdict(self)


def found_value(image: Image, parameter: str):
    """The value of ``parameter`` for ``image``: from the NIfTI header or the inherited sidecar."""
    if parameter in HEADER_PARAMETERS:
        return image.header_values()[parameter]
    return image.metadata.get(parameter)


def _within(expected, found, tolerance: float) -> bool:
    try:
        return math.isclose(float(found), float(expected), rel_tol=0, abs_tol=tolerance + 1e-12)
    except (TypeError, ValueError):
        return False


def complies(expectation: dict, found) -> bool:
    """Does ``found`` meet ``expectation`` (value ± tolerance, elementwise for lists, or one allowed value)?"""
    if found is None:
        return False
    if "allowed" in expectation:
        return any(str(found).casefold() == str(a).casefold() for a in expectation["allowed"])
    expected = expectation["value"]
    if isinstance(expected, str) or isinstance(expected, bool):
        return str(found).casefold() == str(expected).casefold()
    percent = expectation.get("tolerance_percent")
    absolute = expectation.get("tolerance", 0.0)
    if isinstance(expected, list):
        if not isinstance(found, list) or len(found) != len(expected):
            return False
        return all(_within(e, f, absolute if percent is None else abs(e) * percent / 100)
                   for e, f in zip(expected, found, strict=True))
    return _within(expected, found, absolute if percent is None else abs(expected) * percent / 100)


def _text(value) -> str:
    if value is None:
        return "missing"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    return str(value)


def check_compliance(inventory: Inventory, protocol: Protocol) -> list[Finding]:
    """Compare every raw image of ``inventory`` with ``protocol`` at its session's site."""
    findings: list[Finding] = []
    by_session: dict[tuple[str, str], list[Image]] = {}
    for image in inventory.images:
        by_session.setdefault((image.subject, image.session), []).append(image)
    for key in inventory.sessions():
        subject, session = key
        site = inventory.sites[key]
        spec = protocol.for_site(site)
        images = by_session.get(key, [])
        present = {i.series for i in images}
        for series in spec.required():
            if series not in present:
                findings.append(Finding(site, subject, session, series, "missing", "", "present", "missing", "fail", ""))
        for image in images:
            expected = spec.series.get(image.series)
            if expected is None:
                findings.append(Finding(site, subject, session, image.series, "unexpected", "",
                                        "not in the protocol", "present", "warn", image.relpath))
                continue
            for parameter, expectation in expected.get("parameters", {}).items():
                try:
                    value = found_value(image, parameter)
                except (OSError, nib.filebasedimages.ImageFileError) as error:
                    findings.append(Finding(site, subject, session, image.series, "unreadable", parameter,
                                            describe(expectation), f"unreadable ({error})", "fail", image.relpath))
                    break
                if not complies(expectation, value):
                    findings.append(Finding(site, subject, session, image.series, "deviation", parameter,
                                            describe(expectation), _text(value), expectation.get("level", "fail"),
                                            image.relpath))
    return findings
