"""Run a conversion plan: dcm2niix per series in a staging folder inside the dataset, then enrich
the sidecars and move every file into place with renames. Interrupted runs leave no partial file
under a final name; a re-run converts only what is missing and leaves the rest untouched.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import dcm2niix

from qmrbids import __version__
from qmrbids.convert.config import StudyConfig
from qmrbids.convert.nifti import compress_clean
from qmrbids.convert.plan import Output, PlannedSeries
from qmrbids.convert.sidecars import PROVENANCE_KEY, derive_fields, scrub, series_hmac, sha256_file
from qmrbids.dicom.deidentify import Options, Refused, deidentify_bytes, shift_da, shift_days
from qmrbids.dicom.scan import Source, read_bytes
from qmrbids.io import atomic_write_bytes, atomic_write_text, staging_dir
from qmrbids.schema import required_sidecar_fields

EXTENSION_VERSION = "0.1.0"
STATE_DIR = ".qmrbids"  # hidden: the BIDS validator ignores it
#: BIDS sidecars, identifying fields left out, dcm2niix's own series merging only; uncompressed,
#: because the header text is cleaned before the one compression (qmrbids.convert.nifti).
DCM2NIIX_OPTIONS = ("-b", "y", "-ba", "y", "-z", "n", "-w", "1")


@dataclass
class SeriesResult:
    uid: str
    status: str  # converted | up-to-date | failed | skipped
    message: str = ""
    written: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    acq_time: str = ""  # scans.tsv acq_time (de-identified conversions only: the date is shifted)


def dcm2niix_version() -> str:
    run = subprocess.run([dcm2niix.bin, "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"v\d+\.\d+\.\d+\w*", run.stdout + run.stderr)
    return match.group(0) if match else dcm2niix.__version__


def dataset_key(bids_dir: Path) -> bytes:
    """The dataset's secret for keyed hashes of source UIDs, made once and kept in .qmrbids/key."""
    path = bids_dir / STATE_DIR / "key"
    if not path.is_file():
        atomic_write_bytes(path, secrets.token_hex(32).encode())
    return path.read_bytes().strip()


def _existing_state(planned: PlannedSeries, bids_dir: Path, source_hash: str, config: StudyConfig) -> str:
    """'missing', 'current' (all outputs from this series and config) or 'conflict'."""
    states = []
    for output in planned.outputs:
        sidecar = bids_dir / f"{output.stem}.json"
        if not sidecar.is_file():
            states.append("missing")
            continue
        try:
            provenance = json.loads(sidecar.read_text()).get(PROVENANCE_KEY, {})
        except (OSError, ValueError):
            states.append("conflict")
            continue
        same = (provenance.get("SourceSeriesHMAC") == source_hash
                and provenance.get("StudyConfigSHA256") == config.digest)
        states.append("current" if same else "conflict")
    if states and all(s == "current" for s in states):
        return "current"
    return "conflict" if "conflict" in states else "missing"


def _stage_inputs(planned: PlannedSeries, folder: Path, deidentify: Options | None) -> None:
    """The series' files in one folder for dcm2niix: links or extracted archive members, or,
    when de-identifying, de-identified copies (dcm2niix never sees an identifier)."""
    folder.mkdir(parents=True)
    for index, (path, member) in enumerate(planned.series["files"]):
        target = folder / f"{index:06d}.dcm"
        if deidentify is not None:
            target.write_bytes(deidentify_bytes(read_bytes(Source(path, member)), deidentify, planned.subject)[0])
        elif member or path.lower().endswith(".gz"):
            target.write_bytes(read_bytes(Source(path, member)))
        else:
            os.symlink(os.path.abspath(path), target)


def _first_file(planned: PlannedSeries, work: Path) -> Path:
    """A plain file holding the series' first DICOM (for header values dcm2niix does not give)."""
    path, member = planned.series["files"][0]
    if not member and not path.lower().endswith(".gz"):
        return Path(path)
    first = work / "first.dcm"
    first.write_bytes(read_bytes(Source(path, member)))
    return first


def dcm2niix_outputs(folder: Path) -> list[dict]:
    """What dcm2niix wrote into ``folder``: one record per NIfTI with its sidecar's metadata."""
    outputs = []
    for sidecar in sorted(folder.glob("*.json")):
        meta = json.loads(sidecar.read_text())
        nifti = next((n for n in (sidecar.with_suffix(".nii"), sidecar.with_suffix(".nii.gz")) if n.is_file()), None)
        if nifti is None:
            continue
        outputs.append({"name": sidecar.stem, "meta": meta, "nifti": nifti,
                        "phase": "PHASE" in meta.get("ImageType", []) or sidecar.stem.endswith("_ph"),
                        "fieldmaphz": sidecar.stem.endswith("_fieldmaphz"),
                        "extra": bool(re.search(r"_(ADC|Eq|Tilt|ROI\d*|i\d+)$", sidecar.stem))})
    return outputs


def _match(outputs: list[dict], planned: PlannedSeries) -> list[tuple[Output, dict]]:
    """Pair dcm2niix's files with the planned outputs, or raise ValueError saying what differs."""
    usable = [o for o in outputs if not o["extra"]]
    pairs = []
    for target in planned.outputs:
        if target.kind == "fieldmaphz":
            candidates = [o for o in usable if o["fieldmaphz"]]
        elif any(t.kind == "fieldmaphz" for t in planned.outputs):
            candidates = [o for o in usable if not o["fieldmaphz"]]
        else:
            wanted_phase = target.part == "phase" or (target.part is None and planned.series["parts"] == ["phase"])
            candidates = [o for o in usable if o["phase"] == wanted_phase]
            if target.echo is not None:
                echoes = sorted({o["meta"].get("EchoNumber", 1) for o in candidates})
                if len(echoes) < target.echo:
                    candidates = []
                else:
                    candidates = [o for o in candidates if o["meta"].get("EchoNumber", 1) == echoes[target.echo - 1]]
        if len(candidates) != 1:
            names = ", ".join(o["name"] for o in outputs) or "nothing"
            raise ValueError(f"dcm2niix wrote {names}; cannot tell which is {Path(target.stem).name}")
        pairs.append((target, candidates[0]))
    return pairs


def _run_dcm2niix(planned: PlannedSeries, work: Path, deidentify: Options | None) -> list[dict]:
    """dcm2niix on this series alone; raises ValueError with dcm2niix's last words when it fails."""
    _stage_inputs(planned, work / "in", deidentify)
    out = work / "out"
    out.mkdir()
    timeout = 120 + 0.5 * planned.series["n_files"]
    try:
        run = subprocess.run([dcm2niix.bin, *DCM2NIIX_OPTIONS, "-f", "series", "-o", str(out), str(work / "in")],
                             capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ValueError("dcm2niix did not finish within its time limit") from None
    outputs = dcm2niix_outputs(out)
    if run.returncode != 0 or not outputs:
        last = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ValueError(f"dcm2niix failed (exit {run.returncode}): {last[0]}")
    return outputs


def convert_series(planned: PlannedSeries, bids_dir: Path, staging: Path, config: StudyConfig, key: bytes,
                   versions: dict, overwrite: bool, premade: list[dict] | None = None,
                   deidentify: Options | None = None) -> SeriesResult:
    """Convert one planned series; never raises for bad data, the result says what happened.

    ``premade`` are this series' outputs from a bulk dcm2niix pass (qmrbids.convert.bulk); when
    they do not match the plan, dcm2niix runs again on the series alone. De-identified sidecars
    carry no conversion time (it would date the acquisition).
    """
    uid = planned.uid
    source_hash = series_hmac(uid, key)
    state = _existing_state(planned, bids_dir, source_hash, config)
    if state == "current" and not overwrite:
        return SeriesResult(uid, "up-to-date")
    if state == "conflict" and not overwrite:
        return SeriesResult(uid, "failed", f"{planned.label}: target {planned.outputs[0].stem} exists from another "
                            "source or config; re-run with --overwrite to replace it")
    try:
        with staging_dir(staging, "series") as work:
            try:
                pairs = _match(premade, planned) if premade else None
            except ValueError:
                pairs = None
            if pairs is None:
                pairs = _match(_run_dcm2niix(planned, work, deidentify), planned)
            first = _first_file(planned, work)
            result = SeriesResult(uid, "converted")
            staged = []
            for target, made in pairs:
                if made["nifti"].suffix == ".nii":  # bulk-pass outputs arrive cleaned and compressed
                    made["nifti"] = compress_clean(made["nifti"])
                meta, missing = _sidecar(planned, target, made, first, config)
                if missing:
                    result.warnings.append(f"{planned.label}: {Path(target.stem).name}: missing {', '.join(missing)}; "
                                           f"add them under metadata: {planned.classification.suffix}: in the study config")
                meta[PROVENANCE_KEY] = {
                    "QmrbidsVersion": __version__, "SchemaVersion": EXTENSION_VERSION,
                    "Dcm2niixVersion": versions["dcm2niix"],
                    **({} if deidentify else {"ConvertedAt": datetime.now(timezone.utc).isoformat(timespec="seconds")
                                              .replace("+00:00", "Z")}),
                    "Rule": planned.classification.rule, "Evidence": planned.classification.evidence,
                    "StudyConfigSHA256": config.digest, "SourceFileCount": int(planned.series["n_files"]),
                    "SourceSeriesHMAC": source_hash, "NiftiSHA256": sha256_file(made["nifti"]),
                    **({"MissingFields": missing} if missing else {}),
                }
                staged.append((target, made, meta))
            for target, made, meta in staged:
                result.written.extend(_place(target, made, meta, bids_dir))
            if deidentify is not None:
                result.acq_time = shifted_acq_time(planned.series, deidentify)
            return result
    except Refused as reason:
        return SeriesResult(uid, "failed", f"{planned.label}: not de-identified: {reason}")
    except (OSError, ValueError) as error:
        return SeriesResult(uid, "failed", f"{planned.label}: {error}")


def shifted_acq_time(series: dict, deidentify: Options) -> str:
    """``YYYY-MM-DDThh:mm:ss`` of the series with the subject's date shift ('' without dates).

    Plain conversions leave acq_time out: a real acquisition date identifies the scan.
    """
    days = shift_days(str(series.get("PatientID") or "").strip(), deidentify)
    clock = str(series.get("AcquisitionTime") or "").replace(":", "")
    moved = shift_da(str(series.get("SeriesDate") or ""), days) if days is not None else ""
    if not moved or len(clock) < 6 or not clock[:6].isdigit():
        return ""
    return f"{moved[:4]}-{moved[4:6]}-{moved[6:8]}T{clock[:2]}:{clock[2:4]}:{clock[4:6]}"


def _sidecar(planned: PlannedSeries, target: Output, made: dict, first_file, config: StudyConfig):
    suffix = planned.classification.suffix
    meta = scrub(made["meta"])
    meta.update(derive_fields(suffix, meta, planned.series, first_file))
    meta.update(config.metadata.get(suffix, {}))
    if target.kind == "fieldmaphz":
        meta.setdefault("Units", "Hz")
    if target.part == "phase" or planned.classification.suffix == "phasediff":
        meta.setdefault("Units", "arbitrary")  # BIDS requires Units for phase images
    stem_suffix = target.stem.rsplit("_", 1)[-1]
    missing = [f for f in required_sidecar_fields(stem_suffix) if f not in meta]
    return meta, missing


def _place(target: Output, made: dict, meta: dict, bids_dir: Path) -> list[str]:
    """Move the NIfTI (and bval/bvec) into place, then write the sidecar last (it marks completion)."""
    final = bids_dir / target.stem
    final.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for extension in (".bval", ".bvec"):
        extra = made["nifti"].with_name(made["name"] + extension)
        if extra.is_file():
            os.replace(extra, f"{final}{extension}")
            written.append(f"{target.stem}{extension}")
    os.replace(made["nifti"], f"{final}.nii.gz")
    written.append(f"{target.stem}.nii.gz")
    atomic_write_text(Path(f"{final}.json"), json.dumps(meta, indent=2) + "\n")
    written.append(f"{target.stem}.json")
    return written
