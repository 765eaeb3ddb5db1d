"""``qmrbids run``: convert -> validate -> fit -> qc (-> metrology), one call, one summary.

Each stage is the library call its own command makes; a stage that finds errors is reported and
the pipeline goes on where the next stage can still do useful work (qc runs on whatever was
converted and fitted). Phantom metrology runs when the sources come from the digital phantom
(its ``truth/labels.nii.gz`` sits beside them) or when a label image is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qmrbids.convert import StudyConfig, convert
from qmrbids.dicom.deidentify import Options as DeidentifyOptions
from qmrbids.fit import FitError
from qmrbids.fit.run import run_fit
from qmrbids.qc import Protocol, run_qc, write_outputs
from qmrbids.qc.api import DEFAULT_REPORT_FOLDER
from qmrbids.qc.metrology import MetrologyError
from qmrbids.qc.phantom_sessions import measure
from qmrbids.validate import ValidationError, validate_dataset


@dataclass
class Stage:
    """What one stage did: ``status`` is ok, errors (the data has problems) or skipped."""

    name: str
    status: str
    summary: str
    messages: list[str] = field(default_factory=list)


@dataclass
class RunReport:
    bids_dir: Path
    stages: list[Stage] = field(default_factory=list)
    report: Path | None = None

    @property
    def exit_code(self) -> int:
        return 1 if any(s.status == "errors" for s in self.stages) else 0


@dataclass
class Progress:
    """Callbacks a display can pass in: ``stage(name)`` when a stage starts, ``total(n)`` when
    its amount of work is known, ``step()`` as each unit of it is done."""

    stage: Callable[[str], None] = lambda name: None
    total: Callable[[int], None] = lambda n: None
    step: Callable[[], None] = lambda: None


def phantom_labels(sources: list[Path]) -> Path | None:
    """The digital phantom's label image when ``sources`` are (inside) a ``qmrbids phantom`` output."""
    for source in sources:
        for folder in (Path(source), Path(source).parent):
            labels = folder / "truth" / "labels.nii.gz"
            if labels.is_file() and (folder / "truth" / "phantom.json").is_file():
                return labels
    return None


def run_pipeline(sources: list[Path], bids_dir: Path, *, config: StudyConfig | None = None,
                 protocol: Protocol | None = None, deidentify: DeidentifyOptions | None = None,
                 map_path: Path | None = None, jobs: int | None = None, labels: Path | None = None,
                 reference: str = "nist-v1", progress: Progress | None = None) -> RunReport:
    """The whole job on ``sources``: a validated BIDS dataset, fitted maps and a QC report."""
    progress = progress or Progress()
    bids_dir = Path(bids_dir)
    report = RunReport(bids_dir)

    progress.stage("converting")
    converted = convert(sources, bids_dir, config, jobs=jobs, deidentify=deidentify, map_path=map_path,
                        on_scan=lambda n: None, on_planned=progress.total, on_series=lambda r: progress.step())
    counts = converted.to_dict()["summary"]
    report.stages.append(Stage(
        "convert", "errors" if converted.exit_code else "ok",
        ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no DICOM series found",
        [*converted.unreadable, *(s.reason for s in converted.failed)]))
    if not (bids_dir / "dataset_description.json").is_file():
        return report

    progress.stage("validating")
    try:
        validation = validate_dataset(bids_dir)
        issues = validation.counts()
        errors = [f"{i.path}: {i.message}" for i in validation.all_issues() if i.level == "error"]
        report.stages.append(Stage("validate", "errors" if issues["error"] else "ok",
                                   f"{issues['error']} errors, {issues['warning']} warnings", errors[:20]))
    except ValidationError as error:
        report.stages.append(Stage("validate", "errors", str(error)))

    progress.stage("fitting")
    try:
        fitted = run_fit(bids_dir, jobs=jobs or 1, on_result=lambda r: progress.step())
        maps = sum(len(r.outputs) for r in fitted.results)
        failed = [r.error for r in fitted.results if r.status == "failed"]
        report.stages.append(Stage("fit", "errors" if failed else "ok",
                                   f"{len(fitted.results)} collections, {maps} maps", failed))
    except FitError as error:
        nothing = "no collection to fit" in str(error)
        report.stages.append(Stage("fit", "skipped" if nothing else "errors", str(error).splitlines()[0],
                                   str(error).splitlines()[1:]))

    progress.stage("checking quality")
    report_dir = bids_dir / DEFAULT_REPORT_FOLDER
    result = run_qc(bids_dir, protocol, report_dir=report_dir, jobs=jobs,
                    on_planned=progress.total, on_session=progress.step)
    counts = result.counts()
    report.stages.append(Stage(
        "qc", "errors" if result.exit_code else "ok",
        f"{counts['deviations']} deviations, {counts['missing']} missing series, "
        f"{counts['qc_fail']} failed / {counts['qc_warn']} warned metrics",
        [*(f"sub-{f.subject} {f.session} {f.series}: {f.parameter} expected {f.expected}, found {f.found}"
           for f in result.findings if f.status == "fail"), *result.problems]))
    digital = labels is None and (labels := phantom_labels(sources)) is not None
    if labels is not None:
        progress.stage("measuring the phantom")
        try:  # the digital phantom holds the 20 C reference values exactly
            result.metrology = measure(bids_dir, reference, labels, 20.0 if digital else None, output_dir=report_dir)
            report.stages.append(Stage("metrology", "ok",
                                       f"{len(result.metrology.summary['linearity'])} maps against {reference}",
                                       result.metrology.warnings))
        except MetrologyError as error:
            report.stages.append(Stage("metrology", "errors", str(error)))
    written = write_outputs(result, report_dir, "html")
    report.report = next(p for p in written if p.suffix == ".html")
    return report
