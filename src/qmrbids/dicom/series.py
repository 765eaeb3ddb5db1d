"""Group the file table into series: one row per series with the values classification needs."""

from __future__ import annotations

import pandas as pd

#: Values that must be the same for every file of a series; more than one means a mixed series.
GEOMETRY = ("Rows", "Columns", "ImageOrientationPatient")
ORIENTATION_DECIMALS = 3  # scanners write direction cosines with rounding noise in the last digits


def _orientation(text) -> str:
    try:
        return ",".join(f"{float(v):.{ORIENTATION_DECIMALS}f}" for v in str(text).split("\\"))
    except ValueError:
        return str(text)


def _distinct(values: pd.Series) -> list:
    return sorted({v for v in values.dropna() if v != ""})


def _tokens(values: pd.Series) -> list[str]:
    """Distinct backslash-separated tokens over all files (e.g. every ImageType value)."""
    out = set()
    for value in values.dropna():
        out.update(t.strip().upper() for t in str(value).replace("|", "\\").split("\\") if t.strip())
    return sorted(out)


def _parts(group: pd.DataFrame) -> list[str]:
    """Image parts present: 'mag' and/or 'phase' (vendor conventions for phase images)."""
    parts = set()
    for image_type, ge_kind, philips_kind, frame_types in zip(
        group["ImageType"], group["GEImageKind"], group["PhilipsImageKind"], group["FrameTypes"], strict=True
    ):
        tokens = set(str(image_type).upper().split("\\")) | set(str(frame_types).upper().replace("|", "\\").split("\\"))
        phase = bool({"P", "PHASE", "PHASE MAP"} & tokens) or str(ge_kind) == "1" or str(philips_kind) == "P"
        parts.add("phase" if phase else "mag")
    return sorted(parts)


def _bvalues(group: pd.DataFrame) -> list[float]:
    values = set()
    for column in ("DiffusionBValue", "SiemensBValue", "PhilipsBValue", "GEBValue", "BValues"):
        for value in group[column].dropna():
            text = str(value).split("\\")
            for token in text if column == "BValues" else text[:1]:
                try:
                    b = float(token)
                except ValueError:
                    continue
                values.add(b % 1e9 if column == "GEBValue" else b)
    return sorted(values)


def series_table(files: pd.DataFrame) -> pd.DataFrame:
    """One row per SeriesInstanceUID, with file lists and derived values.

    Files of a series that could not be read completely are listed in ``file_errors``; the values
    come from the readable files.
    """
    rows = []
    known = files[files["SeriesInstanceUID"].fillna("").astype(bool)]
    for uid, all_files in known.groupby("SeriesInstanceUID", sort=False):
        failed = all_files["error"].astype(bool)
        group = all_files[~failed]
        if group.empty:
            continue
        first = group.iloc[0]
        echo_times = sorted({float(t) for v in group["EchoTimes"].dropna() for t in str(v).split("\\") if t})
        geometry = group[list(GEOMETRY)].assign(ImageOrientationPatient=group["ImageOrientationPatient"].map(_orientation))
        mixed = [c for c in GEOMETRY if geometry[c].nunique(dropna=True) > 1]
        rows.append({
            "SeriesInstanceUID": uid,
            "StudyInstanceUID": first["StudyInstanceUID"],
            "PatientID": first["PatientID"],
            "StudyDate": first["StudyDate"],
            "StudyTime": first["StudyTime"],
            "SeriesNumber": int(first["SeriesNumber"]) if pd.notna(first["SeriesNumber"]) else 0,
            "SeriesDescription": first["SeriesDescription"],
            "ProtocolName": first["ProtocolName"],
            "SeriesTime": first["SeriesTime"],
            "SeriesDate": first["SeriesDate"] or first["StudyDate"],
            "AcquisitionTime": min((t for t in group["AcquisitionTime"].dropna() if t), default=first["SeriesTime"]),
            "Modality": first["Modality"],
            "Manufacturer": first["Manufacturer"],
            "ManufacturerModelName": first["ManufacturerModelName"],
            "SoftwareVersions": first["SoftwareVersions"],
            "MagneticFieldStrength": first["MagneticFieldStrength"],
            "ImageType": "\\".join(_tokens(group["ImageType"].astype(str) + "\\" + group["FrameTypes"].astype(str))),
            "ScanningSequence": "\\".join(_tokens(group["ScanningSequence"])),
            "SequenceVariant": "\\".join(_tokens(group["SequenceVariant"])),
            "ScanOptions": "\\".join(_tokens(group["ScanOptions"])),
            "SequenceName": first["SequenceName"] or first["GEPulseSequence"],
            "ImageComments": "\\".join(_distinct(group["ImageComments"])),
            "MRAcquisitionType": first["MRAcquisitionType"],
            "RepetitionTime": first["RepetitionTime"],
            "EchoTimes": echo_times,
            "EchoTime": echo_times[0] if echo_times else None,
            "n_echoes": max(len(echo_times), int(group["EchoNumbers"].max()) if group["EchoNumbers"].notna().any() else 1),
            "InversionTimes": _distinct(group["InversionTime"]),
            "InversionTime": group["InversionTime"].dropna().min() if group["InversionTime"].notna().any() else None,
            "FlipAngles": _distinct(group["FlipAngle"]),
            "FlipAngle": group["FlipAngle"].dropna().min() if group["FlipAngle"].notna().any() else None,
            "EchoTrainLength": first["EchoTrainLength"],
            "BValues": _bvalues(group),
            "parts": _parts(group),
            "MT": "MTC" in _tokens(group["SequenceVariant"]),
            "Rows": first["Rows"],
            "Columns": first["Columns"],
            "SliceThickness": first["SliceThickness"],
            "BurnedInAnnotation": "YES" in _tokens(group["BurnedInAnnotation"]),
            "SOPClassUID": first["SOPClassUID"],
            "n_files": len(group),
            "mixed": ", ".join(mixed),
            "file_errors": list(all_files.loc[failed, "error"]),
            "files": list(zip(group["path"], group["member"], strict=True)),
        })
    return pd.DataFrame(rows)
