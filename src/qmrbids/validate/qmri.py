"""The qMRI extension: versioned rules (``schema/<X.Y.Z>/rules``) and rule packs (``validators/``).

Rules use the BIDS schema's selector/check expressions. Three scopes: per file (the default,
same context as the official rules), per collection (``collection: {varies: [...]}``), and per
derivative dataset (``scope: derivative``). A ``json_schema`` rule validates one JSON key against a
JSON Schema file of the extension version (the provenance object).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import jsonschema
import yaml

from qmrbids.resources import data_path
from qmrbids.validate.context import FileContext, FileReader, LoadError
from qmrbids.validate.expressions import compile_expression, freeze, truthy
from qmrbids.validate.index import Folder
from qmrbids.validate.issues import Issue
from qmrbids.validate.quick_accept import acceptor
from qmrbids.validate.rules import Rule, RuleSet

VERSION_KEY = "QMRIExtensionVersion"
NIFTI = (".nii", ".nii.gz")


class UnknownVersion(Exception):
    """The requested qMRI extension version is not shipped (usage error)."""


@dataclass
class QRule:
    rule_id: str
    code: str
    level: str
    message: str
    scope: str                      # "file", "collection" or "derivative"
    varies: tuple[str, ...]
    selectors: list
    checks: list
    suffixes: dict = field(default_factory=dict)   # suffix -> whether the selectors reading only it hold

    def takes_suffix(self, suffix: str) -> bool:
        """Whether the selectors that read only the suffix hold for it (decided once per suffix)."""
        hit = self.suffixes.get(suffix)
        if hit is None:
            scope = _Scope({"suffix": suffix})
            hit = self.suffixes[suffix] = all(truthy(s(scope)) for s in self.selectors if s.names <= {"suffix"})
        return hit


class ObjectSchema:
    """A JSON Schema for one object-valued key, validated property by property with memoised results.

    Provenance objects differ between files only in a few hashes: the object's shell (type,
    required, additionalProperties) is checked once per key set, and each property by its quick
    acceptor (the hashes) or else once per distinct value, instead of a whole jsonschema pass
    (~50 us) per file. Schemas using other keywords at the top are validated whole.
    """

    SPLITTABLE = frozenset({"$schema", "$id", "title", "description", "type", "required", "additionalProperties",
                            "properties"})
    MAX_MEMO = 10_000

    def __init__(self, schema: dict):
        def make(definition):
            return jsonschema.Draft202012Validator(definition, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)

        self.whole = make(schema)
        properties = schema.get("properties")
        self.parts = None
        if (schema.get("type") == "object" and set(schema) <= self.SPLITTABLE and isinstance(properties, dict)
                and isinstance(schema.get("additionalProperties", True), bool) and "$ref" not in json.dumps(schema)):
            self.shell = make({**schema, "properties": {name: True for name in properties}})
            self.parts = {name: (acceptor(definition, format_asserts=True), make(definition))
                          for name, definition in properties.items()}
        self.memo: dict = {}

    def errors(self, value) -> list[tuple[str, str]]:
        """(path inside the value, message) of every schema violation."""
        if self.parts is None or not isinstance(value, dict):
            return self._run(self.whole, value, ())
        out = self._memoised(("", tuple(value)), self.shell, value, ())
        for name, item in value.items():
            part = self.parts.get(name)
            if part is not None and (part[0] is None or not part[0](item)):
                out = out + self._memoised((name, freeze(item)), part[1], item, (name,))
        return out

    def _memoised(self, key, validator, value, prefix) -> list[tuple[str, str]]:
        hit = self.memo.get(key)
        if hit is None:
            hit = self._run(validator, value, prefix)
            if len(self.memo) < self.MAX_MEMO:
                self.memo[key] = hit
        return hit

    @staticmethod
    def _run(validator, value, prefix) -> list[tuple[str, str]]:
        return [("/".join(str(p) for p in (*prefix, *error.absolute_path)), error.message)
                for error in validator.iter_errors(value)]


@dataclass
class Extension:
    version: str
    rules: list[QRule]          # collection and derivative scopes
    file_rules: RuleSet         # per-file rules, selected like the official ones
    schemas: dict               # file rule -> (JSON key, ObjectSchema) for json_schema rules


def known_versions() -> list[str]:
    folder = data_path("schema")
    found = [p.name for p in folder.iterdir() if (p / "schema.json").is_file()]
    return sorted(found, key=lambda v: tuple(int(x) if x.isdigit() else 0 for x in v.split(".")))


def declared_version(description: dict) -> str | None:
    value = description.get(VERSION_KEY)
    return value if isinstance(value, str) else None


def _rules_from(path: Path, prefix: str, version_dir: Path, extension: Extension) -> None:
    for name, spec in (yaml.safe_load(path.read_text()) or {}).items():
        issue = spec["issue"]
        rule_id = f"{prefix}.{name}"
        scope = "collection" if "collection" in spec else spec.get("scope", "file")
        if scope == "file":
            rule = Rule.compile(rule_id, spec)
            extension.file_rules.rules.append(rule)
            if "json_schema" in spec:
                target = json.loads((version_dir / spec["json_schema"]["schema"]).read_text())
                extension.schemas[rule] = (spec["json_schema"]["key"], ObjectSchema(target))
            continue
        extension.rules.append(QRule(
            rule_id, issue["code"], issue["level"], " ".join(issue["message"].split()), scope,
            tuple(spec.get("collection", {}).get("varies", ())),
            [compile_expression(s) for s in spec.get("selectors", [])],
            [compile_expression(c) for c in spec.get("checks", [])]))


@cache
def load_extension(version: str | None) -> Extension:
    """The rules of one extension version (``None``: the newest shipped) plus the rule packs it names."""
    versions = known_versions()
    version = version or versions[-1]
    if version not in versions:
        raise UnknownVersion(f"unknown qMRI extension version {version!r}; known versions: {', '.join(versions)}")
    version_dir = data_path("schema", version)
    meta = json.loads((version_dir / "schema.json").read_text())
    extension = Extension(version, [], RuleSet([]), {})
    for rel in meta.get("rules", []):
        _rules_from(version_dir / rel, f"qmri.{Path(rel).stem}", version_dir, extension)
    for pack in meta.get("rule_packs", []):
        _rules_from(data_path("validators", pack), f"validators.{Path(pack).stem}", version_dir, extension)
    extension.file_rules = RuleSet(extension.file_rules.rules)  # recompute what selectors read
    return extension


class Collection:
    """``collection`` in a collection rule: member metadata as lists, entity labels as lists."""

    def __init__(self, members: list[FileContext]):
        self.members = members

    def lookup(self, name: str):
        if name == "size":
            return len(self.members)
        if name == "entities":
            keys = {k for m in self.members for k in m.entities}
            return {k: [m.entities[k] for m in self.members if k in m.entities] for k in keys}
        return [m.sidecar[name] for m in self.members if name in m.sidecar]


class _Scope:
    """Expression context for collection and derivative rules."""

    def __init__(self, values: dict):
        self.values = values

    def lookup(self, name: str):
        return self.values.get(name)

    def exists(self, *args) -> int:
        return 0


def _collections(contexts: list[FileContext], varies: tuple[str, ...]) -> dict:
    groups: dict = {}
    for ctx in contexts:
        key = (ctx.file.parent.path, ctx.suffix,
               tuple(sorted((k, v) for k, v in ctx.entities.items() if k not in varies)))
        groups.setdefault(key, []).append(ctx)
    return groups


def _issue(rule: QRule, path: str, detail: str = "", key: str = "") -> Issue:
    return Issue(rule.code, rule.level, path, f"{rule.message} {detail}".strip(), key=key, rule_id=rule.rule_id)


def apply_file(extension: Extension, ctx: FileContext) -> list[Issue]:
    """The extension's per-file rules for one file (called from the main loop)."""
    out = []
    for rule in extension.file_rules.select(ctx, ctx.ds.rule_cache):
        issue = rule.spec["issue"]
        if "checks" in rule.spec and not rule.checks_pass(ctx, ctx.ds.rule_cache):
            out.append(Issue(issue["code"], issue["level"], ctx.path, " ".join(issue["message"].split()),
                             rule_id=rule.rule_id))
        if rule in extension.schemas:
            key, schema = extension.schemas[rule]
            for where, message in schema.errors(ctx.json.get(key)):
                out.append(Issue(issue["code"], issue["level"], ctx.path,
                                 f"{' '.join(issue['message'].split())} ({where or key}: {message})", key=key,
                                 rule_id=rule.rule_id))
    return out


def apply_collections(extension: Extension, contexts: list[FileContext]) -> list[Issue]:
    """Collection rules over NIfTI files' contexts (a collection never spans two subject folders)."""
    issues: list[Issue] = []
    by_suffix: dict[str, list[FileContext]] = {}
    for ctx in contexts:
        by_suffix.setdefault(ctx.suffix, []).append(ctx)
    for rule in extension.rules:
        if rule.scope == "collection":
            members_of = [c for suffix, group in by_suffix.items() if rule.takes_suffix(suffix) for c in group]
            for (_, suffix, shared), members in _collections(members_of, rule.varies).items():
                scope = _Scope({"suffix": suffix, "entities": dict(shared), "collection": Collection(members),
                                "path": members[0].path, "datatype": members[0].datatype})
                if all(truthy(s(scope)) for s in rule.selectors) and not all(truthy(c(scope)) for c in rule.checks):
                    names = ", ".join(m.file.name for m in members[:4]) + (" ..." if len(members) > 4 else "")
                    issues.append(_issue(rule, members[0].path, f"Collection of {len(members)}: {names}."))
    return issues


def apply_derivatives(extension: Extension, derivatives: Folder | None, root: Path) -> list[Issue]:
    """The rules on derivative datasets (their dataset_description.json)."""
    issues: list[Issue] = []
    if derivatives is None:
        return issues
    for rule in extension.rules:
        if rule.scope == "derivative":
            reader = FileReader(root)
            for folder in derivatives.folders.values():
                if folder.ignored:
                    continue
                description = None
                file = folder.files.get("dataset_description.json")
                if file is not None:
                    try:
                        description = reader.json(file)
                    except LoadError:
                        description = None
                scope = _Scope({"description": description, "path": folder.path})
                if all(truthy(s(scope)) for s in rule.selectors) and not all(truthy(c(scope)) for c in rule.checks):
                    issues.append(_issue(rule, folder.path + "dataset_description.json"))
    return issues
