"""Templates and parameters.

``${{ params.NAME }}`` is replaced when a plan is loaded (see :mod:`migrator.plan.loader`): a scalar that
is only a template takes the parameter's typed value, a template inside other text takes its text form.
``${{ node.name }}``, ``${{ node.address }}`` and ``${{ run.id }}`` are runtime templates: they stay in the
loaded plan as text and the engine renders them with :func:`render_runtime` / :func:`render_step` for each
node.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from migrator.errors import Location, PlanError, Problem
from migrator.plan.models import ParamSpec, ParamType
from migrator.plan.types import parse_duration

TEMPLATE_RE = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
_EXPR_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_-]*)$")
PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

PARAMS = "params"
#: runtime namespaces and their fields, rendered by the engine
RUNTIME_FIELDS: dict[str, tuple[str, ...]] = {"node": ("name", "address"), "run": ("id",)}
NODE_NAMESPACE = "node"

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class TemplateRef:
    """One ``${{ namespace.name }}`` in a string."""

    namespace: str
    name: str
    start: int
    end: int

    @property
    def text(self) -> str:
        return f"${{{{ {self.namespace}.{self.name} }}}}"


def suggest(word: str, choices: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def known_list(choices: Sequence[str]) -> str:
    return ", ".join(choices) if choices else "(none)"


def find_templates(text: str) -> list[TemplateRef]:
    """Every template in ``text``; raise ``ValueError`` with a clean message for a malformed one."""
    refs: list[TemplateRef] = []
    pos = 0
    while True:
        start = text.find("${{", pos)
        if start < 0:
            return refs
        match = TEMPLATE_RE.match(text, start)
        if match is None:
            raise ValueError("unterminated template: '${{' without '}}'")
        expr = match.group(1).strip()
        parsed = _EXPR_RE.match(expr)
        if parsed is None:
            raise ValueError(
                f"invalid template '${{{{ {expr} }}}}': expected ${{{{ params.NAME }}}},"
                " ${{ node.name }}, ${{ node.address }} or ${{ run.id }}"
            )
        refs.append(TemplateRef(parsed.group(1), parsed.group(2), match.start(), match.end()))
        pos = match.end()


def check_ref(ref: TemplateRef, params: Sequence[str]) -> None:
    """Raise ``ValueError`` when ``ref`` names an unknown namespace, param or runtime field."""
    if ref.namespace == PARAMS:
        if ref.name not in params:
            raise ValueError(
                f"undefined param {ref.name!r} in {ref.text}{suggest(ref.name, params)}"
                + ("" if suggest(ref.name, params) else f" (declared params: {known_list(params)})")
            )
        return
    fields = RUNTIME_FIELDS.get(ref.namespace)
    if fields is None:
        namespaces = [PARAMS, *RUNTIME_FIELDS]
        raise ValueError(
            f"unknown template namespace {ref.namespace!r} in {ref.text}"
            f"{suggest(ref.namespace, namespaces)}"
            + ("" if suggest(ref.namespace, namespaces) else f" (known: {known_list(namespaces)})")
        )
    if ref.name not in fields:
        raise ValueError(
            f"unknown field {ref.name!r} in {ref.text}{suggest(ref.name, fields)}"
            + ("" if suggest(ref.name, fields) else f" ({ref.namespace} has: {known_list(fields)})")
        )


# ------------------------------------------------------------------------------------------------ params


def param_text(value: Any) -> str:
    """The text form of a param value, used when a template sits inside other text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return ",".join(param_text(v) for v in value)
    return str(value)


def coerce_param(spec: ParamSpec, value: Any, *, from_cli: bool) -> Any:
    """Check and convert a param value (a YAML default, or a ``--set`` string when ``from_cli``).

    Raise ``ValueError`` with a message that says what was expected.
    """
    kind = spec.type
    result: Any
    texts = value if isinstance(value, list) else [value]
    if any(isinstance(text, str) and "${{" in text for text in texts):
        raise ValueError("templates (${{ ... }}) are not allowed in param values")
    if kind is ParamType.STRING:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError("expected a string")
        result = value if isinstance(value, str) else param_text(value)
    elif kind is ParamType.INTEGER:
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        if isinstance(value, int):
            result = value
        elif isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d{1,18}\s*", value):
            result = int(value)
        else:
            raise ValueError("expected an integer")
    elif kind is ParamType.NUMBER:
        if isinstance(value, bool):
            raise ValueError("expected a number")
        if isinstance(value, int | float):
            result = value
        elif isinstance(value, str) and len(value) < 50:
            try:
                result = float(value)
            except ValueError:
                raise ValueError("expected a number") from None
            if not math.isfinite(result):
                raise ValueError("expected a number")
        else:
            raise ValueError("expected a number")
    elif kind is ParamType.BOOLEAN:
        if isinstance(value, bool):
            result = value
        elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            result = value.strip().lower() in _TRUE
        else:
            raise ValueError("expected true or false (or yes/no)")
    elif kind is ParamType.DURATION:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError("expected a duration like 30s or 5m")
        parse_duration(value)
        result = value.strip() if isinstance(value, str) else value
    elif kind is ParamType.LIST:
        if from_cli and isinstance(value, str):
            result = [item.strip() for item in value.split(",") if item.strip()]
        elif isinstance(value, list) and all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in value
        ):
            result = list(value)
        else:
            raise ValueError(
                "expected a comma-separated list" if from_cli else "expected a list of strings or numbers"
            )
    else:  # pragma: no cover - exhaustive
        raise ValueError(f"unsupported param type {kind}")
    if spec.enum is not None:
        items = result if isinstance(result, list) else [result]
        allowed = [param_text(e) for e in spec.enum]
        for item in items:
            if item not in spec.enum and param_text(item) not in allowed:
                raise ValueError(f"expected one of: {', '.join(allowed)}{suggest(param_text(item), allowed)}")
    return result


# --------------------------------------------------------------------------------- load-time rendering


def substitute_params(text: str, values: Mapping[str, Any]) -> Any:
    """Replace the ``params`` templates in ``text``; runtime templates stay.

    A text that is exactly one params template (spaces around it allowed) gives the typed value.
    Templates must already be checked with :func:`find_templates` and :func:`check_ref`.
    """
    refs = [r for r in find_templates(text) if r.namespace == PARAMS]
    if not refs:
        return text
    if len(refs) == 1 and text[: refs[0].start].strip() == "" and text[refs[0].end :].strip() == "":
        return values[refs[0].name]
    out, pos = [], 0
    for ref in refs:
        out.append(text[pos : ref.start])
        out.append(param_text(values[ref.name]))
        pos = ref.end
    out.append(text[pos:])
    return "".join(out)


# ----------------------------------------------------------------------------------- runtime rendering


def render_runtime(text: str, context: Mapping[str, Mapping[str, str]]) -> str:
    """Render the runtime templates of ``text``: ``context = {"node": {"name": ..., "address": ...},
    "run": {"id": ...}}``.

    A template whose namespace or field is not in ``context`` raises :class:`PlanError`: the engine must
    not run a step with an unrendered template.
    """
    if "${{" not in text:
        return text
    try:
        refs = find_templates(text)
    except ValueError as exc:
        raise PlanError(str(exc), [Problem(Location("<runtime>"), "", str(exc))]) from None
    out, pos = [], 0
    for ref in refs:
        namespace = context.get(ref.namespace)
        if namespace is None or ref.name not in namespace:
            where = "outside a for_each stage" if ref.namespace == NODE_NAMESPACE else "here"
            message = f"template {ref.text} cannot be rendered {where}"
            raise PlanError(message, [Problem(Location("<runtime>"), "", message)])
        out.append(text[pos : ref.start])
        out.append(str(namespace[ref.name]))
        pos = ref.end
    out.append(text[pos:])
    return "".join(out)


_T = TypeVar("_T")


def _render_any(value: Any, context: Mapping[str, Mapping[str, str]]) -> Any:
    if isinstance(value, str):
        return render_runtime(value, context)
    if isinstance(value, BaseModel):
        updates: dict[str, Any] = {}
        for name in type(value).model_fields:
            old = getattr(value, name)
            new = _render_any(old, context)
            if new is not old:
                updates[name] = new
        return value.model_copy(update=updates) if updates else value
    if isinstance(value, list):
        items = [_render_any(v, context) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if isinstance(value, tuple):
        tup = tuple(_render_any(v, context) for v in value)
        return tup if any(a is not b for a, b in zip(tup, value, strict=True)) else value
    if isinstance(value, dict):
        rendered = {k: _render_any(v, context) for k, v in value.items()}
        return rendered if any(rendered[k] is not value[k] for k in value) else value
    return value


def render_step(step: _T, context: Mapping[str, Mapping[str, str]]) -> _T:
    """A copy of a step (or check, or any plan model) with every runtime template rendered.

    Strings are rendered everywhere in the model: its name, its args (nested dicts and lists included)
    and its explicit ``undo``. Unchanged parts are shared, not copied. The copy is not re-validated.
    """
    result: _T = _render_any(step, context)
    return result
