"""The official BIDS rules, evaluated the way the reference validator (bids-validator) does.

Order per file: empty file, filename identification (which ``rules.files`` entry applies),
filename validation (entities, order, labels, datatype folder, extension, location), then every
schema rule whose selectors hold (sidecar fields, metadata values, tables, ``rules.checks``).
Dataset-level: missing dataset_description, sidecars no data file uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from qmrbids.validate.context import (DatasetContext, FileContext, LoadError, load_associations,
                                      load_gzip_header, load_nifti_header, load_sidecar, read_entities)
from qmrbids.validate import tables
from qmrbids.validate.expressions import freeze, truthy, values_key
from qmrbids.validate.index import File, Folder
from qmrbids.validate.issues import Issue, make
from qmrbids.validate.schema_rules import PreparedSchema

LEVEL = {"recommended": "warning", "required": "error", "optional": "ignore", "prohibited": "ignore"}
_ADDENDUM = re.compile(r"(required|recommended) if `(\w+)` is `(\w+)`")
NO_SIDECAR_EXTENSIONS = frozenset({".json", "", ".md", ".txt", ".rst", ".cff"})
STANDALONE_JSON = frozenset({"dataset_description.json", "genetic_info.json"})


def iter_contexts(ds: DatasetContext, prepared: PreparedSchema, folder: Folder):
    """Files of a folder, then each subfolder (as a directory context) and its content."""
    for file in folder.files.values():
        yield FileContext(file, ds)
    for sub in folder.folders.values():
        yield from subfolder_contexts(ds, prepared, sub)


def subfolder_contexts(ds: DatasetContext, prepared: PreparedSchema, sub: Folder):
    """A subfolder as a directory context (or one pseudo-file), then its content."""
    name = sub.name
    _, suffix, extension, ents = read_entities(name)
    pseudo = bool(suffix) and bool(ents) and f"{extension}/" in prepared.pseudo_extensions
    opaque = pseudo or sub.path.rstrip("/") in prepared.opaque_dirs
    pseudo_file = File(name + "/", sub.path, 0 if not opaque else sum(map(ds.reader.size, sub.walk_files())),
                       sub.parent, ignored=sub.ignored)
    yield FileContext(pseudo_file, ds, directory=not pseudo)
    if not opaque:
        yield from iter_contexts(ds, prepared, sub)


# ---------------------------------------------------------------- filename identification

def datatype_from_directory(ctx: FileContext, prepared: PreparedSchema) -> None:
    parts = ctx.path.split("/")
    if len(parts) - 2 < 1:
        return
    folder = parts[-2]
    if folder == "phenotype":
        ctx.datatype = folder
        return
    modality = prepared.datatype_modality.get(folder)
    if modality is not None:
        ctx.datatype, ctx.modality = folder, modality


def find_file_rules(ctx: FileContext, prepared: PreparedSchema, derivative: bool) -> list[str]:
    found = list(prepared.path_rules.get(ctx.path, ()))
    stem = ctx.file.name.split(".")[0]
    for regex, datatypes, rule_id in prepared.stem_rules:
        if regex.match(stem) and (datatypes is None or ctx.datatype in datatypes):
            found.append(rule_id)
    found.extend(prepared.suffix_rules.get(ctx.suffix, ()))
    if not derivative:
        found = [r for r in found if r not in prepared.deriv_rule_ids]
    if len(found) < 2:
        return found
    return sorted(set(found), key=prepared.file_rule_order.__getitem__)


def find_dir_rules(ctx: FileContext, prepared: PreparedSchema, dataset_type: str) -> list[str]:
    name = ctx.file.name.replace("/", "")
    entities = prepared.schema["objects"]["entities"]
    for key, node in prepared.dir_rules.get(dataset_type, prepared.dir_rules["raw"]):
        if not isinstance(node, dict):
            continue
        rule_id = f"rules.directories.{dataset_type}.{key}"
        if node.get("name") == name:
            return [rule_id]
        if "entity" in node and name.startswith(entities[node["entity"]]["name"] + "-"):
            return [rule_id]
        if "value" in node and name in prepared.schema["objects"].get(node["value"] + "s", {}):
            return [rule_id]
    return []


def _narrow(ctx: FileContext, prepared: PreparedSchema, rules: list[str]) -> list[str]:
    if len(rules) > 1:
        by_type = [r for r in rules if ctx.datatype in (prepared.file_rules[r].spec.get("datatypes") or ())]
        if by_type:
            rules = by_type
    if len(rules) > 1:
        def fits(rule_id):
            spec = prepared.file_rules[rule_id]
            ext_ok = not spec.spec.get("extensions") or ctx.extension in spec.spec["extensions"]
            ent_ok = "entities" not in spec.spec or all(e in spec.entities for e in ctx.entities)
            return ext_ok and ent_ok
        fitting = [r for r in rules if fits(r)]
        if fitting:
            rules = fitting
    return rules


def _rule_issues(ctx: FileContext, prepared: PreparedSchema, rule_id: str) -> list[Issue]:
    return [*_name_problems(ctx, prepared, rule_id), *_locations(ctx)]


def _name_problems(ctx: FileContext, prepared: PreparedSchema, rule_id: str) -> list[Issue]:
    """A file rule's complaints about the entities, folder and extension (not the labels or location)."""
    rule = prepared.file_rules[rule_id]
    spec = rule.spec
    out: list[Issue] = []
    if "entities" in spec:
        if ctx.path.count("/") != 1:
            missing = [e for e in rule.required if e not in ctx.entities]
            if missing:
                out.append(make("MISSING_REQUIRED_ENTITY", ctx.path, f"{', '.join(missing)} missing from rule {rule_id}.",
                                rule_id=rule_id))
        extra = [e for e in ctx.entities if e not in rule.entities]
        if extra:
            out.append(make("ENTITY_NOT_IN_RULE", ctx.path, f"{', '.join(extra)} not allowed by rule {rule_id}.",
                            key=extra[0], rule_id=rule_id))
    if ctx.datatype and isinstance(spec.get("datatypes"), list) and ctx.datatype not in spec["datatypes"]:
        out.append(make("DATATYPE_MISMATCH", ctx.path, f"Expected folder {'/'.join(spec['datatypes'])}/.",
                        rule_id=rule_id))
    if isinstance(spec.get("extensions"), list) and ctx.extension not in spec["extensions"]:
        out.append(make("EXTENSION_MISMATCH", ctx.path, f"Allowed: {', '.join(e or '(none)' for e in spec['extensions'])}.",
                        rule_id=rule_id))
    return out


def _locations(ctx: FileContext) -> list[Issue]:
    if ctx.directory:
        return []
    out = []
    if not ctx.entities.get("tpl"):
        out.extend(_location(ctx, "sub", "ses"))
    if not ctx.entities.get("sub"):
        out.extend(_location(ctx, "tpl", "cohort"))
    return out


def _location(ctx: FileContext, top: str, sub: str) -> list[Issue]:
    out = []
    topval, subval = ctx.entities.get(top), ctx.entities.get(sub)
    if topval:
        pattern = f"/{top}-{topval}/" + (f"{sub}-{subval}/" if subval else "")
        if not ctx.path.startswith(pattern):
            out.append(make("INVALID_LOCATION", ctx.path, f"Expected location {pattern}."))
    if not topval and ctx.path.startswith(f"/{top}-"):
        out.append(make("INVALID_LOCATION", ctx.path, f"Expected location /{ctx.file.name}."))
    if not subval and f"/{sub}-" in ctx.path:
        out.append(make("INVALID_LOCATION", ctx.path, f"Unexpected {sub}- folder."))
    return out


@dataclass(eq=False)
class _NameVerdict:
    """What the file rules say about a kind of name, whatever its entity labels (see :func:`_judge_name`)."""

    rules: list[str]
    clear: tuple[bool, bool, bool]   # drop entities, extension, suffix (no applicable rule has any)
    suffixed: bool                   # some rule has suffixes: unlabeled entities are reported
    problems: tuple                  # (code, level, message, key, row, rule_id) of the one rule; () for several
    ordered: tuple                   # entity keys in the schema's filename order


def _judge_name(ctx: FileContext, prepared: PreparedSchema, derivative: bool) -> _NameVerdict:
    """Rule identification and the label-independent checks, memoised per kind of name.

    They read the exact path only for the schema's few fixed paths, the stem only through the
    stem rules, and otherwise the folder, suffix, extension, entity keys and depth; the labels
    and the location are checked per file by :func:`check_filename`.
    """
    stem = ctx.file.name.split(".")[0]
    stem_hits = tuple(rule_id for regex, datatypes, rule_id in prepared.stem_rules
                      if (datatypes is None or ctx.datatype in datatypes) and regex.match(stem))
    key = (ctx.path if ctx.path in prepared.path_rules else None, stem_hits, ctx.datatype, ctx.suffix, ctx.extension,
           tuple(ctx.entities), ctx.path.count("/") == 1, derivative)
    verdict = prepared.name_verdicts.get(key)
    if verdict is None:
        rules = _narrow(ctx, prepared, find_file_rules(ctx, prepared, derivative))
        specs = [prepared.file_rules[r].spec for r in rules]
        clear = tuple(all(not s.get(part) for s in specs) for part in ("entities", "extensions", "suffixes"))
        kept = {} if clear[0] else ctx.entities
        probe = _NameProbe(ctx.path, ctx.datatype, ctx.extension if not clear[1] else "", kept)
        problems = tuple(i[:2] + i[3:7] for i in _name_problems(probe, prepared, rules[0])) if len(rules) == 1 else ()
        verdict = _NameVerdict(rules, clear, any("suffixes" in s for s in specs), problems,
                               tuple(k for k in prepared.entity_order if k in kept))
        if len(prepared.name_verdicts) < 100_000:
            prepared.name_verdicts[key] = verdict
    return verdict


@dataclass
class _NameProbe:
    """The parts of a file context :func:`_name_problems` reads."""

    path: str
    datatype: str
    extension: str
    entities: dict


def check_filename(ctx: FileContext, prepared: PreparedSchema, dataset_type: str) -> list[str]:
    """Identify the file rule(s) and report naming problems; returns the applicable rule ids."""
    issues = ctx.ds.issues
    if ctx.directory:
        rules = find_dir_rules(ctx, prepared, dataset_type)
        if not rules:
            issues.append(make("NOT_INCLUDED", ctx.path))
        ctx.entities, ctx.extension, ctx.suffix = {}, "", ""
        return rules
    datatype_from_directory(ctx, prepared)
    verdict = _judge_name(ctx, prepared, dataset_type == "derivative")
    rules = verdict.rules
    if not rules:
        if ctx.path != "/.bidsignore":
            issues.append(make("NOT_INCLUDED", ctx.path))
    if verdict.clear[0]:
        ctx.entities = {}
    if verdict.clear[1]:
        ctx.extension = ""
    if verdict.clear[2]:
        ctx.suffix = ""
    if verdict.suffixed:
        unlabeled = [k for k, v in ctx.entities.items() if v == "NOENTITY"]
        if unlabeled:
            issues.append(make("ENTITY_WITH_NO_LABEL", ctx.path, f"Entities without label: {', '.join(unlabeled)}.",
                               key=unlabeled[0]))
    for key, label in ctx.entities.items():
        if not prepared.label_ok(key, label):
            issues.append(make("INVALID_ENTITY_LABEL", ctx.path,
                               f"{key}-{label} does not match {prepared.entity_pattern[key].pattern}.", key=key))
    if len(rules) == 1:
        path = ctx.path
        issues.extend(Issue(code, level, path, message, key, row, rule_id)
                      for code, level, message, key, row, rule_id in verdict.problems)
        issues.extend(_locations(ctx))
    elif rules:
        results = [(r, _rule_issues(ctx, prepared, r)) for r in rules]
        clean = [r for r, found in results if not found]
        if clean:
            rules = clean[:1]
        else:
            issues.append(make("ALL_FILENAME_RULES_HAVE_ISSUES", ctx.path,
                               f"Rules that matched with issues: {', '.join(r for r, _ in results)}."))
    if ctx.entities:
        expected = "_".join([f"{k}-{ctx.entities[k]}" for k in verdict.ordered] + [ctx.suffix + ctx.extension])
        if ctx.file.name != expected:
            issues.append(make("FILENAME_MISMATCH", ctx.path, f"Expected {expected}."))
    return rules


# ---------------------------------------------------------------- schema rules

def _field_level(requirement, ctx: FileContext) -> str:
    if isinstance(requirement, str):
        return LEVEL.get(requirement, "ignore")
    level = LEVEL.get(requirement.get("level", ""), "ignore")
    addendum = requirement.get("level_addendum")
    if addendum:
        m = _ADDENDUM.search(addendum)
        if m and ctx.sidecar.get(m.group(2)) == m.group(3):
            level = LEVEL[m.group(1)]
    return level


@dataclass(eq=False)
class _FieldPlan:
    """A ``fields`` rule prepared once: which JSON names it reads and the issues their absence gives."""

    names: frozenset                 # JSON names of the fields
    fields: list                     # (schema key, JSON name, requirement) in rule order
    addenda: tuple                   # sidecar keys whose value can change a level (level_addendum)
    missing: dict                    # (present names, addenda values) -> [(code, level, name, message)]


def _field_plan(rule, prepared: PreparedSchema) -> _FieldPlan:
    plan = prepared.field_plans.get(rule)
    if plan is None:
        metadata = prepared.schema["objects"]["metadata"]
        fields = [(key, metadata[key]["name"], req) for key, req in rule.spec["fields"].items()]
        addenda = tuple(sorted({m.group(2) for _, _, req in fields if isinstance(req, dict)
                                for m in [_ADDENDUM.search(req.get("level_addendum") or "")] if m}))
        plan = prepared.field_plans[rule] = _FieldPlan(frozenset(n for _, n, _ in fields), fields, addenda, {})
    return plan


_MESSAGES: dict = {}


def _missing_issues(rule, plan: _FieldPlan, present: frozenset, ctx: FileContext) -> list:
    """(code, level, name, message) for each absent field, cached per set of present names."""
    key = (present, tuple(freeze(ctx.sidecar.get(n)) for n in plan.addenda)) if plan.addenda else present
    cached = plan.missing.get(key)
    if cached is not None:
        return cached
    out = []
    for _, name, requirement in plan.fields:
        if name in present:
            continue
        level = _field_level(requirement, ctx)
        if level == "ignore":
            continue
        custom = requirement.get("issue") if isinstance(requirement, dict) else None
        if custom and custom.get("code") and custom.get("message"):
            out.append((custom["code"], level, name, " ".join(custom["message"].split())))
        else:
            kind = "SIDECAR_KEY" if rule.is_sidecar else "JSON_KEY"
            word = "required" if level == "error" else "recommended"
            where = "the sidecar (or one it inherits from)" if rule.is_sidecar else "this file"
            text = f"{name} is {word}; add it to {where}."
            out.append((f"{kind}_{word.upper()}", level, name, _MESSAGES.setdefault(text, text)))
    if len(plan.missing) < 4096:
        plan.missing[key] = out
    return out


@dataclass(eq=False)
class _FieldGroup:
    """The ``fields`` rules selected together for a file (all sidecar rules, or all JSON-file
    rules), checked in one pass: absent fields, then each present field against its JSON Schema."""

    rules: tuple
    plans: tuple
    sidecar: bool
    names: frozenset                 # JSON names of all the rules' fields
    addenda: tuple                   # sidecar keys that can change a level
    missing: dict = field(default_factory=dict)   # (present, addenda values) -> [(code, level, name, message, rule id)]
    checks: dict = field(default_factory=dict)    # present -> [(schema key, JSON name, rule id)]
    errors: dict = field(default_factory=dict)    # (present, checked values) -> [(check index, messages)]


def _field_group(rules: tuple, prepared: PreparedSchema) -> _FieldGroup:
    group = prepared.field_groups.get(rules)
    if group is None:
        plans = tuple(_field_plan(rule, prepared) for rule in rules)
        group = prepared.field_groups[rules] = _FieldGroup(
            rules, plans, rules[0].is_sidecar, frozenset().union(*(p.names for p in plans)),
            tuple(sorted({a for p in plans for a in p.addenda})))
    return group


def eval_fields(rules: tuple, ctx: FileContext, prepared: PreparedSchema) -> None:
    """Missing and invalid metadata for the ``fields`` rules of one file (in rule order).

    A sidecar field is validated by the first rule naming it, and its errors are reported once per
    sidecar that holds it: an inherited sidecar's error once, not once per file or per rule.
    Files whose checked values are all equal share one verdict.
    """
    group = _field_group(rules, prepared)
    if group.sidecar and ctx.extension in NO_SIDECAR_EXTENSIONS:
        return
    data = ctx.sidecar if group.sidecar else ctx.json
    present = group.names.intersection(data)
    path = ctx.path
    key = (present, tuple(freeze(ctx.sidecar.get(n)) for n in group.addenda)) if group.addenda else present
    missing = group.missing.get(key)
    if missing is None:
        missing = [(*found, rule.rule_id) for rule, plan in zip(group.rules, group.plans)
                   for found in _missing_issues(rule, plan, present, ctx)]
        if len(group.missing) < 4096:
            group.missing[key] = missing
    ctx.ds.issues.extend(Issue(code, level, path, message, name, None, rule_id)
                         for code, level, name, message, rule_id in missing)
    checks = group.checks.get(present)
    if checks is None:
        checks, seen = [], set()
        for rule, plan in zip(group.rules, group.plans):
            for schema_key, name, _ in plan.fields:
                if name in present and not (group.sidecar and name in seen):
                    checks.append((schema_key, name, rule.rule_id))
                    seen.add(name)
        if len(group.checks) < 4096:
            group.checks[present] = checks
    values = tuple(map(data.__getitem__, [name for _, name, _ in checks]))
    key = (present, values_key(values))
    errors = group.errors.get(key)
    if errors is None:
        errors = [(n, found) for n, ((schema_key, _, _), value) in enumerate(zip(checks, values))
                  if (found := prepared.metadata_errors(schema_key, value))]
        if len(group.errors) < 4096:
            group.errors[key] = errors
    validated = ctx.ds.validated_keys   # sidecar path -> names whose errors were reported there
    for n, messages in errors:
        schema_key, name, rule_id = checks[n]
        location = ctx.origin_of(name) if group.sidecar else path
        done = validated.get(location) if group.sidecar and location else None
        if done is not None and name in done:
            continue
        for message in messages:
            ctx.ds.issues.append(make("JSON_SCHEMA_VALIDATION_ERROR", location, f"{name}: {message}.", key=name,
                                      rule_id=rule_id))
        if group.sidecar and location:
            if done is None:
                done = validated[location] = set()
            done.add(name)


def eval_columns(rule, ctx: FileContext, prepared: PreparedSchema) -> None:
    """A table's columns against a ``columns`` rule, as the reference validator's ``evalColumns``:
    required columns present, extra columns allowed and defined, each column's values fitting its
    signature (:mod:`qmrbids.validate.tables`), then the initial and index columns."""
    spec = rule.spec
    if not ctx.extension.startswith(".tsv") or not spec.get("columns"):
        return
    objects = prepared.schema["objects"]["columns"]
    issues = ctx.ds.issues
    by_name = {objects[key]["name"]: key for key in spec["columns"]}
    for name in dict.fromkeys([*by_name, *(h for h in ctx.columns if h not in by_name)]):
        key = by_name.get(name)
        definition = ctx.sidecar.get(name)
        if key is None:
            requirement = spec.get("additional_columns") or "n/a"
            if requirement == "not_allowed" or not truthy(definition):
                code = {"not_allowed": "TSV_ADDITIONAL_COLUMNS_NOT_ALLOWED",
                        "allowed_if_defined": "TSV_ADDITIONAL_COLUMNS_MUST_DEFINE"}.get(
                    requirement, "TSV_ADDITIONAL_COLUMNS_UNDEFINED")
                issues.append(make(code, ctx.path, f"Column {name}.", key=name, rule_id=rule.rule_id))
                continue
            signature = tables.definition_signature(definition)
        else:
            requirement = spec["columns"][key]
            level = requirement if isinstance(requirement, str) else requirement.get("level")
            if name not in ctx.columns:
                if level == "required" and key not in (spec.get("initial_columns") or ()):
                    issues.append(make("TSV_COLUMN_MISSING", ctx.path, f"Column {name} is required.", key=name,
                                       rule_id=rule.rule_id))
                continue
            try:
                signature = tables.column_signature(objects[key], definition)
            except tables.Redefined as error:
                issues.append(make("TSV_COLUMN_TYPE_REDEFINED", ctx.origin_of(name) or ctx.path, f"{name}: {error}", key=name,
                                   rule_id=rule.rule_id))
                signature = tables.schema_signature(objects[key])
        if tables.trivial(signature):
            continue
        accepts = tables.compile_signature(signature, prepared.schema["objects"]["formats"]).accepts
        aged = False
        for row, value in enumerate(ctx.columns[name], start=2):
            if accepts(value):
                continue
            if name == "age" and value == "89+":
                if not aged:
                    aged = True
                    issues.append(make("TSV_PSEUDO_AGE_DEPRECATED", ctx.path, f"Row {row}.", key=name, row=row,
                                       rule_id=rule.rule_id))
                continue
            hint = ", did you mean 'n/a'?" if re.fullmatch(r"\s*(NA|na|nan|NaN|n/a)\s*", value) else ""
            issues.append(make("TSV_VALUE_INCORRECT_TYPE", ctx.path, f"Column {name}, row {row}: {value!r}{hint}.",
                               key=name, row=row, rule_id=rule.rule_id))
            break
    headers = list(ctx.columns)
    if spec.get("initial_columns"):
        for index, key in enumerate(spec["initial_columns"]):
            name = objects[key]["name"]
            if name not in headers:
                issues.append(make("TSV_COLUMN_MISSING", ctx.path, f"Column {index} must be {name}.", key=name,
                                   rule_id=rule.rule_id))
            elif headers.index(name) != index:
                issues.append(make("TSV_COLUMN_ORDER_INCORRECT", ctx.path,
                                   f"{name} must be column {index + 1}, found at {headers.index(name) + 1}.",
                                   key=name, rule_id=rule.rule_id))
    if spec.get("index_columns"):
        names = [objects[k]["name"] for k in spec["index_columns"]]
        for name in names:
            if name not in headers:
                issues.append(make("TSV_COLUMN_MISSING", ctx.path, f"Index column {name} is missing.", key=name,
                                   rule_id=rule.rule_id))
        seen = set()
        first = ctx.columns.get(names[0]) or []
        for i in range(len(first)):
            value = "".join((ctx.columns.get(n) or [""] * len(first))[i] if n in ctx.columns else "" for n in names)
            if value in seen:
                issues.append(make("TSV_INDEX_VALUE_NOT_UNIQUE", ctx.path, f"Row {i + 2}: {value} repeats.",
                                   row=i + 2, rule_id=rule.rule_id))
            seen.add(value)


def apply_rules(ctx: FileContext, prepared: PreparedSchema) -> None:
    issues = ctx.ds.issues
    sidecar_fields, json_fields = [], []
    for rule in prepared.rules.select(ctx, ctx.ds.rule_cache):
        spec = rule.spec
        if "checks" in spec and not rule.checks_pass(ctx, ctx.ds.rule_cache):
            issue = spec.get("issue") or {}
            if issue.get("code") and issue.get("message"):
                issues.append(Issue(issue["code"], issue.get("level", "error"), ctx.path,
                                    " ".join(issue["message"].split()), rule_id=rule.rule_id))
            else:
                issues.append(make("CHECK_ERROR", ctx.path, rule_id=rule.rule_id))
        if "fields" in spec:
            (sidecar_fields if rule.is_sidecar else json_fields).append(rule)
        if "columns" in spec:
            eval_columns(rule, ctx, prepared)
    for rules in (sidecar_fields, json_fields):
        if rules:
            eval_fields(tuple(rules), ctx, prepared)


def load_context(ctx: FileContext, prepared: PreparedSchema, read_headers: bool) -> None:
    """Everything the expressions may read: sidecar, JSON content, table columns, associations, header."""
    ds = ctx.ds
    load_sidecar(ctx)
    if ctx.extension == ".json":
        try:
            ctx.json = ds.reader.json(ctx.file)
        except LoadError as error:
            ds.issues.append(make(error.code, ctx.path, error.detail))
    elif ctx.extension == ".tsv":
        try:
            ctx.columns = ds.reader.tsv(ctx.file)
        except LoadError as error:
            ds.issues.append(make(error.code, ctx.path, error.detail))
    load_associations(ctx, prepared)
    load_gzip_header(ctx)
    if read_headers:
        load_nifti_header(ctx)
    sub = ctx.entities.get("sub")
    if sub:
        ctx.subject = subject_context(ds, sub)


def subject_context(ds: DatasetContext, sub: str) -> dict:
    """``subject`` of the expressions: the subject's session folders and sessions.tsv (built once)."""
    hit = ds.subject_cache.get(sub)
    if hit is None:
        folder = ds.tree.folders.get(f"sub-{sub}")
        sessions: dict = {"ses_dirs": sorted(n for n in (folder.folders if folder else {}) if n.startswith("ses-"))}
        table = folder.files.get(f"sub-{sub}_sessions.tsv") if folder else None
        if table is not None:
            try:
                sessions["session_id"] = ds.reader.tsv(table).get("session_id")
            except LoadError:
                pass
        hit = ds.subject_cache[sub] = {"sessions": sessions}
    return hit


def unused_sidecars(prepared: PreparedSchema, folder: Folder) -> list[Issue]:
    """JSON files no data file inherits from (SIDECAR_WITHOUT_DATAFILE), as upstream."""
    out = []
    for file in folder.files.values():
        if not file.ignored and not file.viewed and file.name.endswith(".json") and file.name not in STANDALONE_JSON:
            out.append(make("SIDECAR_WITHOUT_DATAFILE", file.path))
    for sub in folder.folders.values():
        _, suffix, extension, ents = read_entities(sub.name)
        pseudo = bool(suffix) and bool(ents) and f"{extension}/" in prepared.pseudo_extensions
        if not sub.ignored and not pseudo and sub.path.rstrip("/") not in prepared.opaque_dirs:
            out.extend(unused_sidecars(prepared, sub))
    return out
