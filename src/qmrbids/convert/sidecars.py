"""Complete dcm2niix's sidecars: qMRI metadata, identifier scrubbing and the provenance object."""

from __future__ import annotations

import hashlib
import hmac
import re
import warnings
from functools import cache

import pydicom
import yaml

from qmrbids.resources import data_path

PROVENANCE_KEY = "QmrbidsProvenance"


@cache
def sidecar_rules() -> dict:
    return yaml.safe_load(data_path("converters", "sidecars.yaml").read_text())


def series_hmac(uid: str, key: bytes) -> str:
    """Keyed hash of a SeriesInstanceUID: links a file to its source for whoever holds the key only."""
    return hmac.new(key, uid.encode(), hashlib.sha256).hexdigest()


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ascconv_value(dicom_path, key: str) -> str | None:
    """A value of the Siemens CSA series header's MrPhoenixProtocol (ASCCONV) in a DICOM file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nibabel.nicom import csareader
    try:
        ds = pydicom.dcmread(dicom_path, stop_before_pixels=True)
        phoenix = csareader.get_scalar(csareader.get_csa_header(ds, "series"), "MrPhoenixProtocol") or ""
    except Exception:  # noqa: BLE001 - any unreadable CSA simply means "not available"
        return None
    match = re.search(rf"^{re.escape(key)}\s*=\s*(\S+)", phoenix, re.M)
    return match.group(1) if match else None


def _number(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() else number


def derive_fields(suffix: str, meta: dict, series: dict, first_file) -> dict:
    """qMRI fields for a suffix from the rules in converters/sidecars.yaml."""
    out = {}
    for name, ways in (sidecar_rules()["derive"].get(suffix) or {}).items():
        for way in ways if isinstance(ways, list) else [ways]:
            if "vendors" in way and not re.search(way["vendors"], series.get("Manufacturer") or "", re.I):
                continue
            value = None
            if "from" in way:
                value = meta.get(way["from"])
            elif "series" in way:
                value = series.get(way["series"])
                value = bool(value) if isinstance(value, bool) else _number(value)
            elif "ascconv" in way and first_file is not None:
                value = _number(ascconv_value(first_file, way["ascconv"]))
            elif "value" in way:
                value = way["value"]
            if value is not None and value == value:  # skip NaN
                out[name] = value
                break
    return out


def scrub(meta: dict) -> dict:
    banned = set(sidecar_rules()["scrub"])
    return {k: v for k, v in meta.items() if k not in banned}
