"""Write simulated series as vendor-style classic MR DICOM, one file per slice.

Vendor names and encodings come from ``vendors.yaml``; the private tags a vendor uses for image
parts, diffusion and protocol parameters are written here. Stored values relate to the physical
values of :mod:`qmrbids.phantom.acquisition` through the per-series ``encoding`` this module
returns (it goes into ``truth/phantom.json``): after Rescale Slope/Intercept, a magnitude pixel
equals ``value_scale * signal``, a phase pixel equals ``phase_scale * radians``, and a UNI pixel
equals ``uni_scale * (UNI + 0.5)``.
"""

from __future__ import annotations

import io
import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

import numpy as np
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from qmrbids import __version__
from qmrbids.phantom.acquisition import Series, Volume, protocol_definitions
from qmrbids.phantom.csa import ascconv, encode_csa2
from qmrbids.phantom.object import Grid
from qmrbids.resources import package_file

VENDORS = ("siemens", "ge", "philips")
MAGNITUDE_TOP = 30000  # stored value of the brightest magnitude voxel of a protocol (or series)
STUDY_DATETIME = datetime(2026, 1, 5, 9, 0, 0)
LARMOR_MHZ_PER_T = 42.577478


@cache
def vendor_definitions() -> dict:
    return yaml.safe_load(package_file("phantom", "vendors.yaml").read_text())


def _ds_number(value: float) -> str:
    """A DICOM DS string (at most 16 characters) that round-trips to the value it stands for."""
    for digits in range(12, 4, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(value)


@dataclass(frozen=True)
class Study:
    """What every file of one phantom session shares."""

    vendor: str
    field_strength: float
    patient_id: str
    grid: Grid
    uid_key: str  # every UID is derived from this and the file's place in the study

    def uid(self, *parts: object) -> str:
        return name_uid(self.uid_key, *parts)


def name_uid(*parts: object) -> str:
    """A DICOM UID in the 2.25 (UUID) arc from a name-based UUID: the same parts give the same UID."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, '/'.join(map(str, parts))).int}"


@dataclass
class SeriesPlan:
    """One exported series: its number, names, volumes and how its pixels are encoded."""

    series: Series
    number: int
    start: float  # seconds after the study start
    description: str
    protocol_name: str
    volumes: list[Volume]
    encoding: dict


def series_schedule(vendor: str, grid: Grid) -> dict[tuple[str, str, str], tuple[int, float]]:
    """Series number and start time (s after the study start) of every series of the full protocol list.

    Keys are (protocol, label, part group). Neither depends on which protocols are written, so a
    protocol's files are identical whether it is written alone or with the others.
    """
    spec = vendor_definitions()[vendor]
    kinds = vendor_definitions()["kinds"]
    number, clock = spec["series_number"]["first"], 0.0
    out = {}
    for protocol, definition in protocol_definitions().items():
        acq = definition["acquisition"]
        for entry in definition["series"]:
            groups = ["all"]
            if "phase" in entry.get("parts", []) and spec["phase"] == "separate_series":
                groups = ["magnitude", "phase"]  # reconstructed from one acquisition: same start
            for group in groups:
                out[(protocol, entry["label"], group)] = (number, clock)
                number += spec["series_number"]["step"]
            if definition["kind"] == "mp2rage":
                duration = acq["RepetitionTimePreparation"] / 1000 * grid.matrix
            elif kinds[definition["kind"]]["MRAcquisitionType"] == "3D":
                duration = acq["RepetitionTime"] / 1000 * grid.matrix * grid.slices
            else:
                duration = acq["RepetitionTime"] / 1000 * grid.matrix * len(entry.get("bvalues", [0]))
            if definition["kind"] != "mp2rage" or entry is definition["series"][-1]:
                clock += math.ceil(duration / 30.0) * 30.0 + 30.0
    return out


def _names(vendor: str, series: Series) -> tuple[str, str]:
    spec = vendor_definitions()[vendor]
    fields = {"protocol": series.protocol, "label": series.label}
    description = getattr(spec["description"].format(**fields), spec["case"])()
    protocol_name = getattr(spec["protocol_name"].format(**fields), spec["case"])()
    clean = re.compile(r"[^A-Za-z0-9_ ]")
    return clean.sub("_", description), clean.sub("_", protocol_name)


def plan_series(vendor: str, grid: Grid, protocol_series: list[Series]) -> list[SeriesPlan]:
    """Split a protocol's series into exported series and fix how each one is encoded."""
    schedule = series_schedule(vendor, grid)
    spec = vendor_definitions()[vendor]
    magnitudes = [v.values for s in protocol_series for v in s.volumes if v.part == "magnitude"]
    top = max((float(np.max(a)) for a in magnitudes), default=0.0)
    plans = []
    for series in protocol_series:
        description, protocol_name = _names(vendor, series)
        groups: list[tuple[str, list[Volume]]]
        if spec["phase"] == "separate_series" and "phase" in series.parts:
            groups = [(part, [v for v in series.volumes if v.part == part]) for part in ("magnitude", "phase")]
        else:
            groups = [("all", series.volumes)]
        for group, volumes in groups:
            series_top = max((float(np.max(v.values)) for v in volumes if v.part == "magnitude"), default=0.0)
            encoding = _encoding(vendor, top, series_top)
            number, start = schedule[(series.protocol, series.label, group)]
            plans.append(SeriesPlan(series, number, start, description, protocol_name, volumes, encoding))
    return plans


def _encoding(vendor: str, protocol_top: float, series_top: float) -> dict:
    """Stored-value encoding of each image part for one series."""
    if vendor == "philips":
        value_scale = 1000.0  # display value per unit signal; RescaleSlope absorbs the range
        slope = float(_ds_number(value_scale * series_top / MAGNITUDE_TOP)) if series_top > 0 else 1.0
        return {
            "magnitude": {"value_scale": value_scale, "rescale_slope": slope, "rescale_intercept": 0.0},
            "phase": {"phase_scale": 1.0, "rescale_slope": float(_ds_number(2 * math.pi / 4095)),
                      "rescale_intercept": float(_ds_number(-math.pi))},
            "uni": {"uni_scale": 1.0, "offset": -0.5, "rescale_slope": float(_ds_number(1 / 4095)),
                    "rescale_intercept": -0.5},
        }
    value_scale = MAGNITUDE_TOP / protocol_top if protocol_top > 0 else 1.0
    phase = ({"phase_scale": 4096 / math.pi, "rescale_slope": 2.0, "rescale_intercept": -4096.0}
             if vendor == "siemens" else {"phase_scale": 1000.0, "rescale_slope": 1.0, "rescale_intercept": 0.0})
    return {
        "magnitude": {"value_scale": value_scale, "rescale_slope": 1.0, "rescale_intercept": 0.0},
        "phase": phase,
        "uni": {"uni_scale": 4095.0, "offset": 0.0, "rescale_slope": 1.0, "rescale_intercept": 0.0},
    }


def encode_volume(vendor: str, volume: Volume, encoding: dict) -> np.ndarray:
    """Stored integer pixels of a volume (before Rescale Slope/Intercept)."""
    enc = encoding[volume.part]
    slope, intercept = enc["rescale_slope"], enc["rescale_intercept"]
    if volume.part == "magnitude":
        stored = volume.values * enc["value_scale"] / slope
    elif volume.part == "phase":
        if vendor == "siemens":  # 0..4095 over [-pi, pi): value = 2 * stored - 4096
            stored = np.mod(np.rint((volume.values + math.pi) * 2048 / math.pi), 4096)
        else:
            stored = (volume.values * enc["phase_scale"] - intercept) / slope
    else:  # uni
        stored = ((volume.values + 0.5) * enc["uni_scale"] + enc["offset"] - intercept) / slope
    low, high = (-32768, 32767) if vendor_definitions()[vendor]["pixel"]["signed"] else (0, 65535)
    if volume.part in ("phase", "uni") and vendor != "ge":
        low, high = 0, 4095
    return np.clip(np.rint(stored), low, high).astype(np.int16 if low < 0 else np.uint16)


def _multi(values) -> list[str] | str:
    return list(values) if isinstance(values, list) else values


class SeriesWriter:
    """Writes the files of the series of one study, in order, and remembers where they went."""

    def __init__(self, study: Study, root: Path):
        self.study = study
        self.root = root
        self.spec = vendor_definitions()[study.vendor]
        self.kinds = vendor_definitions()["kinds"]
        self._cached_header: tuple[int, bytes] = (-1, b"")

    # -- per-series attributes ------------------------------------------------------------
    def _series_attributes(self, plan: SeriesPlan, series_time: datetime) -> dict:
        study, spec, series = self.study, self.spec, plan.series
        acq = series.acquisition
        kind = self.kinds[series.kind]
        variant = list(kind["SequenceVariant"])
        if any(v.mt for v in plan.volumes):
            variant.append("MTC")
        if series.kind == "mp2rage" and study.vendor == "siemens":
            tr = acq["RepetitionTimePreparation"]
        elif series.kind == "mp2rage":
            tr = acq["RepetitionTimeExcitation"]
        else:
            tr = acq["RepetitionTime"]
        echoes = max(v.echo_number for v in plan.volumes)
        g = study.grid
        date = STUDY_DATETIME.strftime("%Y%m%d")
        return {
            "SpecificCharacterSet": "ISO_IR 100",
            "SOPClassUID": MRImageStorage,
            "StudyDate": date, "SeriesDate": date, "AcquisitionDate": date, "ContentDate": date,
            "StudyTime": STUDY_DATETIME.strftime("%H%M%S.%f"),
            "SeriesTime": series_time.strftime("%H%M%S.%f"),
            "AccessionNumber": "",
            "Modality": "MR",
            "Manufacturer": spec["Manufacturer"],
            "InstitutionName": spec["InstitutionName"],
            "ReferringPhysicianName": "",
            "StationName": spec["StationName"],
            "StudyDescription": "QMRBIDS^PHANTOM",
            "SeriesDescription": plan.description,
            "ManufacturerModelName": spec["ManufacturerModelName"][study.field_strength],
            "PatientName": f"{study.patient_id}^DIGITAL",
            "PatientID": study.patient_id,
            "PatientBirthDate": "",
            "PatientSex": "O",
            "BodyPartExamined": "HEAD",
            "ScanningSequence": _multi(kind["ScanningSequence"]),
            "SequenceVariant": variant,
            "ScanOptions": kind["ScanOptions"],
            "MRAcquisitionType": kind["MRAcquisitionType"],
            "AngioFlag": "N",
            "SliceThickness": _ds_number(g.slice_thickness_mm),
            "RepetitionTime": _ds_number(tr),
            "NumberOfAverages": "1",
            "ImagingFrequency": _ds_number(LARMOR_MHZ_PER_T * study.field_strength),
            "ImagedNucleus": "1H",
            "MagneticFieldStrength": _ds_number(study.field_strength),
            "SpacingBetweenSlices": _ds_number(g.slice_thickness_mm),
            "EchoTrainLength": str(acq["NumberShots"] if series.kind == "mp2rage" and study.vendor != "siemens" else echoes),
            "PercentSampling": "100",
            "PercentPhaseFieldOfView": "100",
            "PixelBandwidth": "250",
            "DeviceSerialNumber": spec["DeviceSerialNumber"],
            "SoftwareVersions": _multi(spec["SoftwareVersions"].split("\\")),
            "ProtocolName": plan.protocol_name,
            "AcquisitionMatrix": [0, g.matrix, g.matrix, 0],
            "InPlanePhaseEncodingDirection": "COL",
            "VariableFlipAngleFlag": "N",
            "PatientPosition": "HFS",
            "StudyInstanceUID": study.uid("study"),
            "SeriesInstanceUID": study.uid("series", plan.number),
            "StudyID": "1",
            "SeriesNumber": str(plan.number),
            "AcquisitionNumber": "1",
            "ImageOrientationPatient": ["1", "0", "0", "0", "1", "0"],
            "FrameOfReferenceUID": study.uid("frame-of-reference"),
            "PositionReferenceIndicator": "",
            "SamplesPerPixel": 1,
            "PhotometricInterpretation": "MONOCHROME2",
            "Rows": g.matrix,
            "Columns": g.matrix,
            "PixelSpacing": [_ds_number(g.pixel_spacing_mm)] * 2,
            "BitsAllocated": 16,
        }

    # -- files --------------------------------------------------------------------------------
    def write(self, plan: SeriesPlan) -> list[list[str]]:
        """Write one series; returns, per volume, the relative paths of its slice files."""
        study, spec, g = self.study, self.spec, self.study.grid
        series_time = STUDY_DATETIME + timedelta(seconds=plan.start)
        common = self._series_attributes(plan, series_time)
        two_d = self.kinds[plan.series.kind]["MRAcquisitionType"] == "2D"
        tr_s = plan.series.acquisition.get("RepetitionTime", 0.0) / 1000
        half = (g.matrix - 1) / 2 * g.pixel_spacing_mm
        z0 = -(g.slices - 1) / 2 * g.slice_thickness_mm
        diffusion_index = {}
        paths: list[list[str]] = []
        instance = 0
        for volume in plan.volumes:
            stored = encode_volume(study.vendor, volume, plan.encoding)
            key = (volume.bvalue, volume.direction)
            repetition = diffusion_index.setdefault(key, len(diffusion_index))
            volume_paths = []
            for k in range(g.slices):
                instance += 1
                offset = repetition * tr_s + (k * tr_s / g.slices if two_d else 0.0)
                when = series_time + timedelta(seconds=offset)
                ds = Dataset()
                for keyword, value in common.items():
                    setattr(ds, keyword, value)
                self._image_attributes(ds, plan, volume, k, instance, when, (-half, -half, z0 + k * g.slice_thickness_mm))
                pixels = np.ascontiguousarray(stored[:, :, k].T)
                ds.PixelData = pixels.tobytes()
                fields = {"series_number": plan.number, "description": plan.description.replace(" ", "_"),
                          "instance": instance}
                rel = spec["path"].format(**fields)
                self._save(ds, self.root / rel)
                volume_paths.append(rel)
            paths.append(volume_paths)
        return paths

    def _image_attributes(self, ds, plan, volume: Volume, k, instance, when, position) -> None:
        study = self.study
        ds.ImageType = self._image_type(plan, volume)
        ds.SOPInstanceUID = study.uid("instance", plan.number, instance)
        ds.AcquisitionTime = when.strftime("%H%M%S.%f")
        ds.ContentTime = ds.AcquisitionTime
        ds.SequenceName = self._sequence_name(plan, volume)
        ds.EchoTime = _ds_number(volume.echo_time)
        ds.EchoNumbers = str(volume.echo_number)
        if volume.inversion_time is not None:
            ds.InversionTime = _ds_number(volume.inversion_time)
        ds.FlipAngle = _ds_number(volume.flip_angle)
        ds.InstanceNumber = str(instance)
        ds.ImagePositionPatient = [_ds_number(position[0]), _ds_number(position[1]), _ds_number(position[2])]
        ds.SliceLocation = _ds_number(position[2])
        signed = study.vendor == "ge"
        ds.BitsStored = 12 if volume.part in ("phase", "uni") and study.vendor == "siemens" else 16
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 1 if signed else 0
        enc = plan.encoding[volume.part]
        if study.vendor == "philips" or volume.part == "phase" and study.vendor == "siemens":
            ds.RescaleIntercept = _ds_number(enc["rescale_intercept"])
            ds.RescaleSlope = _ds_number(enc["rescale_slope"])
            ds.RescaleType = "normalized" if study.vendor == "philips" else "US"
        getattr(self, f"_private_{study.vendor}")(ds, plan, volume, k)

    def _image_type(self, plan: SeriesPlan, volume: Volume) -> list[str]:
        if volume.part == "magnitude" and volume.bvalue is not None:
            template = self.spec["image_type"]["diffusion"]
        else:
            template = self.spec["image_type"][volume.part]
        tech = self.spec.get("technique", {}).get(plan.series.kind, "")
        return [t.format(tech=tech) for t in template]

    def _sequence_name(self, plan: SeriesPlan, volume: Volume) -> str:
        name = self.spec["sequence_name"][plan.series.kind]
        return name.format(bvalue=int(volume.bvalue or 0)) if "{" in name else name

    # -- vendor private tags --------------------------------------------------------------------
    def _private_siemens(self, ds, plan: SeriesPlan, volume: Volume, k: int) -> None:
        image = [("PhaseEncodingDirectionPositive", "IS", [1]), ("EchoLinePosition", "IS", [self.study.grid.matrix // 2])]
        if volume.bvalue is not None:
            mr = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
            mr.add_new(0x0C, "IS", str(int(volume.bvalue)))
            mr.add_new(0x0D, "CS", "DIRECTIONAL" if volume.bvalue > 0 else "NONE")
            image.append(("B_value", "IS", [int(volume.bvalue)]))
            if volume.bvalue > 0:
                mr.add_new(0x0E, "FD", list(volume.direction))
                image.append(("DiffusionGradientDirection", "FD", list(volume.direction)))
        csa = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
        csa.add_new(0x08, "CS", "IMAGE NUM 4")
        csa.add_new(0x09, "LO", "20100114")
        csa.add_new(0x10, "OB", encode_csa2(image))
        csa.add_new(0x18, "CS", "MR")
        csa.add_new(0x19, "LO", "20100114")
        csa.add_new(0x20, "OB", self._series_header(plan))

    def _series_header(self, plan: SeriesPlan) -> bytes:
        """The Siemens CSA series header of a series (the same bytes for all its files)."""
        if self._cached_header[0] != plan.number:
            self._cached_header = (plan.number, self._siemens_series_header(plan))
        return self._cached_header[1]

    def _siemens_series_header(self, plan: SeriesPlan) -> bytes:
        series, g = plan.series, self.study.grid
        acq = series.acquisition
        entries: dict[str, object] = {
            "ulVersion": 51130001,
            "tSequenceFileName": self.spec["sequence_file"][series.kind],
            "tProtocolName": plan.protocol_name,
            "sKSpace.lBaseResolution": g.matrix,
            "sKSpace.lPhaseEncodingLines": g.matrix,
            "sKSpace.lPartitions": g.slices if self.kinds[series.kind]["MRAcquisitionType"] == "3D" else 1,
            "sKSpace.ucPhasePartialFourier": "0x10",
            "sKSpace.ucSlicePartialFourier": "0x10",
            "sKSpace.unReordering": "0x1",
        }
        if series.kind == "mp2rage":
            entries["alTR[0]"] = int(round(acq["RepetitionTimePreparation"] * 1000))
            for i, ti in enumerate(acq["InversionTimes"]):
                entries[f"alTI[{i}]"] = int(round(ti * 1000))
            for i, flip in enumerate(acq["FlipAngles"]):
                entries[f"adFlipAngleDegree[{i}]"] = float(flip)
            entries["lInvContrasts"] = 2
            entries["sFastImaging.lTurboFactor"] = int(acq["NumberShots"])
        else:
            entries["alTR[0]"] = int(round(acq["RepetitionTime"] * 1000))
            if plan.volumes[0].inversion_time is not None:
                entries["alTI[0]"] = int(round(plan.volumes[0].inversion_time * 1000))
            entries["adFlipAngleDegree[0]"] = float(plan.volumes[0].flip_angle)
        echo_times = sorted({v.echo_time for v in plan.volumes})
        for i, te in enumerate(echo_times):
            entries[f"alTE[{i}]"] = int(round(te * 1000))
        entries["lContrasts"] = len(echo_times)
        entries["sPrepPulses.ucMTC"] = "0x1" if any(v.mt for v in plan.volumes) else "0x0"
        return encode_csa2([("MrPhoenixProtocol", "UN", [ascconv(entries)])])

    def _private_ge(self, ds, plan: SeriesPlan, volume: Volume, k: int) -> None:
        name = self.spec["sequence_name"][plan.series.kind]
        acqu = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
        acqu.add_new(0x9C, "LO", name)
        acqu.add_new(0x9E, "LO", name.upper())
        if volume.bvalue is not None:
            gx, gy, gz = volume.direction
            for element, component in zip((0xBB, 0xBC, 0xBD), (-gx, -gy, gz), strict=True):
                acqu.add_new(element, "DS", _ds_number(component + 0.0))
        rela = ds.private_block(0x0021, "GEMS_RELA_01", create=True)
        rela.add_new(0x4F, "SS", self.study.grid.slices)
        parm = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
        parm.add_new(0x2F, "SS", 1 if volume.part == "phase" else 0)
        if volume.bvalue is not None:
            parm.add_new(0x39, "IS", [str(int(volume.bvalue)), "8", "0", "0"])

    def _private_philips(self, ds, plan: SeriesPlan, volume: Volume, k: int) -> None:
        enc = plan.encoding[volume.part]
        dd1 = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
        dd1.add_new(0x0B, "CS", "TRANSVERSAL")
        dd1.add_new(0x18, "SL", self.study.grid.slices)
        dd1.add_new(0x20, "LO", self.spec["sequence_name"][plan.series.kind])
        mr = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
        # Scale slope chosen so that Philips "floating point" and display values coincide.
        mr.add_new(0x0E, "FL", float(np.float32(1.0 / enc["rescale_slope"])))
        mr.add_new(0x11, "CS", {"magnitude": "M", "phase": "P", "uni": "M"}[volume.part])
        if volume.bvalue is not None:
            dd1.add_new(0x03, "FL", float(volume.bvalue))
            dd1.add_new(0x04, "CS", "O" if volume.bvalue > 0 else "N")
            for element, component in zip((0xB0, 0xB1, 0xB2), volume.direction, strict=True):
                mr.add_new(element, "FL", float(component))
            ds.DiffusionBValue = float(volume.bvalue)
            ds.DiffusionGradientOrientation = [float(c) for c in volume.direction]

    def _save(self, ds: Dataset, path: Path) -> None:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = name_uid("qmrbids", __version__)
        meta.ImplementationVersionName = f"QMRBIDS_{__version__}"[:16]
        ds.file_meta = meta
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.getvalue())
