"""``qmrbids metrology``: measure the fitted maps of phantom sessions against reference values.

Every quantitative map with a reference parameter (T1map, T2map) under the dataset's
``derivatives/qmrbids`` is reduced to region values with a label image, then compared with the
reference (accuracy), across the sessions of one scanner (repeatability) and across scanners
(reproducibility). A map is identified by its entities other than subject and session (for
example ``desc-VFA_T1map``), so maps of different methods are never pooled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import yaml
from bids.layout import parse_file_entities

from qmrbids.io import atomic_write_text
from qmrbids.qc.metrology import (MAP_PARAMETER, MetrologyError, Reference, accuracy, load_reference,
                                  region_values, repeatability, reproducibility)
from qmrbids.resources import data_path

DERIVATIVE = Path("derivatives") / "qmrbids"


@dataclass
class MetrologyReport:
    """Tables (pandas) and summaries of one metrology run; ``warnings`` are for the user."""

    reference: str
    accuracy: pd.DataFrame
    repeatability: pd.DataFrame
    reproducibility: pd.DataFrame
    summary: dict
    warnings: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)

    def map_rows(self) -> list[dict]:
        """One row per measured map: where, site, regions, |bias| % inside the sensitive range, linearity."""
        rows = []
        for (method, subject, session), group in self.accuracy.groupby(["method", "subject", "session"], sort=True):
            where = session_name(subject, "" if session == "n/a" else session)
            inside = group.loc[group["in_sensitive_range"], "percent_bias"].abs()
            line = self.summary["linearity"].get(f"{where} {method}", {})
            rows.append({"site": group["site"].iloc[0], "session": where, "map": method, "regions": len(group),
                         "median_abs_bias": inside.median() if len(inside) else None,
                         "max_abs_bias": inside.max() if len(inside) else None,
                         **{k: line.get(k) for k in ("slope", "intercept", "r_squared")}})
        return rows


def session_name(subject: str, session: str) -> str:
    return f"sub-{subject}" + (f" ses-{session}" if session else "")


@dataclass(frozen=True)
class PhantomMap:
    path: Path
    subject: str
    session: str
    method: str      # entities other than sub/ses, e.g. "desc-VFA_T1map"
    parameter: str   # reference parameter, e.g. "T1"


def sensitive_ranges() -> dict[str, tuple[float, float]]:
    """Default sensitive range of each map (validators/metrology.yaml), in the map's units."""
    spec = yaml.safe_load(data_path("validators", "metrology.yaml").read_text())
    return {name: tuple(value) for name, value in spec["sensitive_range"].items()}


def find_maps(dataset: Path, participants: list[str] | None = None) -> list[PhantomMap]:
    root = dataset / DERIVATIVE
    maps = []
    for path in sorted(root.glob("sub-*/**/*.nii*")):
        entities = parse_file_entities(str(path))
        parameter = MAP_PARAMETER.get(entities.get("suffix", ""))
        if parameter is None or (participants and entities.get("subject") not in participants):
            continue
        name = path.name.split(".")[0]
        if _units(path.with_name(name + ".json")) != "s":
            continue  # goodness-of-fit maps share the suffix (desc-...Rsquared_T1map) but have no time unit
        method = "_".join(p for p in name.split("_") if not p.startswith(("sub-", "ses-")))
        maps.append(PhantomMap(path, entities["subject"], entities.get("session", ""), method, parameter))
    return maps


def _units(sidecar: Path) -> str | None:
    try:
        return json.loads(sidecar.read_text()).get("Units")
    except (OSError, ValueError, AttributeError):
        return None


def _table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame()
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def _session_facts(dataset: Path, subject: str, session: str) -> dict:
    """Site, field strength, temperature and serial of a session, from its tables and raw sidecars."""
    facts: dict = {}
    participants = _table(dataset / "participants.tsv")
    if "participant_id" in participants:
        facts.update(participants[participants["participant_id"] == f"sub-{subject}"].iloc[:1].to_dict("records")[0]
                     if (participants["participant_id"] == f"sub-{subject}").any() else {})
    sessions = _table(dataset / f"sub-{subject}" / f"sub-{subject}_sessions.tsv")
    if session and "session_id" in sessions and (sessions["session_id"] == f"ses-{session}").any():
        facts.update(sessions[sessions["session_id"] == f"ses-{session}"].iloc[0].to_dict())
    folder = dataset / f"sub-{subject}" / (f"ses-{session}" if session else "")
    for sidecar in sorted(folder.glob("*/*.json")):
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            continue
        if "MagneticFieldStrength" in meta:
            facts.setdefault("field_strength", float(meta["MagneticFieldStrength"]))
            facts.setdefault("scanner", " ".join(str(meta.get(k, "")) for k in ("Manufacturer", "ManufacturersModelName")
                                                 ).strip())
            break
    facts["site"] = facts.get("site") or facts.get("scanner") or "site"
    return facts


def _labels_for(map_path: Path, labels: Path | None) -> Path:
    """The label image for a map: ``labels`` if given, else a ``*_dseg`` image next to the map."""
    if labels is not None:
        return labels
    candidates = sorted(map_path.parent.glob(map_path.name.split("_")[0] + "*_dseg.nii*"))
    if not candidates:
        raise MetrologyError(f"{map_path.name}: no label image; give --labels or add a *_dseg.nii.gz beside it")
    return candidates[0]


@lru_cache(maxsize=8)
def _read_labels(path: Path, mtime_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """A label image's voxels and affine, read once however many maps it labels."""
    labels = nib.load(path)
    return np.asarray(labels.dataobj), labels.affine


def labels_on_grid(labels_path: Path, image: nib.Nifti1Image) -> np.ndarray:
    """The label image in ``image``'s voxel order: the same grid stored with other axis order or
    directions is reoriented (no interpolation); any other grid is an error."""
    try:
        data, labels_affine = _read_labels(Path(labels_path), Path(labels_path).stat().st_mtime_ns)
    except (OSError, ValueError, EOFError) as error:
        raise MetrologyError(f"{labels_path}: cannot read the label image: {error}") from None
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(labels_affine),
                                                nib.orientations.io_orientation(image.affine))
    affine = labels_affine @ nib.orientations.inv_ornt_aff(transform, data.shape)
    data = nib.orientations.apply_orientation(data, transform)
    if data.shape[:3] != image.shape[:3] or not np.allclose(affine, image.affine, atol=1e-3):
        raise MetrologyError(f"{labels_path}: not on the grid of {Path(image.get_filename()).name}; "
                             "resample the label image to the maps first")
    return data.astype(np.int64)


def measure(dataset: Path, reference: str | Path = "nist-v1", labels: Path | None = None,
            temperature_c: float | None = None, participants: list[str] | None = None,
            output_dir: Path | None = None) -> MetrologyReport:
    """Accuracy, repeatability and reproducibility of every phantom map of ``dataset``."""
    dataset = Path(dataset)
    maps = find_maps(dataset, participants)
    if not maps:
        raise MetrologyError(f"{dataset / DERIVATIVE}: no T1map or T2map to measure; run qmrbids fit first")
    ranges = sensitive_ranges()
    warnings: list[str] = []
    references: dict[float, Reference] = {}
    accuracy_rows, values = [], []
    linearity: dict[str, dict] = {}
    sessions: dict[tuple[str, str], dict] = {}
    for item in maps:
        if (item.subject, item.session) not in sessions:
            sessions[item.subject, item.session] = _session_facts(dataset, item.subject, item.session)
        facts = sessions[item.subject, item.session]
        where = session_name(item.subject, item.session)
        strength = facts.get("field_strength")
        if strength is None:
            warnings.append(f"{where}: MagneticFieldStrength not found in the raw sidecars; assuming 3 T")
            strength = 3.0
        if strength not in references:
            references[strength] = load_reference(reference, strength)
        ref = references[strength].values.get(item.parameter, {})
        temperature = temperature_c if temperature_c is not None else facts.get("phantom_temperature")
        if temperature in (None, "", "n/a"):
            warnings.append(f"{where}: phantom temperature not recorded (give --temperature or a "
                            "phantom_temperature column in sessions.tsv); reference values are for 20 C")
        if facts.get("phantom_serial") in (None, "", "n/a"):
            warnings.append(f"{where}: phantom serial number not recorded (phantom_serial column in sessions.tsv)")
        image = nib.load(item.path)
        data = np.asarray(image.dataobj, dtype=np.float64)
        regions = region_values(data, labels_on_grid(_labels_for(item.path, labels), image), ref)
        table, line = accuracy(regions, ref, ranges.get(item.method.rsplit("_", 1)[-1]))
        table.insert(0, "method", item.method)
        table.insert(0, "phantom_serial", facts.get("phantom_serial") or "n/a")
        table.insert(0, "temperature_c", temperature if temperature not in (None, "") else "n/a")
        table.insert(0, "site", facts["site"])
        table.insert(0, "session", item.session or "n/a")
        table.insert(0, "subject", item.subject)
        accuracy_rows.append(table)
        linearity[f"{where} {item.method}"] = line
        values.extend({"method": item.method, "region": int(r.label), "site": facts["site"],
                       "session": f"{item.subject}/{item.session}", "value": float(r.mean), "reference": r.reference}
                      for r in table.itertuples())
    acc = pd.concat(accuracy_rows, ignore_index=True)
    long = pd.DataFrame(values)
    rep_tables, rdc_tables = [], []
    summary: dict = {"reference": str(reference), "linearity": linearity, "repeatability": {}, "reproducibility": {}}
    for (method, site), group in long.groupby(["method", "site"]):
        table, stats = repeatability(group)
        if len(table):
            rep_tables.append(table.assign(method=method, site=site))
            summary["repeatability"][f"{method} @ {site}"] = stats
    for method, group in long.groupby("method"):
        if group["site"].nunique() < 2:
            continue
        truth = dict(zip(group["region"], group["reference"], strict=False))
        table, stats = reproducibility(group, truth)
        rdc_tables.append(table.assign(method=method))
        summary["reproducibility"][method] = stats
    report = MetrologyReport(str(reference), acc, _concat(rep_tables), _concat(rdc_tables), summary,
                             list(dict.fromkeys(warnings)))
    if output_dir is not None:
        report.written = write_report(report, Path(output_dir))
    return report


def _concat(tables: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def write_report(report: MetrologyReport, folder: Path) -> list[str]:
    """accuracy/repeatability/reproducibility TSVs and metrology.json, each written atomically."""
    from qmrbids.qc.api import mark_report_folder

    mark_report_folder(folder)
    written = []
    for name in ("accuracy", "repeatability", "reproducibility"):
        table: pd.DataFrame = getattr(report, name)
        if len(table):
            atomic_write_text(folder / f"metrology_{name}.tsv", table.to_csv(sep="\t", index=False, na_rep="n/a"))
            written.append(f"metrology_{name}.tsv")
    content = {"reference": report.reference, "summary": report.summary, "warnings": report.warnings}
    atomic_write_text(folder / "metrology.json", json.dumps(content, indent=2, default=_json_default) + "\n")
    return [*written, "metrology.json"]


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
