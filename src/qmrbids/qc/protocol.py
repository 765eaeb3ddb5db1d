"""Study protocols: expected acquisition parameters per series type, required series, per-site overrides.

A protocol is YAML checked against ``validators/protocols/schema.json``. Series types are
BIDS-style keys (``flip-1_VFA``); a site's block overrides parameters, requirements and QC
thresholds of the common part, field by field.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jsonschema
import yaml

from qmrbids.resources import data_path

NOT_APPLICABLE = "n/a"


class ProtocolError(ValueError):
    """The protocol file cannot be used; the message names the file and the problem."""


@cache
def protocol_schema() -> dict:
    return json.loads(data_path("validators", "protocols", "schema.json").read_text())


def validate_protocol(data: object, source: str) -> None:
    """Raise ProtocolError naming the first schema violation (its location and message)."""
    validator = jsonschema.Draft202012Validator(protocol_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ProtocolError(f"{source}: {where}: {error.message}")


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key not in ("value",):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass(frozen=True)
class SiteProtocol:
    """The protocol as it applies at one site: series -> parameters, required series, thresholds."""

    site: str
    series: dict  # key -> {"required": bool, "parameters": {...}, "qc": {...}}
    qc: dict      # metric -> threshold (defaults) and "maps" -> kind -> metric -> threshold

    def required(self) -> list[str]:
        return [key for key, spec in self.series.items() if spec.get("required", True)]

    def threshold(self, series: str, metric: str) -> dict | None:
        return self.series.get(series, {}).get("qc", {}).get(metric) or self.qc.get(metric)

    def map_threshold(self, kind: str, metric: str) -> dict | None:
        return self.qc.get("maps", {}).get(kind, {}).get(metric)


@dataclass(frozen=True)
class Protocol:
    name: str
    data: dict
    source: str

    def for_site(self, site: str) -> SiteProtocol:
        data = self.data
        override = data.get("sites", {}).get(site, {})
        defaults = _merge(data.get("defaults", {}), override.get("defaults", {}))
        series = _merge(data["series"], override.get("series", {}))
        resolved = {}
        for key, spec in series.items():
            resolved[key] = {**spec, "parameters": _merge(defaults, spec.get("parameters", {}))}
        return SiteProtocol(site, resolved, _merge(data.get("qc", {}), override.get("qc", {})))


def protocol_from_data(data: object, source: str) -> Protocol:
    validate_protocol(data, source)
    return Protocol(name=data["Name"], data=data, source=source)


def load_protocol(path: Path) -> Protocol:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ProtocolError(f"{path}: cannot read the protocol ({error})") from None
    return protocol_from_data(data, str(path))


def describe(expectation: dict) -> str:
    """An expectation as people write it: ``0.015 ± 0.0005``, ``one of Siemens, GE``."""
    if "allowed" in expectation:
        return "one of " + ", ".join(str(a) for a in expectation["allowed"])
    value = expectation.get("value")
    text = json.dumps(value) if isinstance(value, list) else str(value)
    if expectation.get("tolerance"):
        return f"{text} ± {expectation['tolerance']:g}"
    if expectation.get("tolerance_percent"):
        return f"{text} ± {expectation['tolerance_percent']:g}%"
    return text


def classify(value: float | None, threshold: dict | None) -> str:
    """pass / warn / fail of a metric value against a threshold; n/a without one or without a value."""
    if threshold is None or value is None:
        return NOT_APPLICABLE
    if ("fail_below" in threshold and value < threshold["fail_below"]) or (
            "fail_above" in threshold and value > threshold["fail_above"]):
        return "fail"
    if ("warn_below" in threshold and value < threshold["warn_below"]) or (
            "warn_above" in threshold and value > threshold["warn_above"]):
        return "warn"
    return "pass"


def describe_threshold(threshold: dict | None) -> str:
    if not threshold:
        return ""
    words = {"fail_below": "fail <", "warn_below": "warn <", "warn_above": "warn >", "fail_above": "fail >"}
    return ", ".join(f"{words[k]} {threshold[k]:g}" for k in words if k in threshold)
