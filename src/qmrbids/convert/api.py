"""``convert``: the whole DICOM -> qMRI-BIDS step as one library call (the CLI only renders it)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

from qmrbids.convert.bulk import BulkConversion
from qmrbids.convert.config import StudyConfig
from qmrbids.convert.dataset import write_dataset_files
from qmrbids.convert.plan import PlannedSeries, plan
from qmrbids.convert.run import STATE_DIR, SeriesResult, convert_series, dataset_key, dcm2niix_version
from qmrbids.dicom.classify import classify
from qmrbids.dicom.deidentify import DeidentifyError, Options
from qmrbids.dicom.research_ids import ResearchIds, outside
from qmrbids.dicom.scan import scan
from qmrbids.dicom.series import series_table
from qmrbids.io import staging_dir
from qmrbids.parallel import map_unordered


@dataclass
class SeriesReport:
    subject: str
    session: str
    series_number: int
    description: str
    files: int
    classification: str
    rule: str
    evidence: str
    targets: list[str]
    status: str  # planned | converted | up-to-date | skipped | failed
    reason: str = ""
    warnings: list[str] = field(default_factory=list)


@dataclass
class ConvertReport:
    bids_dir: str
    dry_run: bool
    files_scanned: int = 0
    non_dicom_skipped: int = 0
    unreadable: list[str] = field(default_factory=list)
    series: list[SeriesReport] = field(default_factory=list)
    stubs_written: list[str] = field(default_factory=list)  # README/CHANGES the user should now edit
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[SeriesReport]:
        return [s for s in self.series if s.status == "failed"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.unreadable else 0

    def to_dict(self) -> dict:
        counts: dict[str, int] = {}
        for s in self.series:
            counts[s.status] = counts.get(s.status, 0) + 1
        return {"bids_dir": self.bids_dir, "dry_run": self.dry_run, "files_scanned": self.files_scanned,
                "non_dicom_skipped": self.non_dicom_skipped, "unreadable": self.unreadable,
                "stubs_written": self.stubs_written, "warnings": self.warnings,
                "summary": counts, "series": [asdict(s) for s in self.series]}


def _classification_text(p: PlannedSeries) -> str:
    c = p.classification
    if not c.converted:
        return "skip"
    entities = "".join(f"_{k}-{v}" for k, v in c.entities.items())
    return f"{c.datatype}/{c.suffix}{entities}"


def convert(sources: list[Path], bids_dir: Path, config: StudyConfig | None = None, *, subject: str | None = None,
            session: str | None = None, jobs: int | None = None, dry_run: bool = False, overwrite: bool = False,
            deidentify: Options | None = None, map_path: Path | None = None,
            on_scan: Callable[[int], None] | None = None,
            on_series: Callable[[SeriesResult], None] | None = None,
            on_planned: Callable[[int], None] | None = None) -> ConvertReport:
    """Scan, classify, plan and (unless ``dry_run``) convert ``sources`` into the BIDS dataset ``bids_dir``.

    Into a dataset with no subjects yet, dcm2niix starts on the source folders at once and runs
    while the headers are read (qmrbids.convert.bulk); otherwise only the new series are converted.
    With ``deidentify``, every file is de-identified (PS3.15 Annex E, :mod:`qmrbids.dicom.deidentify`)
    before dcm2niix sees it, subject labels are research IDs (``map_path`` or keyed), and keyed
    hashes use the user's key, which never enters the dataset.
    """
    config = config or StudyConfig()
    jobs = jobs or os.cpu_count() or 1
    bids_dir = Path(bids_dir)
    sources = [Path(s) for s in sources]
    if map_path is not None and not outside(map_path, bids_dir):
        raise DeidentifyError(f"{map_path}: the research-ID map must be kept outside the dataset {bids_dir}")
    with contextlib.ExitStack() as stack:
        bulk = None
        created = not bids_dir.exists()
        folders = [s for s in sources if s.is_dir()]
        if not dry_run and deidentify is None and folders and not any(bids_dir.glob("sub-*")):
            staging = stack.enter_context(staging_dir(bids_dir / STATE_DIR, "convert"))
            bulk = BulkConversion(folders, staging)
            stack.callback(bulk.stop)
        scanned = scan(sources, jobs=jobs, on_progress=on_scan)
        if bulk is not None:
            bulk.allow(len(scanned.files) + scanned.skipped_non_dicom)
        report, todo, entries, ids = _plan_report(scanned, bids_dir, config, subject, session, dry_run,
                                                  deidentify, map_path)
        if on_planned:
            on_planned(len(todo))
        if dry_run or not todo:
            if created:  # the bulk pass made the folder; leave nothing behind when there is nothing to convert
                stack.close()
                shutil.rmtree(bids_dir, ignore_errors=True)
            return report
        if bulk is None:
            staging = stack.enter_context(staging_dir(bids_dir / STATE_DIR, "convert"))
        key = deidentify.key if deidentify is not None else dataset_key(bids_dir)
        versions = {"dcm2niix": dcm2niix_version()}
        if ids is not None:
            ids.save()

        def work(p: PlannedSeries) -> SeriesResult:
            premade = bulk.outputs(p.uid) if bulk else None
            return convert_series(p, bids_dir, staging, config, key, versions, overwrite, premade, deidentify)

        acq_times = {}
        for result in map_unordered(work, todo, jobs):
            if result.acq_time:
                acq_times.update({f: result.acq_time for f in result.written if f.endswith(".nii.gz")})
            entry = entries[result.uid]
            entry.status = result.status
            entry.reason = result.message
            entry.warnings = result.warnings
            if on_series:
                on_series(result)
    report.stubs_written = write_dataset_files(bids_dir, config, versions["dcm2niix"], date.today().isoformat(),
                                               acq_times)
    return report


def _plan_report(scanned, bids_dir: Path, config: StudyConfig, subject: str | None, session: str | None,
                 dry_run: bool, deidentify: Options | None, map_path: Path | None):
    """Classify and plan the scanned series: the report rows, the series to convert, the research IDs."""
    orphans = scanned.errors[~scanned.errors["SeriesInstanceUID"].fillna("").astype(bool)]
    report = ConvertReport(str(bids_dir), dry_run, len(scanned.files) + scanned.skipped_non_dicom,
                           scanned.skipped_non_dicom, [str(e) for e in orphans["error"]])
    table = series_table(scanned.files)
    classes = classify(table, config.rules) if len(table) else {}
    ids = research_ids = None
    if deidentify is not None and len(table):
        ids = ResearchIds(deidentify.key, map_path)
        research_ids = ids.assign(sorted(set(table["PatientID"].fillna(""))))
    planned = plan(table, classes, config, subject, session, research_ids) if len(table) else []
    entries = {}
    for p in planned:
        entries[p.uid] = SeriesReport(
            p.subject, p.session, int(p.series["SeriesNumber"]), p.series["SeriesDescription"],
            int(p.series["n_files"]), _classification_text(p), p.classification.rule, p.classification.evidence,
            [f"{o.stem}.nii.gz" for o in p.outputs], "planned" if p.converted else "skipped",
            p.classification.skip_reason)
    report.series = list(entries.values())
    for p in planned:
        if reason := p.cannot_convert:
            entries[p.uid].status, entries[p.uid].reason = "failed", reason
    from_patient_id = sorted({p.subject for p in planned if deidentify is None and subject is None
                              and p.series["PatientID"] not in config.subjects})
    if from_patient_id:
        report.warnings.append(
            f"subject label(s) {', '.join(from_patient_id)} are the sanitised PatientID; if PatientIDs identify "
            "people, map them under subjects: in the study config or convert with --deidentify")
    return report, [p for p in planned if p.converted and not p.cannot_convert], entries, ids
