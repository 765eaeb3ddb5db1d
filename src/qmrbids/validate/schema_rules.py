"""The official BIDS schema, prepared once per run: file rules indexed, every expression compiled.

Preparing means: flatten ``rules.files`` into path/stem/suffix lookups and compile every rule with
selectors into a :class:`~qmrbids.validate.rules.RuleSet`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jsonschema

from qmrbids.schema.bids import bids_schema
from qmrbids.validate.expressions import PARSED_CACHE, compile_expression, freeze, schema_expressions, to_data
from qmrbids.validate.quick_accept import acceptor
from qmrbids.validate.rules import Rule, RuleSet


@dataclass
class FileRule:
    rule_id: str
    spec: dict
    entities: tuple[str, ...] = ()           # short names, every entity the rule allows
    required: tuple[str, ...] = ()           # short names of required entities


@dataclass
class PreparedSchema:
    schema: dict
    bids_version: str
    schema_version: str
    entity_short: dict[str, str]             # long name -> short name
    entity_order: list[str]                  # short names in filename order
    entity_pattern: dict[str, re.Pattern]    # short name -> label/index regex
    file_rules: dict[str, FileRule]
    path_rules: dict[str, list[str]]
    stem_rules: list[tuple[re.Pattern, tuple | None, str]]
    suffix_rules: dict[str, list[str]]
    deriv_rule_ids: frozenset[str]
    dir_rules: dict[str, list[tuple[str, dict]]]
    datatype_modality: dict[str, str]
    rules: RuleSet
    associations: list[tuple[str, list, dict, bool]]
    opaque_dirs: frozenset[str]
    pseudo_extensions: frozenset[str]
    file_rule_order: dict = field(default_factory=dict)
    field_plans: dict = field(default_factory=dict)     # fields rule -> its plan
    field_groups: dict = field(default_factory=dict)    # fields rules selected together -> their group
    name_verdicts: dict = field(default_factory=dict)   # kind of file name -> what the file rules say of it
    _labels: dict = field(default_factory=dict)
    _metadata_validators: dict = field(default_factory=dict)   # key -> (quick acceptor or None, jsonschema validator)
    _metadata_results: dict = field(default_factory=dict)

    def label_ok(self, key: str, label: str) -> bool:
        """Whether an entity label has its entity's format (unknown entities pass here)."""
        hit = self._labels.get((key, label))
        if hit is None:
            pattern = self.entity_pattern.get(key)
            hit = pattern is None or pattern.match(label) is not None
            if len(self._labels) < 100000:
                self._labels[(key, label)] = hit
        return hit

    def metadata_errors(self, key: str, value: Any) -> list[str]:
        """JSON Schema errors of a metadata value (``objects.metadata``), memoised on the value."""
        try:
            memo = (key, value.__class__, value)   # the class keeps 1, 1.0 and true apart
            hit = self._metadata_results.get(memo)
        except TypeError:                           # lists and objects
            memo = (key, freeze(value))
            hit = self._metadata_results.get(memo)
        if hit is not None:
            return hit
        judges = self._metadata_validators.get(key)
        if judges is None:
            definition = {k: v for k, v in self.schema["objects"]["metadata"][key].items()
                          if k not in ("name", "display_name", "description")}
            judges = self._metadata_validators[key] = (
                acceptor(definition, format_asserts=False, ignored=frozenset({"unit"})),
                jsonschema.Draft202012Validator(definition))
        accept, validator = judges
        errors = [] if accept is not None and accept(value) else [e.message for e in validator.iter_errors(value)]
        if len(self._metadata_results) < 100000:
            self._metadata_results[memo] = errors
        return errors


def glob_regex(glob: str) -> re.Pattern:
    out = []
    for ch in glob:
        out.append({"*": "[^/]*", "?": "[^/]"}.get(ch, re.escape(ch)))
    return re.compile("^" + "".join(out) + "$")


def prepare(schema: dict) -> PreparedSchema:
    """Index and compile a schema (a plain dict as in bidsschematools' schema.json)."""
    objects, rules = schema["objects"], schema["rules"]
    entity_short = {name: spec["name"] for name, spec in objects["entities"].items()}
    entity_order = [entity_short[name] for name in rules["entities"]]
    formats = objects["formats"]
    entity_pattern = {}
    for name, spec in objects["entities"].items():
        fmt = spec.get("format")
        if isinstance(fmt, str) and fmt in formats:
            entity_pattern[spec["name"]] = re.compile(f"^(?:{formats[fmt]['pattern']})$")

    file_rules: dict[str, FileRule] = {}
    path_rules: dict[str, list[str]] = {}
    stem_rules: list = []
    suffix_rules: dict[str, list[str]] = {}
    deriv: set[str] = set()

    def visit(node, rule_id):
        if not isinstance(node, dict):
            return
        if "path" in node or "stem" in node or "suffixes" in node:
            ents = node.get("entities") or {}
            file_rules[rule_id] = FileRule(
                rule_id, node, tuple(entity_short.get(k, "") for k in ents),
                tuple(entity_short.get(k, "") for k, v in ents.items() if v == "required"))
            if rule_id.startswith("rules.files.deriv."):
                deriv.add(rule_id)
            if "path" in node:
                path_rules.setdefault("/" + node["path"], []).append(rule_id)
            elif "stem" in node:
                stem_rules.append((glob_regex(node["stem"]), tuple(node["datatypes"]) if node.get("datatypes") else None,
                                   rule_id))
            else:
                for suffix in node["suffixes"]:
                    suffix_rules.setdefault(suffix, []).append(rule_id)
            return
        for key, child in node.items():
            visit(child, f"{rule_id}.{key}")

    for key, child in rules["files"].items():
        visit(child, f"rules.files.{key}")

    compiled: list[Rule] = []

    def collect(node, rule_id):
        for key, child in node.items():
            if not isinstance(child, dict):
                continue
            child_id = f"{rule_id}.{key}"
            if "selectors" in child:
                compiled.append(Rule.compile(child_id, child))
            else:
                collect(child, child_id)

    collect(rules, "rules")
    datatype_modality = {}
    for modality, spec in rules["modalities"].items():
        for datatype in spec["datatypes"]:
            datatype_modality.setdefault(datatype, modality)
    dir_rules = {kind: list(spec.items()) for kind, spec in rules["directories"].items()}
    associations = []
    for name, spec in schema["meta"]["associations"].items():
        target = spec["target"]
        ext = target.get("extension", [])
        associations.append((name, [compile_expression(s) for s in spec.get("selectors", [])],
                             {"suffix": target.get("suffix"), "extensions": [ext] if isinstance(ext, str) else list(ext)},
                             bool(spec.get("inherit"))))
    opaque = frozenset("/" + spec["name"] for spec in rules["directories"]["raw"].values()
                       if isinstance(spec, dict) and spec.get("opaque") and "name" in spec)
    pseudo = frozenset(e["value"] for e in objects["extensions"].values() if e["value"].endswith("/"))
    return PreparedSchema(
        schema=schema, bids_version=schema["bids_version"], schema_version=schema["schema_version"],
        entity_short=entity_short, entity_order=entity_order, entity_pattern=entity_pattern,
        file_rules=file_rules, path_rules=path_rules, stem_rules=stem_rules, suffix_rules=suffix_rules,
        deriv_rule_ids=frozenset(deriv), dir_rules=dir_rules, datatype_modality=datatype_modality,
        file_rule_order={rid: i for i, rid in enumerate(file_rules)}, rules=RuleSet(compiled), associations=associations, opaque_dirs=opaque, pseudo_extensions=pseudo)


@cache
def official_schema() -> PreparedSchema:
    """The pinned BIDS schema of the installed bidsschematools, prepared once per process."""
    return prepare(bids_schema().to_dict())


def shipped_expressions() -> set[str]:
    """The expressions of the pinned BIDS schema and of every shipped qMRI rule file."""
    import yaml

    from qmrbids.resources import data_path

    found = schema_expressions(bids_schema().to_dict())
    rule_files = [*data_path("schema").glob("*/rules/*.yaml"), *data_path("validators").glob("*.yaml")]
    for path in rule_files:
        found |= schema_expressions(yaml.safe_load(path.read_text()))
    return found


def write_parsed_expressions() -> int:
    """Rewrite ``validators/bids-expressions.json`` after bidsschematools or a rule file changes.

    Run ``python -c "from qmrbids.validate.schema_rules import write_parsed_expressions as w; w()"``;
    tests/test_validate_cli.py fails until the shipped file matches. Returns the expression count.
    """
    from importlib.metadata import version

    from bidsschematools import expressions as ast

    from qmrbids.io import atomic_write_text
    from qmrbids.resources import data_path

    sources = sorted(shipped_expressions())
    trees = {source: to_data(ast.parse(source)) for source in sources}
    atomic_write_text(data_path(*PARSED_CACHE), json.dumps(
        {"bidsschematools": version("bidsschematools"), "expressions": trees}, separators=(",", ":")) + "\n")
    return len(trees)
