"""Plan a conversion: subject/session labels and the BIDS files each series will become.

Planning touches no file. The plan lists every series with its classification and evidence,
its target paths, and, for series that will not be converted, the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

from qmrbids.convert.config import StudyConfig
from qmrbids.dicom.classify import Classification
from qmrbids.schema import entity_order

_LABEL = re.compile(r"[^A-Za-z0-9]")


def sanitise_label(value: str) -> str:
    """A BIDS label from any text: letters and digits only."""
    return _LABEL.sub("", str(value))


@dataclass
class Output:
    """One file set (NIfTI + JSON [+ bval/bvec]) a series produces."""

    stem: str  # dataset-relative path without extension, e.g. sub-01/anat/sub-01_flip-1_VFA
    echo: int | None = None  # which echo of the series (1-based rank), None for all
    part: str | None = None  # "mag" / "phase" / None
    kind: str = ""  # "" or "fieldmaphz" (dcm2niix's Hz field map)


@dataclass
class PlannedSeries:
    uid: str
    series: dict
    classification: Classification
    subject: str = ""
    session: str = ""
    outputs: list[Output] = field(default_factory=list)

    @property
    def converted(self) -> bool:
        return self.classification.converted

    @property
    def label(self) -> str:
        """How messages name the series: number, description and subject label (never a DICOM ID)."""
        return f"series {self.series['SeriesNumber']} '{self.series['SeriesDescription']}' (subject {self.subject})"

    @property
    def cannot_convert(self) -> str:
        """Why a series the rules would convert must fail before conversion ('' when it can go ahead)."""
        if self.classification.rule == "mixed-series":
            return f"{self.label}: {self.classification.skip_reason}; split it or exclude files"
        errors = self.series["file_errors"]
        if self.converted and errors:
            return f"{self.label}: {len(errors)} of its files cannot be read, first: {errors[0]}"
        return ""


def _stem(subject: str, session: str, datatype: str, entities: dict[str, str], suffix: str) -> str:
    values = {"sub": subject, "ses": session, **entities}
    name = "_".join(f"{key}-{values[key]}" for _, key in entity_order() if values.get(key))
    folder = f"sub-{subject}/" + (f"ses-{session}/" if session else "") + datatype
    return f"{folder}/{name}_{suffix}"


def _labels(table: pd.DataFrame, config: StudyConfig, subject: str | None, session: str | None,
            research_ids: dict[str, str] | None) -> dict:
    """(subject, session) per StudyInstanceUID; with ``research_ids`` (de-identification) the
    subject label is the research ID of the PatientID, never the PatientID itself."""
    out = {}
    studies = table.sort_values(["PatientID", "StudyDate", "StudyTime"]).drop_duplicates("StudyInstanceUID")
    per_subject: dict[str, list] = {}
    for study in studies.to_dict("records"):
        if research_ids is not None:
            label = subject or research_ids[study["PatientID"]]
        else:
            label = subject or config.subjects.get(study["PatientID"]) or sanitise_label(study["PatientID"]) or "unknown"
        per_subject.setdefault(label, []).append(study)
    for label, studies_of_subject in per_subject.items():
        for index, study in enumerate(studies_of_subject, start=1):
            key_by_date = f"{study['PatientID']}/{study['StudyDate']}"
            ses = (session or config.sessions.get(study["StudyInstanceUID"]) or config.sessions.get(key_by_date)
                   or (f"{index:02d}" if len(studies_of_subject) > 1 else ""))
            out[study["StudyInstanceUID"]] = (sanitise_label(label), sanitise_label(ses))
    return out


def _outputs(planned: PlannedSeries, part_sessions: set) -> list[tuple[dict, int | None, str | None, str, str]]:
    """(entities, echo, part, kind, suffix) of each file set a series produces."""
    c, s = planned.classification, planned.series
    base = dict(c.entities)
    if c.echo_entity:
        with_part = (planned.subject, planned.session, c.suffix) in part_sessions
        return [({**base, "echo": str(k), **({"part": p} if with_part else {})}, k, p if with_part else None, "", c.suffix)
                for p in s["parts"] for k in range(1, int(s["n_echoes"]) + 1)]
    if c.suffix == "magnitude":
        return [(base, k, None, "", f"magnitude{k}") for k in range(1, int(s["n_echoes"]) + 1)]
    if c.suffix == "fieldmap":
        return [(base, None, None, "fieldmaphz", "fieldmap"), (base, None, None, "", "magnitude")]
    return [(base, None, None, "", c.suffix)]


def plan(table: pd.DataFrame, classes: dict[str, Classification], config: StudyConfig,
         subject: str | None = None, session: str | None = None,
         research_ids: dict[str, str] | None = None) -> list[PlannedSeries]:
    """Subject/session labels and target files of every series, with run entities for repeats."""
    labels = _labels(table, config, subject, session, research_ids) if len(table) else {}
    planned = []
    for series in table.sort_values(["PatientID", "StudyDate", "SeriesNumber"]).to_dict("records"):
        sub, ses = labels[series["StudyInstanceUID"]]
        planned.append(PlannedSeries(series["SeriesInstanceUID"], series, classes[series["SeriesInstanceUID"]], sub, ses))
    converted = [p for p in planned if p.converted]
    # multi-echo series whose session also has phase images of that suffix get part-mag/part-phase
    part_sessions = {(p.subject, p.session, p.classification.suffix) for p in converted
                     if p.classification.echo_entity and "phase" in p.series["parts"]}
    specs = {p.uid: _outputs(p, part_sessions) for p in converted}
    # series whose outputs would collide get run-1, run-2, ... in series-number order
    claims: dict[str, list[PlannedSeries]] = {}
    for p in converted:
        for entities, _, _, _, suffix in specs[p.uid]:
            stem = _stem(p.subject, p.session, p.classification.datatype, entities, suffix)
            claims.setdefault(stem, [])
            if p not in claims[stem]:
                claims[stem].append(p)
    runs: dict[str, int] = {}
    for owners in claims.values():
        if len(owners) > 1:
            for index, owner in enumerate(sorted(owners, key=lambda o: o.series["SeriesNumber"]), start=1):
                runs[owner.uid] = max(runs.get(owner.uid, 0), index)
    for p in converted:
        run = {"run": str(runs[p.uid])} if p.uid in runs else {}
        p.outputs = [Output(_stem(p.subject, p.session, p.classification.datatype, {**entities, **run}, suffix),
                            echo, part, kind)
                     for entities, echo, part, kind, suffix in specs[p.uid]]
    return planned
