"""Validated scalar types used in plans: durations, CIDRs, percentages and label selectors.

Each type accepts the human spelling in YAML and produces a plain Python value, with an error message
that says what was expected (the loader prefixes it with the file, line, column and field).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_DURATION_S = 7 * 86400.0


def parse_duration(value: Any) -> float:
    """``30s``, ``5m``, ``1h30m``, ``250ms`` or a number of seconds -> seconds as float."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s or 5m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        pos = 0
        seconds = 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            raise ValueError("expected a duration like 30s or 5m")
    else:
        raise ValueError("expected a duration like 30s or 5m")
    if seconds < 0 or seconds > MAX_DURATION_S:
        raise ValueError("expected a duration between 0s and 7d")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds < 1 and seconds != 0:
        return f"{round(seconds * 1000)}ms"
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{int(seconds // 3600)}h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"},
                {"type": "number", "minimum": 0},
            ],
            "description": "A duration like 30s, 5m, 1h30m or 250ms",
        }
    ),
]


def parse_cidr(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a CIDR like 10.244.0.0/16")
    try:
        return str(ipaddress.ip_network(value.strip(), strict=True))
    except ValueError as exc:
        raise ValueError(f"expected a CIDR like 10.244.0.0/16 ({exc})") from None


Cidr = Annotated[
    str,
    BeforeValidator(parse_cidr),
    WithJsonSchema({"type": "string", "description": "A CIDR like 10.244.0.0/16"}),
]


def parse_percentage(value: Any) -> float:
    """``25%`` or a number between 0 and 100 -> a fraction between 0.0 and 1.0."""
    if isinstance(value, bool):
        raise ValueError("expected a percentage like 25%")
    if isinstance(value, str):
        text = value.strip()
        if not text.endswith("%"):
            raise ValueError("expected a percentage like 25%")
        try:
            number = float(text[:-1])
        except ValueError:
            raise ValueError("expected a percentage like 25%") from None
    elif isinstance(value, int | float):
        number = float(value)
    else:
        raise ValueError("expected a percentage like 25%")
    if not 0.0 <= number <= 100.0:
        raise ValueError("expected a percentage between 0% and 100%")
    return number / 100.0


Percentage = Annotated[
    float,
    BeforeValidator(parse_percentage),
    PlainSerializer(lambda f: f"{f * 100:g}%", return_type=str),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": r"^\d+(\.\d+)?%$"}, {"type": "number"}],
            "description": "A percentage like 25%",
        }
    ),
]


# ------------------------------------------------------------------------------------ label selectors

_KEY = r"(?:[a-zA-Z0-9.-]{1,253}/)?[a-zA-Z0-9]([a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?"
_VALUE = r"(?:[a-zA-Z0-9]([a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?)?"
_KEY_RE = re.compile(rf"^{_KEY}$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")
_SET_RE = re.compile(r"^\s*(\S+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str] | Any) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values  # "!=" and "notin"

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return f"!{self.key}"
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(self.values)})"
        return f"{self.key}{self.op}{self.values[0]}"


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def parse_selector(text: str) -> tuple[Requirement, ...]:
    """Parse a Kubernetes label selector: ``a=b,c!=d,e,!f,g in (x,y),h notin (z)``.

    Every requirement is parsed before any key or value is checked: an empty requirement is reported
    before an invalid label anywhere in the selector.
    """
    if len(text) > 4096:
        raise ValueError("label selector is too long")
    if not text.strip():
        return ()
    reqs = [_parse_requirement(raw.strip(), text) for raw in _split_top_level(text)]
    for req in reqs:
        _check_requirement(req, text)
    return tuple(reqs)


def _parse_requirement(part: str, text: str) -> Requirement:
    """One requirement of the selector ``text``, not yet checked."""
    if not part:
        raise ValueError(f"empty requirement in label selector {text!r}")
    set_match = _SET_RE.match(part)
    if set_match:
        key, op, values_text = set_match.groups()
        values = tuple(v.strip() for v in values_text.split(",") if v.strip())
        if not values:
            raise ValueError(f"{op} needs at least one value in {part!r}")
        return Requirement(key, op, values)
    if "!=" in part:
        key, value = (s.strip() for s in part.split("!=", 1))
        return Requirement(key, "!=", (value,))
    if "==" in part or "=" in part:
        key, value = (s.strip() for s in re.split("==?", part, maxsplit=1))
        return Requirement(key, "=", (value,))
    if part.startswith("!"):
        return Requirement(part[1:].strip(), "!")
    return Requirement(part, "exists")


def _check_requirement(req: Requirement, text: str) -> None:
    if not _KEY_RE.match(req.key):
        raise ValueError(f"invalid label key {req.key!r} in selector {text!r}")
    for value in req.values:
        if not _VALUE_RE.match(value):
            raise ValueError(f"invalid label value {value!r} in selector {text!r}")


@dataclass(frozen=True)
class Selector:
    """A parsed label selector; ``str()`` gives back the canonical text."""

    requirements: tuple[Requirement, ...]

    def matches(self, labels: dict[str, str] | Any) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _to_selector(value: Any) -> Selector:
    if isinstance(value, Selector):
        return value
    if isinstance(value, dict):
        value = ",".join(f"{k}={v}" for k, v in value.items())
    if not isinstance(value, str):
        raise ValueError("expected a label selector like 'role=worker,zone!=a'")
    return Selector(parse_selector(value))


LabelSelector = Annotated[
    Selector,
    BeforeValidator(_to_selector),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "object", "additionalProperties": {"type": "string"}},
            ],
            "description": "A label selector like 'role=worker,zone!=a' or a map of labels",
        }
    ),
]
