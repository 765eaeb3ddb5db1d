"""Write a phantom session: vendor-style DICOM in ``dicom/`` and ground truth in ``truth/``.

Everything is assembled in a hidden staging folder inside the output folder and moved into place
at the end, so an interrupted run leaves the previous output (or nothing) and never a partial one.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from qmrbids import __version__
from qmrbids.io import publish, staging_dir
from qmrbids.phantom import signals
from qmrbids.phantom.acquisition import PROTOCOLS, protocol_definitions, simulate_protocol
from qmrbids.phantom.dicom import VENDORS, SeriesWriter, Study, plan_series, vendor_definitions
from qmrbids.phantom.object import MAP_UNITS, Grid, Truth, make_truth, object_definition, reference_table

FIELD_STRENGTHS = (1.5, 3.0)
CODE_URL = "https://github.com/qmrbids/qmrbids"


class PhantomError(ValueError):
    """A phantom setting or the output folder is unusable; the message says which and why."""


@dataclass(frozen=True)
class PhantomSettings:
    vendor: str = "siemens"
    protocols: tuple[str, ...] = PROTOCOLS
    snr: float = 0.0
    seed: int = 0
    matrix: int = 64
    slices: int = 4
    b1_range: tuple[float, float] = (1.0, 1.0)
    field_strength: float = 3.0
    patient_id: str = "PHANTOM"

    def checked(self) -> PhantomSettings:
        """These settings with protocols in acquisition order, or PhantomError naming the bad one."""
        if self.vendor not in VENDORS:
            raise PhantomError(f"unknown vendor {self.vendor!r}; choose one of {', '.join(VENDORS)}")
        unknown = sorted(set(self.protocols) - set(PROTOCOLS))
        if unknown:
            raise PhantomError(f"unknown protocol {', '.join(unknown)}; choose from {', '.join(PROTOCOLS)}")
        if not self.protocols:
            raise PhantomError("no protocol selected")
        if not math.isfinite(self.snr) or self.snr < 0:
            raise PhantomError(f"--snr must be 0 (noise-free) or positive, not {self.snr}")
        if self.seed < 0:
            raise PhantomError(f"--seed must be >= 0, not {self.seed}")
        if not 8 <= self.matrix <= 1024:
            raise PhantomError(f"--matrix must be between 8 and 1024, not {self.matrix}")
        if not 1 <= self.slices <= 1024:
            raise PhantomError(f"--slices must be between 1 and 1024, not {self.slices}")
        low, high = self.b1_range
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= 3 and 0 < high <= 3):
            raise PhantomError(f"--b1-range values must lie in (0, 3], not {low},{high}")
        if self.field_strength not in FIELD_STRENGTHS:
            raise PhantomError(f"--field-strength must be 1.5 or 3, not {self.field_strength:g}")
        if not re.fullmatch(r"[A-Za-z0-9]{1,32}", self.patient_id):
            raise PhantomError(f"--patient-id must be 1-32 letters or digits, not {self.patient_id!r}")
        ordered = tuple(p for p in PROTOCOLS if p in set(self.protocols))
        return PhantomSettings(**{**asdict(self), "protocols": ordered, "field_strength": float(self.field_strength),
                                  "b1_range": (float(low), float(high)), "snr": float(self.snr)})

    def session_key(self) -> str:
        """What makes a session unique (every UID derives from it); the protocol selection does not."""
        key = {k: v for k, v in asdict(self).items() if k != "protocols"}
        return "qmrbids-phantom:" + json.dumps(key, sort_keys=True)


@dataclass
class PhantomResult:
    output_dir: Path
    settings: PhantomSettings
    files: int = 0
    series: list[dict] = field(default_factory=list)


def affine_ras(grid: Grid) -> np.ndarray:
    """Voxel-to-RAS affine of the phantom grid (axial slices, DICOM rows along +x of LPS)."""
    dx, dz = grid.pixel_spacing_mm, grid.slice_thickness_mm
    half = (grid.matrix - 1) / 2 * dx
    z0 = -(grid.slices - 1) / 2 * dz
    return np.array([[-dx, 0, 0, half], [0, -dx, 0, half], [0, 0, dz, z0], [0, 0, 0, 1]], dtype=float)


def _nifti_gz(data: np.ndarray, affine: np.ndarray) -> bytes:
    """A .nii.gz byte string with no time stamp or file name in its gzip header."""
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = b"qmrbids digital phantom truth"
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def _truth_files(truth: Truth, folder: Path) -> dict:
    affine = affine_ras(truth.grid)
    folder.mkdir(parents=True, exist_ok=True)
    maps = {}
    for name, units in MAP_UNITS.items():
        filename = f"{name}map.nii.gz"
        (folder / filename).write_bytes(_nifti_gz(truth.maps[name].astype(np.float32), affine))
        maps[name] = {"file": f"truth/{filename}", "units": units}
    (folder / "labels.nii.gz").write_bytes(_nifti_gz(truth.labels, affine))
    return maps


def _region_table(truth: Truth) -> list[dict]:
    rows = []
    for region in truth.regions:
        array, _, sphere = region.name.partition("-sphere-")
        rows.append({"label": region.label, "name": region.name,
                     "sphere_array": array if sphere else None, "sphere": int(sphere) if sphere else None,
                     **{f"{k}": v for k, v in region.params.items()}})
    return rows


def _volume_record(volume, files: list[str]) -> dict:
    record = {"part": volume.part, "echo_number": volume.echo_number, "echo_time_ms": volume.echo_time,
              "flip_angle_deg": volume.flip_angle, "inversion_time_ms": volume.inversion_time,
              "bvalue_s_mm2": volume.bvalue, "direction_lps": volume.direction, "mt": volume.mt,
              "files": files}
    return {k: v for k, v in record.items() if v is not None}


def write_phantom(output_dir: Path, settings: PhantomSettings,
                  on_step: Callable[[str], None] | None = None) -> PhantomResult:
    """Simulate the selected protocols and write DICOM and truth into ``output_dir``."""
    settings = settings.checked()
    output_dir = Path(output_dir)
    for name in ("dicom", "truth"):
        existing = output_dir / name
        if existing.exists() and not (output_dir / "truth" / "phantom.json").is_file():
            raise PhantomError(f"{existing}: exists and is not a qmrbids phantom; choose another output folder")
    grid = Grid(settings.matrix, settings.slices)
    truth = make_truth(grid, settings.field_strength, settings.b1_range)
    study = Study(settings.vendor, settings.field_strength, settings.patient_id, grid, settings.session_key())
    result = PhantomResult(output_dir, settings)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with staging_dir(output_dir, "qmrbids-phantom") as stage:
            writer = SeriesWriter(study, stage / "dicom")
            protocols = {}
            for name in settings.protocols:
                definition = protocol_definitions()[name]
                records = []
                for plan in plan_series(settings.vendor, grid, simulate_protocol(name, truth, settings.snr, settings.seed)):
                    files = writer.write(plan)
                    volumes = [_volume_record(v, [f"dicom/{p}" for p in f]) for v, f in zip(plan.volumes, files, strict=True)]
                    records.append({"series_number": plan.number, "label": plan.series.label,
                                    "description": plan.description, "protocol_name": plan.protocol_name,
                                    "parts": sorted({v.part for v in plan.volumes}),
                                    "encoding": {p: plan.encoding[p] for p in sorted({v.part for v in plan.volumes})},
                                    "volumes": volumes})
                    result.files += sum(len(f) for f in files)
                protocols[name] = {"title": definition["title"], "signal": definition["signal"],
                                   "signal_equation": _first_paragraph(getattr(signals, definition["signal"]).__doc__),
                                   "acquisition": definition["acquisition"], "series": records}
                result.series.extend(records)
                if on_step:
                    on_step(name)
            maps = _truth_files(truth, stage / "truth")
            description = _description(settings, truth, maps, protocols)
            (stage / "truth" / "phantom.json").write_text(json.dumps(description, indent=2) + "\n")
            for name in ("dicom", "truth"):
                publish(stage / name, output_dir / name)
            if on_step:
                on_step("truth")
    except OSError as error:
        where = error.filename or output_dir
        raise PhantomError(f"{where}: {error.strerror or error}") from error
    return result


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def _description(settings: PhantomSettings, truth: Truth, maps: dict, protocols: dict) -> dict:
    spec = object_definition()
    references = {}
    for array in spec["sphere_arrays"]:
        meta, _ = reference_table(array["reference"])
        references[array["reference"]] = {k: meta[k] for k in ("title", "citation", "doi", "temperature_c")}
    vendor = vendor_definitions()[settings.vendor]
    grid = truth.grid
    return {
        "GeneratedBy": {"Name": "qmrbids", "Version": __version__, "CodeURL": CODE_URL},
        "settings": {**asdict(settings), "protocols": list(settings.protocols), "b1_range": list(settings.b1_range)},
        "noise": {"sigma": 0.0 if settings.snr == 0 else 1.0 / settings.snr, "unit": "water M0",
                  "model": "complex Gaussian added before the magnitude is taken (Rician magnitudes)"},
        "geometry": {"matrix": grid.matrix, "slices": grid.slices, "pixel_spacing_mm": grid.pixel_spacing_mm,
                     "slice_thickness_mm": grid.slice_thickness_mm, "orientation": "axial, head first supine",
                     "affine_ras": affine_ras(grid).tolist(),
                     "voxel_order": "NIfTI i = DICOM column, j = DICOM row, k = slice (ascending z)"},
        "maps": maps,
        "labels": {"file": "truth/labels.nii.gz", "background": 0, "regions": _region_table(truth)},
        "fields": {"B1": f"linear across i from {settings.b1_range[0]} to {settings.b1_range[1]}",
                   "B0": spec["b0_offresonance_3T"], "B0_scaling": "proportional to field strength"},
        "references": references,
        "vendor": {"name": settings.vendor, "Manufacturer": vendor["Manufacturer"],
                   "mp2rage_parameters": vendor["mp2rage_parameters"], "diffusion": vendor["diffusion"]},
        "pixel_encoding": ("after Rescale Slope/Intercept: magnitude = value_scale * signal (signal in units of "
                           "the water M0); phase = phase_scale * radians; UNI = uni_scale * (UNI + 0.5) + offset"),
        "protocols": protocols,
    }
