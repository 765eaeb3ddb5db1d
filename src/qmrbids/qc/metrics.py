"""Image-quality metrics as flat records (name, value, unit, entity labels) with pass/warn/fail.

Raw magnitude images (the first volume of 4D series), with one foreground mask per session and
image grid (see :func:`foreground_mask`; far less noisy than any one image's):

- ``noise_sigma``: σ of the complex Gaussian noise, from the background (voxels more than two
  voxels in-plane from the foreground), where magnitudes are Rayleigh distributed with median
  σ sqrt(2 ln 2); the median shrugs off object voxels a mask misses (a sphere dark in most images).
  Assumes single-channel (or SoS-equivalent) noise.
- ``snr``: Rician-corrected foreground SNR, sqrt(mean(M²_fg) − 2σ²) / σ. For Rician magnitudes
  E[M²] = A² + 2σ² exactly, so this is the RMS true signal over σ at any SNR. Infinite (null in
  JSON) when the background is exactly zero.
- ``ghosting_ratio``: ACR phantom-test definition, |(top + bottom) − (left + right)| / (2 S_fg),
  with background strips beside the object's bounding box along both in-plane axes.
- ``piu``: ACR percent integral uniformity, 100 (1 − (max − min)/(max + min)) of the foreground
  averaged over ~1 cm² neighbourhoods (meaningful for uniform objects; informative otherwise).
- ``efc``: entropy focus criterion (Atkinson et al. 1997, as MRIQC computes it); rises with
  ghosting and blurring from motion.
- ``fber``: foreground-background energy ratio, median(M²_fg) / median(M²_bg) (as MRIQC).

Quantitative maps: ``out_of_range_fraction`` (finite non-zero voxels outside the physically
possible range of ``validators/qc/metrics.yaml``), ``median``; residual / R² maps next to a
map add ``residual_median`` / ``residual_p95`` (or ``r2_median``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml
from scipy import ndimage

from qmrbids.qc.inventory import Image, Inventory, MapImage
from qmrbids.qc.protocol import NOT_APPLICABLE, SiteProtocol, classify, describe_threshold
from qmrbids.resources import data_path

GUARD_VOXELS = 2
RAYLEIGH_MEDIAN = math.sqrt(2 * math.log(2))  # median of a Rayleigh distribution, in units of σ
RAW_UNITS = {"noise_sigma": "a.u.", "snr": "1", "ghosting_ratio": "1", "piu": "%", "efc": "1", "fber": "1"}


@cache
def metric_tables() -> dict:
    """validators/qc/metrics.yaml: map ranges, default thresholds, non-magnitude suffixes, MRIQC names."""
    return yaml.safe_load(data_path("validators", "qc", "metrics.yaml").read_text())


def map_kinds() -> dict[str, list[str]]:
    return {kind: spec["names"] for kind, spec in metric_tables()["maps"].items()}


@dataclass
class Record:
    """One metric of one image. ``source``: qmrbids (computed) or mriqc (read from its JSON)."""

    site: str
    subject: str
    session: str
    series: str
    path: str
    entities: dict
    name: str
    value: float | None
    unit: str
    status: str = NOT_APPLICABLE
    threshold: str = ""
    source: str = "qmrbids"
    kind: str = "raw"  # raw | map
    map_kind: str = ""

    def to_dict(self) -> dict:
        record = asdict(self)
        if record["value"] is not None and not math.isfinite(record["value"]):
            record["value"] = None  # JSON has no infinity; `value_text` keeps it
        record["value_text"] = format_value(self.value)
        return record


def format_value(value: float | None) -> str:
    if value is None:
        return NOT_APPLICABLE
    if math.isinf(value):
        return "inf"
    return f"{value:.4g}"


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of ``values`` (256-bin histogram)."""
    hist, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist)
    mean = np.cumsum(hist * centres)
    total, total_mean = weight[-1], mean[-1]
    w0, w1 = weight[:-1], total - weight[:-1]
    valid = (w0 > 0) & (w1 > 0)
    between = np.zeros_like(w0, dtype=float)
    m0 = mean[:-1][valid] / w0[valid]
    m1 = (total_mean - mean[:-1][valid]) / w1[valid]
    between[valid] = w0[valid] * w1[valid] * (m0 - m1) ** 2
    return float(edges[1:][np.argmax(between)])


def foreground_mask(volumes: list[np.ndarray]) -> np.ndarray:
    """Foreground of images on one grid: Otsu on the mean of the smoothed images, each scaled to its
    99th percentile (averaging many images makes the mask far less noisy than any one image's)."""
    stack = np.zeros(volumes[0].shape, dtype=float)
    for volume in volumes:
        smooth = ndimage.uniform_filter(volume, size=(3, 3, 1))
        scale = np.percentile(smooth, 99)
        stack += smooth / scale if scale > 0 else smooth
    if np.ptp(stack) == 0:
        return np.zeros(stack.shape, dtype=bool)
    return stack > otsu_threshold(stack.ravel())


def _in_plane(size: int) -> np.ndarray:
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[:, :, 1] = ndimage.generate_binary_structure(2, 1 if size == 1 else 2)
    return structure


def background_mask(mask: np.ndarray) -> np.ndarray:
    return ~ndimage.binary_dilation(mask, structure=_in_plane(2), iterations=GUARD_VOXELS)


def _ghosting(data: np.ndarray, mask: np.ndarray, background: np.ndarray, signal: float) -> float | None:
    """ACR ghosting ratio; the object's extent is the session mask joined with this image's own
    Otsu foreground (parts of the object that only this image shows must not count as ghosts)."""
    smooth = ndimage.uniform_filter(data, size=(3, 3, 1))
    own = smooth > otsu_threshold(smooth.ravel()) if np.ptp(smooth) > 0 else np.zeros_like(mask)
    extent = ndimage.binary_dilation(mask | own, structure=_in_plane(2), iterations=GUARD_VOXELS)
    background = background & ~extent
    xs, ys = np.nonzero(extent.any(axis=2))
    if not len(xs) or signal <= 0:
        return None
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    strips = {"left": (slice(0, x0), slice(y0, y1)), "right": (slice(x1, None), slice(y0, y1)),
              "top": (slice(x0, x1), slice(0, y0)), "bottom": (slice(x0, x1), slice(y1, None))}
    means = {}
    for name, (sx, sy) in strips.items():
        region = data[sx, sy][background[sx, sy]]
        if region.size == 0:
            return None
        means[name] = float(region.mean())
    return abs((means["top"] + means["bottom"]) - (means["left"] + means["right"])) / (2 * signal)


def _piu(data: np.ndarray, mask: np.ndarray, voxel_mm: tuple[float, float]) -> float | None:
    if mask.sum() == 0:
        return None
    size = tuple(max(1, round(10.0 / v)) for v in voxel_mm) + (1,)
    weights = ndimage.uniform_filter(mask.astype(float), size=size)
    smooth = ndimage.uniform_filter(np.where(mask, data, 0.0), size=size)
    local = smooth[mask] / weights[mask]
    high, low = float(local.max()), float(local.min())
    return 100.0 * (1 - (high - low) / (high + low)) if high + low > 0 else None


def _efc(data: np.ndarray) -> float | None:
    n = data.size
    energy = math.sqrt(float(np.sum(data.astype(float) ** 2)))
    if energy == 0:
        return None
    efc_max = n * (1.0 / math.sqrt(n)) * math.log(1.0 / math.sqrt(n))
    x = np.abs(data[data != 0]) / energy
    return float(np.sum(x * np.log(x)) / efc_max)


def raw_image_metrics(data: np.ndarray, mask: np.ndarray, voxel_mm: tuple[float, float]) -> dict[str, float | None]:
    """The raw-image metrics of one 3D magnitude volume with its foreground ``mask``."""
    data = np.abs(np.asarray(data, dtype=float))
    background = background_mask(mask)
    fg, bg = data[mask], data[background]
    if fg.size == 0 or bg.size == 0:
        return {name: None for name in RAW_UNITS}
    sigma = float(np.median(bg)) / RAYLEIGH_MEDIAN
    power = float(np.mean(fg ** 2))
    snr = math.inf if sigma == 0 else math.sqrt(max(power - 2 * sigma ** 2, 0.0)) / sigma
    bg_energy = float(np.median(bg ** 2))
    return {"noise_sigma": sigma, "snr": snr, "ghosting_ratio": _ghosting(data, mask, background, float(fg.mean())),
            "piu": _piu(data, mask, voxel_mm), "efc": _efc(data),
            "fber": math.inf if bg_energy == 0 else float(np.median(fg ** 2)) / bg_energy}


def is_magnitude(image: Image) -> bool:
    return image.suffix not in metric_tables()["not_magnitude"] and image.entities.get("part") not in (
        "phase", "real", "imag")


def _first_volume(path: Path) -> tuple[np.ndarray, tuple[float, float], tuple]:
    """First 3D volume in RAS voxel order (so series stored with flipped axes share one mask),
    its in-plane voxel size, and a key of its grid."""
    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asanyarray(img.dataobj)
    while data.ndim > 3:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    zooms = img.header.get_zooms()
    return np.asarray(data, dtype=float), (float(zooms[0]), float(zooms[1])), (data.shape, tuple(np.round(img.affine, 2).ravel()))


def _mriqc_values(root: Path, image: Image) -> dict:
    name = image.path.name.removesuffix(".gz").removesuffix(".nii") + ".json"
    path = root / "derivatives" / "mriqc" / Path(image.relpath).parent / name
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {ours: float(data[theirs]) for ours, theirs in metric_tables()["mriqc"].items()
            if isinstance(data.get(theirs), (int, float))}


@dataclass
class SessionWork:
    """What one worker needs to measure one session (picklable for process pools)."""

    root: Path
    subject: str
    session: str
    site: str
    images: list[Image]
    maps: list[MapImage]
    residuals: dict[str, list[Path]] = field(default_factory=dict)


def session_metrics(work: SessionWork) -> tuple[list[Record], list[str]]:
    """Every metric of one session's raw images and maps; problems (unreadable files) as one-liners."""
    records: list[Record] = []
    problems: list[str] = []
    loaded: dict[str, tuple] = {}
    grids: dict[tuple, list[str]] = {}
    mriqc: dict[str, dict] = {}
    for image in work.images:
        if not is_magnitude(image):
            continue
        try:
            mriqc[image.relpath] = _mriqc_values(work.root, image)
            loaded[image.relpath] = _first_volume(image.path)
        except (OSError, ValueError, nib.filebasedimages.ImageFileError) as error:
            problems.append(f"{image.relpath}: cannot read the image ({error})")
            continue
        grids.setdefault(loaded[image.relpath][2], []).append(image.relpath)
    masks = {grid: foreground_mask([loaded[p][0] for p in paths]) for grid, paths in grids.items()}
    for image in work.images:
        if image.relpath not in loaded:
            continue
        data, voxel, grid = loaded[image.relpath]
        values = raw_image_metrics(data, masks[grid], voxel)
        external = mriqc[image.relpath]
        for name, unit in RAW_UNITS.items():
            source = "mriqc" if name in external else "qmrbids"
            records.append(Record(work.site, image.subject, image.session, image.series, image.relpath,
                                  image.entities, name, external.get(name, values[name]), unit, source=source))
    for m in work.maps:
        try:
            records.extend(map_metrics(work.site, m, work.residuals.get(str(m.path), [])))
        except (OSError, ValueError, nib.filebasedimages.ImageFileError) as error:
            problems.append(f"{m.relpath}: cannot read the map ({error})")
    return records, problems


def map_metrics(site: str, m: MapImage, residuals: list[Path]) -> list[Record]:
    spec = metric_tables()["maps"][m.kind]
    unit = m.units if m.units in spec["ranges"] else next(iter(spec["ranges"]))
    low, high = spec["ranges"][unit]
    data = np.asarray(nib.load(str(m.path)).dataobj, dtype=float)
    values = data[np.isfinite(data) & (data != 0)]
    outside = float(np.mean((values < low) | (values > high))) if values.size else None
    base = dict(site=site, subject=m.subject, session=m.session, series=m.series, path=m.relpath,
                entities=m.entities, kind="map", map_kind=m.kind)
    records = [Record(**base, name="out_of_range_fraction", value=outside, unit="1"),
               Record(**base, name="median", value=float(np.median(values)) if values.size else None,
                      unit=m.units or unit)]
    for path in residuals:
        residual = np.asarray(nib.load(str(path)).dataobj, dtype=float)
        inside = residual[np.isfinite(residual) & (data != 0) & np.isfinite(data)] if residual.shape == data.shape \
            else residual[np.isfinite(residual) & (residual != 0)]
        if not inside.size:
            continue
        if "r2" in path.name.lower() or "rsquared" in path.name.lower():
            records.append(Record(**base, name="r2_median", value=float(np.median(inside)), unit="1"))
        else:
            records.append(Record(**base, name="residual_median", value=float(np.median(np.abs(inside))),
                                  unit="a.u."))
            records.append(Record(**base, name="residual_p95", value=float(np.percentile(np.abs(inside), 95)),
                                  unit="a.u."))
    return records


def apply_thresholds(records: list[Record], protocols: dict[str, SiteProtocol | None]) -> None:
    """Set status and threshold of every record: the protocol's thresholds, else the shipped map defaults."""
    defaults = metric_tables()["thresholds"]
    for record in records:
        protocol = protocols.get(record.site)
        if record.kind == "map":
            threshold = (protocol.map_threshold(record.map_kind, record.name) if protocol else None) \
                or defaults.get(record.name)
        else:
            threshold = protocol.threshold(record.series, record.name) if protocol else None
        record.status = classify(record.value, threshold)
        record.threshold = describe_threshold(threshold)


def sessions_work(inventory: Inventory) -> list[SessionWork]:
    work: dict[tuple[str, str], SessionWork] = {}
    for key in inventory.sessions():
        work[key] = SessionWork(inventory.root, *key, inventory.sites[key], [], [])
    for image in inventory.images:
        work[(image.subject, image.session)].images.append(image)
    for m in inventory.maps:
        work[(m.subject, m.session)].maps.append(m)
        if str(m.path) in inventory.residuals:
            work[(m.subject, m.session)].residuals[str(m.path)] = inventory.residuals[str(m.path)]
    return list(work.values())
