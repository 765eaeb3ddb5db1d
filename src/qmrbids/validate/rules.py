"""Selector/check rules compiled once and selected per file without per-file Python overhead.

A rule's selectors are split three ways when it is compiled:

* static: read only the file's kind (suffix, extension, datatype, modality, entities, the dataset);
  evaluated once per kind of file;
* memoisable: read a bounded set of values (``sidecar.IntendedFor``, ``"X" in json``, the NIfTI
  header, ...); all such selectors of a kind are decided together, once per distinct tuple of
  those values (VFA files with the same sidecar values share one decision);
* per file: everything else (``exists()``, the file's own path), evaluated for each file.

Official BIDS rules and the qMRI extension's file rules both go through this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from qmrbids.validate.context import NOT_FIXED, fixed_value
from qmrbids.validate.expressions import accessors, compile_expression, key_function, truthy

# Names whose value can differ between files of one kind (everything else depends only on the kind).
PER_FILE_NAMES = frozenset({"path", "size", "sidecar", "associations", "columns", "json", "nifti_header", "gzip",
                            "subject", "exists()"})
_PATH_SELECTOR = re.compile(r"""^\s*path\s*==\s*(["'])([^"']*)\1\s*$""")
_PATH_MATCH = re.compile(r"""^\s*match\(\s*path\s*,\s*(["'])([^"'\\]*)\1\s*\)\s*$""")
_ENTITY_READ = re.compile(r"entities\.(\w+)")


@dataclass(eq=False)
class Rule:
    """One rule with selectors; ``spec`` is the rule as written (fields, columns, issue, ...)."""

    rule_id: str
    spec: dict
    static: list = field(default_factory=list)      # compiled, read only the kind of file
    memoised: list = field(default_factory=list)    # compiled, decided per tuple of values read
    per_file: list = field(default_factory=list)    # compiled, evaluated for every file
    path: str | None = None                         # the rule applies to this one path only
    path_pattern: re.Pattern | None = None          # ... or to paths this regex finds a match in
    is_sidecar: bool = False
    check_key: object = None                        # memo key of the checks, None if not memoisable
    _checks: list | None = None

    @property
    def checks(self) -> list:
        """Compiled checks; compiled on first use (most rules never apply to a given dataset)."""
        if self._checks is None:
            self._checks = [compile_expression(c) for c in self.spec.get("checks", [])]
        return self._checks

    @classmethod
    def compile(cls, rule_id: str, spec: dict) -> "Rule":
        rule = cls(rule_id, spec, is_sidecar=rule_id.startswith("rules.sidecars"))
        for source in spec.get("selectors", []):
            literal = _PATH_SELECTOR.match(source)
            if literal:
                rule.path = literal.group(2)
                continue
            pattern = _PATH_MATCH.match(source)
            if pattern and rule.path_pattern is None:
                rule.path_pattern = re.compile(pattern.group(2))
                continue
            compiled = compile_expression(source)
            if not (compiled.names & PER_FILE_NAMES):
                rule.static.append(compiled)
                continue
            found = accessors(source)
            if found is None or any(kind == "whole" and root in ("path", "size") for kind, root, _ in found):
                rule.per_file.append(compiled)
            else:
                compiled.reads = found
                rule.memoised.append(compiled)
        check_reads: set = set()
        for source in spec.get("checks", []):
            found = accessors(source)
            if found is None or any(kind == "whole" and root in ("path", "size") for kind, root, _ in found):
                break
            check_reads.update(found)
        else:
            if spec.get("checks"):
                rule.check_key = key_function(tuple(sorted(check_reads, key=repr)))
        return rule

    def checks_pass(self, ctx, cache: dict) -> bool:
        """Whether every check holds; memoised like the selectors when the checks allow it."""
        if self.check_key is None:
            return all(truthy(c(ctx)) for c in self.checks)
        memo = cache.get(self)
        if memo is None:
            memo = cache[self] = {}
        key = self.check_key(ctx)
        hit = memo.get(key)
        if hit is None:
            hit = all(truthy(c(ctx)) for c in self.checks)
            if len(memo) < RuleSet.MAX_DECISIONS:
                memo[key] = hit
        return hit


@dataclass(eq=False)
class _Plan:
    """The rules of one kind of file: those left after static selectors, and how to decide the rest.

    ``memoised`` holds (rule, selectors still to evaluate) pairs. Rules evaluated per file are
    listed per path they may apply to: ``per_file_at`` for the paths some of them are bound to,
    ``per_file_elsewhere`` for every other path (both in rule order).
    """

    unconditional: list
    memoised: list
    per_file_at: dict
    per_file_elsewhere: list
    key: object
    decisions: dict = field(default_factory=dict)   # key -> (rules chosen so far, any bound to a path)


class _Unknown(Exception):
    """A selector needed a per-file value while being decided for a whole kind of file."""


def _decide(selectors: list, probe) -> tuple[bool, list]:
    """(may hold, selectors left): selectors that do not touch per-file values are settled now."""
    left = []
    for selector in selectors:
        try:
            value = selector(probe)
        except _Unknown:
            left.append(selector)
            continue
        if not truthy(value):
            return False, []
    return True, left


class RuleSet:
    """An ordered list of rules plus the per-dataset caches that make selecting them cheap."""

    MAX_DECISIONS = 20000

    def __init__(self, rules: list[Rule]):
        self.rules = rules
        self.entity_values_read = frozenset(
            name for r in rules for s in r.spec.get("selectors", []) for name in _ENTITY_READ.findall(s))

    def kind(self, ctx) -> tuple:
        ents = ctx.entities
        return (ctx.suffix, ctx.extension, ctx.datatype, ctx.modality,
                tuple((k, v if k in self.entity_values_read else "") for k, v in ents.items()))

    def _plan(self, ctx, cache: dict) -> _Plan:
        kind = self.kind(ctx)
        plan = cache.get((self, kind))
        if plan is None:
            probe = _KindOnly(ctx)
            unconditional, memoised, per_file = [], [], []
            for rule in self.rules:
                if not all(truthy(s(probe)) for s in rule.static):
                    continue
                holds, memo_left = _decide(rule.memoised, probe)
                holds, file_left = _decide(rule.per_file, probe) if holds else (False, [])
                if not holds:
                    continue
                if file_left or rule.path_pattern is not None:
                    per_file.append((rule, memo_left + file_left))
                elif memo_left:
                    memoised.append((rule, memo_left))
                else:
                    unconditional.append(rule)
            extension = ctx.extension
            reads = tuple(sorted({a for _, left in memoised for s in left for a in s.reads
                                  if fixed_value(a[1], extension) is NOT_FIXED}, key=repr))
            paths = {r.path for r, _ in per_file if r.path is not None}
            plan = _Plan(unconditional, memoised,
                         {p: [(r, left) for r, left in per_file if r.path in (None, p)] for p in paths},
                         [(r, left) for r, left in per_file if r.path is None], key_function(reads))
            cache[(self, kind)] = plan
        return plan

    def select(self, ctx, cache: dict) -> list[Rule]:
        """The rules whose selectors all hold for ``ctx``, in rule-set order within unconditional,
        memoised and per-file rules (``cache`` lives as long as the dataset). Do not modify the list:
        files deciding alike share it."""
        plan = self._plan(ctx, cache)
        key = plan.key(ctx) if plan.memoised else None
        decided = plan.decisions.get(key)
        if decided is None:
            chosen = [*plan.unconditional, *(r for r, left in plan.memoised if all(truthy(s(ctx)) for s in left))]
            decided = (chosen, any(r.path is not None for r in chosen))
            if len(plan.decisions) < self.MAX_DECISIONS:
                plan.decisions[key] = decided
        chosen, bound = decided
        path = ctx.path
        if bound:
            chosen = [r for r in chosen if r.path is None or r.path == path]
        per_file = plan.per_file_at.get(path, plan.per_file_elsewhere)
        if per_file:
            more = [r for r, left in per_file if (r.path_pattern is None or r.path_pattern.search(path))
                    and all(truthy(s(ctx)) for s in left)]
            if more:
                chosen = [*chosen, *more]
        return chosen


class _KindOnly:
    """A file context restricted to what static selectors may read."""

    __slots__ = ("ctx",)

    def __init__(self, ctx):
        self.ctx = ctx

    def lookup(self, name):
        if name in PER_FILE_NAMES:
            value = fixed_value(name, self.ctx.extension)
            if value is NOT_FIXED:
                raise _Unknown(name)
            return value
        return self.ctx.lookup(name)

    def exists(self, *args):
        raise _Unknown("exists()")
