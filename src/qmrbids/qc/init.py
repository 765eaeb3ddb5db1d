"""``protocol init``: draft a study protocol from a reference session, for a person to edit.

The draft copies each series' acquisition parameters with the default tolerances of
``validators/protocols/init.yaml``, validates against the protocol schema, and is checked to
accept its own reference session before it is returned.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import yaml

from qmrbids.qc.compliance import check_compliance, found_value
from qmrbids.qc.inventory import DatasetError, Inventory, natural_key, read_inventory
from qmrbids.qc.metrics import map_kinds, session_metrics, sessions_work
from qmrbids.qc.protocol import Protocol, ProtocolError, protocol_from_data
from qmrbids.resources import data_path


@cache
def init_rules() -> dict:
    return yaml.safe_load(data_path("validators", "protocols", "init.yaml").read_text())


def _round(value):
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def _expectation(value, rule: dict) -> dict:
    if rule.get("allowed"):
        expectation = {"allowed": [value]}
    else:
        expectation = {"value": _round(value)}
        expectation.update({k: rule[k] for k in ("tolerance", "tolerance_percent") if k in rule})
    if "level" in rule:
        expectation["level"] = rule["level"]
    return expectation


def _reference_session(inventory: Inventory, subject: str, session: str | None) -> tuple[str, str]:
    sessions = sorted(s for sub, s in inventory.sessions() if sub == subject)
    if not sessions:
        raise DatasetError(f"{inventory.root}: no images of subject {subject!r}")
    if session is None:
        if len(sessions) > 1:
            raise DatasetError(f"sub-{subject} has sessions {', '.join(sessions)}; choose one with --session-label")
        return subject, sessions[0]
    if session not in sessions:
        raise DatasetError(f"sub-{subject} has no session {session!r} (it has {', '.join(sessions) or 'none'})")
    return subject, session


def draft_protocol(dataset: Path, subject: str, session: str | None = None) -> dict:
    """A protocol (as data) that the reference session ``subject``/``session`` complies with."""
    inventory = read_inventory(Path(dataset), map_kinds(), [subject])
    key = _reference_session(inventory, subject, session)
    images = [i for i in inventory.images if (i.subject, i.session) == key]
    rules = init_rules()
    series: dict[str, dict] = {}
    for image in images:
        parameters = {}
        for name, rule in rules["parameters"].items():
            value = found_value(image, name)
            if value is not None and not isinstance(value, dict):
                parameters[name] = _expectation(value, rule)
        series.setdefault(image.series, {"parameters": parameters})
    defaults = {}
    for name in rules["common"]:
        values = [s["parameters"].get(name) for s in series.values()]
        if values and all(v is not None and v == values[0] for v in values):
            defaults[name] = values[0]
            for s in series.values():
                del s["parameters"][name]
    work = next(w for w in sessions_work(inventory) if (w.subject, w.session) == key)
    records, _ = session_metrics(work)
    for record in records:
        rule = rules["qc"].get(record.name)
        if rule is None or not rule.get("relative") or record.series not in series:
            continue
        if record.value is not None and math.isfinite(record.value) and record.value > 0:
            threshold = {k: float(f"{v * record.value:.3g}") for k, v in rule.items() if k != "relative"}
            series[record.series].setdefault("qc", {})[record.name] = threshold
    absolute = {metric: rule for metric, rule in rules["qc"].items() if not rule.get("relative")}
    name = _dataset_name(Path(dataset))
    where = f"sub-{subject}" + (f" ses-{key[1]}" if key[1] else "")
    data = {"Name": f"{name} (drafted from {where})",
            "Description": f"Drafted by qmrbids protocol init from {where}; edit tolerances, required series "
                           "and per-site overrides before use.",
            "defaults": defaults, "qc": absolute, "series": dict(sorted(series.items(), key=lambda item: natural_key(item[0])))}
    data = json.loads(json.dumps(data))  # plain types: sidecar values may be int/float subclasses
    _check_reference(inventory, protocol_from_data(data, "draft protocol"), key)
    return data


def _dataset_name(dataset: Path) -> str:
    try:
        return json.loads((dataset / "dataset_description.json").read_text()).get("Name") or dataset.name
    except (OSError, ValueError):
        return dataset.name


def _check_reference(inventory: Inventory, protocol: Protocol, key: tuple[str, str]) -> None:
    """The reference session must comply with its own draft (a failure here is a qmrbids bug)."""
    only = Inventory(root=inventory.root, images=[i for i in inventory.images if (i.subject, i.session) == key],
                     sites={key: inventory.sites[key]})
    findings = check_compliance(only, protocol)
    if findings:
        first = findings[0]
        raise ProtocolError(f"the drafted protocol rejects its own reference session ({first.series} "
                            f"{first.parameter}: expected {first.expected}, found {first.found})")


class _Dumper(yaml.SafeDumper):
    """Expectations and thresholds on one line each (``{value: 0.015, tolerance_percent: 1}``)."""


def _represent_dict(dumper: yaml.SafeDumper, data: dict):
    flow = all(not isinstance(v, dict) for v in data.values())
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


_Dumper.add_representer(dict, _represent_dict)


def protocol_yaml(data: dict) -> str:
    header = ("# Study protocol drafted by `qmrbids protocol init` (schema: validators/protocols/schema.json).\n"
              "# Times in seconds, angles in degrees, VoxelSize in mm, as in BIDS sidecars. Edit the tolerances,\n"
              "# mark optional series `required: false`, and add per-site overrides under `sites:`.\n")
    return header + yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=110, allow_unicode=True)
