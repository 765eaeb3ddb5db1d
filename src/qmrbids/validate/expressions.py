"""The BIDS schema expression language, compiled once into Python closures with JavaScript semantics.

bidsschematools parses an expression into an AST; we turn every AST into a closure
``f(context) -> value`` once, so evaluating a rule for 50,000 files costs a few function calls each.
Semantics follow the official (JavaScript) validator: loose ``==``, JS truthiness, missing keys are
``None``, and any evaluation error makes the whole expression ``None`` (falsy).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from functools import cache, lru_cache
from operator import add, attrgetter, sub
from typing import Any

from bidsschematools import expressions as ast

Evaluator = Callable[[Any], Any]


class EvalError(Exception):
    """Raised inside a compiled expression; the caller turns it into ``None``."""


def truthy(value: Any) -> bool:
    """JavaScript truthiness: empty lists and objects are true, 0/''/None/NaN are false."""
    if value is None or value is False:
        return False
    if isinstance(value, (list, dict)):
        return True
    if isinstance(value, float) and math.isnan(value):
        return False
    return bool(value)


def js_number(value: Any) -> float:
    """A JSON value as a JavaScript number: booleans and numeric strings convert, other values are NaN."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value) if value.strip() else 0.0
        except ValueError:
            return math.nan
    return math.nan


def loose_equal(a: Any, b: Any) -> bool:
    """JavaScript ``==`` for the value types a BIDS context holds."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
        return a is b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return js_number(a) == js_number(b)


def js_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"


@lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def _match(target, pattern):
    if not isinstance(target, str):
        raise EvalError("match() on a non-string")
    return _regex(pattern).search(target) is not None


def _intersects(a, b):
    a = a if isinstance(a, list) else [a]
    b = b if isinstance(b, list) else [b]
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return False
    keys = {repr(x) for x in b}
    found = [x for x in a if repr(x) in keys]
    return found or False


def _numbers(values):
    out = [js_number(v) for v in values]
    return [v for v in out if not math.isnan(v)]


def _min(values):
    if values is None:
        return None
    nums = _numbers(values if isinstance(values, list) else [values])
    return min(nums) if nums else math.inf


def _max(values):
    if values is None:
        return None
    nums = _numbers(values if isinstance(values, list) else [values])
    return max(nums) if nums else -math.inf


def _length(value):
    return len(value) if isinstance(value, (list, str)) else None


def _count(values, item):
    if not isinstance(values, list):
        raise EvalError("count() on a non-list")
    return sum(1 for v in values if type(v) is type(item) and v == item)


def _index(values, item):
    if not isinstance(values, list):
        raise EvalError("index() on a non-list")
    for i, v in enumerate(values):
        if loose_equal(v, item):
            return i
    return None


def _substr(value, start, end):
    if value is None or start is None or end is None:
        return None
    return str(value)[int(start):int(end)]


def _sorted(values, method="auto"):
    if not isinstance(values, list):
        raise EvalError("sorted() on a non-list")
    if method == "numeric":
        return sorted(values, key=js_number)
    if method == "lexical":
        return sorted(values, key=str)
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=repr)


def _allequal(a, b):
    return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(
        x == y for x, y in zip(a, b))


def _unique(values):
    if not isinstance(values, list):
        raise EvalError("unique() on a non-list")
    seen, out = set(), []
    for v in values:
        if repr(v) not in seen:
            seen.add(repr(v))
            out.append(v)
    return out


FUNCTIONS: dict[str, Callable] = {
    "match": _match, "type": js_type, "intersects": _intersects, "length": _length, "count": _count,
    "index": _index, "max": _max, "min": _min, "sorted": _sorted, "substr": _substr,
    "allequal": _allequal, "unique": _unique,
}
CONSTANTS = {"null": None, "true": True, "false": False}


def _property(obj, field):
    if obj is None:
        raise EvalError(f"property {field} of null")
    if isinstance(obj, dict):
        return obj.get(field)
    if field == "length" and isinstance(obj, (list, str)):
        return len(obj)
    getter = getattr(obj, "lookup", None)
    return getter(field) if getter else None


def _element(obj, index):
    if obj is None:
        raise EvalError("index into null")
    if isinstance(obj, (list, str)):
        i = js_number(index)
        if math.isnan(i) or i != int(i) or not 0 <= i < len(obj):
            return None
        return obj[int(i)]
    if isinstance(obj, dict):
        return obj.get(str(index) if not isinstance(index, str) else index)
    return None


def _in(key, container):
    if isinstance(container, dict):
        return str(key) in container if not isinstance(key, str) else key in container
    if isinstance(container, list):
        i = js_number(key)
        return not math.isnan(i) and i == int(i) and 0 <= i < len(container)
    getter = getattr(container, "has", None)
    if getter is not None:
        return getter(key)
    raise EvalError("'in' on a non-object")


def _arith(op, a, b):
    if op == "+":
        if isinstance(a, str) or isinstance(b, str):
            return _js_str(a) + _js_str(b)
        return js_number(a if a is not None else math.nan) + js_number(b if b is not None else math.nan)
    x = js_number(a) if a is not None else math.nan
    y = js_number(b) if b is not None else math.nan
    try:
        if op == "-":
            return x - y
        if op == "*":
            return x * y
        if op == "/":
            return x / y if y else (math.nan if x == 0 or math.isnan(x) else math.copysign(math.inf, x))
        if op == "%":
            return math.fmod(x, y) if y else math.nan
        if op == "**":
            return x ** y
    except (OverflowError, ValueError, ZeroDivisionError):
        return math.nan
    raise EvalError(op)


def _js_str(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    if isinstance(value, list):
        return ",".join(_js_str(v) for v in value)
    return str(value)


def _compare(op, a, b):
    if op == "==":
        return loose_equal(a, b)
    if op == "!=":
        return not loose_equal(a, b)
    if op == "in":
        return _in(a, b)
    if isinstance(a, str) and isinstance(b, str):
        x, y = a, b
    else:
        x = js_number(a) if a is not None else math.nan
        y = js_number(b) if b is not None else math.nan
        if math.isnan(x) or math.isnan(y):
            return False
    return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]


def _literal(token: str) -> str:
    """A quoted string literal, backslashes kept (the official validator doubles them before eval)."""
    return token[1:-1]


def _compile(node) -> Evaluator:
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        value = node
        return lambda ctx: value
    if isinstance(node, str):
        if node[:1] in "\"'":
            value = _literal(node)
            return lambda ctx: value
        if node in CONSTANTS:
            value = CONSTANTS[node]
            return lambda ctx: value
        name = node
        return lambda ctx: ctx.lookup(name)
    if isinstance(node, ast.Property):
        obj, field = _compile(node.name), node.field
        return lambda ctx: _property(obj(ctx), field)
    if isinstance(node, ast.Element):
        obj, index = _compile(node.name), _compile(node.index)
        return lambda ctx: _element(obj(ctx), index(ctx))
    if isinstance(node, ast.Array):
        items = [_compile(e) for e in node.elements]
        return lambda ctx: [item(ctx) for item in items]
    if isinstance(node, ast.Object):
        return lambda ctx: {}
    if isinstance(node, ast.Function):
        args = [_compile(a) for a in node.args]
        if node.name == "exists":
            if len(args) == 2:
                paths, rule = args
                return lambda ctx: ctx.exists(paths(ctx), rule(ctx))
            return lambda ctx: ctx.exists(*[a(ctx) for a in args])
        func = FUNCTIONS.get(node.name)
        if func is None:
            name = node.name

            def unknown(ctx):
                raise EvalError(f"unknown function {name}")
            return unknown
        return _call(func, args)
    if isinstance(node, ast.RightOp):
        rh = _compile(node.rh)
        if node.op == "!":
            return lambda ctx: not truthy(rh(ctx))
        if node.op == "-":
            return lambda ctx: -js_number(rh(ctx))
        raise ValueError(f"unknown unary operator {node.op}")
    if isinstance(node, ast.BinOp):
        lh, rh, op = _compile(node.lh), _compile(node.rh), node.op
        if op == "&&":
            def both(ctx):
                a = lh(ctx)
                return rh(ctx) if truthy(a) else a
            return both
        if op == "||":
            def either(ctx):
                a = lh(ctx)
                return a if truthy(a) else rh(ctx)
            return either
        if op == "==":
            return lambda ctx: loose_equal(lh(ctx), rh(ctx))
        if op == "!=":
            return lambda ctx: not loose_equal(lh(ctx), rh(ctx))
        if op in ("<", "<=", ">", ">=", "in"):
            return lambda ctx: _compare(op, lh(ctx), rh(ctx))
        if op in ("+", "-"):
            plain = add if op == "+" else sub

            def arith(ctx):   # numbers (not booleans) need none of JavaScript's conversions
                a, b = lh(ctx), rh(ctx)
                if (type(a) is int or type(a) is float) and (type(b) is int or type(b) is float):
                    return plain(a, b)
                return _arith(op, a, b)
            return arith
        return lambda ctx: _arith(op, lh(ctx), rh(ctx))
    raise ValueError(f"cannot compile {node!r}")


def _call(func: Callable, args: list[Evaluator]) -> Evaluator:
    """A call of ``func`` on the values of ``args``; the common arities without an argument list."""
    if len(args) == 1:
        (a,) = args
        return lambda ctx: func(a(ctx))
    if len(args) == 2:
        a, b = args
        return lambda ctx: func(a(ctx), b(ctx))
    if len(args) == 3:
        a, b, c = args
        return lambda ctx: func(a(ctx), b(ctx), c(ctx))
    return lambda ctx: func(*[a(ctx) for a in args])


@cache
def parse(source: str):
    """The bidsschematools AST of an expression, parsed once (compiling and memo keys both need it).

    The expressions of the pinned schema and of the qMRI rules come pre-parsed from
    ``validators/bids-expressions.json`` (pyparsing takes 0.3 s for the ~500 of them); any other
    expression, or any other bidsschematools version, is parsed here.
    """
    shipped = _shipped_trees()
    if source in shipped:
        return from_data(shipped[source])
    return ast.parse(source)


PARSED_CACHE = ("validators", "bids-expressions.json")


@cache
def _shipped_trees() -> dict:
    from importlib.metadata import version

    from qmrbids.resources import data_path

    try:
        data = json.loads(data_path(*PARSED_CACHE).read_text())
    except (OSError, ValueError):
        return {}
    return data["expressions"] if data.get("bidsschematools") == version("bidsschematools") else {}


def to_data(node):
    """A JSON form of a bidsschematools AST (lists tagged by node type; strings and numbers as such)."""
    if isinstance(node, (str, int, float)):
        return node
    if isinstance(node, ast.Property):
        return ["Property", to_data(node.name), node.field]
    if isinstance(node, ast.Element):
        return ["Element", to_data(node.name), to_data(node.index)]
    if isinstance(node, ast.Function):
        return ["Function", node.name, [to_data(a) for a in node.args]]
    if isinstance(node, ast.BinOp):
        return ["BinOp", to_data(node.lh), node.op, to_data(node.rh)]
    if isinstance(node, ast.RightOp):
        return ["RightOp", node.op, to_data(node.rh)]
    if isinstance(node, ast.Array):
        return ["Array", [to_data(e) for e in node.elements]]
    if isinstance(node, ast.Object):
        return ["Object"]
    raise ValueError(f"cannot store {node!r}")


def from_data(data):
    """The AST that :func:`to_data` stored."""
    if not isinstance(data, list):
        return data
    kind, *rest = data
    if kind == "Property":
        return ast.Property(from_data(rest[0]), rest[1])
    if kind == "Element":
        return ast.Element(from_data(rest[0]), from_data(rest[1]))
    if kind == "Function":
        return ast.Function(rest[0], [from_data(a) for a in rest[1]])
    if kind == "BinOp":
        return ast.BinOp([from_data(rest[0]), rest[1], from_data(rest[2])])
    if kind == "RightOp":
        return ast.RightOp([rest[0], from_data(rest[1])])
    if kind == "Array":
        return ast.Array([from_data(e) for e in rest[0]])
    return ast.Object([])


def schema_expressions(node) -> set[str]:
    """Every selector and check expression under a schema or rule-file node."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("selectors", "checks") and isinstance(value, list):
                found.update(v for v in value if isinstance(v, str))
            else:
                found |= schema_expressions(value)
    elif isinstance(node, list):
        for value in node:
            found |= schema_expressions(value)
    return found


@cache
def compile_expression(source: str) -> Evaluator:
    """Compile a schema expression once; the result returns ``None`` where JavaScript would throw."""
    tree = parse(source)
    inner = _compile(tree)

    def evaluate(ctx):
        try:
            return inner(ctx)
        except (EvalError, TypeError, ValueError, KeyError, AttributeError, re.error, OverflowError,
                RecursionError):
            return None
    evaluate.source = source
    evaluate.names = _names(tree)
    return evaluate


def _names(node) -> frozenset[str]:
    """Top-level context names an expression reads (to decide which rules can be pre-selected)."""
    found: set[str] = set()

    def walk(n):
        if isinstance(n, str):
            if n[:1] not in "\"'" and n not in CONSTANTS:
                found.add(n)
        elif isinstance(n, ast.Property):
            walk(n.name)
        elif isinstance(n, ast.Element):
            walk(n.name)
            walk(n.index)
        elif isinstance(n, ast.Array):
            for e in n.elements:
                walk(e)
        elif isinstance(n, ast.Function):
            if n.name == "exists":
                found.add("exists()")
            for a in n.args:
                walk(a)
        elif isinstance(n, ast.RightOp):
            walk(n.rh)
        elif isinstance(n, ast.BinOp):
            walk(n.lh)
            walk(n.rh)
    walk(node)
    return frozenset(found)


# ---------------------------------------------------------------- memoisation of selectors

# Roots whose first-level properties a memo key may read; the second set may also be read whole.
_FIELD_ROOTS = frozenset({"sidecar", "json", "associations", "nifti_header", "gzip", "columns", "subject", "entities"})
_WHOLE_ROOTS = frozenset({"nifti_header", "gzip", "associations", "subject", "entities", "suffix", "extension", "datatype",
                          "modality", "path", "size"})
_PER_DATASET = frozenset({"dataset", "schema"})


class _NotMemoisable(Exception):
    pass


def freeze(value):
    """A hashable stand-in for a JSON value that keeps JavaScript's type distinctions (1 vs true)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", value)
    if isinstance(value, list):
        return ("l", tuple(freeze(v) for v in value))
    if isinstance(value, dict):
        return ("d", tuple(sorted((k, freeze(v)) for k, v in value.items())))
    return ("o", id(value))


def values_key(values: tuple) -> tuple:
    """A hashable key for JSON values that keeps 1, 1.0 and true apart (their Python classes do);
    only lists and objects among them are frozen."""
    types = tuple(map(type, values))
    try:
        hash(values)
        return values, types
    except TypeError:
        return tuple([freeze(v) if type(v) is list or type(v) is dict else v for v in values]), types


def _accessors(node, out: set) -> None:
    if isinstance(node, (int, float)):
        return
    if isinstance(node, str):
        if node[:1] in "\"'" or node in CONSTANTS or node in _PER_DATASET:
            return
        if node in _WHOLE_ROOTS:
            out.add(("whole", node, None))
            return
        raise _NotMemoisable(node)
    if isinstance(node, ast.Property):
        if isinstance(node.name, str) and node.name in _FIELD_ROOTS:
            out.add(("field", node.name, node.field))
        else:
            _accessors(node.name, out)
        return
    if isinstance(node, ast.BinOp):
        if (node.op == "in" and isinstance(node.rh, str) and node.rh in _FIELD_ROOTS
                and isinstance(node.lh, str) and node.lh[:1] in "\"'"):
            out.add(("has", node.rh, node.lh[1:-1]))
            return
        _accessors(node.lh, out)
        _accessors(node.rh, out)
        return
    if isinstance(node, ast.Function):
        if node.name == "exists":
            raise _NotMemoisable("exists()")
        if (node.name == "type" and len(node.args) == 1 and isinstance(node.args[0], ast.Property)
                and isinstance(node.args[0].name, str) and node.args[0].name in _FIELD_ROOTS):
            out.add(("type", node.args[0].name, node.args[0].field))   # only the value's type matters
            return
        for arg in node.args:
            _accessors(arg, out)
        return
    if isinstance(node, ast.Element):
        _accessors(node.name, out)
        _accessors(node.index, out)
        return
    if isinstance(node, ast.Array):
        for e in node.elements:
            _accessors(e, out)
        return
    if isinstance(node, ast.RightOp):
        _accessors(node.rh, out)
        return
    raise _NotMemoisable(repr(node))


def accessors(source: str) -> tuple | None:
    """The context values an expression can read, as (kind, root, name) triples; None if unbounded.

    E.g. ``sidecar.EchoTime > 1`` reads only ``("field", "sidecar", "EchoTime")``, and
    ``type(json.QmrbidsProvenance) != "null"`` only the type of that value, ``("type", "json", ...)``.
    Equal values of these give equal results within one dataset, so results can be memoised.
    """
    found: set = set()
    try:
        _accessors(parse(source), found)
    except _NotMemoisable:
        return None
    return tuple(sorted(found, key=repr))


def key_function(reads: tuple):
    """``f(ctx) -> hashable`` holding the values ``reads`` (from :func:`accessors`) name."""
    wholes = [root for kind, root, _ in reads if kind == "whole"]
    by_root: dict[str, tuple[list, list, list]] = {}
    for kind, root, name in reads:
        if kind != "whole":
            by_root.setdefault(root, ([], [], []))[{"field": 0, "has": 1, "type": 2}[kind]].append(name)
    groups = [(attrgetter(root), tuple(fields), tuple(present), tuple(typed))
              for root, (fields, present, typed) in sorted(by_root.items())]
    whole_getters = [attrgetter(root) for root in wholes]

    def key(ctx):   # ctx: a file context; every root read here is one of its attributes
        out = [freeze(get(ctx)) for get in whole_getters]
        for get, fields, present, typed in groups:
            value = get(ctx)
            if isinstance(value, dict):
                if fields:
                    out.append(values_key(tuple(map(value.get, fields))))
                if present:
                    out.append(tuple(map(value.__contains__, present)))
                if typed:   # the Python class decides the JavaScript type
                    out.append(tuple(map(type, map(value.get, typed))))
            else:
                out.append(("x", freeze(value)))
        return tuple(out)
    return key
