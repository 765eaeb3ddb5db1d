"""Fit every qMRI collection of a BIDS dataset and write the maps as a BIDS derivative dataset.

Steps: find collections with pybids (metadata through the inheritance principle), check that
every one is fit-ready and report everything missing at once, fit B1 maps first and the other
models after (so they can use them), write each map with a provenance sidecar. Each collection
is one task for the executor (serial, local processes or Dask). A map is written through a
staging folder and renamed into place, image before sidecar; the sidecar records a fingerprint of
the inputs and options, so a re-run skips maps that are up to date.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from qmrbids import __version__
from qmrbids.fit import MODELS
from qmrbids.fit.base import FitError, Model
from qmrbids.io import atomic_write_text, staging_dir
from qmrbids.parallel import map_unordered
from qmrbids.schema.bids import bids_version, entity_order

CODE_URL = "https://github.com/qmrbids/qmrbids"
PIPELINE = "qmrbids"
#: Entities that tell the images of one collection apart (pybids names); the rest identify it.
VARYING = ("flip", "inv", "echo", "mt", "part")
#: Acquisition fields copied into map sidecars: one value when constant, an array when varying.
ACQUISITION_FIELDS = (
    "MagneticFieldStrength", "Manufacturer", "ManufacturersModelName", "MRAcquisitionType", "ScanningSequence",
    "SequenceVariant", "PulseSequenceType", "EchoTime", "RepetitionTime", "RepetitionTimeExcitation",
    "RepetitionTimePreparation", "InversionTime", "FlipAngle", "MTState", "NumberShots", "SliceThickness",
    "PixelBandwidth",
)


@dataclass
class Collection:
    """The inputs of one model fit: ordered images with their (inherited) metadata."""

    model: str
    subject: str
    session: str | None
    entities: dict  # identifying entities (pybids names), without the varying ones
    label: str  # e.g. "sub-01 VFA"
    images: list[Path]
    metadata: list[dict]
    names: list[str]  # how each image is named in messages ("flip-2")
    image_entities: list[dict] = field(default_factory=list)
    extra_sources: list[Path] = field(default_factory=list)  # sidecars / bval files read
    bvalues: list[float] | None = None

    def key(self) -> tuple:
        return (self.subject, self.session)


@dataclass
class FitTask:
    """Everything a worker needs to fit one collection and write its maps (picklable)."""

    collection: Collection
    dataset: Path
    output: Path
    mask: str
    b1_map: Path | None
    overwrite: bool
    threads: int = 0  # threads of the model's chunk loop; 1 when collections already run in parallel


@dataclass
class CollectionResult:
    label: str
    model: str
    status: str  # fitted | up-to-date | failed
    outputs: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""


@dataclass
class FitReport:
    output: Path
    results: list[CollectionResult]

    @property
    def exit_code(self) -> int:
        return 1 if any(r.status == "failed" for r in self.results) else 0

    def to_dict(self) -> dict:
        return {"output": str(self.output),
                "collections": [{"label": r.label, "model": r.model, "status": r.status, "seconds": round(r.seconds, 3),
                                 "outputs": [str(p) for p in r.outputs], "error": r.error} for r in self.results]}


# ---- finding collections ----

def _groups(layout, suffix: str, filters: dict, *, datatype=None) -> dict[tuple, list]:
    files = layout.get(suffix=suffix, extension=[".nii", ".nii.gz"], **filters,
                       **({"datatype": datatype} if datatype else {}))
    groups: dict[tuple, list] = {}
    for f in files:
        ent = f.get_entities()
        if ent.get("part") == "phase":
            continue
        ident = tuple(sorted((k, str(v)) for k, v in ent.items() if k not in VARYING + ("extension",)))
        groups.setdefault(ident, []).append(f)
    return groups


def _label(ident: dict, suffix: str) -> str:
    parts = [f"sub-{ident['subject']}"] + ([f"ses-{ident['session']}"] if ident.get("session") else [])
    extra = [f"{k}-{v}" for k, v in ident.items() if k in ("acquisition", "run")]
    return " ".join(parts + extra + [suffix])


def _varying_name(entities: dict) -> str:
    """How messages name one image of a collection: its varying entities ("flip-2"), else its suffix."""
    return "_".join(f"{k}-{entities[k]}" for k in ("flip", "inv", "echo", "mt") if k in entities) or \
        str(entities.get("suffix", ""))


def _sort_key(f) -> tuple:
    e = f.get_entities()
    return tuple(int(e[k]) if str(e.get(k, "")).isdigit() else 0 for k in ("flip", "inv", "echo"))


def _collection(model: str, suffix: str, files: list, **extra) -> Collection:
    files = sorted(files, key=_sort_key)
    ident = {k: v for k, v in files[0].get_entities().items()
             if k not in VARYING + ("extension", "suffix", "datatype")}
    return Collection(model=model, subject=str(ident["subject"]), session=ident.get("session"), entities=ident,
                      label=_label(ident, suffix), images=[Path(f.path) for f in files],
                      metadata=[f.get_metadata() for f in files],
                      names=[_varying_name(f.get_entities()) for f in files],
                      image_entities=[f.get_entities() for f in files], **extra)


def find_collections(dataset: Path, models=None, subjects=None, sessions=None) -> list[Collection]:
    """Every collection of the dataset that one of ``models`` (default all) can fit."""
    from bids import BIDSLayout

    layout = BIDSLayout(str(dataset), validate=False, derivatives=False)
    filters = {}
    if subjects:
        filters["subject"] = [s.removeprefix("sub-") for s in subjects]
    if sessions:
        filters["session"] = [s.removeprefix("ses-") for s in sessions]
    wanted = list(MODELS) if not models else list(models)
    out: list[Collection] = []
    for name in wanted:
        suffix = MODELS[name].suffix
        if name in ("tb1dam", "vfa", "irt1", "mese", "megre", "mtsat"):  # one collection, images of one suffix
            for files in _groups(layout, suffix, filters).values():
                out.append(_collection(name, suffix, files))
        elif name == "mtr":
            for files in _groups(layout, "MTR", filters).values():
                out.append(_collection(name, "MTR", files))
            for files in _groups(layout, "MTS", filters).values():  # the MT-off/on pair at one flip angle
                on = [f for f in files if f.get_entities().get("mt") == "on"]
                pair = [f for f in files if on and f.get_entities().get("flip") == on[0].get_entities().get("flip")]
                if len(pair) == 2:
                    out.append(_collection(name, "MTS", pair))
        elif name == "mp2rage":
            for files in _groups(layout, "UNIT1", filters).values():
                c = _collection(name, "UNIT1", files)
                inversions = layout.get(suffix="MP2RAGE", extension=[".nii", ".nii.gz"],
                                        **{k: v for k, v in c.entities.items()})
                inversions = sorted((f for f in inversions if f.get_entities().get("part") != "phase"), key=_sort_key)
                c.metadata = [f.get_metadata() for f in inversions] or c.metadata
                c.names = [_varying_name(f.get_entities()) for f in inversions] or c.names
                c.extra_sources = [Path(f.path) for f in inversions]
                out.append(c)
        elif name == "dwi":
            for files in _groups(layout, "dwi", filters, datatype="dwi").values():
                for f in files:
                    c = _collection(name, "dwi", [f])
                    bval = layout.get_bval(f.path)
                    c.extra_sources = [Path(bval)] if bval else []
                    c.bvalues = [float(b) for b in Path(bval).read_text().split()] if bval else None
                    out.append(c)
    return out


# ---- fit-readiness ----

def readiness_problems(collection: Collection) -> list[str]:
    """What keeps ``collection`` from being fitted, one message per missing item."""
    problems = []
    for name, meta in zip(collection.names, collection.metadata, strict=True):
        for key in MODELS[collection.model].required:
            if key not in meta:
                problems.append(f"{collection.label}: {key} missing in {name}")
    if collection.model == "dwi" and (not collection.bvalues or len(set(collection.bvalues)) < 2):
        problems.append(f"{collection.label}: needs a .bval file with at least two distinct b-values")
    if not problems:
        try:
            build_model(collection)
        except FitError as error:
            problems.append(f"{collection.label}: {error}")
    return problems


def build_model(collection: Collection) -> tuple[Model, list[int]]:
    """The model for ``collection``, built from its sidecars, and the order of its images."""
    cls = MODELS[collection.model]
    meta = collection.metadata
    if len(meta) == len(collection.images):  # one sidecar per image (MP2RAGE reads the inversions')
        order = cls.data_order(meta, collection.image_entities)
        meta = [meta[i] for i in order]
    else:
        order = list(range(len(collection.images)))
    return cls.from_metadata(meta, bvalues=collection.bvalues), order


# ---- masks, B1, fingerprints ----

def make_mask(data: np.ndarray, how: str) -> tuple[np.ndarray | None, str]:
    """(mask, description) for ``--mask auto|none|PATH``.

    auto keeps voxels whose brightest image exceeds 10 % of the 99th percentile of the
    brightest images: it drops air and noise (Rician floor at SNR 50 is ~2.5 %) but keeps tissue
    that is dark in most images (short T2, short T2*), which a threshold on the mean would lose.
    """
    if how == "none":
        return None, "none: every voxel fitted"
    if how == "auto":
        brightest = np.abs(data).max(axis=-1)
        return brightest > 0.1 * np.percentile(brightest, 99), "auto: brightest image > 10 % of its 99th percentile"
    mask = np.asarray(nib.load(how).dataobj) > 0
    if mask.shape != data.shape[:-1]:
        raise FitError(f"{how}: mask shape {mask.shape} does not match the data's {data.shape[:-1]}")
    return mask, f"file: {Path(how).name}"


def b1_on_grid(path: Path, reference: nib.Nifti1Image) -> np.ndarray:
    """The TB1map at ``path`` (percent) as relative B1 on the voxel grid of ``reference``.

    Series of one session often differ in voxel order (dcm2niix keeps each series' own axes),
    so the map is resampled through the two affines, trilinearly; on a grid that only differs
    by axis flips or permutations this is an exact reordering.
    """
    from scipy.ndimage import affine_transform

    img = nib.load(str(path))
    mapping = np.linalg.inv(img.affine) @ reference.affine
    values = np.asarray(img.dataobj, dtype=np.float64)
    out = affine_transform(values, mapping[:3, :3], mapping[:3, 3], output_shape=reference.shape[:3], order=1,
                           mode="nearest")
    return out / 100.0


def _fingerprint(task: FitTask, model: Model) -> str:
    c = task.collection
    paths = sorted({*c.images, *c.extra_sources, *([task.b1_map] if task.b1_map else [])})
    digest = hashlib.sha256()
    for p in paths:
        st = p.stat()
        digest.update(f"{p}:{st.st_size}:{st.st_mtime_ns};".encode())
    digest.update(json.dumps({"model": c.model, "params": model.parameters(), "mask": task.mask,
                              "version": __version__}, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _uri(path: Path, dataset: Path) -> str:
    return f"bids:raw:{path.relative_to(dataset).as_posix()}"


def _stem(collection: Collection, desc: str | None = None) -> str:
    """The identifying entities of ``collection`` (plus desc) in the schema's order."""
    keys = dict(entity_order())
    ent = dict(collection.entities, **({"description": desc} if desc else {}))
    return "_".join(f"{keys[name]}-{ent[name]}" for name, _ in entity_order() if name in ent)


def output_paths(collection: Collection, model: Model, output: Path) -> dict[str, Path]:
    """Where each map of ``collection`` goes, by map name."""
    sub = output / f"sub-{collection.subject}"
    if collection.session:
        sub = sub / f"ses-{collection.session}"
    folder = sub / {"tb1dam": "fmap", "dwi": "dwi"}.get(model.name, "anat")
    names = {k: f"{_stem(collection, model.name)}_{k}.nii.gz" for k in model.outputs}
    if model.goodness:  # R^2 of the fit, named after the map it qualifies
        first = next(iter(model.outputs))
        names[model.goodness] = f"{_stem(collection, model.name + model.goodness)}_{first}.nii.gz"
    return {k: folder / v for k, v in names.items()}


def _acquisition(collection: Collection) -> dict:
    """Constant acquisition fields as BIDS keys; varying ones, in input order, under one object.

    Varying values cannot sit under their own BIDS key when the schema makes that key a scalar
    (InversionTime, MTState), so they all go to ``VaryingAcquisitionParameters``.
    """
    out, varying = {}, {}
    for key in ACQUISITION_FIELDS:
        values = [meta.get(key) for meta in collection.metadata]
        if all(v is None for v in values):
            continue
        if len({json.dumps(v) for v in values}) == 1:
            out[key] = values[0]
        else:
            varying[key] = values
    if varying:
        out["VaryingAcquisitionParameters"] = varying
    return out


def _load(collection: Collection, order: list[int]) -> tuple[np.ndarray, nib.Nifti1Image]:
    """The collection's images stacked on a last axis (float32, in ``order``), filled one volume at
    a time into one array, so loading peaks at the data plus a single volume."""
    images = [nib.load(str(collection.images[i])) for i in order]
    first = images[0]
    counts = [img.shape[3] if len(img.shape) == 4 else 1 for img in images]
    data = np.empty((*first.shape[:3], sum(counts)), dtype=np.float32)
    k = 0
    for index, img, count in zip(order, images, counts, strict=True):
        if img.shape[:3] != first.shape[:3]:
            raise FitError(f"{collection.images[index].name}: shape {img.shape} differs from "
                           f"{collection.images[order[0]].name}'s")
        for t in range(count):
            data[..., k] = img.dataobj[..., t] if len(img.shape) == 4 else img.dataobj
            k += 1
    if collection.model == "mp2rage" and np.nanmax(data) > 1.0:  # integer UNI: 0..4095 is -0.5..0.5
        data = data / np.float32(4095.0) - np.float32(0.5)
    return data, first


def _mask_source(collection: Collection, data: np.ndarray, how: str) -> np.ndarray:
    """The images an automatic mask is drawn from: the data, or for MP2RAGE its INV2 magnitude
    (UNI is near 0 in white matter and noisy in air, so it cannot separate them)."""
    if how != "auto" or collection.model != "mp2rage" or not collection.extra_sources:
        return data
    return np.asarray(nib.load(str(collection.extra_sources[-1])).dataobj, dtype=np.float32)[..., None]


def fit_collection(task: FitTask) -> CollectionResult:
    """Fit one collection and write its maps; failures become a failed result, never an exception."""
    c = task.collection
    start = time.perf_counter()
    try:
        model, order = build_model(c)
        model.threads = task.threads
        targets = output_paths(c, model, task.output)
        fingerprint = _fingerprint(task, model)
        if not task.overwrite and all(_up_to_date(p, fingerprint) for p in targets.values()):
            return CollectionResult(c.label, c.model, "up-to-date", list(targets.values()))
        data, reference = _load(c, order)
        if task.b1_map is not None:
            model.b1 = b1_on_grid(task.b1_map, reference)
        mask, mask_note = make_mask(_mask_source(c, data, task.mask), task.mask)
        fit_start = time.perf_counter()
        fit = model.fit(data, mask)
        fit_seconds = time.perf_counter() - fit_start
        _write(task, model, fit, targets, reference, fingerprint, mask_note, fit_seconds)
        return CollectionResult(c.label, c.model, "fitted", list(targets.values()), time.perf_counter() - start)
    except (FitError, OSError, ValueError, EOFError, zlib.error, ImageFileError) as error:
        return CollectionResult(c.label, c.model, "failed", seconds=time.perf_counter() - start,
                                error=f"{c.label}: {' '.join(str(error).split())}")


def _up_to_date(image: Path, fingerprint: str) -> bool:
    sidecar = image.with_name(image.name.replace(".nii.gz", ".json"))
    try:
        return image.exists() and json.loads(sidecar.read_text()).get("QmrbidsFingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def _write(task, model, fit, targets, reference, fingerprint, mask_note, seconds) -> None:
    c = task.collection
    sources = [_uri(p, task.dataset) for p in [*c.images, *c.extra_sources]]
    if task.b1_map is not None:
        sources.append(f"bids::{task.b1_map.relative_to(task.output).as_posix()}")
    common = {
        "Sources": sources,
        "EstimationReference": model.reference,
        "EstimationAlgorithm": model.algorithm,
        "ModelParameters": model.parameters(),
        **_acquisition(c),
        "SkullStripped": False,
        "MaskMethod": mask_note,
        "B1Correction": "TB1map" if task.b1_map is not None else ("none" if model.uses_b1 else "not applicable"),
        "FitDurationSeconds": round(seconds, 4),
        "QmrbidsVersion": __version__,
        "QmrbidsFingerprint": fingerprint,
    }
    units = {**model.outputs, **({model.goodness: "arbitrary"} if model.goodness else {})}
    header = reference.header.copy()
    header.set_data_dtype(np.float32)
    header.set_xyzt_units("mm", "sec")
    folder = next(iter(targets.values())).parent
    folder.mkdir(parents=True, exist_ok=True)
    with staging_dir(folder, "fit") as stage:
        for name, target in targets.items():
            img = nib.Nifti1Image(fit.maps[name], reference.affine, header)
            img.header.set_slope_inter(1.0, 0.0)
            staged = stage / target.name
            nib.save(img, str(staged))
            os.replace(staged, target)
            description = (f"Coefficient of determination R^2 of the {model.name} fit" if name == model.goodness
                           else f"{name} estimated by the qmrbids {model.name} model")
            sidecar = {"Description": description, "Units": units[name], **common}
            atomic_write_text(target.with_name(target.name.replace(".nii.gz", ".json")),
                              json.dumps(sidecar, indent=2) + "\n")


def write_dataset_description(output: Path, dataset: Path) -> None:
    raw = os.path.relpath(dataset, output)
    description = {
        "Name": "qmrbids quantitative maps",
        "BIDSVersion": bids_version(),
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": PIPELINE, "Version": __version__, "CodeURL": CODE_URL}],
        "SourceDatasets": [{"URL": f"file:{raw}" if not raw.startswith(("/", ".")) else raw}],
        "DatasetLinks": {"raw": raw},
    }
    atomic_write_text(output / "dataset_description.json", json.dumps(description, indent=2) + "\n")
    readme = output / "README.md"
    if not readme.exists():
        atomic_write_text(readme, "Quantitative MRI maps fitted by qmrbids (`qmrbids fit`); each map's sidecar "
                                  "lists its sources, model and acquisition parameters.\n")


# ---- the whole run ----

def run_fit(dataset: Path, *, models=None, subjects=None, sessions=None, jobs: int = 1, scheduler: str | None = None,
            mask: str = "auto", b1: str = "auto", output_dir: Path | None = None, overwrite: bool = False,
            on_result=None) -> FitReport:
    """Fit every collection of ``dataset``; FitError (nothing written) when a collection is not fit-ready."""
    dataset = Path(dataset).resolve()
    if not (dataset / "dataset_description.json").is_file():
        raise FitError(f"{dataset}: not a BIDS dataset (no dataset_description.json)")
    unknown = sorted(set(models or ()) - set(MODELS))
    if unknown:
        raise FitError(f"unknown model {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    if mask not in ("auto", "none") and not Path(mask).is_file():
        raise FitError(f"--mask {mask}: no such file")
    output = Path(output_dir).resolve() if output_dir else dataset / "derivatives" / PIPELINE
    wanted = list(models or MODELS)
    if b1 == "auto" and "tb1dam" not in wanted and any(m in wanted for m in ("vfa", "mp2rage", "mtsat")):
        wanted.insert(0, "tb1dam")  # the B1 maps these models use come from the same run
    collections = find_collections(dataset, wanted, subjects, sessions)
    if not collections:
        raise FitError(f"{dataset}: no collection to fit for model(s) {', '.join(wanted)}")
    problems = [p for c in collections for p in readiness_problems(c)]
    if problems:
        raise FitError("not fit-ready:\n" + "\n".join(problems))
    output.mkdir(parents=True, exist_ok=True)
    write_dataset_description(output, dataset)

    def tasks(phase: list[Collection], b1_maps: dict) -> list[FitTask]:
        threads = 1 if jobs > 1 or scheduler else 0
        return [FitTask(c, dataset, output, mask, b1_maps.get(c.key()) if b1 == "auto" and MODELS[c.model].uses_b1
                        else None, overwrite, threads) for c in phase]

    results: list[CollectionResult] = []

    def run(phase_tasks):
        for result in map_unordered(fit_collection, phase_tasks, jobs, processes=True, scheduler=scheduler):
            results.append(result)
            if on_result:
                on_result(result)

    run(tasks([c for c in collections if c.model == "tb1dam"], {}))
    b1_maps = {}
    for result in results:
        if result.model == "tb1dam" and result.outputs:
            owner = next(c for c in collections if c.label == result.label)
            b1_maps.setdefault(owner.key(), result.outputs[0])
    run(tasks([c for c in collections if c.model != "tb1dam"], b1_maps))
    order = {c.label + c.model: i for i, c in enumerate(collections)}
    results.sort(key=lambda r: order.get(r.label + r.model, 0))
    return FitReport(output, results)
