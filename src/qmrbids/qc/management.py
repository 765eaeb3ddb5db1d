"""The management report: site -> subject -> session, what was expected, acquired, compliant, fitted."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass

from qmrbids.qc.compliance import Finding
from qmrbids.qc.inventory import Inventory
from qmrbids.qc.metrics import Record
from qmrbids.qc.protocol import NOT_APPLICABLE, Protocol

SEVERITY = {NOT_APPLICABLE: 0, "pass": 1, "warn": 2, "fail": 3}


def worst(statuses) -> str:
    return max(statuses, key=SEVERITY.__getitem__, default=NOT_APPLICABLE)


@dataclass
class SessionRow:
    site: str
    subject: str
    session: str
    expected: int | None
    present: int
    missing: int | None
    missing_series: str
    deviations: int
    compliance: str
    qc: str
    qc_failures: int
    qc_warnings: int
    maps_fitted: str  # map kinds, comma separated; "" when none


@dataclass
class SiteTotals:
    site: str
    sessions: int
    subjects: int
    expected: int | None
    present: int
    missing: int | None
    sessions_compliant: int | None
    sessions_qc_fail: int
    sessions_qc_warn: int
    sessions_with_maps: int


def management_rows(inventory: Inventory, protocol: Protocol | None, findings: list[Finding],
                    records: list[Record]) -> list[SessionRow]:
    present: dict[tuple[str, str], set[str]] = {}
    for image in inventory.images:
        present.setdefault((image.subject, image.session), set()).add(image.series)
    maps: dict[tuple[str, str], set[str]] = {}
    for m in inventory.maps:
        maps.setdefault((m.subject, m.session), set()).add(m.kind)
    by_session_findings: dict[tuple[str, str], list[Finding]] = {}
    for f in findings:
        by_session_findings.setdefault((f.subject, f.session), []).append(f)
    by_session_records: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        by_session_records.setdefault((r.subject, r.session), []).append(r)
    rows = []
    for key in inventory.sessions():
        site = inventory.sites[key]
        session_findings = by_session_findings.get(key, [])
        session_records = by_session_records.get(key, [])
        missing = sorted(f.series for f in session_findings if f.kind == "missing")
        rows.append(SessionRow(
            site=site, subject=key[0], session=key[1],
            expected=len(protocol.for_site(site).required()) if protocol else None,
            present=len(present.get(key, ())), missing=len(missing) if protocol else None,
            missing_series=", ".join(missing),
            deviations=sum(f.kind == "deviation" for f in session_findings),
            compliance=(worst(f.status for f in session_findings) if session_findings else "pass") if protocol
            else NOT_APPLICABLE,
            qc=worst(r.status for r in session_records),
            qc_failures=sum(r.status == "fail" for r in session_records),
            qc_warnings=sum(r.status == "warn" for r in session_records),
            maps_fitted=", ".join(sorted(maps.get(key, ())))))
    return sorted(rows, key=lambda r: (r.site, r.subject, r.session))


def site_totals(rows: list[SessionRow]) -> list[SiteTotals]:
    totals = []
    for site in sorted({r.site for r in rows}):
        mine = [r for r in rows if r.site == site]
        with_protocol = all(r.expected is not None for r in mine)
        totals.append(SiteTotals(
            site=site, sessions=len(mine), subjects=len({r.subject for r in mine}),
            expected=sum(r.expected for r in mine) if with_protocol else None,
            present=sum(r.present for r in mine),
            missing=sum(r.missing for r in mine) if with_protocol else None,
            sessions_compliant=sum(r.compliance == "pass" for r in mine) if with_protocol else None,
            sessions_qc_fail=sum(r.qc == "fail" for r in mine), sessions_qc_warn=sum(r.qc == "warn" for r in mine),
            sessions_with_maps=sum(bool(r.maps_fitted) for r in mine)))
    return totals


def _cell(value) -> str:
    return NOT_APPLICABLE if value is None or value == "" else str(value)


def management_tsv(rows: list[SessionRow], totals: list[SiteTotals]) -> str:
    """One TSV: a row per session, then a ``total`` row per site (subject/session columns say ``total``)."""
    columns = list(SessionRow.__dataclass_fields__)
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(["row", *columns])
    for row in rows:
        writer.writerow(["session", *(_cell(v) for v in asdict(row).values())])
    for total in totals:
        writer.writerow(["site_total", total.site, "total", "total", _cell(total.expected), total.present,
                         _cell(total.missing), "", "", f"{_cell(total.sessions_compliant)}/{total.sessions} compliant",
                         f"{total.sessions_qc_fail} fail, {total.sessions_qc_warn} warn", "", "",
                         f"{total.sessions_with_maps}/{total.sessions} sessions"])
    return buffer.getvalue()
