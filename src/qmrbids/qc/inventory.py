"""What a BIDS dataset holds for QC: raw images with inherited metadata, sites, and fitted maps.

Raw images and their sidecars are read through pybids (BIDS inheritance principle); maps are found
in any folder under ``derivatives/`` by their BIDS suffix (T1map, R2starmap, ...) or, for diffusion
maps, a ``desc-ADC``-style label.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
from bids import BIDSLayout
from bids.layout import parse_file_entities

# Entities that tell series types apart (pybids name -> file-name key), in BIDS file-name order.
SERIES_ENTITIES = {"acquisition": "acq", "ceagent": "ce", "reconstruction": "rec", "direction": "dir",
                   "run": "run", "echo": "echo", "flip": "flip", "inv": "inv", "mt": "mt", "part": "part"}
NIFTI = (".nii", ".nii.gz")
MRIQC_FOLDER = "mriqc"


class DatasetError(ValueError):
    """The folder cannot be read as a BIDS dataset; the message names it and says why."""


def series_key(entities: dict, suffix: str) -> str:
    """The series type of a file, as a BIDS-style name: ``flip-1_VFA``, ``echo-2_part-mag_MEGRE``."""
    parts = [f"{key}-{entities[name]}" for name, key in SERIES_ENTITIES.items() if entities.get(name) not in (None, "")]
    return "_".join([*parts, suffix])


def natural_key(text: str) -> list:
    """Sort key that puts echo-2 before echo-10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


@dataclass
class Image:
    """One raw NIfTI image of the dataset."""

    path: Path
    relpath: str
    subject: str
    session: str
    datatype: str
    suffix: str
    series: str
    entities: dict  # filename keys -> labels, series entities only
    metadata: dict
    _header: dict | None = field(default=None, repr=False)

    def header_values(self) -> dict:
        """VoxelSize (mm), Matrix, NumberOfSlices and NumberOfVolumes from the NIfTI header (read once)."""
        if self._header is None:
            header = nib.load(str(self.path)).header
            shape, zooms = header.get_data_shape(), header.get_zooms()
            self._header = {"VoxelSize": [round(float(z), 4) for z in zooms[:3]], "Matrix": [int(s) for s in shape[:2]],
                            "NumberOfSlices": int(shape[2]) if len(shape) > 2 else 1,
                            "NumberOfVolumes": int(shape[3]) if len(shape) > 3 else 1}
        return self._header


@dataclass
class MapImage:
    """One quantitative map of a derivative dataset."""

    path: Path
    relpath: str
    subject: str
    session: str
    kind: str  # the key of the ranges table: T1map, ADC, ...
    series: str
    entities: dict
    units: str | None
    pipeline: str


@dataclass
class Inventory:
    root: Path
    images: list[Image] = field(default_factory=list)
    maps: list[MapImage] = field(default_factory=list)
    residuals: dict[str, list[Path]] = field(default_factory=dict)  # map relpath -> residual/R2 maps
    sites: dict[tuple[str, str], str] = field(default_factory=dict)  # (subject, session) -> site
    problems: list[str] = field(default_factory=list)

    def sessions(self) -> list[tuple[str, str]]:
        return sorted(self.sites)


def _read_tsv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _label(value: str | None, prefix: str) -> str:
    value = value or ""
    return value[len(prefix):] if value.startswith(prefix) else value


def _site_of(root: Path, images: list[Image]) -> dict[tuple[str, str], str]:
    """Site per session: sessions.tsv ``site``, else participants.tsv ``site``, else the device identity."""
    participants = {_label(r.get("participant_id"), "sub-"): r for r in _read_tsv(root / "participants.tsv")}
    sites: dict[tuple[str, str], str] = {}
    session_rows: dict[str, dict] = {}
    for image in images:
        key = (image.subject, image.session)
        if key in sites:
            continue
        if image.subject not in session_rows:
            rows = _read_tsv(root / f"sub-{image.subject}" / f"sub-{image.subject}_sessions.tsv")
            session_rows[image.subject] = {_label(r.get("session_id"), "ses-"): r for r in rows}
        site = session_rows[image.subject].get(image.session, {}).get("site")
        if site in (None, "", "n/a"):
            site = participants.get(image.subject, {}).get("site")
        if site in (None, "", "n/a"):
            site = device_identity(image.metadata)
        sites[key] = site
    return sites


def device_identity(metadata: dict) -> str:
    """A site label from the scanner: the (pseudonymised) serial number if kept, else vendor and model."""
    serial = metadata.get("DeviceSerialNumber")
    parts = [metadata.get("Manufacturer"), metadata.get("ManufacturersModelName")] + ([serial] if serial else [])
    label = "-".join(str(p) for p in parts if p)
    return re.sub(r"[^A-Za-z0-9.-]+", "", label.replace(" ", "")) or "unknown"


def _maps(root: Path, kinds: dict[str, list[str]], subjects: set[str] | None, exclude: Path | None,
          inventory: Inventory) -> None:
    derivatives = root / "derivatives"
    if not derivatives.is_dir():
        return
    for pipeline in sorted(p for p in derivatives.iterdir() if p.is_dir() and p.name != MRIQC_FOLDER):
        if exclude is not None and pipeline.resolve() == exclude.resolve():
            continue
        for path in sorted(pipeline.rglob("sub-*")):
            if not path.name.endswith(NIFTI) or any(part.startswith(".") for part in path.relative_to(pipeline).parts):
                continue
            entities = parse_file_entities(str(path), config=["bids", "derivatives"])
            subject = entities.get("subject")
            if not subject or (subjects and subject not in subjects):
                continue
            suffix, desc = entities.get("suffix", ""), entities.get("desc", "")
            if re.search(r"residual|rmse|rsquared|^r2$", desc, re.IGNORECASE) or suffix in ("Rsquared", "residual"):
                target = re.sub(r"_desc-[A-Za-z0-9]+", "", path.name)
                inventory.residuals.setdefault(str(path.parent / target), []).append(path)
                continue
            kind = next((k for k, names in kinds.items() if suffix in names or desc in names), None)
            if kind is None:
                continue
            sidecar = path.with_name(path.name[: -len(".nii.gz" if path.name.endswith(".gz") else ".nii")] + ".json")
            units = None
            if sidecar.is_file():
                try:
                    units = json.loads(sidecar.read_text()).get("Units")
                except (OSError, ValueError) as error:
                    inventory.problems.append(f"{sidecar}: unreadable sidecar ({error})")
            short = {SERIES_ENTITIES[k]: v for k, v in entities.items() if k in SERIES_ENTITIES}
            inventory.maps.append(MapImage(
                path=path, relpath=path.relative_to(root).as_posix(), subject=subject,
                session=entities.get("session", "") or "", kind=kind,
                series=series_key({k: v for k, v in entities.items() if k in SERIES_ENTITIES}, suffix)
                + (f"_desc-{desc}" if desc else ""),
                entities=short, units=units, pipeline=pipeline.name))


def read_inventory(root: Path, map_kinds: dict[str, list[str]], subjects: list[str] | None = None,
                   exclude: Path | None = None) -> Inventory:
    """Index ``root``: raw images (optionally only ``subjects``), their sites, and derivative maps.

    ``map_kinds`` maps a kind (key of the map ranges table) to the suffixes/desc labels naming it;
    ``exclude`` is a derivatives folder to leave out (the QC report's own).
    """
    root = Path(root).resolve()
    if not (root / "dataset_description.json").is_file():
        raise DatasetError(f"{root}: not a BIDS dataset (no dataset_description.json)")
    try:
        layout = BIDSLayout(root, validate=False, derivatives=False)
    except Exception as error:  # pybids raises many types for unreadable datasets
        raise DatasetError(f"{root}: cannot index the dataset ({error})") from None
    wanted = set(subjects or [])
    inventory = Inventory(root=root)
    for file in layout.get(extension=list(NIFTI), return_type="object"):
        entities = file.get_entities()
        subject = str(entities.get("subject", ""))
        if not subject or (wanted and subject not in wanted):
            continue
        try:
            metadata = dict(layout.get_metadata(file.path))
        except Exception as error:  # a sidecar that is not valid JSON
            inventory.problems.append(f"{file.path}: unreadable sidecar ({error})")
            metadata = {}
        series_entities = {k: str(v) for k, v in entities.items() if k in SERIES_ENTITIES}
        suffix = str(entities.get("suffix", ""))
        inventory.images.append(Image(
            path=Path(file.path), relpath=Path(file.path).relative_to(root).as_posix(), subject=subject,
            session=str(entities.get("session", "") or ""), datatype=str(entities.get("datatype", "")),
            suffix=suffix, series=series_key(series_entities, suffix),
            entities={SERIES_ENTITIES[k]: v for k, v in series_entities.items()}, metadata=metadata))
    inventory.images.sort(key=lambda i: natural_key(i.relpath))
    inventory.sites = _site_of(root, inventory.images)
    _maps(root, map_kinds, wanted or None, exclude, inventory)
    for m in inventory.maps:  # sessions with maps but no raw images still belong to a site
        inventory.sites.setdefault((m.subject, m.session), "unknown")
    return inventory
