"""Read plan YAML safely into plain Python data plus the line and column of every key and value.

The YAML is composed (not constructed) with ``ruamel.yaml`` and turned into plain ``dict``/``list``/scalar
data here, so that:

- every mapping key and every value keeps its 1-based line and column (:class:`SourceMap`);
- no tag is ever honoured: ``!foo`` or ``!!python/object`` is a located error, so nothing but plain data
  can come out of a plan;
- duplicate keys, several documents, a non-mapping top level and syntax errors are located errors;
- the work is bounded: the text size, the nesting depth (checked before the YAML parser runs, whose flow
  scanner is quadratic in the nesting depth) and the number of values after expanding aliases (billion
  laughs) are capped, and alias cycles are refused.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from migrator.errors import Location, PlanError, Problem

MAX_PLAN_BYTES = 48 * 1024
MAX_DEPTH = 32
MAX_VALUES = 20_000
MAX_TOKENS = 6_000

PathKey = tuple[str | int, ...]
_SIMPLE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

_TAG = "tag:yaml.org,2002:"
_PLAIN_TAGS = {f"{_TAG}{t}" for t in ("str", "int", "float", "bool", "null", "timestamp", "binary")}


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


@dataclass
class SourceMap:
    """Positions of the keys and values of a plan, by path (``("spec", "stages", 0, "name")``)."""

    file: str
    keys: dict[PathKey, Position] = field(default_factory=dict)
    values: dict[PathKey, Position] = field(default_factory=dict)

    def value(self, path: PathKey) -> Location:
        """Where the value at ``path`` starts, or the closest enclosing value."""
        return self._find(path, prefer_key=False)

    def key(self, path: PathKey) -> Location:
        """Where the key of ``path`` is, or the closest enclosing value."""
        return self._find(path, prefer_key=True)

    def _find(self, path: PathKey, *, prefer_key: bool) -> Location:
        probe = path
        while True:
            table = (self.keys, self.values) if prefer_key else (self.values, self.keys)
            for tab in table:
                pos = tab.get(probe)
                if pos is not None:
                    return Location(self.file, pos.line, pos.column)
            if not probe:
                return Location(self.file, 1, 1)
            probe = probe[:-1]


def problem_at(location: Location, path: str, message: str) -> PlanError:
    return PlanError(message, [Problem(location, path, message)])


def format_path(path: PathKey) -> str:
    """``("spec", "stages", 1, "steps", 0, "timeout")`` -> ``stages[1].steps[0].timeout``.

    The ``spec.`` prefix is dropped: every field of a plan lives under ``spec`` except ``apiVersion``,
    ``kind``, ``metadata`` and ``spec`` itself, and none of those names is also a field of ``spec``.
    """
    items: list[str | int] = list(path)
    if len(items) > 1 and items[0] == "spec":
        items = items[1:]
    out = ""
    for item in items:
        if isinstance(item, int):
            out += f"[{item}]"
        elif not _SIMPLE_KEY.match(item):
            out += f"[{json.dumps(item, ensure_ascii=False)}]"
        else:
            out += f".{item}" if out else item
    return out


# ------------------------------------------------------------------------------------------ pre-scan


def _prescan(text: str, file: str) -> None:
    """Refuse what would make the pure-Python YAML parser slow, before it sees the text.

    - flow collections nested deeper than MAX_DEPTH (its scanner is quadratic in the flow depth);
    - more than MAX_TOKENS tokens (words, quoted strings and flow indicators outside comments): the
      parser costs tens of microseconds a token, so this bounds the load time whatever the layout.

    Conservative: brackets inside double-quoted strings, single-quoted strings that start a token and
    comments are skipped; anything else counts.
    """
    scan = _Prescan(file)
    for char in text:
        scan.feed(char)


class _Prescan:
    """The scanner of :func:`_prescan`: one handler per lexical state (plain text, a comment, a double-
    or a single-quoted string), fed one character at a time. A quoted scalar may span lines: a line
    break ends a comment only."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.depth = 0
        self.tokens = 0
        self.line, self.column = 1, 0
        self.escaped = False  # the previous character of a double-quoted string was a backslash
        self.prev = "\n"
        self.state: Callable[[str], None] = self.plain

    def feed(self, char: str) -> None:
        self.column += 1
        self.state(char)
        if char == "\n":
            self.line, self.column = self.line + 1, 0
        self.prev = char

    def fail(self, message: str) -> PlanError:
        return problem_at(Location(self.file, self.line, self.column), "", message)

    def plain(self, char: str) -> None:
        prev = self.prev
        if char in "[]{},\"'" or (char not in " \t\r\n" and prev in " \t\r\n[]{},"):
            self.tokens += 1
            if self.tokens > MAX_TOKENS:
                raise self.fail(f"the plan is too large (more than {MAX_TOKENS} YAML tokens)")
        if char == "#" and prev in " \t\n":
            self.state = self.comment
        elif char == '"':
            self.state = self.double
        elif char == "'" and prev in " \t\n[{,:-":
            self.state = self.single
        elif char in "[{":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(f"the document is nested deeper than {MAX_DEPTH} levels")
        elif char in "]}":
            self.depth = max(0, self.depth - 1)

    def comment(self, char: str) -> None:
        if char == "\n":
            self.state = self.plain

    def double(self, char: str) -> None:
        if char == "\n":  # a line break neither ends the string nor consumes a pending escape
            return
        if self.escaped:
            self.escaped = False
        elif char == "\\":
            self.escaped = True
        elif char == '"':
            self.state = self.plain

    def single(self, char: str) -> None:
        if char == "'":
            self.state = self.plain


# ---------------------------------------------------------------------------------------- conversion


def _pos(node: Node) -> Position:
    mark = node.start_mark
    return Position(mark.line + 1, mark.column + 1)


def _tag(node: Node) -> str:
    tag = node.tag
    value = getattr(tag, "value", tag)
    return str(value) if value is not None else ""


def _shown(tag: str) -> str:
    return tag.replace(_TAG, "!!")


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.smap = SourceMap(file)
        self.count = 0
        self.active: set[int] = set()
        self.scalar_yaml = YAML(typ="safe", pure=True)
        self.constructor = self.scalar_yaml.constructor

    def fail(self, node: Node, path: PathKey, message: str) -> PlanError:
        pos = _pos(node)
        return problem_at(Location(self.file, pos.line, pos.column), format_path(path), message)

    def build(self, node: Node, path: PathKey) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise self.fail(
                node, path, f"the document has more than {MAX_VALUES} values (after expanding aliases)"
            )
        if len(path) > MAX_DEPTH:
            raise self.fail(node, path, f"the document is nested deeper than {MAX_DEPTH} levels")
        self.smap.values.setdefault(path, _pos(node))
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.active:
            raise self.fail(node, path, "an alias refers to a value that contains it (a cycle)")
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                self.check_tag(node, path, f"{_TAG}seq")
                return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                self.check_tag(node, path, f"{_TAG}map")
                return self.mapping(node, path)
            raise self.fail(node, path, "unsupported YAML node")
        finally:
            self.active.discard(id(node))

    def check_tag(self, node: Node, path: PathKey, expected: str) -> None:
        tag = _tag(node)
        if tag and tag != expected:
            raise self.fail(node, path, f"YAML tag {_shown(tag)!r} is not allowed in a plan")

    def scalar(self, node: ScalarNode, path: PathKey) -> Any:
        tag = _tag(node)
        if tag not in _PLAIN_TAGS:
            raise self.fail(node, path, f"YAML tag {_shown(tag)!r} is not allowed in a plan")
        text: str = node.value
        if tag in (f"{_TAG}str", f"{_TAG}timestamp"):
            return text
        if tag == f"{_TAG}binary":
            try:
                return base64.b64decode(text, validate=False).decode("utf-8", "replace")
            except ValueError:
                raise self.fail(node, path, "invalid !!binary value") from None
        if len(text) > 100:
            raise self.fail(node, path, "number is too long")
        try:
            value = self.constructor.construct_object(node, deep=False)
        except (YAMLError, ValueError, OverflowError):
            raise self.fail(node, path, f"invalid {_shown(tag)} value {text!r}") from None
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            if math.isnan(value) or math.isinf(value):
                raise self.fail(node, path, f"expected a finite number, got {text!r}")
            return float(value)
        return text

    def key_text(self, node: Node, path: PathKey) -> str:
        if not isinstance(node, ScalarNode):
            raise self.fail(node, path, "mapping keys must be plain scalars, not lists or mappings")
        tag = _tag(node)
        if tag not in _PLAIN_TAGS:
            raise self.fail(node, path, f"YAML tag {_shown(tag)!r} is not allowed in a plan")
        self.count += 1
        return str(node.value)

    def mapping(self, node: MappingNode, path: PathKey) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first: dict[str, Position] = {}
        merges: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if _tag(key_node) == f"{_TAG}merge":
                merges.append((key_node, value_node))
                continue
            key = self.key_text(key_node, path)
            if key in first:
                line = first[key].line
                raise self.fail(key_node, (*path, key), f"duplicate key {key!r} (first given on line {line})")
            first[key] = _pos(key_node)
            self.smap.keys[(*path, key)] = _pos(key_node)
            if (
                isinstance(value_node, ScalarNode)
                and not value_node.value
                and _tag(value_node) == f"{_TAG}null"
            ):
                # an empty value ("key:") has no position of its own: point at its key
                self.smap.values[(*path, key)] = _pos(key_node)
            result[key] = self.build(value_node, (*path, key))
        # merge keys (<<: *base): explicit keys win, earlier merges win over later ones
        for key_node, value_node in merges:
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                self.merge(result, key_node, source, path)
        return result

    def merge(self, result: dict[str, Any], key_node: Node, source: Node, path: PathKey) -> None:
        """Add the keys of the mapping ``source`` (merged by ``key_node``) that ``result`` lacks; their
        positions are those in ``source``, under ``path``."""
        if not isinstance(source, MappingNode):
            raise self.fail(key_node, path, "a merge key (<<) needs a mapping or a list of mappings")
        outer, self.smap = self.smap, SourceMap(self.file)
        try:
            merged = self.build(source, path)
        finally:
            inner, self.smap = self.smap, outer
        for key, value in merged.items():
            if key in result:
                continue
            result[key] = value
            prefix = (*path, key)
            self.smap.keys.setdefault(prefix, _pos(key_node))
            for table, target in ((inner.keys, self.smap.keys), (inner.values, self.smap.values)):
                for sub, pos in table.items():
                    if sub[: len(prefix)] == prefix:
                        target.setdefault(sub, pos)


def read_yaml(text: str, file: str) -> tuple[dict[str, Any], SourceMap]:
    """Parse one YAML document that must be a mapping; raise :class:`PlanError` with a location."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_PLAN_BYTES:
        raise problem_at(
            Location(file, 1, 1), "", f"the plan is too large ({size} bytes, at most {MAX_PLAN_BYTES})"
        )
    if not text.strip():
        raise problem_at(
            Location(file, 1, 1),
            "",
            "the plan is empty; expected a mapping with apiVersion, kind, metadata and spec",
        )
    _prescan(text, file)
    yaml = YAML(typ="safe", pure=True)
    yaml.max_depth = MAX_DEPTH
    try:
        root = yaml.compose(text)
    except MarkedYAMLError as exc:
        raise _yaml_problem(exc, file) from None
    except YAMLError as exc:
        raise problem_at(Location(file, 1, 1), "", f"invalid YAML: {exc}") from None
    except RecursionError:
        raise problem_at(
            Location(file, 1, 1), "", f"the document is nested deeper than {MAX_DEPTH} levels"
        ) from None
    if root is None or (isinstance(root, ScalarNode) and _tag(root) == f"{_TAG}null" and not root.value):
        raise problem_at(
            Location(file, 1, 1),
            "",
            "the plan is empty; expected a mapping with apiVersion, kind, metadata and spec",
        )
    if not isinstance(root, MappingNode):
        kind = "a list" if isinstance(root, SequenceNode) else "a single value"
        pos = _pos(root)
        raise problem_at(
            Location(file, pos.line, pos.column),
            "",
            f"expected a mapping with apiVersion, kind, metadata and spec at the top level, found {kind}",
        )
    builder = _Builder(file)
    data = builder.build(root, ())
    assert isinstance(data, dict)
    return data, builder.smap


def _yaml_problem(exc: MarkedYAMLError, file: str) -> PlanError:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 1
    column = mark.column + 1 if mark is not None else 1
    problem = (exc.problem or "").strip()
    context = (exc.context or "").strip()
    if "maximum depth" in problem:
        message = f"the document is nested deeper than {MAX_DEPTH} levels"
    elif context == "expected a single document in the stream":
        message = "expected a single YAML document, found another one"
    elif problem.startswith("found undefined alias"):
        message = problem.replace("found undefined alias", "undefined alias")
    else:
        message = f"invalid YAML: {problem}" if problem else "invalid YAML"
        if context:
            message += f" ({context})"
    return problem_at(Location(file, line, column), "", message)


def iter_strings(data: Any, path: PathKey = ()) -> Iterator[tuple[PathKey, str]]:
    """Every string value in ``data`` with its path (keys are not visited)."""
    if isinstance(data, str):
        yield path, data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from iter_strings(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from iter_strings(value, (*path, index))
