"""Study configuration (YAML): subject/session labels, extra classification rules, metadata."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """The study configuration cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class StudyConfig:
    """What a study adds to the defaults.

    ``subjects`` maps PatientID to a subject label; ``sessions`` maps StudyInstanceUID (or
    PatientID/StudyDate as ``"PATIENT/YYYYMMDD"``) to a session label; ``rules`` is a list of rule
    files in the converters/ format applied before the shipped ones; ``metadata`` maps a BIDS
    suffix to sidecar fields the DICOM cannot give (e.g. MP2RAGE RepetitionTimeExcitation);
    ``dataset`` holds dataset_description.json fields (Name, Authors, License, ...).
    """

    subjects: dict[str, str] = field(default_factory=dict)
    sessions: dict[str, str] = field(default_factory=dict)
    rules: list[dict] = field(default_factory=list)
    metadata: dict[str, dict] = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)
    source: str = ""

    @property
    def digest(self) -> str:
        """SHA-256 of the configuration's content (recorded in every sidecar's provenance)."""
        content = {"subjects": self.subjects, "sessions": self.sessions, "rules": self.rules,
                   "metadata": self.metadata, "dataset": self.dataset}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def load_config(path: Path | None) -> StudyConfig:
    if path is None:
        return StudyConfig()
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read the study config ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a study config is a YAML mapping")
    unknown = set(data) - {"subjects", "sessions", "rules", "metadata", "dataset"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {', '.join(sorted(unknown))}")
    rules = data.get("rules") or []
    if isinstance(rules, dict):
        rules = [rules]
    return StudyConfig(
        subjects={str(k): str(v) for k, v in (data.get("subjects") or {}).items()},
        sessions={str(k): str(v) for k, v in (data.get("sessions") or {}).items()},
        rules=list(rules), metadata=dict(data.get("metadata") or {}), dataset=dict(data.get("dataset") or {}),
        source=str(path),
    )
