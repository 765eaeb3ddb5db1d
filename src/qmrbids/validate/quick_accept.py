"""Quick acceptance of JSON values by simple JSON Schemas, before jsonschema is asked.

Every converted sidecar holds values no other file has (the NIfTI hash, the series HMAC); each
would cost a jsonschema pass (~4 us) that finds nothing. A schema made only of ``type``,
``pattern``, ``enum`` and numeric bounds becomes a test that is true only for values the schema
accepts. A false answer means "ask jsonschema", which alone decides and words the errors.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

_TYPES: dict[str, Callable[[Any], bool]] = {   # JSON Schema types as jsonschema reads Python values
    "null": lambda v: v is None,
    "boolean": lambda v: v is True or v is False,
    "string": lambda v: type(v) is str,
    "integer": lambda v: type(v) is int or (type(v) is float and v.is_integer()),
    "number": lambda v: type(v) is int or type(v) is float,
    "array": lambda v: type(v) is list,
    "object": lambda v: type(v) is dict,
}
_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "examples", "default",
                          "deprecated", "readOnly", "writeOnly"})
_BOUNDS = {"minimum": operator.ge, "maximum": operator.le, "exclusiveMinimum": operator.gt,
           "exclusiveMaximum": operator.lt}


def acceptor(schema: Any, format_asserts: bool, ignored: frozenset = frozenset()) -> Callable[[Any], bool] | None:
    """A test true only for values ``schema`` accepts, or None if the schema uses other keywords.

    ``format_asserts``: whether the validator checks ``format`` (then a schema with it has no test).
    ``ignored``: further keys the schema may hold that are not JSON Schema (``unit``, ...).
    """
    if not isinstance(schema, dict) or "type" not in schema:
        return None
    allowed = _ANNOTATIONS | ignored | {"type", "pattern", "enum", *_BOUNDS} | (set() if format_asserts else {"format"})
    if set(schema) - allowed:
        return None
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if not all(isinstance(t, str) and t in _TYPES for t in types):
        return None
    tests = [_TYPES[types[0]] if len(types) == 1 else (lambda v, ts=[_TYPES[t] for t in types]: any(t(v) for t in ts))]
    if "pattern" in schema:
        try:
            search = re.compile(schema["pattern"]).search
        except (re.error, TypeError):
            return None
        tests.append(lambda v: type(v) is not str or search(v) is not None)
    if "enum" in schema:   # only strings are compared here; other values go to jsonschema's equality
        if not isinstance(schema["enum"], list):
            return None
        strings = frozenset(e for e in schema["enum"] if type(e) is str)
        tests.append(lambda v: type(v) is str and v in strings)
    for keyword, holds in _BOUNDS.items():   # bounds apply to numbers only (not to booleans)
        if keyword in schema:
            bound = schema[keyword]
            if type(bound) not in (int, float):
                return None
            tests.append(lambda v, holds=holds, bound=bound: (type(v) is not int and type(v) is not float)
                         or holds(v, bound))
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:   # type and one more keyword: the common case, without a generator
        first, second = tests
        return lambda v: first(v) and second(v)
    return lambda v: all(t(v) for t in tests)
