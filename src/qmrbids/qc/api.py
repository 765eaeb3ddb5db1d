"""``run_qc``: compliance, metrics and the management table of a dataset as one library call;
``write_outputs`` renders them (HTML for people, JSON/TSV for machines) into a report folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

import csv
import io
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qmrbids import __version__
from qmrbids.io import atomic_write_text
from qmrbids.parallel import map_unordered
from qmrbids.qc.compliance import Finding, check_compliance
from qmrbids.qc.inventory import Inventory, natural_key, read_inventory
from qmrbids.qc.management import SessionRow, SiteTotals, management_rows, management_tsv, site_totals
from qmrbids.qc.metrics import Record, apply_thresholds, map_kinds, session_metrics, sessions_work
from qmrbids.qc.protocol import Protocol

FORMATS = ("html", "json", "tsv")
if TYPE_CHECKING:
    from qmrbids.qc.phantom_sessions import MetrologyReport

DEFAULT_REPORT_FOLDER = Path("derivatives") / "qmrbids-qc"
CODE_URL = "https://github.com/qmrbids/qmrbids"


@dataclass
class QcResult:
    dataset: Path
    protocol: Protocol | None
    inventory: Inventory
    findings: list[Finding] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    rows: list[SessionRow] = field(default_factory=list)
    totals: list[SiteTotals] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    metrology: MetrologyReport | None = None  # when phantom sessions were measured

    def attention(self) -> dict[str, list]:
        """What a person must look at: failed/warned findings and metrics, unreadable files."""
        return {"findings": self.findings,
                "metrics": [r for r in self.records if r.status in ("fail", "warn")],
                "problems": self.problems}

    @property
    def exit_code(self) -> int:
        failed = any(f.status == "fail" for f in self.findings) or any(r.status == "fail" for r in self.records)
        return 1 if failed or self.problems else 0

    def counts(self) -> dict[str, int]:
        return {"sessions": len(self.rows), "images": len(self.inventory.images), "maps": len(self.inventory.maps),
                "deviations": sum(f.kind == "deviation" for f in self.findings),
                "missing": sum(f.kind == "missing" for f in self.findings),
                "unexpected": sum(f.kind == "unexpected" for f in self.findings),
                "qc_fail": sum(r.status == "fail" for r in self.records),
                "qc_warn": sum(r.status == "warn" for r in self.records), "problems": len(self.problems)}

    def to_dict(self) -> dict:
        return {"GeneratedBy": {"Name": "qmrbids", "Version": __version__, "CodeURL": CODE_URL},
                "dataset": str(self.dataset), "protocol": self.protocol.source if self.protocol else None,
                "summary": self.counts(), "exit_code": self.exit_code, "problems": self.problems,
                "compliance": [f.to_dict() for f in self.findings], "metrics": [r.to_dict() for r in self.records],
                "sessions": [asdict(r) for r in self.rows], "sites": [asdict(t) for t in self.totals]}


def run_qc(dataset: Path, protocol: Protocol | None = None, subjects: list[str] | None = None,
           report_dir: Path | None = None, jobs: int | None = None,
           on_planned: Callable[[int], None] | None = None, on_session: Callable[[], None] | None = None) -> QcResult:
    """Check ``dataset`` against ``protocol`` (if any) and measure every raw image and map.

    Unreadable files become one-line ``problems``; the rest of the work continues. ``on_planned``
    gets the number of sessions, ``on_session`` is called as each one is measured (progress).
    """
    inventory = read_inventory(Path(dataset), map_kinds(), subjects, exclude=report_dir)
    result = QcResult(Path(dataset), protocol, inventory, problems=list(inventory.problems))
    if protocol is not None:
        result.findings = check_compliance(inventory, protocol)
    work = sessions_work(inventory)
    if on_planned:
        on_planned(len(work))
    jobs = min(jobs or os.cpu_count() or 1, len(work) // 8 + 1)  # processes only pay off for many sessions
    for records, problems in map_unordered(session_metrics, work, jobs, processes=True):
        result.records.extend(records)
        result.problems.extend(problems)
        if on_session:
            on_session()
    result.records.sort(key=lambda r: (r.site, r.subject, r.session, r.kind, natural_key(r.path), r.name))
    apply_thresholds(result.records, {site: protocol.for_site(site) if protocol else None
                                      for site in set(inventory.sites.values())})
    result.rows = management_rows(inventory, protocol, result.findings, result.records)
    result.totals = site_totals(result.rows)
    return result


def _tsv(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, delimiter="\t", lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "n/a" if row.get(c) in (None, "") else row.get(c) for c in columns})
    return buffer.getvalue()


def metrics_tsv(records: list[Record]) -> str:
    """Flat metric records; one column per entity that any record carries."""
    entity_columns = sorted({k for r in records for k in r.entities})
    rows = [{**r.to_dict(), **r.entities, "value": r.to_dict()["value_text"]} for r in records]
    return _tsv(rows, ["site", "subject", "session", "series", *entity_columns, "kind", "map_kind", "name", "value",
                       "unit", "status", "threshold", "source", "path"])


def compliance_tsv(findings: list[Finding]) -> str:
    return _tsv([f.to_dict() for f in findings], list(Finding.__dataclass_fields__))


def write_outputs(result: QcResult, report_dir: Path, output_format: str = "html") -> list[Path]:
    """Write the report in ``output_format`` into ``report_dir``; return the files written.

    html: ``report.html`` (self-contained) and ``management.tsv``; json: ``qc.json``;
    tsv: ``metrics.tsv``, ``compliance.tsv``, ``management.tsv``.
    """
    if output_format not in FORMATS:
        raise ValueError(f"unknown format {output_format!r}; choose one of {', '.join(FORMATS)}")
    report_dir = Path(report_dir)
    files: dict[str, str] = {}
    if output_format == "json":
        files["qc.json"] = json.dumps(result.to_dict(), indent=2) + "\n"
    else:
        files["management.tsv"] = management_tsv(result.rows, result.totals)
    if output_format == "tsv":
        files["metrics.tsv"] = metrics_tsv(result.records)
        files["compliance.tsv"] = compliance_tsv(result.findings)
    if output_format == "html":
        from qmrbids.qc.report import html_report

        files["report.html"] = html_report(result)
    mark_report_folder(report_dir)
    written = []
    for name, text in files.items():
        atomic_write_text(report_dir / name, text)
        written.append(report_dir / name)
    return written


def mark_report_folder(report_dir: Path) -> None:
    """Report files are not BIDS files: a report folder in a dataset's ``derivatives/`` is listed in
    the dataset's ``.bidsignore``, so validators (ours and the official one) leave it alone."""
    report_dir = Path(report_dir).resolve()
    if report_dir.parent.name != "derivatives":
        return
    ignore = report_dir.parent.parent / ".bidsignore"
    entry = f"derivatives/{report_dir.name}/"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    if entry not in lines:
        atomic_write_text(ignore, "\n".join([*lines, entry]) + "\n")
