"""Issues are values: the engine yields them, reporters render them, nothing prints in between."""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

import yaml

from qmrbids.resources import data_path

LEVELS = ("error", "warning", "info", "ignore")
RANK = {"error": 3, "warning": 2, "info": 1, "ignore": 0}


class Issue(NamedTuple):
    """One finding; a named tuple because a large dataset yields hundreds of thousands of them."""

    code: str
    level: str
    path: str            # dataset-relative, leading "/", as the official validator prints it
    message: str = ""
    key: str = ""        # the metadata key, TSV column or entity concerned
    row: int | None = None
    rule_id: str = ""    # the schema rule (rules.checks.dwi.DWIVolumeCount, qmri.VFAHasTwoFlipAngles, ...)
    dataset: str = ""    # "" for the validated dataset, "derivatives/<name>" for nested ones

    def to_dict(self) -> dict:
        return {k: v for k, v in zip(self._fields, self) if v != "" and v is not None}


@cache
def builtin_issues() -> dict[str, dict]:
    """Codes the official validator raises outside the schema's rules (level and what to do)."""
    return yaml.safe_load(data_path("validators", "bids-issues.yaml").read_text())


def make(code: str, path: str, message: str = "", **extra) -> Issue:
    """An issue with one of the built-in codes, its level and advice from ``bids-issues.yaml``."""
    spec = builtin_issues().get(code, {"level": "error", "message": ""})
    text = message or spec["message"]
    if message and spec.get("message"):
        text = f"{message} {spec['message']}"
    return Issue(code, spec["level"], path, " ".join(text.split()), **extra)
