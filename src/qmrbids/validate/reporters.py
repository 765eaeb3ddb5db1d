"""Render a validation report: text for people, JSON/SARIF/JUnit for machines. No validation here.

JSON format (stable; ``format_version`` changes only when a field changes meaning)::

    {"format_version": 1, "tool": {"name": "qmrbids", "version": ...},
     "bids_version": ..., "bids_schema_version": ..., "qmri_schema_version": ... | null,
     "datasets": [{"dataset": "" | "derivatives/<name>", "files": N}],
     "summary": {"error": N, "warning": N, "info": N, "codes": {CODE: N}},
     "issues": [{"code", "level", "path", "message", "key"?, "row"?, "rule_id"?, "dataset"?}]}
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from operator import attrgetter, itemgetter
from typing import TextIO
from xml.etree import ElementTree as ET

from qmrbids.validate.engine import Report, no_cycle_collection
from qmrbids.validate.issues import Issue

INFO_URI = "https://github.com/qmrbids/qmrbids"
SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def _ordered(report: Report) -> list[Issue]:
    """Errors, warnings, infos (then any other level), each by code, dataset and path; stable."""
    rank = {"error": 0, "warning": 1, "info": 2}
    return sorted(report.all_issues(), key=lambda i: (rank.get(i.level, 3), i.code, i.dataset, i.path))


@no_cycle_collection()
def write_json(report: Report, out: TextIO) -> None:
    """The JSON report, written issue by issue (a large dataset has hundreds of thousands)."""
    issues = _ordered(report)
    summary = {**report.counts(), "codes": dict(sorted(Counter(map(attrgetter("code"), issues)).items()))}
    head = json.dumps({
        "format_version": 1,
        "tool": {"name": "qmrbids", "version": report.tool_version},
        "bids_version": report.bids_version,
        "bids_schema_version": report.bids_schema_version,
        "qmri_schema_version": report.qmri_schema_version,
        "datasets": [{"dataset": r.dataset, "files": r.files} for r in (report, *report.nested)],
        "summary": summary,
    }, indent=2)
    out.write(head[:-2] + ',\n  "issues": [')
    paths = _Encoded(json.dumps)
    templates = _Encoded(_issue_template)   # issues differing only in their path share one template
    all_but_path = itemgetter(*(n for n, f in enumerate(Issue._fields) if f != "path"))
    chunk = 4096   # one write per chunk: memory stays bounded
    for start in range(0, len(issues), chunk):
        lines = []
        for issue in issues[start:start + chunk]:
            if issue.path:
                head, tail = templates[all_but_path(issue)]
                lines.append(head + paths[issue.path] + tail)
            else:
                lines.append(json.dumps(issue.to_dict()))
        out.write(("\n    " if start == 0 else ",\n    ") + ", ".join(lines))
    out.write("\n  ]\n}\n" if issues else "]\n}\n")


def _issue_template(fields: tuple) -> tuple[str, str]:
    """The JSON of an issue with these fields before and after its path (``Issue.to_dict`` order)."""
    marker = "\x00path\x00"
    values = dict(zip((f for f in Issue._fields if f != "path"), fields), path=marker)
    head, tail = json.dumps(Issue(**values).to_dict()).split(json.dumps(marker))
    return head, tail


class _Encoded(dict):
    """``encode(value)`` of each value, computed once (codes, messages and paths repeat by the thousand)."""

    def __init__(self, encode):
        super().__init__()
        self.encode = encode

    def __missing__(self, value):
        text = self[value] = self.encode(value)
        return text


@no_cycle_collection()
def to_text(report: Report, colour: bool = False, per_code: int = 3) -> str:
    paint = {"error": "\033[31m", "warning": "\033[33m", "info": "\033[36m"} if colour else {}
    reset = "\033[0m" if colour else ""
    groups: dict = defaultdict(list)
    for issue in _ordered(report):
        groups[(issue.level, issue.code)].append(issue)
    lines = []
    for (level, code), items in groups.items():
        lines.append(f"{paint.get(level, '')}{level.upper()}{reset} {code} ({len(items)} "
                     f"{'file' if len({i.path for i in items}) == 1 else 'files'}): {items[0].message}")
        for issue in items[:per_code]:
            where = f"{issue.dataset}:" if issue.dataset else ""
            extra = f" [{issue.key}]" if issue.key else ""
            extra += f" row {issue.row}" if issue.row else ""
            lines.append(f"    {where}{issue.path}{extra}")
        if len(items) > per_code:
            lines.append(f"    ... and {len(items) - per_code} more")
    counts = report.counts()
    lines.append(f"qmrbids {report.tool_version}: BIDS {report.bids_version} (schema {report.bids_schema_version}), "
                 f"qMRI extension {report.qmri_schema_version or 'off (--strict-official)'}; "
                 f"{sum(r.files for r in (report, *report.nested))} files: "
                 f"{counts['error']} errors, {counts['warning']} warnings")
    return "\n".join(lines) + "\n"


@no_cycle_collection()
def write_sarif(report: Report, out: TextIO) -> None:
    """SARIF 2.1.0 for GitHub code scanning: one rule per code, one result per issue (streamed)."""
    issues = _ordered(report)
    codes = sorted({i.code for i in issues})
    index = {code: n for n, code in enumerate(codes)}
    first = {}
    for issue in issues:
        first.setdefault(issue.code, issue)
    rules = [{"id": code, "name": code, "shortDescription": {"text": first[code].message[:200] or code},
              "defaultConfiguration": {"level": SARIF_LEVEL.get(first[code].level, "note")}} for code in codes]
    head = json.dumps({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "qmrbids", "version": report.tool_version, "informationUri": INFO_URI,
                                      "rules": rules}},
                  "properties": {"bids_version": report.bids_version, "bids_schema_version": report.bids_schema_version,
                                 "qmri_schema_version": report.qmri_schema_version},
                  "results": []}],
    })
    out.write(head[:-4])   # up to the open results list: ...,"results": [
    for n, issue in enumerate(issues):
        uri = "/".join(p for p in (issue.dataset, issue.path.strip("/")) if p) or "."
        result = {"ruleId": issue.code, "ruleIndex": index[issue.code], "level": SARIF_LEVEL.get(issue.level, "note"),
                  "message": {"text": issue.message or issue.code},
                  "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri, "uriBaseId": "DATASET"}}}]}
        props = {k: v for k, v in (("key", issue.key), ("row", issue.row), ("rule_id", issue.rule_id)) if v}
        if props:
            result["properties"] = props
        out.write(("" if n == 0 else ", ") + json.dumps(result))
    out.write("]}]}\n")


def to_junit(report: Report) -> str:
    """JUnit XML: one test suite per dataset, one test case per file; errors fail, warnings are notes."""
    suites = ET.Element("testsuites", name="qmrbids validate")
    for sub in (report, *report.nested):
        by_path: dict = defaultdict(list)
        for issue in _ordered(report):
            if issue.dataset == sub.dataset:
                by_path[issue.path].append(issue)
        failures = sum(1 for items in by_path.values() if any(i.level == "error" for i in items))
        suite = ET.SubElement(suites, "testsuite", name=sub.dataset or "dataset", tests=str(max(len(by_path), 1)),
                              failures=str(failures), errors="0")
        if not by_path:
            ET.SubElement(suite, "testcase", classname="bids", name="dataset")
        for path, items in sorted(by_path.items()):
            case = ET.SubElement(suite, "testcase", classname="bids", name=path)
            errors = [i for i in items if i.level == "error"]
            if errors:
                failure = ET.SubElement(case, "failure", message=", ".join(sorted({i.code for i in errors})),
                                        type="error")
                failure.text = "\n".join(f"{i.code}: {i.message}" for i in errors)
            notes = [i for i in items if i.level != "error"]
            if notes:
                ET.SubElement(case, "system-out").text = "\n".join(f"{i.level} {i.code}: {i.message}" for i in notes)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


@no_cycle_collection()
def write_junit(report: Report, out: TextIO) -> None:
    out.write(to_junit(report))


def write_text(report: Report, out: TextIO, colour: bool = False) -> None:
    out.write(to_text(report, colour=colour))


WRITERS = {"json": write_json, "sarif": write_sarif, "junit": write_junit, "text": write_text}
