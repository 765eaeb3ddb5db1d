"""Classify series into BIDS suffixes and qMRI collections with the rules in ``converters/*.yaml``.

Rules are data; this module only evaluates them. Every decision carries its evidence (the rule and
the header values that made it), and every series that will not be converted carries a reason.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pandas as pd
import yaml

from qmrbids.resources import data_path


@dataclass
class Classification:
    """What a series becomes: a BIDS datatype/suffix with entities, or a reason not to convert it."""

    rule: str
    evidence: str
    datatype: str = ""
    suffix: str = ""
    entities: dict[str, str] = field(default_factory=dict)
    echo_entity: bool = False
    skip_reason: str = ""

    @property
    def converted(self) -> bool:
        return not self.skip_reason


@dataclass(frozen=True)
class RuleSet:
    """Skip rules, collection definitions and single-series rules, in the order they apply."""

    skip: tuple[dict, ...]
    collections: tuple[dict, ...]
    series: tuple[dict, ...]


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


@cache
def default_rules() -> tuple[dict, ...]:
    """The shipped rule files, vendor files first, each as loaded from YAML."""
    folder = data_path("converters")
    vendor_files = sorted(p for p in folder.glob("*.yaml") if p.name != "common.yaml")
    return tuple(_load(p) | {"_file": p.name} for p in [*vendor_files, folder / "common.yaml"])


def rules_for(manufacturer: str, extra: list[dict] | None = None) -> RuleSet:
    """The rules that apply to a manufacturer: study-config rules, vendor rules, then common rules."""
    files = [*(extra or []), *default_rules()]
    picked = [f for f in files if not f.get("vendor") or re.search(f["vendor"], manufacturer or "", re.I)]
    return RuleSet(
        skip=tuple(r for f in picked for r in f.get("skip", [])),
        collections=tuple(r for f in picked for r in f.get("collections", [])),
        series=tuple(r for f in picked for r in f.get("series", [])),
    )


# -- conditions --------------------------------------------------------------------------------
def _tokens(value) -> set[str]:
    if isinstance(value, list | tuple):
        return {str(v).upper() for v in value}
    return {t.strip().upper() for t in str(value or "").split("\\") if t.strip()}


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _test(value, operator: str, expected) -> bool:
    if operator == "equals":
        return str(value) == str(expected) if isinstance(expected, str) else value == expected
    if operator == "in":
        return str(value) in [str(e) for e in expected]
    if operator == "not_in":
        return str(value) not in [str(e) for e in expected]
    if operator == "matches":
        return bool(re.search(expected, str(value or ""), re.I))
    if operator == "contains":
        return str(expected).upper() in _tokens(value)
    if operator == "not_contains":
        return str(expected).upper() not in _tokens(value)
    if operator == "contains_any":
        return bool(_tokens(value) & {str(e).upper() for e in expected})
    if operator == "contains_all":
        return {str(e).upper() for e in expected} <= _tokens(value)
    if operator in ("min", "max"):
        if _is_missing(value):
            return False
        return float(value) >= expected if operator == "min" else float(value) <= expected
    if operator == "count_min":
        return len(value or []) >= expected
    if operator == "count_max":
        return len(value or []) <= expected
    if operator == "is":
        return bool(value) is bool(expected)
    raise ValueError(f"unknown condition operator {operator!r}")


def matches(condition: dict, series: dict) -> bool:
    """Whether a series (a row of the series table, as a dict) meets a rule condition."""
    for key, spec in condition.items():
        if key == "any":
            if not any(matches(c, series) for c in spec):
                return False
        elif key == "all":
            if not all(matches(c, series) for c in spec):
                return False
        elif key == "not":
            if matches(spec, series):
                return False
        else:
            if key not in series:
                raise ValueError(f"rule condition names unknown series attribute {key!r}")
            if not all(_test(series[key], op, expected) for op, expected in spec.items()):
                return False
    return True


def _attributes(condition: dict) -> list[str]:
    names = []
    for key, spec in condition.items():
        if key in ("any", "all"):
            for c in spec:
                names.extend(_attributes(c))
        elif key == "not":
            names.extend(_attributes(spec))
        else:
            names.append(key)
    return list(dict.fromkeys(names))


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_format(v) for v in value) + "]"
    return str(value)


#: Free-text attributes rules may test but evidence never repeats (they can hold names; evidence
#: is written into sidecars).
FREE_TEXT = frozenset({"ImageComments"})


def _evidence(rule: dict, condition: dict, series: dict) -> str:
    shown = ", ".join(f"{k}=(free text, matched)" if k in FREE_TEXT else f"{k}={_format(series[k])}"
                      for k in _attributes(condition) if k in series)
    return f"rule {rule['id']}: {shown}"


# -- classification ------------------------------------------------------------------------------
def _session_key(series: dict) -> tuple:
    return (series["PatientID"], series["StudyInstanceUID"])


def _signature(series: dict, names: list[str]) -> tuple:
    out = []
    for name in names:
        value = series.get(name)
        out.append(round(float(value), 3) if isinstance(value, int | float) and not _is_missing(value) else value)
    return tuple(out)


def classify(table: pd.DataFrame, extra_rules: list[dict] | None = None) -> dict[str, Classification]:
    """Classification of every series of the table, keyed by SeriesInstanceUID."""
    records = table.to_dict("records")
    result: dict[str, Classification] = {}
    rule_sets: dict[str, RuleSet] = {}

    def rules(manufacturer: str) -> RuleSet:
        if manufacturer not in rule_sets:
            rule_sets[manufacturer] = rules_for(manufacturer, extra_rules)
        return rule_sets[manufacturer]

    for series in records:
        if series["mixed"]:
            result[series["SeriesInstanceUID"]] = Classification(
                "mixed-series", f"files differ in {series['mixed']}",
                skip_reason=f"mixed series: its files differ in {series['mixed']}")
            continue
        for rule in rules(series["Manufacturer"]).skip:
            if matches(rule["when"], series):
                result[series["SeriesInstanceUID"]] = Classification(
                    rule["id"], _evidence(rule, rule["when"], series),
                    skip_reason=rule["reason"].format(**{k: _format(v) for k, v in series.items()}))
                break
    _collections(records, result, extra_rules)
    for series in records:
        uid = series["SeriesInstanceUID"]
        if uid in result:
            continue
        for rule in rules(series["Manufacturer"]).series:
            if matches(rule["when"], series):
                result[uid] = Classification(rule["id"], _evidence(rule, rule["when"], series), rule["datatype"],
                                             rule["suffix"], dict(rule.get("entities", {})),
                                             echo_entity=bool(rule.get("echo_entity")))
                break
        else:
            result[uid] = Classification(
                "no-rule", "no rule matched",
                skip_reason=(f"no rule matched: ScanningSequence={series['ScanningSequence']}, "
                             f"ImageType={series['ImageType']}, SequenceVariant={series['SequenceVariant']}, "
                             f"echoes={series['n_echoes']}"))
    return result


def _collections(records: list[dict], result: dict[str, Classification], extra_rules) -> None:
    """Find qMRI collections among the series not yet decided, definition by definition."""
    manufacturers = sorted({r["Manufacturer"] for r in records})
    for manufacturer in manufacturers:
        for definition in rules_for(manufacturer, extra_rules).collections:
            groups: dict[tuple, list[dict]] = {}
            for series in records:
                if series["SeriesInstanceUID"] in result or series["Manufacturer"] != manufacturer:
                    continue
                if matches(definition["members"], series):
                    key = (_session_key(series), _signature(series, definition["same"]))
                    groups.setdefault(key, []).append(series)
            for members in groups.values():
                _assign_collection(definition, members, result)


def _assign_collection(definition: dict, members: list[dict], result: dict[str, Classification]) -> None:
    varies = definition["varies"]
    size = definition.get("size", {})
    values = sorted({m[varies] for m in members if not _is_missing(m[varies])})
    if len(values) < size.get("min", 2) - (1 if definition.get("mt_entity") else 0):
        return
    if not size.get("min", 2) <= len(members) <= size.get("max", 10**6):
        return
    if "flip_ratio" in definition and not math.isclose(values[-1] / values[0], definition["flip_ratio"], rel_tol=1e-3):
        return
    if definition.get("mt_entity") and {bool(m["MT"]) for m in members} != {True, False}:
        return
    shown = ", ".join(_format(v) for v in values)
    labels = definition.get("labels")
    if labels is not None and set(values) != set(labels):
        return
    for member in sorted(members, key=lambda m: m["SeriesNumber"]):
        index = values.index(member[varies]) + 1
        entities = {definition["entity"]: str(labels[member[varies]] if labels is not None else index)}
        if definition.get("mt_entity"):
            entities["mt"] = "on" if member["MT"] else "off"
        evidence = (f"collection {definition['id']}: {len(members)} series identical in "
                    f"{', '.join(definition['same'])}, differing in {varies} ({shown}); "
                    + _evidence(definition, definition["members"], member))
        result[member["SeriesInstanceUID"]] = Classification(
            definition["id"], evidence, definition["datatype"], definition["suffix"], entities)
