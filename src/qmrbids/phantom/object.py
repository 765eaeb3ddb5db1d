"""The phantom object: a label image and the true parameter maps that go with it.

Arrays are indexed ``[column, row, slice]`` (NIfTI voxel order for the DICOM geometry the writer
uses), so ``truth.maps["T1"][:, :, k].T`` is slice ``k`` as a DICOM pixel array.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import yaml

from qmrbids.resources import data_path, package_file

#: Names, units and meaning of the truth maps, in the order they are written.
MAP_UNITS = {
    "T1": "s",
    "T2": "s",
    "T2star": "s",
    "M0": "arbitrary",
    "B1": "ratio",
    "B0": "Hz",
    "ADC": "mm2/s",
    "MTsat": "fraction",
}


@cache
def object_definition() -> dict:
    """The phantom's geometry and region values (``object.yaml``)."""
    return yaml.safe_load(package_file("phantom", "object.yaml").read_text())


@cache
def reference_table(name: str) -> tuple[dict, list[dict[str, str]]]:
    """A shipped reference table (``validators/references``): its metadata and its rows."""
    catalogue = yaml.safe_load(data_path("validators", "references", "references.yaml").read_text())
    meta = catalogue[name]
    with data_path("validators", "references", meta["file"]).open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return meta, rows


def _field_key(field_strength: float) -> str:
    return "1p5T" if field_strength == 1.5 else "3T"


@dataclass(frozen=True)
class Region:
    """One region of constant true parameters."""

    label: int
    name: str
    centre: tuple[float, float]  # (u, v) in units of half the field of view
    radius: float
    slices: str  # "even", "odd" or "all"
    params: dict[str, float] = field(hash=False)


def regions(field_strength: float) -> list[Region]:
    """Every region of the phantom with its true parameters at ``field_strength`` (tesla)."""
    spec = object_definition()
    geo = spec["geometry"]
    key = _field_key(field_strength)
    sph = spec["spheres"]
    r2prime = float(sph["R2prime_per_s"][field_strength])
    out: list[Region] = []
    for index, array in enumerate(spec["sphere_arrays"]):
        _, rows = reference_table(array["reference"])
        for row in rows:
            number = int(row["sphere"])
            theta = np.deg2rad(geo["first_sphere_angle_deg"] - (number - 1) * 360.0 / len(rows))
            r = geo["sphere_ring_radius"]
            t1 = float(row[f"{array['columns']['T1']}_{key}_ms"]) / 1000.0
            t2 = float(row[f"{array['columns']['T2']}_{key}_ms"]) / 1000.0
            out.append(
                Region(
                    label=array["first_label"] + number - 1,
                    name=f"{array['name']}-sphere-{number:02d}",
                    centre=(r * np.cos(theta), -r * np.sin(theta)),
                    radius=geo["sphere_radius"],
                    slices="even" if index == 0 else "odd",
                    params={
                        "T1": t1,
                        "T2": t2,
                        "T2star": 1.0 / (1.0 / t2 + r2prime),
                        "M0": float(sph["M0"]),
                        "ADC": float(sph["ADC_mm2_s"]),
                        "MTsat": float(sph["MTsat"]),
                    },
                )
            )
    for i, tissue in enumerate(spec["tissues"]):
        theta = np.deg2rad(90.0 + 120.0 * i)
        r = geo["tissue_ring_radius"]
        out.append(
            Region(
                label=int(tissue["label"]),
                name=tissue["name"],
                centre=(r * np.cos(theta), -r * np.sin(theta)),
                radius=geo["tissue_radius"],
                slices="all",
                params={
                    "T1": tissue["T1_ms"][field_strength] / 1000.0,
                    "T2": tissue["T2_ms"][field_strength] / 1000.0,
                    "T2star": tissue["T2star_ms"][field_strength] / 1000.0,
                    "M0": float(tissue["M0"]),
                    "ADC": float(tissue["ADC_mm2_s"]),
                    "MTsat": float(tissue["MTsat"]),
                },
            )
        )
    return out


@dataclass(frozen=True)
class Grid:
    """Sampling of the object: square in-plane matrix, contiguous axial slices."""

    matrix: int
    slices: int

    @property
    def field_of_view_mm(self) -> float:
        return float(object_definition()["geometry"]["field_of_view_mm"])

    @property
    def pixel_spacing_mm(self) -> float:
        return self.field_of_view_mm / self.matrix

    @property
    def slice_thickness_mm(self) -> float:
        return float(object_definition()["geometry"]["slice_thickness_mm"])

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.matrix, self.matrix, self.slices)

    def normalised_coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates (u along rows, v down columns), in [-1, 1], shape (matrix, matrix)."""
        centres = (2.0 * np.arange(self.matrix) + 1.0) / self.matrix - 1.0
        return np.meshgrid(centres, centres, indexing="ij")


@dataclass
class Truth:
    """Label image, true parameter maps and the region table, all on one grid."""

    grid: Grid
    field_strength: float
    b1_range: tuple[float, float]
    labels: np.ndarray
    maps: dict[str, np.ndarray]
    regions: list[Region]


def make_truth(grid: Grid, field_strength: float, b1_range: tuple[float, float]) -> Truth:
    """Rasterise the object on ``grid``: sharp-edged regions, smooth B1 and B0 fields."""
    u, v = grid.normalised_coordinates()
    labels = np.zeros(grid.shape, dtype=np.int16)
    maps = {name: np.zeros(grid.shape, dtype=np.float64) for name in MAP_UNITS}
    all_regions = regions(field_strength)
    for k in range(grid.slices):
        parity = "even" if k % 2 == 0 else "odd"
        for region in all_regions:
            if region.slices not in ("all", parity):
                continue
            inside = (u - region.centre[0]) ** 2 + (v - region.centre[1]) ** 2 <= region.radius**2
            labels[:, :, k][inside] = region.label
            for name, value in region.params.items():
                maps[name][:, :, k][inside] = value

    low, high = b1_range
    b1_profile = np.interp(u[:, 0], [u[0, 0], u[-1, 0]], [low, high]) if grid.matrix > 1 else np.full(1, low)
    maps["B1"][:] = b1_profile[:, None, None]

    coeff = object_definition()["b0_offresonance_3T"]
    scale = field_strength / 3.0
    b0 = scale * (coeff["x_hz"] * u + coeff["y_hz"] * v + coeff["r2_hz"] * (u**2 + v**2))
    maps["B0"][:] = b0[:, :, None]
    return Truth(grid, field_strength, b1_range, labels, maps, all_regions)
