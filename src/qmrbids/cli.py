"""The ``qmrbids`` command line: parse, call the library, render, set the exit code.

Exit codes: 0 success, 1 the data has errors, 2 the command was used wrongly or could not run.
Every failure is one line on stderr, ``qmrbids: error: ...``; never a traceback.
"""

from __future__ import annotations

import json
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
    for s in report.series:
        for warning in s.warnings:
            err.print(f"qmrbids: warning: {warning}", markup=False)
        if s.status == "failed":
            err.print(f"qmrbids: error: {s.reason}", markup=False)
    counts = report.to_dict()["summary"]
    err.print(f"qmrbids: {report.files_scanned} files scanned ({report.non_dicom_skipped} not DICOM, "
              f"{len(report.unreadable)} unreadable); series: "
              + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())), markup=False)


@app.command()
def convert(
    sources: Annotated[list[Path], typer.Argument(help="DICOM folders, files, .zip/.tar archives or .dcm.gz files.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="BIDS dataset folder to write.")],
    config: Annotated[Path | None, typer.Option(help="Study config (YAML): labels, rules, metadata.")] = None,
    subject: Annotated[str | None, typer.Option(help="Subject label for every series.")] = None,
    session: Annotated[str | None, typer.Option(help="Session label for every series.")] = None,
    jobs: Annotated[int | None, typer.Option(help="Parallel jobs (default: number of cores).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace conflicting targets.")] = False,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="Report format.")] = OutputFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Convert vendor DICOM into a qMRI-BIDS dataset, explaining every series."""
    from qmrbids.convert import ConfigError, convert as run_convert, load_config

    for label, value in (("--subject", subject), ("--session", session)):
        if value is not None and not value.isalnum():
            raise UsageFailure(f"{label} must be letters and digits only, not {value!r}")
    if jobs is not None and jobs < 1:
        raise UsageFailure(f"--jobs must be at least 1, not {jobs}")
    try:
        study = load_config(config)
    except ConfigError as error:
        raise UsageFailure(str(error)) from None
    for source in sources:
        if not source.exists():
            raise UsageFailure(f"{source}: no such file or folder")
    if output.exists() and not output.is_dir():
        raise UsageFailure(f"{output}: exists and is not a folder")
    with _progress(quiet) as progress:
        scanning = progress.add_task("scanning", total=None)
        converting = progress.add_task("converting", total=None, visible=False)
        report = run_convert(
            sources, output, study, subject=subject, session=session, jobs=jobs, dry_run=dry_run,
            overwrite=overwrite, on_scan=lambda n: progress.advance(scanning, n),
            on_planned=lambda n: progress.update(converting, total=n, visible=not dry_run),
            on_series=lambda result: progress.advance(converting),
        )
    _render_convert(report, output_format)
    raise typer.Exit(report.exit_code)


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
        err.print("qmrbids: interrupted; nothing partial was left behind", markup=False)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())


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
