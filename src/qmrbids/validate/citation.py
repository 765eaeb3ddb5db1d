"""CITATION.cff: YAML the Citation File Format 1.2.0 schema accepts, checked as the official validator does.

Its ``format`` keywords are the BIDS schema's formats (``objects.formats``, patterns found anywhere
in the value), as the official validator registers them with its JSON Schema validator.
"""

from __future__ import annotations

import json
import re
from functools import cache

import jsonschema
import yaml

from qmrbids.resources import data_path
from qmrbids.validate.context import FileReader
from qmrbids.validate.index import Folder
from qmrbids.validate.issues import Issue, make

CITATION = "CITATION.cff"
SCHEMA = ("validators", "citation-cff-1.2.0.schema.json")


def check_citation(tree: Folder, reader: FileReader, formats: dict) -> list[Issue]:
    """FILE_READ if the root's CITATION.cff is not YAML, else one CITATION_CFF_VALIDATION_ERROR per schema violation."""
    file = tree.files.get(CITATION)
    if file is None:
        return []
    try:
        content = yaml.safe_load(reader.read(file).decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return [make("FILE_READ", file.path, f"{CITATION} is not readable YAML ({reason}).")]
    if not _smaller_than(content, MAX_NODES):
        return [make("FILE_READ", file.path, f"{CITATION} expands to more than {MAX_NODES} values (YAML aliases).")]
    validator = _validator(tuple(sorted((name, spec["pattern"]) for name, spec in formats.items()
                                        if isinstance(spec.get("pattern"), str))))
    found = []
    for error in sorted(validator.iter_errors(content), key=lambda e: list(map(str, e.absolute_path))):
        where = "/" + "/".join(map(str, error.absolute_path))
        found.append(make("CITATION_CFF_VALIDATION_ERROR", file.path, f"{where}: {error.message}.", key=where))
    return found


#: Values a CITATION.cff may expand to; YAML aliases can nest a few lines into billions.
MAX_NODES = 100_000


def _smaller_than(value, limit: int) -> bool:
    """Whether ``value`` holds fewer than ``limit`` values, counting every alias again (stops early)."""
    stack, count = [value], 0
    while stack:
        item = stack.pop()
        count += 1
        if count >= limit:
            return False
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


@cache
def _validator(formats: tuple[tuple[str, str], ...]) -> jsonschema.Draft7Validator:
    checker = jsonschema.FormatChecker(formats=())
    for name, pattern in formats:
        search = re.compile(pattern).search
        checker.checks(name)(lambda value, search=search: not isinstance(value, str) or search(value) is not None)
    return jsonschema.Draft7Validator(json.loads(data_path(*SCHEMA).read_text()), format_checker=checker)
