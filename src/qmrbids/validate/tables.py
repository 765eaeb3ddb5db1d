"""What a TSV column's values must look like: the schema's column object, refined by the sidecar.

As the reference validator does it (its ``schema/tables``): a column's *signature* is its formats,
pattern, unit, levels and bounds. The schema gives it (``objects.columns``: type/format, pattern,
unit, enum, minimum, maximum), or a column ``definition`` (Format, Units, Levels, Minimum,
Maximum) in the schema or the sidecar. A sidecar may narrow a schema column (fewer levels, tighter
bounds) but not change its type, unit or widen its bounds: that is TSV_COLUMN_TYPE_REDEFINED and
the redefinition is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from qmrbids.validate.expressions import js_number, truthy

_JS_FLOAT = re.compile(r"\s*([+-]?(?:Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))")


@dataclass(frozen=True)
class Signature:
    formats: tuple[str, ...]
    pattern: str | None = None
    units: Any = None
    levels: tuple | None = None
    maximum: Any = None
    minimum: Any = None


class Redefined(Exception):
    """A sidecar definition contradicts the schema's column (TSV_COLUMN_TYPE_REDEFINED)."""


def _object_keys(value) -> tuple:
    """JavaScript's ``Object.keys`` of a JSON value."""
    if isinstance(value, dict):
        return tuple(value)
    if isinstance(value, (list, str)):
        return tuple(str(i) for i in range(len(value)))
    return ()


def _schema_formats(column: dict) -> tuple[str, ...]:
    if column.get("anyOf"):
        return tuple(f for option in column["anyOf"] for f in _schema_formats(option))
    found = column.get("format")
    if found is None:
        found = column.get("type")
    return (found if found is not None else "string",)


def schema_signature(column: dict) -> Signature:
    return Signature(_schema_formats(column), column.get("pattern"), column.get("unit"),
                     tuple(column["enum"]) if isinstance(column.get("enum"), list) else None,
                     column.get("maximum"), column.get("minimum"))


def definition_signature(definition) -> Signature:
    """The signature a column definition (``{"Format", "Units", "Levels", "Minimum", "Maximum"}``) gives."""
    get = definition.get if isinstance(definition, dict) else (lambda _: None)
    fmt = get("Format")
    if fmt is None:
        fmt = "number" if truthy(get("Units")) else "string"
    return Signature((fmt,), None, get("Units"), _object_keys(get("Levels")) if truthy(get("Levels")) else None,
                     get("Maximum"), get("Minimum"))


def _value_type(fmt) -> str:
    return {"integer": "number", "number": "number", "boolean": "boolean"}.get(fmt, "string")


def _first(override, base):
    return base if override is None else override


def refine(base: Signature, override: Signature) -> Signature:
    """``base`` narrowed by a sidecar's ``override``; raises Redefined (with the reason) if it contradicts it."""
    if _value_type(override.formats[0]) not in {_value_type(f) for f in base.formats}:
        raise Redefined(f'Format "{override.formats[0]}" must be {" or ".join(map(str, base.formats))}.')
    levels = _first(override.levels, base.levels)
    if base.levels is not None and override.levels is not None and not all(v in base.levels for v in levels):
        raise Redefined(f"Levels {{{', '.join(override.levels)}}} is not a subset of {{{', '.join(base.levels)}}}.")
    units = _first(override.units, base.units)
    if base.units is not None and units != base.units:
        raise Redefined(f'Unit "{units}" must be "{base.units}".')
    minimum = _first(override.minimum, base.minimum)
    if base.minimum is not None and _less(minimum, base.minimum):
        raise Redefined(f"Minimum {minimum} is less than {base.minimum}.")
    maximum = _first(override.maximum, base.maximum)
    if base.maximum is not None and _less(base.maximum, maximum):
        raise Redefined(f"Maximum {maximum} is greater than {base.maximum}.")
    return Signature(override.formats, base.pattern, units, levels, maximum, minimum)


def column_signature(column: dict, definition) -> Signature:
    """The signature of a schema column given the sidecar's definition of it (None: none; a falsy one,
    as in JavaScript, narrows nothing); may raise Redefined."""
    if "definition" in column:
        return definition_signature(column["definition"] if definition is None else definition)
    base = schema_signature(column)
    return refine(base, definition_signature(definition)) if truthy(definition) else base


def trivial(signature: Signature) -> bool:
    """Every value fits (no levels, no bounds, any string)."""
    return (signature.levels is None and signature.maximum is None and signature.minimum is None
            and ((signature.pattern is None and signature.formats[0] == "string") or signature.pattern == ".*"))


@dataclass(frozen=True)
class CompiledSignature:
    regex: re.Pattern
    levels: tuple | None
    maximum: Any
    minimum: Any

    def accepts(self, value: str) -> bool:
        if value == "n/a":
            return True
        if self.regex.search(value) is None or (self.levels is not None and value not in self.levels):
            return False
        if self.maximum is not None or self.minimum is not None:
            number = js_parse_float(value)
            return ((self.maximum is None or not _less(self.maximum, number))
                    and (self.minimum is None or not _less(number, self.minimum))
                    and number == number)   # NaN fits no bound
        return True


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern:
    return re.compile(f"^{pattern}$")


def compile_signature(signature: Signature, formats: dict) -> CompiledSignature:
    """The value test; a format the schema does not know accepts anything (the reference validator fails there)."""
    pattern = signature.pattern
    if pattern is None:
        pattern = "|".join(formats[f]["pattern"] if isinstance(f, str) and f in formats else ".*"
                           for f in signature.formats)
    return CompiledSignature(_regex(pattern), signature.levels, signature.maximum, signature.minimum)


def js_parse_float(text: str) -> float:
    """JavaScript's ``parseFloat``: the longest numeric prefix, NaN if there is none."""
    m = _JS_FLOAT.match(text)
    if m is None:
        return float("nan")
    token = m.group(1)
    return float(token.replace("Infinity", "inf"))


def _less(a, b) -> bool:
    """JavaScript ``a < b`` for bounds (numbers, or the JSON values a sidecar gives as bounds)."""
    return js_number(a) < js_number(b)
