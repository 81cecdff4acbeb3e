"""Chapter parameters: declared once, in the notebook's ``parameters`` cell.

Each assignment in that cell is annotated with its type and carries its constraints and meaning
in a trailing comment (``constraints: meaning``, or just the meaning)::

    depth: int = 3  # ≥ 1: hidden layers of every network
    widths: list[int] = [64, 256, 1024]  # ≥ 1, len ≥ 3: the width sweep
    activation: str = "relu"  # in {relu, erf}: nonlinearity
    seed: int = 0  # root of every random key

Types: ``int``, ``float``, ``bool``, ``str``, ``list[int]``, ``list[float]``, ``list[str]``
(annotations papermill's own inspector reads too). Constraints (comma-separated, applied to every
element of a list): ``≥ v``, ``> v``, ``≤ v``, ``< v``, ``in {a, b, ...}``, and for lists
``len ≥ k`` / ``len ≤ k``; ``>=`` and ``<=`` are read as well, but papermill's inspector gives
up on a line with a second ``=``, so the chapters write ``≥`` and ``≤``. Floats must be finite. The default itself must satisfy the
declaration.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import json
import math
import operator
import os
import re
from typing import Any

import yaml


class ParameterError(ValueError):
    """A parameter value or declaration is invalid; the message is one line for the user."""


_TYPES = ("int", "float", "bool", "str", "list[int]", "list[float]", "list[str]")
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
PARAMETER_LINE = re.compile(  # one declared parameter: `name: type = value  # rule: meaning`
    r"^(?P<name>[A-Za-z_]\w*)\s*:\s*(?P<type>[\w\[\]]+)\s*=\s*(?P<value>.+?)\s*#\s*(?P<decl>.+)$"
)
_STARTS_CONS = re.compile(r"^\s*(len\b|[<>≤≥]|in\s*\{)")
_UNICODE_OPS = {"≥": ">=", "≤": "<="}
_CONS = re.compile(
    r"^(?P<len>len\s*)?(?P<op>>=|<=|≥|≤|>|<)\s*(?P<num>[-+]?[\d.]+(?:e[-+]?\d+)?)$|^in\s*\{(?P<set>[^}]*)\}$"
)


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: Any
    doc: str
    bounds: tuple[tuple[str, float], ...] = ()
    length: tuple[tuple[str, int], ...] = ()
    choices: tuple[str, ...] | None = None

    def describe(self) -> str:
        parts = [f"{op} {v:g}" for op, v in self.bounds]
        parts += [f"len {op} {v}" for op, v in self.length]
        if self.choices is not None:
            parts.append("in {" + ", ".join(self.choices) + "}")
        return ", ".join(parts)

    def validate(self, value: Any, origin: str = "") -> Any:
        """Check ``value`` against the declaration; return it (ints promoted for floats)."""
        where = f"parameter {self.name!r}{origin}"
        if self.type.startswith("list["):
            if not isinstance(value, list | tuple):
                raise ParameterError(f"{where} must be a {self.type}, got {value!r}")
            value = [self._scalar(v, self.type[5:-1], where) for v in value]
            for op, k in self.length:
                if not _OPS[op](len(value), k):
                    raise ParameterError(f"{where} needs len {op} {k}, got {len(value)} items")
            return value
        return self._scalar(value, self.type, where)

    def _scalar(self, v: Any, typ: str, where: str) -> Any:
        if typ == "bool":
            if not isinstance(v, bool):
                raise ParameterError(f"{where} must be true or false, got {v!r}")
            return v
        if typ == "int":
            if isinstance(v, bool) or not isinstance(v, int):
                raise ParameterError(f"{where} must be an integer, got {v!r}")
        elif typ == "float":
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ParameterError(f"{where} must be a number, got {v!r}")
            v = float(v)
            if not math.isfinite(v):
                raise ParameterError(f"{where} must be finite, got {v!r}")
        elif typ == "str" and not isinstance(v, str):
            raise ParameterError(f"{where} must be a string, got {v!r}")
        for op, bound in self.bounds:
            if not _OPS[op](v, bound):
                raise ParameterError(f"{where} must be {op} {bound:g}, got {v!r}")
        if self.choices is not None and str(v) not in self.choices:
            raise ParameterError(f"{where} must be one of {{{', '.join(self.choices)}}}, got {v!r}")
        return v

    def parse(self, text: str) -> Any:
        """Parse a command-line value (YAML flow syntax: ``3``, ``0.5``, ``[64, 128]``, ``relu``)."""
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise ParameterError(
                f"parameter {self.name!r}: cannot parse {text!r} as a {self.type}"
            ) from None
        if self.type == "str" and not isinstance(value, str) and value is not None:
            value = text
        if self.type == "float" and isinstance(value, str):
            try:
                value = float(value)  # YAML leaves 'nan', 'inf', '1e3' as strings
            except ValueError:
                pass
        return self.validate(value, " (from the command line)")


def parse_declaration(name: str, typ: str, default: Any, decl: str) -> ParamSpec:
    """Build a :class:`ParamSpec` from a type and a comment ``[constraint, ...:] meaning``.

    The text before the first colon is read as constraints when it starts like one (``<``,
    ``>``, ``len``, ``in {``); otherwise the whole comment is the meaning (which may contain
    colons).
    """
    if typ not in _TYPES:
        raise ParameterError(
            f"parameter {name!r}: unknown type {typ!r}; types: {', '.join(_TYPES)}"
        )
    head, sep, doc = decl.partition(":")
    cons = [c.strip() for c in _split_top(head)] if sep and _STARTS_CONS.match(head) else []
    if not cons:
        doc = decl
    if not doc.strip():
        raise ParameterError(f"parameter {name!r}: the comment needs a meaning after the colon")
    bounds, length, choices = [], [], None
    for c in cons:
        m = _CONS.match(c)
        if not m:
            raise ParameterError(f"parameter {name!r}: cannot read constraint {c!r}")
        if m["set"] is not None:
            choices = tuple(s.strip().strip("'\"") for s in m["set"].split(",") if s.strip())
        elif m["len"]:
            length.append((_UNICODE_OPS.get(m["op"], m["op"]), int(float(m["num"]))))
        else:
            bounds.append((_UNICODE_OPS.get(m["op"], m["op"]), float(m["num"])))
    spec = ParamSpec(name, typ, default, doc.strip(), tuple(bounds), tuple(length), choices)
    spec.validate(default, " (its default)")
    return spec


def _split_top(s: str) -> list[str]:
    """Split on commas that are not inside braces."""
    out, depth, cur = [], 0, ""
    for ch in s:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [*out, cur]


def parse_parameters_cell(source: str) -> dict[str, ParamSpec]:
    """Every ``name: type = literal  # declaration`` line of a parameters cell, in order.

    Blank lines and comment-only lines are allowed; any other line is an error, so the cell
    stays the single, declarative place where a chapter's defaults live.
    """
    specs: dict[str, ParamSpec] = {}
    for raw in source.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = PARAMETER_LINE.match(line)
        if not m:
            raise ParameterError(
                f"parameters cell: cannot read {line!r} (need 'name: type = value  # meaning')"
            )
        try:
            default = ast.literal_eval(m["value"])
        except (ValueError, SyntaxError):
            raise ParameterError(
                f"parameters cell: {m['name']!r} default is not a literal"
            ) from None
        if m["name"] in specs:
            raise ParameterError(f"parameters cell: {m['name']!r} declared twice")
        specs[m["name"]] = parse_declaration(m["name"], m["type"], default, m["decl"])
    return specs


def resolve(specs: dict[str, ParamSpec], *layers: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """Defaults overlaid by each ``(origin, values)`` layer in turn, every value validated."""
    values = {name: spec.default for name, spec in specs.items()}
    for origin, layer in layers:
        for name, value in layer.items():
            if name not in specs:
                raise ParameterError(unknown_message(name, specs, origin))
            values[name] = specs[name].validate(value, f" ({origin})")
    return values


def unknown_message(name: str, specs: dict[str, ParamSpec], origin: str = "") -> str:
    close = difflib.get_close_matches(name, list(specs), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    where = f" in {origin}" if origin else ""
    return f"unknown parameter {name!r}{where}{hint}; known: {', '.join(specs)}"


def canonical(values: dict[str, Any]) -> str:
    """Stable JSON of resolved values (for cache keys and provenance)."""
    return json.dumps(values, sort_keys=True, separators=(",", ":"))


# --- cross-parameter rules: "# requires: EXPR | message" and "# memory: EXPR" -------------

_SAFE_FUNCS = {
    "len": len,
    "max": max,
    "min": min,
    "sum": sum,
    "abs": abs,
    "set": set,
    "sorted": sorted,
}
_SAFE_NODES = (
    ast.Expression, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Call, ast.Name,
    ast.Constant, ast.List, ast.Tuple, ast.Subscript, ast.Load, ast.operator, ast.unaryop,
    ast.boolop, ast.cmpop, ast.IfExp,
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Rules:
    """A chapter's cross-parameter constraints and its memory estimate (bytes)."""

    requires: tuple[tuple[str, str], ...] = ()
    memory: str | None = None


def _compile(expr: str, names: set[str]):
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        raise ParameterError(f"parameters cell: cannot parse rule {expr!r}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _SAFE_NODES):
            raise ParameterError(f"parameters cell: rule {expr!r} uses {type(node).__name__}")
        if isinstance(node, ast.Name) and node.id not in names and node.id not in _SAFE_FUNCS:
            raise ParameterError(f"parameters cell: rule {expr!r} names unknown {node.id!r}")
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in _SAFE_FUNCS
        ):
            raise ParameterError(f"parameters cell: rule {expr!r} calls a disallowed function")
    return compile(tree, "<rule>", "eval")


def parse_rules(source: str, names: set[str]) -> Rules:
    """The ``# requires:`` and ``# memory:`` comment lines of a parameters cell, validated."""
    requires, memory = [], None
    for raw in source.splitlines():
        line = raw.strip()
        for tag in ("requires:", "memory:"):
            if line.startswith("#") and line[1:].strip().startswith(tag):
                body = line[1:].strip()[len(tag) :].strip()
                if tag == "requires:":
                    expr, _, msg = body.partition("|")
                    _compile(expr.strip(), names)
                    requires.append((expr.strip(), msg.strip() or expr.strip()))
                else:
                    _compile(body, names)
                    memory = body
    return Rules(tuple(requires), memory)


def _eval(expr: str, values: dict[str, Any]) -> Any:
    code = _compile(expr, set(values))
    return eval(code, {"__builtins__": {}, **_SAFE_FUNCS}, dict(values))  # noqa: S307 - vetted AST


def check_rules(rules: Rules, values: dict[str, Any], available: int | None) -> None:
    """Raise :class:`ParameterError` if a rule fails or the memory estimate exceeds ``available``."""
    for expr, msg in rules.requires:
        if not _eval(expr, values):
            raise ParameterError(f"invalid parameter combination: {msg} (requires {expr})")
    if rules.memory is not None and available is not None:
        need = float(_eval(rules.memory, values))
        if need > available:
            raise ParameterError(
                f"estimated memory {_human(need)} exceeds the {_human(available)} available "
                "(hint: smaller widths or batches, fewer networks, or a machine with more memory "
                "or a GPU; the estimate is the chapter's '# memory:' line)"
            )


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} EB"


def available_memory() -> int | None:
    """Bytes available for a new process (``NTKBOOK_MEMORY_BYTES`` overrides), or None."""
    if os.environ.get("NTKBOOK_MEMORY_BYTES"):
        return int(os.environ["NTKBOOK_MEMORY_BYTES"])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
