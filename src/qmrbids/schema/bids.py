"""Access to the BIDS schema shipped with bidsschematools: versions, entities, sidecar requirements."""

from __future__ import annotations

import re
from functools import cache

from bidsschematools import schema as _schema


@cache
def bids_schema():
    """The BIDS schema bundled with the installed bidsschematools."""
    return _schema.load_schema()


def bids_version() -> str:
    return str(bids_schema().bids_version)


def schema_version() -> str:
    return str(bids_schema().schema_version)


@cache
def entity_order() -> tuple[tuple[str, str], ...]:
    """(long name, filename key) of every entity, in the order the schema puts them in file names."""
    objects = bids_schema().objects.entities
    return tuple((name, objects[name]["name"]) for name in bids_schema().rules.entities)


_SUFFIX_SELECTOR = re.compile(r'^suffix\s*==\s*"([^"]+)"$')
_SUFFIX_IN_SELECTOR = re.compile(r"^suffix\s+in\s+\[(.*)\]$")


@cache
def required_sidecar_fields(suffix: str) -> tuple[str, ...]:
    """Sidecar fields the schema requires for NIfTI files of ``suffix`` (selectors naming the suffix)."""
    required: list[str] = []

    def visit(node) -> None:
        if hasattr(node, "keys") and "selectors" in node and "fields" in node:
            suffixes = set()
            for selector in node["selectors"]:
                if m := _SUFFIX_SELECTOR.match(selector.strip()):
                    suffixes.add(m.group(1))
                elif m := _SUFFIX_IN_SELECTOR.match(selector.strip()):
                    suffixes.update(s.strip().strip("\"'") for s in m.group(1).split(","))
            if suffix in suffixes:
                for name, level in node["fields"].items():
                    level = level.get("level") if hasattr(level, "get") else level
                    if level == "required" and name not in required:
                        required.append(name)
            return
        if hasattr(node, "keys"):
            for key in node.keys():
                visit(node[key])

    visit(bids_schema().rules.sidecars)
    return tuple(required)
