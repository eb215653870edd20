"""A small, fast YAML emitter for plain plan data (the rendered plan of a run).

``ruamel.yaml``'s pure-Python serializer is as slow as its parser; this emitter writes block-style YAML
for ``dict``/``list``/``str``/``int``/``float``/``bool``/``None`` in linear time. Strings that could be read
back as anything but the same string are written as JSON strings, which are valid YAML double-quoted
scalars, so the output loads back to the same data.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*( [A-Za-z0-9_./-]+)*$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "nan", "inf"}


def _string(text: str) -> str:
    if _PLAIN.match(text) and text.lower() not in _RESERVED and len(text) < 200:
        return text
    return json.dumps(text, ensure_ascii=False)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return json.dumps(str(value))
        text = repr(value)
        if "." not in text and "e" in text:
            mantissa, exponent = text.split("e", 1)
            text = f"{mantissa}.0e{exponent}"
        return text
    return _string(str(value))


def _is_inline(value: Any) -> bool:
    return not isinstance(value, dict | list) or not value


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def _emit(value: Any, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            name = _string(str(key))
            if _is_inline(item):
                out.append(f"{pad}{name}: {_inline(item)}")
            else:
                out.append(f"{pad}{name}:")
                _emit(item, indent + 2, out)
    elif isinstance(value, list):
        for item in value:
            if _is_inline(item):
                out.append(f"{pad}- {_inline(item)}")
                continue
            start = len(out)
            _emit(item, indent + 2, out)
            out[start] = f"{pad}- {out[start][indent + 2 :]}"
    else:
        out.append(f"{pad}{_scalar(value)}")


def emit_yaml(data: Any) -> str:
    """Block-style YAML text for plain data; loads back to equal data."""
    if _is_inline(data):
        return _inline(data) + "\n"
    out: list[str] = []
    _emit(data, 0, out)
    return "\n".join(out) + "\n"
