"""The ``qmrbids`` command line: parse, call the library, render, set the exit code.

Exit codes: 0 success, 1 the data has errors, 2 the command was used wrongly or could not run.
Every failure is one line on stderr, ``qmrbids: error: ...``; never a traceback.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qmrbids import __version__

app = typer.Typer(
    name="qmrbids",
    help="Vendor DICOM to quantitative-MRI BIDS: convert, de-identify, validate, fit and check quality.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class UsageFailure(Exception):
    """A problem with how the command was used or with its output location (exit code 2)."""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"qmrbids {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Vendor DICOM to quantitative-MRI BIDS: convert, de-identify, validate, fit and check quality."""


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=err, disable=quiet or not err.is_terminal, transient=True,
    )


def _b1_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise UsageFailure(f"--b1-range must be LOW,HIGH (e.g. 0.8,1.2), not {text!r}") from None
    return low, high


@app.command()
def phantom(
    output_dir: Annotated[Path, typer.Argument(help="Folder to write dicom/ and truth/ into.")],
    vendor: Annotated[str, typer.Option(help="Vendor style: siemens, ge or philips.")] = "siemens",
    protocol: Annotated[
        list[str] | None, typer.Option(help="Protocol to write (repeatable; default all).")
    ] = None,
    snr: Annotated[float, typer.Option(help="Signal-to-noise ratio of water M0; 0 = noise-free.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the noise.")] = 0,
    matrix: Annotated[int, typer.Option(help="In-plane matrix size.")] = 64,
    slices: Annotated[int, typer.Option(help="Number of slices.")] = 4,
    b1_range: Annotated[str, typer.Option(help="B1+ scale LOW,HIGH varying across x.")] = "1,1",
    field_strength: Annotated[float, typer.Option(help="Field strength in tesla: 1.5 or 3.")] = 3.0,
    patient_id: Annotated[str, typer.Option(help="PatientID written into the DICOM.")] = "PHANTOM",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Write a digital phantom: qMRI DICOM with known truth.

    Vendor-style series (classic MR Image Storage, one file per slice) for each protocol go to
    OUTPUT_DIR/dicom; the true parameter maps, a label image and truth/phantom.json, which
    documents every series and its pixel encoding, go to OUTPUT_DIR/truth.
    """
    from qmrbids.phantom import PROTOCOLS, PhantomError, PhantomSettings, write_phantom

    try:
        settings = PhantomSettings(
            vendor=vendor.lower(), protocols=tuple(protocol or PROTOCOLS), snr=snr, seed=seed, matrix=matrix,
            slices=slices, b1_range=_b1_range(b1_range), field_strength=field_strength, patient_id=patient_id,
        ).checked()
        start = time.perf_counter()
        with _progress(quiet) as progress:
            task = progress.add_task("phantom", total=len(settings.protocols) + 1)
            result = write_phantom(output_dir, settings, on_step=lambda name: progress.advance(task))
    except PhantomError as error:
        raise UsageFailure(str(error)) from None
    if not quiet:
        err.print(
            f"qmrbids: wrote {len(result.series)} series ({result.files} files, {settings.vendor}, "
            f"{settings.field_strength:g} T) and truth maps to {output_dir} in {time.perf_counter() - start:.1f} s"
        )


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


# Arguments and options that ``convert`` and ``run`` share.
DicomSources = Annotated[list[Path], typer.Argument(help="DICOM folders, files, .zip/.tar archives or .dcm.gz files.")]
BidsOutput = Annotated[Path, typer.Option("--output", "-o", help="BIDS dataset folder to write.")]
StudyConfigFile = Annotated[Path | None, typer.Option("--config", help="Study config (YAML): labels, rules, metadata.")]
Jobs = Annotated[int | None, typer.Option("--jobs", help="Parallel jobs (default: number of cores).")]
DeidentifyFlag = Annotated[bool, typer.Option("--deidentify", help="De-identify (PS3.15 Annex E) on the way (needs --key-file).")]
KeyFile = Annotated[Path | None, typer.Option("--key-file", help="Secret key for --deidentify (kept outside the dataset).")]
MapFile = Annotated[Path | None, typer.Option("--map", help="PatientID -> research ID map (TSV) for --deidentify.")]


def _check_conversion_arguments(sources: list[Path], output: Path, jobs: int | None) -> None:
    if jobs is not None and jobs < 1:
        raise UsageFailure(f"--jobs must be at least 1, not {jobs}")
    for source in sources:
        if not source.exists():
            raise UsageFailure(f"{source}: no such file or folder")
    if output.exists() and not output.is_dir():
        raise UsageFailure(f"{output}: exists and is not a folder")


def _render_convert(report, output_format: OutputFormat) -> None:
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    out = Console(highlight=False, width=max(200, Console().width))
    table = Table(title=("Conversion plan (dry run: nothing written)" if report.dry_run else "Conversion"),
                  box=box.SIMPLE, expand=False)
    for column in ("sub/ses", "series", "description", "files", "classification", "target", "status / reason"):
        table.add_column(column, overflow="fold")
    for s in report.series:
        target = s.targets[0] + (f" (+{len(s.targets) - 1})" if len(s.targets) > 1 else "") if s.targets else ""
        status = s.status if not s.reason else f"{s.status}: {s.reason}"
        table.add_row(f"{s.subject}/{s.session or '-'}", str(s.series_number), s.description, str(s.files),
                      s.classification, target, status)
    out.print(table)
    if report.dry_run:
        for s in report.series:
            out.print(f"series {s.series_number} {s.description!r}: {s.evidence}", markup=False)
    for message in report.unreadable:
        err.print(f"qmrbids: error: {message}", markup=False)
    for message in report.warnings:
        err.print(f"qmrbids: warning: {message}", markup=False)
    for s in report.series:
        for warning in s.warnings:
            err.print(f"qmrbids: warning: {warning}", markup=False)
        if s.status == "failed":
            err.print(f"qmrbids: error: {s.reason}", markup=False)
    counts = report.to_dict()["summary"]
    err.print(f"qmrbids: {report.files_scanned} files scanned ({report.non_dicom_skipped} not DICOM, "
              f"{len(report.unreadable)} unreadable); series: "
              + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())), markup=False)
    if report.stubs_written:
        err.print(f"qmrbids: wrote {' and '.join(report.stubs_written)} in {report.bids_dir} as stubs: edit them to "
                  "describe the study (qmrbids never overwrites them)", markup=False)


@app.command()
def convert(
    sources: DicomSources,
    output: BidsOutput,
    config: StudyConfigFile = None,
    subject: Annotated[str | None, typer.Option(help="Subject label for every series.")] = None,
    session: Annotated[str | None, typer.Option(help="Session label for every series.")] = None,
    jobs: Jobs = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace conflicting targets.")] = False,
    deidentify: DeidentifyFlag = False,
    key_file: KeyFile = None,
    map_file: MapFile = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="Report format.")] = OutputFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Convert vendor DICOM into a qMRI-BIDS dataset, explaining every series."""
    from qmrbids.convert import ConfigError, convert as run_convert, load_config
    from qmrbids.dicom.deidentify import DeidentifyError
    from qmrbids.dicom.research_ids import ResearchIdError

    for label, value in (("--subject", subject), ("--session", session)):
        if value is not None and not value.isalnum():
            raise UsageFailure(f"{label} must be letters and digits only, not {value!r}")
    try:
        study = load_config(config)
    except ConfigError as error:
        raise UsageFailure(str(error)) from None
    _check_conversion_arguments(sources, output, jobs)
    options = _deidentify_options(deidentify, key_file, map_file, output)
    with _progress(quiet) as progress, _usage_errors(DeidentifyError, ResearchIdError):
        scanning = progress.add_task("scanning", total=None)
        converting = progress.add_task("converting", total=None, visible=False)
        report = run_convert(
            sources, output, study, subject=subject, session=session, jobs=jobs, dry_run=dry_run,
            overwrite=overwrite, deidentify=options, map_path=map_file, on_scan=lambda n: progress.advance(scanning, n),
            on_planned=lambda n: progress.update(converting, total=n, visible=not dry_run),
            on_series=lambda result: progress.advance(converting),
        )
    _render_convert(report, output_format)
    raise typer.Exit(report.exit_code)


@app.command()
def metrology(
    dataset: Annotated[Path, typer.Argument(help="BIDS dataset whose derivatives/qmrbids holds fitted phantom maps.")],
    reference: Annotated[str, typer.Option(help="nist-v1, nist-v2 or a TSV (label + one column per parameter, s).")] = "nist-v1",
    labels: Annotated[Path | None, typer.Option(help="Label image of the spheres/regions on the maps' grid.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Phantom temperature during the scans (C).")] = None,
    participant_label: Annotated[list[str] | None, typer.Option(help="Only these subjects (repeatable).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Folder for the tables (default: DATASET/derivatives/qmrbids-qc).")] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="Report format on stdout.")] = OutputFormat.text,
) -> None:
    """Phantom metrology: bias against reference values, repeatability and reproducibility (QIBA)."""
    from qmrbids.qc.api import DEFAULT_REPORT_FOLDER
    from qmrbids.qc.metrology import MetrologyError
    from qmrbids.qc.phantom_sessions import measure

    if not dataset.is_dir():
        raise UsageFailure(f"{dataset}: no such dataset folder")
    target = output or dataset / DEFAULT_REPORT_FOLDER
    try:
        report = measure(dataset, reference, labels, temperature, participant_label, target)
    except MetrologyError as error:
        raise UsageFailure(str(error)) from None
    if output_format is OutputFormat.json:
        typer.echo(json.dumps({"reference": report.reference, "summary": report.summary,
                               "warnings": report.warnings, "written": report.written}, indent=2, default=float))
    else:
        _render_metrology(report, target)
    raise typer.Exit(0)


def _number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _render_metrology(report, target: Path) -> None:
    out = Console(highlight=False, width=max(160, Console().width))
    table = Table(title=f"Accuracy against {report.reference}", box=box.SIMPLE)
    for column in ("map", "regions", "median |bias| %", "max |bias| %", "slope", "intercept", "R2"):
        table.add_column(column)
    for row in report.map_rows():
        table.add_row(f"{row['session']} {row['map']}", str(row["regions"]),
                      *(_number(row[k], ".2f") for k in ("median_abs_bias", "max_abs_bias")),
                      *(_number(row[k], ".4g") for k in ("slope", "intercept", "r_squared")))
    out.print(table)
    for name, stats in report.summary["repeatability"].items():
        out.print(f"repeatability {name}: wCV {stats['wcv_percent']:.2f} %, RC {stats['rc_percent']:.2f} % "
                  f"({stats['n_regions']} regions, df {stats['df']})", markup=False)
    for name, stats in report.summary["reproducibility"].items():
        icc = f", ICC(A,1) {stats['icc_a1']:.4f}" if "icc_a1" in stats else ""
        out.print(f"reproducibility {name}: RDC {stats.get('rdc_percent_rms', float('nan')):.2f} % (RMS over regions)"
                  f"{icc}, sites {', '.join(stats['sites'])}", markup=False)
    for warning in report.warnings:
        err.print(f"qmrbids: warning: {warning}", markup=False)
    err.print(f"qmrbids: metrology tables written to {target}", markup=False)


# -- deidentify ---------------------------------------------------------------------------------
def _render_check(report, output_format: OutputFormat) -> None:
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    for finding in report.findings:
        typer.echo(str(finding))
    err.print(f"qmrbids: checked {report.files_checked} files: "
              + (f"{len(report.findings)} residual identifiers found" if report.findings else "no residual identifier found"),
              markup=False)


def _render_deidentify(report, output_format: OutputFormat) -> None:
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    for message in report.errors + report.refused:
        err.print(f"qmrbids: error: {message}", markup=False)
    subjects = ", ".join(f"{label} ({n} files)" for label, n in report.subjects.items()) or "none"
    err.print(f"qmrbids: {report.files_scanned} files scanned ({report.non_dicom_skipped} not DICOM, "
              f"{report.non_image_skipped} not images); {report.written} de-identified into {report.out_dir}, "
              f"{len(report.refused)} refused, {len(report.errors)} failed; subjects: {subjects}; "
              f"options: {', '.join(report.options)}", markup=False)


@contextlib.contextmanager
def _usage_errors(*kinds):
    """Turn the library's own 'cannot run as asked' errors into a usage failure (exit 2)."""
    try:
        yield
    except kinds as error:
        raise UsageFailure(str(error)) from None


def _deidentify_options(deidentify: bool, key_file: Path | None, map_file: Path | None, output: Path):
    """De-identification options of ``convert`` (None without --deidentify)."""
    from qmrbids.dicom.deidentify import DeidentifyError, Options, load_key
    from qmrbids.dicom.research_ids import outside

    if not deidentify:
        if key_file or map_file:
            raise UsageFailure("--key-file and --map go with --deidentify")
        return None
    if key_file is None:
        raise UsageFailure("--deidentify needs --key-file")
    for path, what in ((key_file, "key file"), (map_file, "research-ID map")):
        if path is not None and not outside(path, output):
            raise UsageFailure(f"{path}: the {what} must be kept outside the dataset {output}")
    try:
        return Options(load_key(key_file))
    except DeidentifyError as error:
        raise UsageFailure(str(error)) from None


@app.command()
def deidentify(
    sources: Annotated[list[Path], typer.Argument(help="DICOM folders, files, archives; with --check, what to check.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Folder for the de-identified DICOM.")] = None,
    key_file: Annotated[Path | None, typer.Option(help="Secret key file (keyed UIDs, date shifts, pseudonyms).")] = None,
    map_file: Annotated[Path | None, typer.Option("--map", help="Research-ID map (TSV), kept outside the output.")] = None,
    date_shift: Annotated[str, typer.Option(help="auto (per subject, from the key), none (remove dates) or DAYS.")] = "auto",
    keep_device_identity: Annotated[bool, typer.Option("--keep-device-identity",
                                                       help="Keep device identifiers, pseudonymised.")] = False,
    include_burned_in: Annotated[bool, typer.Option("--include-burned-in",
                                                    help="Also de-identify burned-in/secondary-capture images.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Look for residual identifiers in DICOM or BIDS; write nothing.")] = False,
    jobs: Annotated[int | None, typer.Option(help="Parallel jobs (default: number of cores).")] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="Report format.")] = OutputFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """De-identify DICOM (PS3.15 Annex E Basic Profile), or check DICOM/BIDS for residual identifiers."""
    from qmrbids.deid_check import check as run_check
    from qmrbids.dicom.deidentify import DeidentifyError, Options, load_key, parse_date_shift
    from qmrbids.dicom.deidentify import deidentify as run_deidentify
    from qmrbids.dicom.research_ids import ResearchIdError, outside

    for source in sources:
        if not source.exists():
            raise UsageFailure(f"{source}: no such file or folder")
    if check:
        report = run_check(sources)  # sources exist: checked above
        _render_check(report, output_format)
        raise typer.Exit(report.exit_code)
    if output is None or key_file is None:
        raise UsageFailure("deidentify needs --output and --key-file (or --check to check PATH)")
    if output.exists() and not output.is_dir():
        raise UsageFailure(f"{output}: exists and is not a folder")
    if not outside(key_file, output):
        raise UsageFailure(f"{key_file}: the key file must be kept outside the output folder {output}")
    if jobs is not None and jobs < 1:
        raise UsageFailure(f"--jobs must be at least 1, not {jobs}")
    with _usage_errors(DeidentifyError, ResearchIdError):
        options = Options(load_key(key_file), parse_date_shift(date_shift), keep_device_identity, include_burned_in)
        with _progress(quiet) as progress:
            task = progress.add_task("de-identifying", total=None)
            report = run_deidentify(sources, output, options, map_path=map_file, jobs=jobs or os.cpu_count() or 1,
                                    on_file=lambda: progress.advance(task))
    _render_deidentify(report, output_format)
    raise typer.Exit(report.exit_code)

# --- qc and protocol init -------------------------------------------------------------------------

class QcFormat(str, Enum):
    html = "html"
    json = "json"
    tsv = "tsv"


MAX_LISTED = 40


def _participant_labels(labels: list[str] | None) -> list[str] | None:
    cleaned = [label.removeprefix("sub-") for label in labels or []]
    for label in cleaned:
        if not label.isalnum():
            raise UsageFailure(f"--participant-label must be letters and digits (optionally after sub-), not {label!r}")
    return cleaned or None


def _render_qc(result, written: list[Path], quiet: bool) -> None:
    from qmrbids.qc.metrics import format_value

    lines = [f"{f.status}: {f.site} sub-{f.subject}{' ses-' + f.session if f.session else ''} {f.series}: "
             + (f"{f.parameter}: expected {f.expected}, found {f.found}" if f.kind == "deviation"
                else f"{f.kind} ({f.expected if f.kind == 'unexpected' else f.found})")
             for f in result.findings]
    lines += [f"{r.status}: {r.site} {r.path}: {r.name} = {format_value(r.value)} {r.unit} ({r.threshold})"
              for r in result.records if r.status in ("fail", "warn")]
    for message in result.problems:
        err.print(f"qmrbids: error: {message}", markup=False)
    if not quiet:
        for line in lines[:MAX_LISTED]:
            err.print(f"qmrbids: {line}", markup=False)
        if len(lines) > MAX_LISTED:
            err.print(f"qmrbids: ... and {len(lines) - MAX_LISTED} more (see the report)", markup=False)
    counts = result.counts()
    err.print(f"qmrbids: qc: {counts['sessions']} sessions, {counts['images']} images, {counts['maps']} maps; "
              f"{counts['deviations']} deviations, {counts['missing']} missing series, {counts['unexpected']} unexpected, "
              f"QC {counts['qc_fail']} fail / {counts['qc_warn']} warn; report: "
              + ", ".join(str(p) for p in written), markup=False)


@app.command()
def qc(
    dataset: Annotated[Path, typer.Argument(help="BIDS dataset (maps are read from its derivatives/).")],
    protocol: Annotated[Path | None, typer.Option(help="Study protocol (YAML) to check compliance against.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Report folder (default DATASET/derivatives/qmrbids-qc).")] = None,
    participant_label: Annotated[list[str] | None, typer.Option(help="Only these subjects (repeatable).")] = None,
    output_format: Annotated[QcFormat, typer.Option("--format", help="html (+ management.tsv), json or tsv.")] = QcFormat.html,
    jobs: Annotated[int | None, typer.Option(help="Parallel processes (default: number of cores).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary line.")] = False,
    phantom_labels: Annotated[Path | None, typer.Option(
        help="Label image of phantom regions: adds phantom metrology (see `qmrbids metrology`).")] = None,
    reference: Annotated[str, typer.Option(help="Metrology reference: nist-v1, nist-v2 or a TSV.")] = "nist-v1",
) -> None:
    """Check protocol compliance and image quality; write a report. Exit 1 when anything fails."""
    from qmrbids.qc import DatasetError, ProtocolError, load_protocol, run_qc, write_outputs
    from qmrbids.qc.api import DEFAULT_REPORT_FOLDER

    if not dataset.is_dir():
        raise UsageFailure(f"{dataset}: no such dataset folder")
    if jobs is not None and jobs < 1:
        raise UsageFailure(f"--jobs must be at least 1, not {jobs}")
    labels = _participant_labels(participant_label)
    try:
        study_protocol = load_protocol(protocol) if protocol else None
    except ProtocolError as error:
        raise UsageFailure(str(error)) from None
    report_dir = output or dataset / DEFAULT_REPORT_FOLDER
    if report_dir.exists() and not report_dir.is_dir():
        raise UsageFailure(f"{report_dir}: exists and is not a folder")
    try:
        with _progress(quiet) as progress:
            task = progress.add_task("measuring", total=None)
            result = run_qc(dataset, study_protocol, labels, report_dir=report_dir, jobs=jobs,
                            on_planned=lambda n: progress.update(task, total=n),
                            on_session=lambda: progress.advance(task))
    except DatasetError as error:
        raise UsageFailure(str(error)) from None
    if labels and not result.rows:
        raise UsageFailure(f"{dataset}: no images of participant(s) {', '.join(labels)}")
    if phantom_labels is not None:
        from qmrbids.qc.metrology import MetrologyError
        from qmrbids.qc.phantom_sessions import measure

        try:
            result.metrology = measure(dataset, reference, phantom_labels, participants=labels, output_dir=report_dir)
        except MetrologyError as error:
            raise UsageFailure(str(error)) from None
    written = write_outputs(result, report_dir, output_format.value)
    _render_qc(result, written, quiet)
    raise typer.Exit(result.exit_code)


protocol_app = typer.Typer(help="Study protocols for `qmrbids qc`.", no_args_is_help=True)
app.add_typer(protocol_app, name="protocol")


@protocol_app.command("init")
def protocol_init(
    dataset: Annotated[Path, typer.Argument(help="BIDS dataset holding the reference session.")],
    participant_label: Annotated[str, typer.Option(help="Subject of the reference session.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Protocol YAML to write.")],
    session_label: Annotated[str | None, typer.Option(help="Reference session (needed if the subject has several).")] = None,
) -> None:
    """Draft a study protocol from a reference session, for a person to edit."""
    from qmrbids.io import atomic_write_text
    from qmrbids.qc import DatasetError, ProtocolError, draft_protocol, protocol_yaml

    if not dataset.is_dir():
        raise UsageFailure(f"{dataset}: no such dataset folder")
    subject = _participant_labels([participant_label])[0]
    session = session_label.removeprefix("ses-") if session_label else None
    if output.exists() and output.is_dir():
        raise UsageFailure(f"{output}: is a folder; give the protocol file to write")
    try:
        data = draft_protocol(dataset, subject, session)
    except (DatasetError, ProtocolError) as error:
        raise UsageFailure(str(error)) from None
    atomic_write_text(output, protocol_yaml(data))
    err.print(f"qmrbids: wrote a draft protocol with {len(data['series'])} series to {output}; edit it before use",
              markup=False)


@app.command()
def run(
    sources: DicomSources,
    output: BidsOutput,
    config: StudyConfigFile = None,
    protocol: Annotated[Path | None, typer.Option(help="Study protocol (YAML) for compliance checks.")] = None,
    deidentify: DeidentifyFlag = False,
    key_file: KeyFile = None,
    map_file: MapFile = None,
    jobs: Jobs = None,
    labels: Annotated[Path | None, typer.Option(help="Phantom label image for metrology (found automatically for the digital phantom).")] = None,
    reference: Annotated[str, typer.Option(help="Metrology reference: nist-v1, nist-v2 or a TSV.")] = "nist-v1",
    output_format: Annotated[OutputFormat, typer.Option("--format", help="Summary format.")] = OutputFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """The whole job: convert, validate, fit, check quality (and measure phantoms); one summary."""
    from qmrbids.convert import ConfigError, load_config
    from qmrbids.pipeline import Progress, run_pipeline
    from qmrbids.qc import ProtocolError, load_protocol

    _check_conversion_arguments(sources, output, jobs)
    options = _deidentify_options(deidentify, key_file, map_file, output)
    try:
        study = load_config(config)
        study_protocol = load_protocol(protocol) if protocol else None
    except (ConfigError, ProtocolError) as error:
        raise UsageFailure(str(error)) from None
    with _progress(quiet) as bar:
        task = bar.add_task("starting", total=None)
        hooks = Progress(stage=lambda name: bar.reset(task, description=name, total=None),
                         total=lambda n: bar.update(task, total=n), step=lambda: bar.advance(task))
        report = run_pipeline(sources, output, config=study, protocol=study_protocol, deidentify=options,
                              map_path=map_file, jobs=jobs, labels=labels, reference=reference, progress=hooks)
    if output_format is OutputFormat.json:
        typer.echo(json.dumps({"bids_dir": str(report.bids_dir), "exit_code": report.exit_code,
                               "report": str(report.report) if report.report else None,
                               "stages": [vars(s) for s in report.stages]}, indent=2))
    else:
        table = Table(title=f"qmrbids run: {output}", box=box.SIMPLE)
        for column in ("stage", "status", "result"):
            table.add_column(column)
        for stage in report.stages:
            table.add_row(stage.name, stage.status, stage.summary)
        Console(highlight=False).print(table)
        for stage in report.stages:
            for message in stage.messages[:10]:
                err.print(f"qmrbids: {'error' if stage.status == 'errors' else 'note'}: {stage.name}: {message}",
                          markup=False)
        if report.report:
            typer.echo(f"report: {report.report}")
    raise typer.Exit(report.exit_code)


INTERRUPTED = 130   # the exit code of a command stopped by Ctrl-C


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app and turn every failure into one line and an exit code."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="qmrbids", standalone_mode=False)
    except typer.Exit as done:
        return done.exit_code
    except UsageFailure as error:
        err.print(f"qmrbids: error: {error}", markup=False)
        return 2
    except typer.TyperException as error:  # typer's usage errors (bad option values, unknown commands)
        message = error.format_message() if hasattr(error, "format_message") else str(error)
        if type(error).__name__ == "NoArgsIsHelpError":
            typer.echo(message)
        else:
            err.print(f"qmrbids: error: {' '.join(message.split())}", markup=False)
        return 2
    except (KeyboardInterrupt, typer.Abort):
        result = INTERRUPTED
    except Exception as error:  # a defect of qmrbids, not of the data: still one line, never a traceback
        err.print(f"qmrbids: error: internal error ({type(error).__name__}: {error}); please report it with "
                  "the command that caused it", markup=False)
        return 2
    if result == INTERRUPTED:  # typer turns Ctrl-C inside a command into this exit code
        err.print("qmrbids: interrupted; nothing partial was left behind", markup=False)
    return result if isinstance(result, int) else 0


def run() -> None:
    """The ``qmrbids`` executable: :func:`main`, then exit leaving what is still alive to the OS.

    A large validation leaves its dataset index and report in reference cycles; collecting them
    object by object at exit took 0.3 s on 52,000 files, about as long as writing the report.
    Files are closed and atexit handlers still run; only the collection is skipped.
    """
    code = main()
    gc.freeze()
    sys.exit(code)


# ---------------------------------------------------------------- qmrbids validate

class ReportFormat(str, Enum):
    text = "text"
    json = "json"
    sarif = "sarif"
    junit = "junit"


class FailOn(str, Enum):
    error = "error"
    warning = "warning"


@app.command()
def validate(
    dataset: Annotated[Path, typer.Argument(help="BIDS dataset folder.")],
    output_format: Annotated[ReportFormat, typer.Option("--format", help="Report format.")] = ReportFormat.text,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report to FILE.")] = None,
    fail_on: Annotated[FailOn, typer.Option(help="Exit 1 if an issue at this level or above.")] = FailOn.error,
    schema_version: Annotated[str | None, typer.Option(help="qMRI extension version (default: the dataset's).")] = None,
    strict_official: Annotated[bool, typer.Option("--strict-official", help="Official BIDS rules only.")] = False,
    recursive: Annotated[bool, typer.Option("--recursive", help="Validate derivatives/* datasets too.")] = False,
    ignore: Annotated[list[str] | None, typer.Option("--ignore", help="Drop issues with this code (repeatable).")] = None,
    config: Annotated[Path | None, typer.Option(help="bids-validator style config (ignore/warning/error lists).")] = None,
    ignore_nifti_headers: Annotated[bool, typer.Option("--ignore-nifti-headers", help="Do not read NIfTI headers.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=0,
                                      help="Processes checking files (0: every core on datasets of 10,000+ files).")] = 0,
) -> None:
    """Validate a BIDS dataset against the official schema and the qMRI extension."""
    from qmrbids.validate import Options, ValidationError, load_config, validate_dataset
    from qmrbids.validate.qmri import UnknownVersion
    from qmrbids.io import atomic_text_writer
    from qmrbids.validate.reporters import WRITERS

    try:
        options = Options(strict_official=strict_official, schema_version=schema_version, recursive=recursive,
                          ignore_codes=tuple(ignore or ()), config=load_config(config) if config else {},
                          read_nifti_headers=not ignore_nifti_headers, jobs=jobs)
        report = validate_dataset(dataset, options)
    except (ValidationError, UnknownVersion) as error:
        raise UsageFailure(str(error)) from None
    write = WRITERS[output_format.value]
    if output is None:
        if output_format is ReportFormat.text:
            write(report, sys.stdout, colour=Console().is_terminal)
        else:
            write(report, sys.stdout)
    else:
        try:
            with atomic_text_writer(output) as handle:
                write(report, handle)
        except OSError as error:
            raise UsageFailure(f"{output}: cannot write the report ({error.strerror})") from None
    raise typer.Exit(report.exit_code(fail_on.value))


# ---- qmrbids fit ----

@app.command()
def fit(
    dataset: Annotated[Path, typer.Argument(help="BIDS dataset with qMRI collections.")],
    model: Annotated[list[str] | None, typer.Option(help="Model to fit (repeatable; default all found).")] = None,
    participant_label: Annotated[list[str] | None, typer.Option(help="Subject label (repeatable).")] = None,
    session_label: Annotated[list[str] | None, typer.Option(help="Session label (repeatable).")] = None,
    jobs: Annotated[int, typer.Option(help="Local worker processes, one collection each.")] = 1,
    dask_scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address (tcp://host:port).")] = None,
    mask: Annotated[str, typer.Option(help="auto (foreground: brightest image > 10 % of its 99th percentile), none, or a NIfTI mask PATH.")] = "auto",
    b1: Annotated[str, typer.Option(help="auto: correct with the session's TB1map; none: no correction.")] = "auto",
    output_dir: Annotated[Path | None, typer.Option(help="Default DATASET/derivatives/qmrbids.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Refit maps that are up to date.")] = False,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="Report format.")] = OutputFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Fit quantitative maps (T1, T2, T2*, B1, MTsat, MTR, ADC) into a BIDS derivative dataset."""
    from qmrbids.fit import MODELS, FitError
    from qmrbids.fit.run import run_fit
    from qmrbids.parallel import ExecutorError

    if jobs < 1:
        raise UsageFailure(f"--jobs must be at least 1, not {jobs}")
    if b1 not in ("auto", "none"):
        raise UsageFailure(f"--b1 must be auto or none, not {b1!r}")
    unknown = sorted(set(model or ()) - set(MODELS))
    if unknown:
        raise UsageFailure(f"unknown model {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    if not dataset.is_dir():
        raise UsageFailure(f"{dataset}: no such folder")
    if mask not in ("auto", "none") and not Path(mask).is_file():
        raise UsageFailure(f"--mask {mask}: no such file")
    with _progress(quiet) as progress:
        task = progress.add_task("fitting", total=None)
        try:
            report = run_fit(dataset, models=model, subjects=participant_label, sessions=session_label, jobs=jobs,
                             scheduler=dask_scheduler, mask=mask, b1=b1, output_dir=output_dir, overwrite=overwrite,
                             on_result=lambda result: progress.advance(task))
        except ExecutorError as error:
            raise UsageFailure(str(error)) from None
        except FitError as error:
            err.print(f"qmrbids: error: {error}", markup=False)
            raise typer.Exit(1) from None
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for r in report.results:
            line = f"{r.label} [{r.model}]: {r.status}" + (f" in {r.seconds:.2f} s" if r.status == "fitted" else "")
            typer.echo(line)
    for r in report.results:
        if r.status == "failed":
            err.print(f"qmrbids: error: {r.error}", markup=False)
    if not quiet:
        err.print(f"qmrbids: {len(report.results)} collections -> {report.output}", markup=False)
    raise typer.Exit(report.exit_code)
